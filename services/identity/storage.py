"""Identity's store: users, signing keys, sessions and refresh tokens, login failures, certificates."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

from contracts.envelope import Envelope
from services.common.errors import Conflict
from services.common.mongo import breaks_unique_index, run_once, update_entry
from services.common.outbox import OutboxCollection
from services.common.stored_time import to_stored_precision
from services.identity import accounts
from services.identity.throttling import Failures


def status_change(active: bool, at: datetime) -> dict[str, Any]:
    return {"active": active, "deactivated_at": None if active else at, "status_changed_at": at}


def unset_or_below(field: str, value: Any) -> dict[str, Any]:
    """Filter: `field` is missing or null, or below `value` (so the later of two writes wins,
    whichever arrives last: a status change by its time, a directory copy by its version)."""
    return {"$or": [{field: None}, {field: {"$lt": value}}]}


class IdentityStore:
    def __init__(self, db: Database) -> None:
        self.users = db["users"]
        self.keys = db["signing_keys"]
        self.sessions = db["sessions"]
        # Each user's session ids (`<user_id>` -> {ids: {id: started_at}}): ending every session of
        # a user (a new password) finds them by _id, where a filter on sessions is a full scan.
        self.user_sessions = db["user_sessions"]
        # Sessions revoked within an access token's life (`<session_id>` -> revoked_at): what every
        # gateway asks for, kept small (older ones are dropped as it is read).
        self.recent_revocations = db["recent_revocations"]
        self.refresh_tokens = db["refresh_tokens"]
        self.login_failures = db["login_failures"]
        # Login names -> user: `<login_key>` and `phone:<phone_key>`, found by _id (a filter on the
        # users' keys is a full scan on FerretDB, which every login would pay).
        self.logins = db["user_logins"]
        self.certificates = db["certificates"]
        # Each user's certificate ids (`<user_id>` -> {ids: {id: issued_at}}): found by _id, where
        # filtering certificates by user is a full scan on FerretDB, and every case asks it.
        self.held = db["user_certificates"]
        self.audit = db["audit_trail"]  # insert-only: nothing updates or deletes an entry
        self.phone_challenges = db["phone_challenges"]  # `<purpose>:<user_id>` -> the code last texted (a digest)
        self.phone_code_sends = db["phone_code_sends"]  # `<day>:<phone>` -> codes texted to it that day
        # Staff accounts (`<user_id>` -> username, name, roles, department, active): what admins
        # list and whom deadline warnings go to, read without scanning every applicant's account.
        self.staff = db["staff_directory"]
        self.user_outbox = OutboxCollection(self.users)
        self.session_outbox = OutboxCollection(self.sessions)
        self.certificate_outbox = OutboxCollection(self.certificates)

    @property
    def outboxes(self) -> list[OutboxCollection]:
        return [self.user_outbox, self.session_outbox, self.certificate_outbox]

    def ensure_indexes(self) -> None:
        # `login_key`: id number, credit code or "staff:<username>"; `phone_key`: the phone, or a
        # per-user placeholder for staff (the server has no partial indexes).
        self.users.create_index([("login_key", ASCENDING)], unique=True)
        self.users.create_index([("phone_key", ASCENDING)], unique=True)
        self.keys.create_index([("created_at", DESCENDING)])
        self.refresh_tokens.create_index([("family", ASCENDING)])
        self.sessions.create_index([("revoked_at", DESCENDING)])
        self.recent_revocations.create_index([("revoked_at", DESCENDING)])
        self.certificates.create_index([("user_id", ASCENDING), ("issued_at", DESCENDING)])
        self.audit.create_index([("at", DESCENDING)])
        self.phone_code_sends.create_index([("day", ASCENDING)])
        self.staff.create_index([("username", ASCENDING)])
        self.staff.create_index([("department_code", ASCENDING), ("roles", ASCENDING)])
        for outbox in self.outboxes:
            outbox.ensure_indexes()
        run_once(self.users.database, "user_certificates", self._index_older_certificates)
        run_once(self.users.database, "user_logins", self._index_older_logins)
        run_once(self.users.database, "user_sessions", self._index_older_sessions)
        run_once(self.users.database, "recent_revocations", self._list_recent_revocations)
        run_once(self.users.database, "staff_directory", self._list_older_staff)

    def _list_older_staff(self) -> None:
        for user in self.users.find({"account_type": "staff"}, {"outbox": 0, "password_hash": 0}):
            self.list_staff_member(user)

    def _index_older_logins(self) -> None:
        for user in self.users.find({}, {"login_key": 1, "phone_key": 1}):
            self._index_logins(user)

    def _index_older_sessions(self) -> None:
        for doc in self.sessions.find({"revoked_at": None}, {"user_id": 1, "created_at": 1}):
            self._index_session(doc["_id"], doc["user_id"], doc["created_at"])

    def _list_recent_revocations(self) -> None:
        # Revoked in the last hour before the list existed (more than an access token's life).
        since = datetime.now(UTC) - timedelta(hours=1)
        for doc in self.sessions.find({"revoked_at": {"$gt": since}}, {"revoked_at": 1}):
            self.recent_revocations.update_one(
                {"_id": doc["_id"]}, {"$max": {"revoked_at": doc["revoked_at"]}}, upsert=True
            )

    def _index_older_certificates(self) -> None:
        for doc in self.certificates.find({}, {"user_id": 1, "issued_at": 1}):
            self._index_certificate(doc)

    # --- users ------------------------------------------------------------------------------------
    def insert_user(self, doc: dict[str, Any], login_field: str) -> None:
        """Insert, or Conflict naming the public field that is already registered."""
        try:
            self.users.insert_one(doc)
        except DuplicateKeyError:
            # The server does not say which unique index fired; ask (rare, so a scan is fine), and
            # index the holders' logins: a registration that died before doing so is repaired.
            query = {"$or": [{"login_key": doc["login_key"]}, {"phone_key": doc["phone_key"]}]}
            holders = list(self.users.find(query, {"login_key": 1, "phone_key": 1}))
            for holder in holders:
                self._index_logins(holder)
            field = login_field if any(h["login_key"] == doc["login_key"] for h in holders) else "phone"
            raise Conflict(
                f"{field} is already registered", [{"field": field, "issue": "already registered"}]
            ) from None
        self._index_logins(doc)

    def refuse_registered(self, login_key: str, phone: str, login_field: str) -> None:
        """Conflict, as `insert_user` would answer, when the key or the phone is a login name already."""
        if self.logins.find_one({"_id": login_key}) is not None:
            field = login_field
        elif self.find_by_login([], phone) is not None:  # its holder, past a change that died half way
            field = "phone"
        else:
            return
        raise Conflict(f"{field} is already registered", [{"field": field, "issue": "already registered"}])

    def _index_logins(self, user: dict[str, Any]) -> None:
        for name in (user["login_key"], f"phone:{user['phone_key']}"):
            if name.startswith("phone:staff:"):  # a staff account's placeholder: no login name
                continue
            self._point_login(name, user["_id"])

    def _point_login(self, name: str, user_id: str) -> None:
        self.logins.update_one({"_id": name}, {"$set": {"user_id": user_id}}, upsert=True)

    def find_by_login(self, keys: list[str], phone: str) -> dict[str, Any] | None:
        """The account a login name names: by its keys, then as a phone unless `phone` is ""."""
        for name in (*keys, *([f"phone:{phone}"] if phone else [])):
            login = self.logins.find_one({"_id": name})
            if login is None:
                continue
            user = self.users.find_one({"_id": login["user_id"]})
            if not name.startswith("phone:") or (user is not None and user["phone_key"] == phone):
                return user
            # The name points at an account that no longer has this phone: a change of phone that
            # died half way, or lost a race for the number. The users' unique phone decides.
            return self._repoint_phone(phone)
        return None

    def change_contact(
        self,
        user: dict[str, Any],
        changes: dict[str, str | None],
        event: Envelope,
        notices: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Set the new phone and/or email with its event, or Conflict: the phone is another
        account's (409 on `phone`), or this account's phone changed meanwhile.

        The unique index on the users' phone decides who holds a number. The new phone's login
        name is claimed before that write and pointed at its holder after it, whoever won; the old
        one is removed last. A crash in between leaves a name pointing at an account without that
        phone, which `find_by_login` points at the real holder (or at nobody) when it meets it."""
        new_phone = changes.get("phone")
        if new_phone is not None:
            self._claim_phone_login(new_phone, user["_id"])
        update = self.user_outbox.update(user["_id"], [event])
        update["$set"].update(changes)
        # Notices to send on hearing the event (`pending_notices.<event_id>`), kept with the change.
        update["$set"].update({f"pending_notices.{key}": notice for key, notice in (notices or {}).items()})
        if new_phone is not None:
            update["$set"]["phone_key"] = new_phone
        taken = False
        try:
            # Only from the phone it was read with: two changes of one account cannot both win.
            done = self.users.update_one({"_id": user["_id"], "phone_key": user["phone_key"]}, update).matched_count
        except OperationFailure as exc:  # another account holds the number (it won a race, or registered)
            if not breaks_unique_index(exc):
                raise
            done, taken = 0, True
        if not done:
            self.user_outbox.forget([event])
            if new_phone is not None:
                self._repoint_phone(new_phone)
            raise _phone_taken() if taken else Conflict("the account changed meanwhile; try again")
        if new_phone is not None:
            # A rival that lost may have pointed the name at itself meanwhile.
            self._point_login(f"phone:{new_phone}", user["_id"])
            self.logins.delete_one({"_id": f"phone:{user['phone_key']}", "user_id": user["_id"]})

    def pending_notice(self, user_id: str, key: str) -> dict[str, Any] | None:
        doc = self.users.find_one({"_id": user_id}, {"pending_notices": 1}) or {}
        return (doc.get("pending_notices") or {}).get(key)

    def forget_notice(self, user_id: str, key: str) -> None:
        self.users.update_one({"_id": user_id}, {"$unset": {f"pending_notices.{key}": ""}})

    def _claim_phone_login(self, phone: str, user_id: str) -> None:
        """Point the phone's login name at this account, or Conflict if another account holds the
        phone. A name left behind by its former holder, or a rival's claim, is taken over: the
        users' write that follows decides."""
        name = f"phone:{phone}"
        try:
            self.logins.insert_one({"_id": name, "user_id": user_id})
            return
        except DuplicateKeyError:
            holder = self.logins.find_one({"_id": name})
        if holder is not None and holder["user_id"] != user_id:
            owner = self.users.find_one({"_id": holder["user_id"]}, {"phone_key": 1})
            if owner is not None and owner["phone_key"] == phone:
                raise _phone_taken()
        self._point_login(name, user_id)

    def _repoint_phone(self, phone: str) -> dict[str, Any] | None:
        """Point the phone's login name at the account that holds the phone, and return it. Rare
        (a change of phone that died or lost a race), so the filter on the users' phone is fine;
        a name whose phone nobody holds is left alone: a change may be about to take it."""
        holder = self.users.find_one({"phone_key": phone})
        if holder is not None:
            self._point_login(f"phone:{phone}", holder["_id"])
        return holder

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        return self.users.find_one({"_id": user_id}, {"outbox": 0, "pending_notices": 0})

    # --- the staff directory ----------------------------------------------------------------------
    def list_staff_member(self, user: dict[str, Any]) -> None:
        """Put a staff account in the directory if it is not there (after its creation, and again
        at each login of it: an entry a process died before writing is made up for)."""
        self.staff.update_one({"_id": user["_id"]}, {"$setOnInsert": accounts.staff_entry(user)}, upsert=True)

    def staff_page(self, query: dict[str, Any], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        # Admins only, over staff alone: a scan of this small collection is fine.
        rows = list(self.staff.find(query).sort("username", ASCENDING).skip(skip).limit(limit))
        return rows, self.staff.count_documents(query)

    def staff_with_role(self, department_code: str, role: str) -> list[str]:
        found = self.staff.find({"department_code": department_code, "roles": role, "active": True}, {"_id": 1})
        return sorted(doc["_id"] for doc in found)

    def set_staff_active(self, user: dict[str, Any], active: bool, at: datetime, event: Envelope) -> bool:
        """Activate or deactivate the account with its event (logins check the account itself; the
        directory follows the event); False when a later change was stored already."""
        update = self.user_outbox.update(user["_id"], [event])
        update["$set"].update(status_change(active, at))
        update["$inc"] = {"staff_version": 1}
        return self.user_outbox.update_or_forget(
            {"_id": user["_id"], **unset_or_below("status_changed_at", at)}, update, [event]
        )

    def sync_directory(self, user_id: str) -> None:
        """The directory entry becomes a copy of the account as it now stands, unless it holds a
        later version already (two consumers copying two changes: the later state stays)."""
        user = self.get_user(user_id)
        if user is None or user["account_type"] != "staff":
            return
        self.list_staff_member(user)
        entry = accounts.staff_entry(user)
        self.staff.update_one(
            {"_id": user_id, **unset_or_below("staff_version", entry["staff_version"])}, {"$set": entry}
        )

    def resync_directory(self) -> None:
        """Copy every listed account again (the directory is small): before trusting it for a
        decision that must not rest on a lagging copy."""
        for entry in list(self.staff.find({}, {"_id": 1})):
            self.sync_directory(entry["_id"])

    def update_staff(self, user: dict[str, Any], changes: dict[str, Any], event: Envelope) -> bool:
        """New name, roles or department with its event, over the version it was read at; False
        (nothing stored) when the account changed meanwhile."""
        update = self.user_outbox.update(user["_id"], [event])
        update["$set"].update(changes)
        update["$inc"] = {"staff_version": 1}
        query = {"_id": user["_id"], "staff_version": user.get("staff_version")}  # None: never changed
        return self.user_outbox.update_or_forget(query, update, [event])

    def is_active_admin(self, user_id: str) -> bool:
        """Whether the account exists, is not deactivated and holds the admin role now."""
        stored = self.users.find_one({"_id": user_id}, {"active": 1, "roles": 1})
        return stored is not None and accounts.is_active(stored) and "admin" in stored["roles"]

    def account_active(self, user_id: str) -> bool:
        stored = self.users.find_one({"_id": user_id}, {"active": 1})
        return stored is not None and accounts.is_active(stored)

    def any_active_admin(self) -> bool:
        return self.staff.find_one({"roles": "admin", "active": True}, {"_id": 1}) is not None

    def login_key_exists(self, login_key: str) -> bool:
        return self.logins.find_one({"_id": login_key}, {"_id": 1}) is not None

    def raise_assurance(self, user_id: str, from_level: int, to_level: int, event: Envelope) -> bool:
        """Set the new level if it is still `from_level` (a concurrent raise wins once)."""
        update = self.user_outbox.update(user_id, [event])
        update["$set"]["assurance_level"] = to_level
        return self.user_outbox.update_or_forget({"_id": user_id, "assurance_level": from_level}, update, [event])

    # --- signing keys -----------------------------------------------------------------------------
    def newest_keys(self, limit: int) -> list[dict[str, Any]]:
        return list(self.keys.find({}).sort("created_at", DESCENDING).limit(limit))

    def add_key(self, key: dict[str, Any]) -> None:
        self.keys.insert_one(key)

    def public_keys(self) -> list[dict[str, Any]]:
        """Every key's public half with its creation time (few: one per rotation)."""
        return list(self.keys.find({}, {"public_jwk": 1, "created_at": 1}).sort("created_at", DESCENDING))

    # --- sessions and refresh tokens --------------------------------------------------------------
    def start_session(
        self,
        session_id: str,
        user_id: str,
        checked: dict[str, Any] | None = None,
        ended_before: datetime | None = None,
    ) -> None:
        """A new session of the user, with what its login `checked` (`accounts.checked_by_login`);
        index entries of sessions started before `ended_before` (past the maximum age: ended) are
        dropped meanwhile, so a user who logs in daily for years does not carry every session of
        those years in the one index document."""
        now = datetime.now(UTC)
        # The index first: an entry without a session is harmless, a session a new password
        # cannot find is not.
        started = self._index_session(session_id, user_id, now, checked)
        if ended_before is not None:
            self.forget_sessions(user_id, [sid for sid, start in started.items() if start.at < ended_before])
        self.sessions.insert_one(
            {"_id": session_id, "user_id": user_id, "created_at": now, "revoked_at": None, "outbox": {}}
        )

    def _index_session(
        self, session_id: str, user_id: str, started_at: datetime, checked: dict[str, Any] | None = None
    ) -> dict[str, accounts.SessionStart]:
        """Index the session; every indexed session of the user."""
        update: dict[str, Any] = {f"ids.{session_id}": started_at}
        if checked is not None:
            update[f"checked.{session_id}"] = checked
        doc = self.user_sessions.find_one_and_update(
            {"_id": user_id}, {"$set": update}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return _session_starts(doc)

    def sessions_of(self, user_id: str, since: datetime) -> dict[str, accounts.SessionStart]:
        """The user's sessions started since `since` (older ones have ended: sessions have a
        maximum age); the older ones are dropped from the index as it is read."""
        doc = self.user_sessions.find_one({"_id": user_id}) or {"ids": {}}
        started = _session_starts(doc)
        old = [sid for sid, start in started.items() if start.at < since]
        # What a kept session checked, stored after its session was forgotten (`keep_checked`).
        old += [sid for sid in doc.get("checked", {}) if sid not in started]
        self.forget_sessions(user_id, old)
        return {sid: start for sid, start in started.items() if start.at >= since}

    def keep_checked(self, user_id: str, session_id: str, password_hash: str) -> None:
        """The session that changed the password and stays has, in effect, checked the new one."""
        fingerprint = accounts.password_fingerprint(password_hash)
        self.user_sessions.update_one({"_id": user_id}, {"$set": {f"checked.{session_id}.password": fingerprint}})

    def forget_sessions(self, user_id: str, session_ids: list[str]) -> None:
        if session_ids:
            forgotten = {f"{field}.{sid}": "" for sid in session_ids for field in ("ids", "checked")}
            self.user_sessions.update_one({"_id": user_id}, {"$unset": forgotten})

    def login_still_valid(self, user: dict[str, Any]) -> bool:
        """Whether the account is still as the login read it: the same password, not deactivated,
        and (staff) the same roles and department. A login checks it again after starting its
        session: a change stored meanwhile did not see that session."""
        # By _id alone and compared here: any other filter key makes the stand-in scan the users.
        stored = self.users.find_one({"_id": user["_id"]}, {"password_hash": 1, "active": 1, "staff_version": 1})
        return (
            stored is not None
            and stored["password_hash"] == user["password_hash"]
            and accounts.is_active(stored)
            and stored.get("staff_version", 0) == user.get("staff_version", 0)
        )

    def set_password(
        self,
        user: dict[str, Any],
        password_hash: str,
        event: Envelope,
        change_required: bool,
        changed_by: str | None = None,
    ) -> None:
        """The new password with its event, or Conflict when the password changed meanwhile;
        `change_required`: its holder must choose another before anything else; `changed_by`: the
        key of the request that changed it (the same request delivered again is then done)."""
        update = self.user_outbox.update(user["_id"], [event])
        update["$set"].update(
            password_hash=password_hash, password_change_required=change_required, password_changed_by=changed_by
        )
        if not self.user_outbox.update_or_forget(
            {"_id": user["_id"], "password_hash": user["password_hash"]}, update, [event]
        ):
            raise Conflict("the password changed meanwhile; try again")

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        return self.sessions.find_one({"_id": session_id}, {"outbox": 0})

    def revoke_session(self, session_id: str, event: Envelope) -> bool:
        """Mark the session revoked with its event, once; False if it already was."""
        now = datetime.now(UTC)
        # The recent list first: gateways read it every half minute (a small collection, where a
        # filter on sessions would scan them all), and a session on it is refused either way.
        # The later time wins: a retried logout must not shorten what the first attempt announced.
        self.recent_revocations.update_one({"_id": session_id}, {"$max": {"revoked_at": now}}, upsert=True)
        update = self.session_outbox.update(session_id, [event])
        update["$set"]["revoked_at"] = now
        return self.session_outbox.update_or_forget({"_id": session_id, "revoked_at": None}, update, [event])

    def revoked_since(self, since: datetime) -> list[dict[str, Any]]:
        """Sessions revoked after `since`; older entries of the recent list are dropped."""
        self.recent_revocations.delete_many({"revoked_at": {"$lte": since}})
        return list(self.recent_revocations.find({"revoked_at": {"$gt": since}}))

    def store_refresh_token(self, digest: str, user_id: str, family: str, expires_at: datetime) -> None:
        self.refresh_tokens.insert_one(
            {"_id": digest, "user_id": user_id, "family": family, "expires_at": expires_at, "used_at": None}
        )

    def spend_refresh_token(self, digest: str) -> tuple[dict[str, Any] | None, bool]:
        """(the token, whether this call spent it). Atomic: of concurrent uses exactly one wins."""
        spent = self.refresh_tokens.find_one_and_update(
            {"_id": digest, "used_at": None}, {"$set": {"used_at": datetime.now(UTC)}}
        )
        if spent is not None:
            return spent, True
        return self.refresh_tokens.find_one({"_id": digest}), False

    # --- phone codes ------------------------------------------------------------------------------
    def phone_challenge(self, key: str) -> dict[str, Any] | None:
        return self.phone_challenges.find_one({"_id": key})

    def keep_phone_challenge(self, challenge: dict[str, Any], previous: dict[str, Any] | None) -> bool:
        """Keep a new challenge in place of the one it was decided against; False when another
        request replaced that one meanwhile (two requests at once send one code)."""
        if previous is None:
            try:
                self.phone_challenges.insert_one(challenge)
            except DuplicateKeyError:
                return False
            return True
        replaced = self.phone_challenges.replace_one(
            {"_id": challenge["_id"], "sent_at": previous["sent_at"]}, challenge
        )
        return replaced.matched_count == 1

    def count_code_to_phone(self, phone: str, day: str) -> int:
        """Count one more code texted to the phone on this day; the count so far, this one included."""
        for _ in range(2):  # two first sends at once: one insert wins, the other counts on it
            try:
                doc = self.phone_code_sends.find_one_and_update(
                    {"_id": f"{day}:{phone}"},
                    {"$inc": {"count": 1}, "$set": {"day": day}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
                return int(doc["count"])
            except OperationFailure as exc:
                if not breaks_unique_index(exc):
                    raise
        raise Conflict("the phone's count changed meanwhile; try again")

    def uncount_code_to_phone(self, phone: str, day: str) -> None:
        """A code counted but not sent (refused, or the provider did not take it)."""
        self.phone_code_sends.update_one({"_id": f"{day}:{phone}"}, {"$inc": {"count": -1}})

    def sweep_phone_counts(self, before_day: str) -> int:
        """Forget the counts of past days (no TTL indexes on the stand-in): strangers' numbers are
        kept no longer than they are needed."""
        return self.phone_code_sends.delete_many({"day": {"$lt": before_day}}).deleted_count

    def count_code_attempt(self, key: str) -> dict[str, Any] | None:
        """Count a try of the challenge's code, then answer the challenge as counted (None without
        a usable one): counting first means parallel guesses cannot exceed the allowance."""
        return self.phone_challenges.find_one_and_update(
            {"_id": key, "used": False}, {"$inc": {"attempts": 1}}, return_document=ReturnDocument.AFTER
        )

    def use_phone_challenge(self, key: str, sent_at: datetime) -> bool:
        """Spend the code: True for the one caller that does (a code changes a phone once)."""
        spent = self.phone_challenges.update_one(
            {"_id": key, "sent_at": sent_at, "used": False}, {"$set": {"used": True}}
        )
        return spent.modified_count == 1

    def unuse_phone_challenge(self, key: str, sent_at: datetime) -> None:
        """The change the code was spent on did not happen (a conflict): the code works again."""
        self.phone_challenges.update_one({"_id": key, "sent_at": sent_at, "used": True}, {"$set": {"used": False}})

    def void_phone_challenge(self, key: str, sent_at: datetime) -> None:
        """The code is void; it counts, and the resend interval holds (the provider may still send
        it late)."""
        self.phone_challenges.update_one({"_id": key, "sent_at": sent_at}, {"$set": {"used": True}})

    def put_back_phone_challenge(self, key: str, sent_at: datetime, previous: dict[str, Any] | None) -> None:
        """The challenge kept at `sent_at` was certainly not sent: the one it replaced is back as it
        was (its code still works until it expires), or none if there was none. It counts against
        nothing, and another may be asked for at once."""
        if previous is None:
            self.phone_challenges.delete_one({"_id": key, "sent_at": sent_at})
        else:
            self.phone_challenges.replace_one({"_id": key, "sent_at": sent_at}, previous)

    def sweep_phone_challenges(self, before_day: str, now: datetime) -> int:
        """Forget challenges of past days whose code has expired (they hold phone numbers)."""
        return self.phone_challenges.delete_many({"day": {"$lt": before_day}, "expires_at": {"$lt": now}}).deleted_count

    # --- login throttling -------------------------------------------------------------------------
    def failures(self, keys: list[str]) -> dict[str, Failures]:
        return {d["_id"]: Failures(d["count"], d["first_at"]) for d in self.login_failures.find({"_id": {"$in": keys}})}

    def record_failure(self, key: str, now: datetime, window: timedelta) -> Failures:
        """Count one failure (for a login, one guess, before it is checked) in the key's open window,
        or open one; returns the window as counted. Each step is one atomic write, so parallel
        counts are all counted (no read-then-write)."""
        now = to_stored_precision(now)  # a window's first_at as read back: it identifies the window
        for _ in range(3):
            counted = self.login_failures.find_one_and_update(
                {"_id": key, "first_at": {"$gt": now - window}},
                {"$inc": {"count": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if counted is not None:
                return Failures(counted["count"], counted["first_at"])
            expired = {"_id": key, "first_at": {"$lte": now - window}}
            if self.login_failures.update_one(expired, {"$set": {"count": 1, "first_at": now}}).matched_count:
                return Failures(1, now)
            try:
                self.login_failures.insert_one({"_id": key, "count": 1, "first_at": now})
                return Failures(1, now)
            except DuplicateKeyError:
                continue  # another count opened the window meanwhile: count in it
        raise RuntimeError(f"could not count a failure of {key}")  # three races in a row: not expected

    def clear_failures(self, key: str) -> None:
        self.login_failures.delete_one({"_id": key})

    def take_back_failure(self, key: str, counted: Failures) -> None:
        """Uncount one attempt counted before its check, when the check found it right: in the
        window it was counted in (not in one opened since), and gone once nothing is counted, so
        an address that only ever logs in right leaves nothing behind."""
        in_window = {"_id": key, "first_at": counted.first_at, "count": {"$gt": 0}}
        self.login_failures.update_one(in_window, {"$inc": {"count": -1}})
        self.login_failures.delete_one({"_id": key, "count": {"$lte": 0}})

    def sweep_login_failures(self, before: datetime) -> int:
        """Forget windows opened before `before` (closed: the next failure opens a new one). They
        hold client addresses and login names, kept no longer than they count."""
        return self.login_failures.delete_many({"first_at": {"$lt": before}}).deleted_count

    # --- certificates -----------------------------------------------------------------------------
    def insert_certificate(self, doc: dict[str, Any], event: Envelope) -> bool:
        try:
            self.certificates.insert_one({**doc, **self.certificate_outbox.fields(doc["_id"], [event])})
        except DuplicateKeyError:
            self.certificate_outbox.forget([event])
            inserted = False
        else:
            inserted = True
        # Also for a duplicate: a process that died between the two writes is repaired by redelivery.
        self._index_certificate(doc)
        return inserted

    def _index_certificate(self, doc: dict[str, Any]) -> None:
        key = f"ids.{doc['_id']}"
        update_entry(
            self.held, doc["user_id"], {key: {"$exists": False}}, {"$set": {key: doc["issued_at"]}}, {"ids": {}}
        )

    # --- audit trail ---------------------------------------------------------------------------------
    def append_audit(self, entry_id: str, entry: dict[str, Any]) -> None:
        """Store the entry under its id, once: the same entry again changes nothing."""
        with contextlib.suppress(DuplicateKeyError):
            self.audit.insert_one({"_id": entry_id, **entry})

    def audit_page(self, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        # Admins only, rarely: a scan on FerretDB is acceptable here (an index serves it on MongoDB).
        total = self.audit.count_documents({})
        rows = list(self.audit.find({}, {"_id": 0}).sort("at", DESCENDING).skip(skip).limit(limit))
        return rows, total

    def certificates_of(self, user_id: str) -> list[dict[str, Any]]:
        """Newest first."""
        ids = ((self.held.find_one({"_id": user_id}) or {}).get("ids") or {}).items()
        newest_first = [cid for cid, _ in sorted(ids, key=lambda entry: entry[1], reverse=True)]
        return list(self.certificates_by_id(newest_first).values())

    def certificates_by_id(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        # One _id lookup each (an applicant offers a few): `$in` is not served from an index on FerretDB.
        found = (self.certificates.find_one({"_id": cid}, {"outbox": 0}) for cid in dict.fromkeys(ids))
        return {doc["_id"]: doc for doc in found if doc is not None}

    def ping(self) -> None:
        self.users.find_one({"_id": "ping"}, {"_id": 1})


def _phone_taken() -> Conflict:
    return Conflict("phone is already registered", [{"field": "phone", "issue": "already registered"}])


def _session_starts(doc: dict[str, Any]) -> dict[str, accounts.SessionStart]:
    checked = doc.get("checked", {})
    return {
        sid: accounts.SessionStart(at, checked.get(sid, {}).get("password"), checked.get(sid, {}).get("staff_version"))
        for sid, at in doc.get("ids", {}).items()
    }
