"""Catalog store: immutable published versions, the current version of each item (with its search
tokens, or its withdrawal), drafts being edited, departments."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from contracts.envelope import Envelope
from contracts.storable import unstorable_part
from services.catalog.search import index_fields, token_sets, with_token_sets
from services.common.errors import Conflict
from services.common.mongo import run_once
from services.common.outbox import OutboxCollection

# Numbers below an item's highest that a read of its newest stored version tries: only publishers
# that died between taking a number and storing the version leave gaps.
NUMBERS_LOOKED_BACK = 5
SUMMARY_FIELDS = ("item_code", "name", "department_code", "item_type", "handling_mode", "promised_days")
_NO_OUTBOX = {"outbox": 0}


def version_id(item_code: str, version: int) -> str:
    return f"{item_code}@{version}"


class CatalogStore:
    def __init__(self, db: Database) -> None:
        self.versions = db["item_versions"]  # one immutable document per published version
        # Per item, by _id: the highest version number taken. Filtering the versions by item_code
        # scans them all on FerretDB (~0.3 s), and anyone could ask for any code, signed in or not.
        self.heads = db["item_heads"]
        self.current = db["items_current"]  # the latest published version, with search tokens
        self.drafts = db["drafts"]
        self.departments = db["departments"]
        self.meta = db["meta"]
        self.outbox = OutboxCollection(self.versions)  # publications
        self.current_outbox = OutboxCollection(self.current)  # withdrawals
        # The listing, cached in this process: searching filters every item (a full scan on
        # FerretDB, ~0.4 s), so each read checks the catalog's revision (one _id lookup) and
        # reloads only after a publish or a withdrawal.
        self._listing: tuple[int, list[dict[str, Any]]] | None = None
        self._listing_lock = threading.Lock()

    def ensure_indexes(self) -> None:
        self.versions.create_index([("item_code", ASCENDING), ("version", DESCENDING)])
        self.current.create_index([("search_tokens", ASCENDING)])
        self.current.create_index([("department_code", ASCENDING)])
        self.outbox.ensure_indexes()
        self.current_outbox.ensure_indexes()
        run_once(self.versions.database, "item_heads", self._head_older_items)

    def _head_older_items(self) -> None:
        for doc in self.versions.find({}, {"item_code": 1, "version": 1}):
            self._raise_head(doc["item_code"], doc["version"])

    def _raise_head(self, item_code: str, version: int) -> None:
        self.heads.update_one({"_id": item_code}, {"$max": {"highest": version}}, upsert=True)

    # --- departments ------------------------------------------------------------------------------
    def upsert_department(self, department: dict[str, Any]) -> None:
        self.departments.update_one({"_id": department["code"]}, {"$set": department}, upsert=True)

    def list_departments(self) -> list[dict[str, Any]]:
        return list(self.departments.find({}, {"_id": 0}).sort("code", ASCENDING))

    def department_exists(self, code: str) -> bool:
        # Not count_documents: an aggregation, which scans on FerretDB even by _id.
        return self.departments.find_one({"_id": code}, {"_id": 1}) is not None

    # --- published versions -----------------------------------------------------------------------
    def latest_version(self, item_code: str) -> dict[str, Any] | None:
        """The latest published version, withdrawn or not: a withdrawn item's carries `withdrawn`."""
        # Two _id lookups (the current row names the version): every case submission asks this,
        # and filtering the versions by item_code is a full scan on FerretDB (~0.3 s).
        current = self.current.find_one({"_id": item_code}, {"version": 1, "withdrawn": 1})
        if current is not None:
            latest = self.get_version(item_code, current["version"])
            if latest is not None:
                return {**latest, "withdrawn": current["withdrawn"]} if "withdrawn" in current else latest
        # A publish that has not advanced the current row yet: the newest stored version. (A number
        # taken by a publisher that died before storing it is skipped; an unknown code has none.)
        highest = self._highest_version(item_code)
        for version in range(highest, max(0, highest - NUMBERS_LOOKED_BACK), -1):
            stored = self.get_version(item_code, version)
            if stored is not None:
                return stored
        return None

    def get_version(self, item_code: str, version: int) -> dict[str, Any] | None:
        return _readable(self.versions.find_one({"_id": version_id(item_code, version)}, _NO_OUTBOX))

    def list_versions(self, item_code: str) -> list[dict[str, Any]]:
        """Newest first; one _id lookup per number taken (an item has a few versions)."""
        fields = {"item_code": 1, "version": 1, "name": 1, "published_at": 1}
        found = (
            self.versions.find_one({"_id": version_id(item_code, version)}, fields)
            for version in range(self._highest_version(item_code), 0, -1)
        )
        return [doc for doc in found if doc is not None]

    def insert_version(self, guide: dict[str, Any], version: int, event: Envelope) -> tuple[dict[str, Any], bool]:
        """Store a published version with its event; the version as stored, and whether this call
        stored it. A version of that number stored already is returned as stored, and `event` is
        dropped (the caller must not publish it): numbers are never taken twice (`next_version`),
        so it is the same publish, retried (`draft_version`), whose own event is in the outbox."""
        doc = self._version_doc(guide, version)
        self._raise_head(guide["item_code"], version)  # taken already by `next_version`, as a rule
        try:
            self.versions.insert_one({**doc, **self.outbox.fields(doc["_id"], [event])})
        except DuplicateKeyError:
            self.outbox.forget([event])
            # Its first try may have died before the current row moved: move it now.
            self.advance_current_to(guide["item_code"], version)
            stored = self.get_version(guide["item_code"], version)
            if stored is None:  # only if deleted by hand in between
                raise Conflict(f"version {version} of {guide['item_code']} was published concurrently") from None
            return stored, False
        self._advance_current(doc)
        return _readable(doc), True

    def advance_current_to(self, item_code: str, version: int) -> None:
        """Point the current row at this stored version unless it names a newer one or a
        withdrawal stands over it: what a publisher does after its insert, done for one that died
        in between."""
        doc = self.get_version(item_code, version)
        if doc is not None:
            self._advance_current(doc)

    def next_version(self, item_code: str) -> int:
        """Take the number of a new version of the item: after every one taken, stored or not (a
        publisher that died before storing it leaves a gap, never a number used twice), so two
        publishes at once get two numbers."""
        head = self.heads.find_one_and_update(
            {"_id": item_code}, {"$inc": {"highest": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(head["highest"])

    def _highest_version(self, item_code: str) -> int:
        return int((self.heads.find_one({"_id": item_code}) or {}).get("highest", 0))

    def insert_versions(self, guides: list[dict[str, Any]], events: list[Envelope]) -> None:
        """Bulk publish (seeding): first versions of many items at once."""
        docs = [self._version_doc(g, 1) for g in guides]
        # The numbers first: a seed that dies next leaves numbers taken, never versions unnumbered.
        for guide in guides:
            self._raise_head(guide["item_code"], 1)
        self.versions.insert_many(
            [{**d, **self.outbox.fields(d["_id"], [e])} for d, e in zip(docs, events, strict=True)]
        )
        self.current.insert_many([self._current_doc(d) for d in docs])
        self.listing_changed()

    def _version_doc(self, guide: dict[str, Any], version: int) -> dict[str, Any]:
        return {
            **_storable(guide),
            "_id": version_id(guide["item_code"], version),
            "version": version,
            "published_at": datetime.now(UTC),
        }

    def _current_doc(self, doc: dict[str, Any]) -> dict[str, Any]:
        # The version as stored or as read (repair_current): its form_schema stored either way.
        guide = _storable({k: v for k, v in doc.items() if k not in ("_id", "published_at")})
        return {
            "_id": doc["item_code"],
            **{k: doc[k] for k in SUMMARY_FIELDS},
            "version": doc["version"],
            "guide": guide,
            **index_fields(doc),
        }

    def _advance_current(self, doc: dict[str, Any]) -> None:
        """Point the current row at this version unless a newer one is already there, or a
        withdrawal stands over it.

        A withdrawal stands over every version whose number was taken before it (`withdrawn_over`:
        ordered by version numbers, not by clocks), so a publish that took its number before a
        withdrawal and stores its version after it leaves the item withdrawn, as if it had come
        first. A version numbered after the withdrawal replaces the row whole, which ends the
        withdrawal (and drops its event if not yet published: the new version's own makes it moot).
        The condition is in the write's own filter, so a withdrawal made since any read stands too."""
        version = doc["version"]
        not_withdrawn_over = {
            "$or": [
                {"withdrawn": {"$exists": False}},
                {"withdrawn_over": {"$lt": version}},
                {"withdrawn_over": {"$exists": False}},  # withdrawn before it was kept: by the row's version
            ]
        }
        current = self._current_doc(doc)
        if not self.current.replace_one(
            {"_id": doc["item_code"], "version": {"$lt": version}, **not_withdrawn_over}, current
        ).matched_count:
            try:
                self.current.insert_one(current)
            except DuplicateKeyError:
                return  # the row holds this or a newer version: the listing did not change
        self.listing_changed()

    def withdraw(self, withdrawal: dict[str, Any], event: Envelope) -> bool:
        """Mark the item's current row withdrawn, with its event; False when that row is no longer
        at the withdrawal's version or is withdrawn already (a concurrent publish or withdrawal).
        The listings are told by `listing_changed`, before the event is published."""
        update = self.current_outbox.update(withdrawal["item_code"], [event])
        update["$set"]["withdrawn"] = {k: v for k, v in withdrawal.items() if k != "item_code"}
        # Versions stored so far (one a dead publisher left included) stay behind the withdrawal.
        update["$set"]["withdrawn_over"] = self._highest_version(withdrawal["item_code"])
        unchanged = {"_id": withdrawal["item_code"], "version": withdrawal["version"], "withdrawn": {"$exists": False}}
        return self.current_outbox.update_or_forget(unchanged, update, [event])

    def listing_changed(self) -> None:
        """After every change of the listing: every process's cache reloads on its next read."""
        self.meta.update_one({"_id": "revision"}, {"$inc": {"n": 1}}, upsert=True)

    def listing(self) -> list[dict[str, Any]]:
        """Every published item not withdrawn (with its guide), from this process's cache while the
        revision holds."""
        revision = int((self.meta.find_one({"_id": "revision"}) or {}).get("n", 0))
        cached = self._listing
        if cached is not None and cached[0] == revision:
            return cached[1]
        with self._listing_lock:
            if self._listing is None or self._listing[0] != revision:
                rows = self.current.find({}, {"outbox": 0}).sort("_id", ASCENDING)
                # With its token sets, built once per listing rather than in every search.
                self._listing = (revision, [with_token_sets(row) for row in rows if "withdrawn" not in row])
            return self._listing[1]

    # --- finding ----------------------------------------------------------------------------------
    def filtered(self, filters: dict[str, Any], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        rows = self.matching(filters)
        return rows[skip : skip + limit], len(rows)

    def matching(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """Every listed item the filters pass, without its guide."""
        return [_without_guide(d) for d in self.listing() if _matches(d, filters)]

    def candidates(self, tokens: list[str], filters: dict[str, Any]) -> list[dict[str, Any]]:
        """Items sharing at least one token with the query (ranking happens in search.py), as
        listed: with their guide and the listing's token sets, which ranking reuses. They are the
        cached listing's own rows: read them, never change them."""
        if not tokens:
            return []
        wanted = set(tokens)
        return [d for d in self.listing() if _matches(d, filters) and not wanted.isdisjoint(token_sets(d)["all"])]

    # --- drafts -----------------------------------------------------------------------------------
    def get_draft(self, item_code: str) -> dict[str, Any] | None:
        """The draft being edited; None once it is published (`mark_published`)."""
        # By _id alone, the marker checked here: any other filter key makes FerretDB scan.
        draft = self.drafts.find_one({"_id": item_code})
        return None if draft is None or "published_at" in draft else _readable(draft)

    def published_draft(self, item_code: str) -> int | None:
        """The version the item's last draft was published as, if that is what the drafts hold."""
        draft = self.drafts.find_one({"_id": item_code}, {"published_at": 1, "publishing_as": 1})
        return None if draft is None or "published_at" not in draft else int(draft["publishing_as"])

    def create_draft(self, guide: dict[str, Any], by: str, request_key: str | None = None) -> None:
        doc = {**_storable(guide), "_id": guide["item_code"], "updated_at": datetime.now(UTC), "updated_by": by}
        if request_key is not None:
            doc["request_key"] = request_key  # the request that made it (see CatalogService.create_draft)
        try:
            self.drafts.insert_one(doc)
        except DuplicateKeyError:
            # A published draft's marker gives way; a draft being edited does not.
            replaced = self.drafts.replace_one({"_id": doc["_id"], "published_at": {"$exists": True}}, doc)
            if replaced.matched_count == 0:
                raise Conflict(f"a draft of {guide['item_code']} already exists; edit it with PUT") from None

    def save_draft(self, guide: dict[str, Any], by: str) -> None:
        self.drafts.replace_one(
            {"_id": guide["item_code"]},
            {**_storable(guide), "_id": guide["item_code"], "updated_at": datetime.now(UTC), "updated_by": by},
            upsert=True,
        )

    def draft_version(self, draft: dict[str, Any]) -> int:
        """The version number this draft, as saved, is published as: taken by its first publish and
        kept on it, so a publish retried (a gateway's timeout, a lost answer) stores the same
        version again instead of a second one. An edit saves the draft whole, so it gets a new
        number. Conflict if the draft was edited since it was read; one published since then (by a
        publish that read it too) answers the number it was published as."""
        claimed_as = draft.get("publishing_as")
        if claimed_as is not None and not self._left_behind_a_withdrawal(draft["_id"], int(claimed_as)):
            return int(claimed_as)
        # Unclaimed, or claimed by a try that died before storing and that a withdrawal has since
        # passed over: published under that number it would stay withdrawn, so it takes a new one.
        this_draft = {"_id": draft["_id"], "updated_at": draft["updated_at"]}
        number = self.next_version(draft["_id"])
        claimed = self.drafts.find_one_and_update(
            {**this_draft, "publishing_as": {"$exists": False} if claimed_as is None else claimed_as},
            {"$set": {"publishing_as": number}},
        )
        if claimed is not None:
            return number
        # Claimed by a publish of the same draft running at once (this number stays a gap), or gone.
        again = self.drafts.find_one(this_draft, {"publishing_as": 1})
        if again is None or "publishing_as" not in again:
            raise Conflict(f"the draft of {draft['_id']} was edited or published meanwhile; read it again")
        return int(again["publishing_as"])

    def _left_behind_a_withdrawal(self, item_code: str, version: int) -> bool:
        """A number taken, never stored, and passed over by the withdrawal standing now."""
        row = self.current.find_one({"_id": item_code}, {"version": 1, "withdrawn": 1, "withdrawn_over": 1})
        if row is None or "withdrawn" not in row:
            return False
        return (
            version <= int(row.get("withdrawn_over", row["version"])) and self.get_version(item_code, version) is None
        )

    def mark_published(self, item_code: str, updated_at: datetime) -> None:
        """The draft is gone for editors, and kept as the marker of what it was published as: a
        publish retried after it completed (its answer lost) answers that version again."""
        # Only the draft that was published: an edit saved meanwhile stays a draft.
        self.drafts.update_one(
            {"_id": item_code, "updated_at": updated_at}, {"$set": {"published_at": datetime.now(UTC)}}
        )

    # --- seeding ----------------------------------------------------------------------------------
    def seeded(self, fingerprint: str) -> bool:
        # By _id alone (every readiness probe asks): any other filter key makes FerretDB scan.
        return (self.meta.find_one({"_id": "seed"}) or {}).get("fingerprint") == fingerprint

    def mark_seeded(self, fingerprint: str) -> None:
        self.meta.update_one(
            {"_id": "seed"}, {"$set": {"fingerprint": fingerprint, "at": datetime.now(UTC)}}, upsert=True
        )

    def existing_codes(self) -> set[str]:
        """Codes with a published version (from the versions, the source of truth)."""
        return {d["item_code"] for d in self.versions.find({"version": 1}, {"item_code": 1})}

    def repair_current(self) -> int:
        """Rebuild listing rows missing for published items (a process that died mid-publish)."""
        listed = {d["_id"] for d in self.current.find({}, {"_id": 1})}
        missing = self.existing_codes() - listed
        for code in missing:
            latest = self.latest_version(code)
            if latest is not None:
                self._advance_current(latest)
        return len(missing)


def _matches(doc: dict[str, Any], filters: dict[str, Any]) -> bool:
    return all(doc.get(field) == value for field, value in filters.items())


StoredGuide = TypeVar("StoredGuide", dict[str, Any], None)


def _storable(guide: dict[str, Any]) -> dict[str, Any]:
    """The guide as stored. Its form_schema is JSON Schema, whose keywords start with "$" ($schema,
    $ref, $defs), whose property names may hold dots and whose values may be arrays of arrays
    (`"enum": [[0, 1]]`): field names the document store refuses (FerretDB always, MongoDB in
    places) and values FerretDB cannot hold. Such a schema is stored as its JSON text instead."""
    schema = guide.get("form_schema")
    if isinstance(schema, dict) and unstorable_part(schema, "form_schema"):
        return {**guide, "form_schema": json.dumps(schema, ensure_ascii=False)}
    return guide


def _readable(doc: StoredGuide) -> StoredGuide:
    """A stored guide (version or draft) with its form_schema as written (see `_storable`)."""
    if doc is not None and isinstance(doc.get("form_schema"), str):
        return {**doc, "form_schema": json.loads(doc["form_schema"])}
    return doc


def _without_guide(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("guide", "_token_sets")}
