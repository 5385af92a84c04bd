"""Notification store: one document per (event, recipient), a small queue of due deliveries,
people's channel preferences and per-channel rate counters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from services.common.kept_answers import KeptAnswers
from services.common.mongo import run_once
from services.common.monthly_lists import MonthlyLists
from services.notification import deliveries

log = logging.getLogger(__name__)

# A queue entry without its notification this old is an orphan (the insert never happened).
ORPHAN_AFTER = timedelta(minutes=5)
# Rate counters older than this many seconds are deleted (a send is counted in the second it starts).
RATE_COUNTERS_KEPT = 120
# Sends a process counts at once (and keeps for the rest of that second): one write per this many
# sends instead of one per send. What a process leaves unused at the second's end is lost to others,
# so near the limit a channel may send up to (block - 1) per process fewer than it allows.
RATE_BLOCK = 4
# A person's chosen channels are read for every notification they get, and a 秒批 case's two come
# within a second: kept per process this long for notifying. A choice made through this process
# drops what it kept at once; one made through another process is followed within this time.
CHOICES_KEPT = 5.0  # seconds
CHOICES_KEPT_PEOPLE = 10_000
# A write of a status (the key) applies only to a channel in one of these: statuses move forward only.
STATUSES_BEFORE = {
    "pending": ("pending",),
    "sent": ("pending", "sent"),
    "delivered": ("pending", "sent"),
    "failed": ("pending", "sent"),
}


class NotificationStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifications = db["notifications"]
        # `<notification id>:<channel>` -> next_at. Small (only unfinished deliveries), so the
        # delivery timer reads it instead of filtering every notification (a full scan on FerretDB).
        self.queue = db["delivery_queue"]
        self.preferences = db["preferences"]
        # Each person's inbox index, {notification_id: {at, read}} by month (see MonthlyLists).
        # Listing reads it by _id and then the page's notifications by _id; filtering
        # `notifications` by recipient would be a full scan on FerretDB.
        self.inbox = MonthlyLists(db["inbox_months"], db["inbox_counts"], lambda row: (row[1]["at"], row[0]))
        self._older_inboxes = db["inboxes"]  # one document per person, before months
        self.rates = db["channel_rates"]  # `<channel>:<unix second>` -> {second, n}
        self._swept_minute: int | None = None
        self._tokens: dict[str, tuple[int, int]] = {}  # channel -> (second, sends counted but not made)
        self._rate_lock = threading.Lock()  # a green lock under nameko (eventlet patches threading)
        self._choices: KeptAnswers[str, list[str] | None] = KeptAnswers(CHOICES_KEPT, CHOICES_KEPT_PEOPLE, clock)

    def ensure_indexes(self) -> None:
        self.notifications.create_index([("recipient", ASCENDING), ("created_at", DESCENDING)])
        self.queue.create_index([("next_at", ASCENDING)])
        run_once(self.notifications.database, "inboxes_by_month", self._split_inboxes_by_month)

    def _split_inboxes_by_month(self) -> None:
        """Move each person's single inbox document into documents by month."""
        for older in self._older_inboxes.find({}):
            for notification_id, entry in (older.get("items") or {}).items():
                self.inbox.put(older["_id"], entry["at"], notification_id, entry)
            self.inbox.create(older["_id"])  # an empty inbox stays known as one (no backfill scan)
            self._older_inboxes.delete_one({"_id": older["_id"]})

    # --- creating -----------------------------------------------------------------------------------
    def create(
        self, doc: dict[str, Any], channels: list[str], now: datetime, claim_for: timedelta | None = None
    ) -> list[dict[str, Any]] | None:
        """Insert the notification, index it, then queue its outbound deliveries; returns the entries
        this call queued, or None when this event already notified this recipient (the id encodes both). A new entry
        keeps what its send needs (see `deliveries.send_context`); with `claim_for` it is queued
        claimed by the caller for that long (as `claim` would, without a second command), for the
        caller to send at once. A crash in between is redelivered (the event is not yet acked), and
        a redelivery queues what is missing, unclaimed and without what its send needs: such an
        entry's send reads the notification first, so a delivery that finished long ago is not
        sent again."""
        try:
            self.notifications.insert_one(doc)
        except DuplicateKeyError:
            # Index the stored notification (its own time puts it in its own month), which also
            # repairs a process that died between the writes.
            stored = self.notifications.find_one({"_id": doc["_id"]}, {**_LISTING, "channels": 1})
            # The channels it was stored with, whatever is chosen now: a channel chosen since has no
            # text in it, and one dropped since may still be pending (a crash before its entry).
            kept = (stored or doc).get("channels") or {}
            self._queue(self._entries(doc, [channel for channel in kept if channel != "inbox"], now, None))
            self._index(doc["recipient"], stored or doc)
            return None
        # Indexed first: should it fail, the redelivery queues the entries unclaimed, for the timer
        # at once (claimed ones would wait for their claim to end).
        self._index(doc["recipient"], doc)
        return self._queue(self._entries(doc, channels, now, claim_for, keep_send=True))

    def _entries(
        self,
        doc: dict[str, Any],
        channels: list[str],
        now: datetime,
        claim_for: timedelta | None,
        keep_send: bool = False,
    ) -> list[dict[str, Any]]:
        # Claimed at once: due when the claim ends, and counted as a claim (see `claim`).
        due = {"next_at": now} if claim_for is None else {"next_at": now + claim_for, "leases": 1}
        return [
            {
                "_id": f"{doc['_id']}:{channel}",
                "notification_id": doc["_id"],
                "recipient": doc["recipient"],  # a person's deliveries go out one after another
                "channel": channel,
                **due,
                "created_at": now,
                **({"send": deliveries.send_context(doc, channel)} if keep_send else {}),
            }
            for channel in channels
        ]

    def _queue(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert the entries; returns those this call inserted."""
        if not entries:
            return []
        try:
            self.queue.insert_many(entries, ordered=False)
        except BulkWriteError as exc:  # queued already (a redelivery): those entries stay as they are
            if any(error["code"] != 11000 for error in exc.details["writeErrors"]):
                raise
            # Not ours to send: another process queued them first (a redelivery racing the event).
            taken = {error["index"] for error in exc.details["writeErrors"]}
            return [entry for n, entry in enumerate(entries) if n not in taken]
        return entries

    def add_to_digest(self, digest: dict[str, Any], case_no: str, entry: dict[str, Any]) -> bool:
        """File a case in the recipient's digest of the day, which is created, and listed in the
        inbox, with its first case; a digest read before comes back unread, and a case filed again
        with another deadline (recomputed) is updated. False when the case was in it as it is (a
        redelivered event): the listing is made again then, which finishes a process that died
        between the writes."""
        # Missing, or filed with another deadline ($ne matches both).
        query = {"_id": digest["_id"], f"cases.{case_no}.deadline": {"$ne": entry["deadline"]}}
        change = {
            "$setOnInsert": {k: v for k, v in digest.items() if k not in ("cases", "read_at")},
            "$set": {f"cases.{case_no}": entry, "read_at": None},
        }
        # (No projection: FerretDB's findAndModify takes none.)
        try:
            before = self.notifications.find_one_and_update(
                query, change, upsert=True, return_document=ReturnDocument.BEFORE
            )
        except DuplicateKeyError:
            # There already: with this case as it is, or created at this moment by a process filing
            # another case (its upsert won). Neither store retries such an upsert: update it.
            before = self.notifications.find_one_and_update(query, change, return_document=ReturnDocument.BEFORE)
            if before is None:  # filed as it is already
                stored = self.notifications.find_one({"_id": digest["_id"]}, _LISTING)
                self._index(digest["recipient"], stored or digest)
                return False
        if before is None:  # created now
            self._index(digest["recipient"], digest)
        elif before.get("read_at") is not None:
            self.inbox.set_fields(digest["recipient"], listed_at(before), digest["_id"], {"read": False})
        return True

    def _index(self, recipient: str, doc: dict[str, Any]) -> None:
        entry = {"at": listed_at(doc), "read": doc.get("read_at") is not None}
        self.inbox.put(recipient, listed_at(doc), doc["_id"], entry)

    # --- delivering ---------------------------------------------------------------------------------
    def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        return list(self.queue.find({"next_at": {"$lte": now}}).sort("next_at", ASCENDING).limit(limit))

    def claim(self, entry_id: str, now: datetime, lease: timedelta) -> dict[str, Any] | None:
        """Take a due entry for `lease` (another process skips it meanwhile; a crash frees it after).
        Returns the entry as it was, or None. Its `leases` counts claims since its last reschedule:
        more than none means an attempt ended without a word (a crash, an error). An entry sent
        since the caller read it (another process's attempt) is not claimed: the caller would send
        it again; a later run asks for its receipt."""
        return self.queue.find_one_and_update(
            {"_id": entry_id, "next_at": {"$lte": now}, "sent": {"$exists": False}},
            {"$set": {"next_at": now + lease}, "$inc": {"leases": 1}},
        )

    def reschedule(
        self, entry_id: str, at: datetime, sent: dict[str, Any] | None = None, attempts: int | None = None
    ) -> None:
        """Due again at `at`, its attempt over; `sent`: what its receipt step will need, and
        `attempts`: the sends so far, both kept in the entry."""
        fields: dict[str, Any] = {"next_at": at, "leases": 0}
        if sent is not None:
            fields["sent"] = sent
        if attempts is not None:
            fields["send.attempts"] = attempts
        self.queue.update_one({"_id": entry_id}, {"$set": fields})

    def finish(self, entry_id: str) -> None:
        self.queue.delete_one({"_id": entry_id})

    def finish_all(self, entry_ids: list[str]) -> None:
        """Delete finished entries in one command (none for none). A failure is logged, not raised:
        the entries stay due, and their next run finds the work recorded (what is batched here must
        be harmless to repeat)."""
        if not entry_ids:
            return
        try:
            self.queue.delete_many({"_id": {"$in": entry_ids}})
        except PyMongoError:
            log.warning("could not delete finished delivery entries", extra={"count": len(entry_ids)})

    def get(self, notification_id: str) -> dict[str, Any] | None:
        return self.notifications.find_one({"_id": notification_id})

    def update_channel(self, notification_id: str, channel: str, changes: dict[str, Any]) -> bool:
        """Set fields of a channel's state; False when nothing was written. A status only moves
        forward (pending, sent, then delivered or failed): a late write of an earlier one changes
        nothing, nor does a second receipt step's (two processes asked at once)."""
        if not changes:
            return False
        query: dict[str, Any] = {"_id": notification_id}
        if "status" in changes:
            query[f"channels.{channel}.status"] = {"$in": list(STATUSES_BEFORE[changes["status"]])}
        fields = {f"channels.{channel}.{key}": value for key, value in changes.items()}
        return self.notifications.update_one(query, {"$set": fields}).matched_count == 1

    def take_rate_token(self, channel: str, now: datetime, per_second: int) -> bool:
        """At most `per_second` sends per channel and second across all processes: one counter per
        channel and second, raised by RATE_BLOCK sends in one write, the block kept by this process
        for the rest of the second; counters of past minutes are swept once a minute (a counter of
        the minute's second reset on reuse cost a second write per send)."""
        # One at a time per process: deliveries running alongside use the block one of them counted
        # instead of each counting a block of its own and leaving most of it unused.
        with self._rate_lock:
            return self._take_rate_token(channel, int(now.timestamp()), per_second)

    def _take_rate_token(self, channel: str, second: int, per_second: int) -> bool:
        held_second, held = self._tokens.get(channel, (second, 0))
        if held_second == second and held > 0:
            self._tokens[channel] = (second, held - 1)
            return True
        if second // 60 != self._swept_minute:
            self._swept_minute = second // 60
            self.rates.delete_many({"second": {"$lt": second - RATE_COUNTERS_KEPT}})
        block = min(RATE_BLOCK, per_second)
        count = {"$inc": {"n": block}, "$setOnInsert": {"second": second}}
        for _ in range(2):
            try:
                counted = self.rates.find_one_and_update(
                    {"_id": f"{channel}:{second}"}, count, upsert=True, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError:
                continue  # two first sends of a second raced to create its counter: count again
            granted = min(block, per_second - (counted["n"] - block))  # what fits under the limit
            if granted <= 0:
                return False
            self._tokens[channel] = (second, granted - 1)  # this send takes one
            return True
        return False

    # --- reading --------------------------------------------------------------------------------------
    def list_for(self, recipient: str, unread_only: bool, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Newest first, from the recipient's inbox index; the page's notifications by _id."""
        keep = (lambda entry: not entry["read"]) if unread_only else None
        chosen, total = self.inbox.page(recipient, skip, limit, keep)
        if not total and not self.inbox.exists(recipient):
            self._backfill(recipient)
            chosen, total = self.inbox.page(recipient, skip, limit, keep)
        rows = [self.notifications.find_one({"_id": nid}) for nid, _ in chosen]
        return [row for row in rows if row is not None], total

    def mark_read(self, recipient: str, notification_id: str) -> bool:
        """Mark read (the first read time is kept); False when it is not this recipient's."""
        doc = self.notifications.find_one({"_id": notification_id}, {"recipient": 1, **_LISTING})
        if doc is None or doc["recipient"] != recipient:
            return False
        if doc.get("read_at") is None:
            unread = {"_id": notification_id, "read_at": None}
            self.notifications.update_one(unread, {"$set": {"read_at": datetime.now(UTC)}})
        self.inbox.set_fields(recipient, listed_at(doc), notification_id, {"read": True})
        return True

    def _backfill(self, recipient: str) -> None:
        """Index notifications stored before inboxes existed (once per person: one scan)."""
        for doc in self.notifications.find({"recipient": recipient}, _LISTING):
            self._index(recipient, doc)
        self.inbox.create(recipient)

    # --- preferences ----------------------------------------------------------------------------------
    def channels_chosen(self, user_id: str) -> list[str] | None:
        doc = self.preferences.find_one({"_id": user_id})
        return None if doc is None else list(doc["channels"])

    def channels_to_notify(self, user_id: str) -> list[str] | None:
        """The person's choice for a notification: as `channels_chosen`, or kept from a read at most
        CHOICES_KEPT seconds ago. A read that was on its way while this process wrote a new choice
        is used once but not kept."""
        return self._choices.get(user_id, lambda: self.channels_chosen(user_id))

    def choose_channels(self, user_id: str, channels: list[str], now: datetime) -> None:
        self.preferences.replace_one({"_id": user_id}, {"channels": channels, "updated_at": now}, upsert=True)
        self._choices.changed(user_id)  # after the write: a read that started before it is not kept

    def drop_channels(self, user_id: str, channels: list[str], now: datetime) -> None:
        """Switch these channels off, leaving the rest of the choice as stored: a choice saved since
        the caller read it (a `PUT` at the same moment) is not replaced by the caller's old copy."""
        self.preferences.update_one({"_id": user_id}, {"$pullAll": {"channels": channels}, "$set": {"updated_at": now}})
        self._choices.changed(user_id)

    def count(self) -> int:
        return self.notifications.estimated_document_count()


# What placing a notification in its recipient's inbox reads of it.
_LISTING = {"created_at": 1, "listed_at": 1, "read_at": 1}


def listed_at(doc: dict[str, Any]) -> datetime:
    """Where a notification is listed in the inbox (its month, its place): when its event happened;
    for one stored before `listed_at` existed, when it was made."""
    return doc.get("listed_at") or doc["created_at"]
