"""Notification store: one document per (event, recipient), a small queue of due deliveries,
people's channel preferences and per-channel rate counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.mongo import update_entry

# A queue entry without its notification this old is an orphan (the insert never happened).
ORPHAN_AFTER = timedelta(minutes=5)


class NotificationStore:
    def __init__(self, db: Database) -> None:
        self.notifications = db["notifications"]
        # `<notification id>:<channel>` -> next_at. Small (only unfinished deliveries), so the
        # delivery timer reads it instead of filtering every notification (a full scan on FerretDB).
        self.queue = db["delivery_queue"]
        self.preferences = db["preferences"]
        # Each person's inbox index: `<recipient>` -> {items: {notification_id: {at, read}}}. Listing
        # reads it by _id and then the page's notifications by _id; filtering `notifications` by
        # recipient would be a full scan on FerretDB.
        self.inboxes = db["inboxes"]
        self.rates = db["channel_rates"]

    def ensure_indexes(self) -> None:
        self.notifications.create_index([("recipient", ASCENDING), ("created_at", DESCENDING)])
        self.queue.create_index([("next_at", ASCENDING)])

    # --- creating -----------------------------------------------------------------------------------
    def create(self, doc: dict[str, Any], channels: list[str], now: datetime) -> bool:
        """Queue the outbound deliveries, then insert the notification; False when this event already
        notified this recipient (the id encodes both). Queue first: a crash in between leaves an
        orphan entry (dropped later), never a notification whose SMS nobody will send."""
        entries = [
            {
                "_id": f"{doc['_id']}:{channel}",
                "notification_id": doc["_id"],
                "channel": channel,
                "next_at": now,
                "created_at": now,
            }
            for channel in channels
        ]
        if entries:
            try:
                self.queue.insert_many(entries, ordered=False)
            except BulkWriteError as exc:  # a redelivered event: the entries are there already
                if any(error["code"] != 11000 for error in exc.details["writeErrors"]):
                    raise
        try:
            self.notifications.insert_one(doc)
        except DuplicateKeyError:
            created = False
        else:
            created = True
        # Also for a duplicate: a process that died between the two writes is repaired by redelivery.
        self._index(doc["recipient"], doc)
        return created

    def _index(self, recipient: str, doc: dict[str, Any]) -> None:
        key = f"items.{doc['_id']}"
        entry = {"at": doc["created_at"], "read": doc.get("read_at") is not None}
        update_entry(self.inboxes, recipient, {key: {"$exists": False}}, {"$set": {key: entry}}, {"items": {}})

    # --- delivering ---------------------------------------------------------------------------------
    def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        return list(self.queue.find({"next_at": {"$lte": now}}).sort("next_at", ASCENDING).limit(limit))

    def claim(self, entry_id: str, now: datetime, lease: timedelta) -> bool:
        """Take a due entry for `lease` (another process skips it meanwhile; a crash frees it after)."""
        taken = self.queue.find_one_and_update(
            {"_id": entry_id, "next_at": {"$lte": now}}, {"$set": {"next_at": now + lease}}
        )
        return taken is not None

    def reschedule(self, entry_id: str, at: datetime) -> None:
        self.queue.update_one({"_id": entry_id}, {"$set": {"next_at": at}})

    def finish(self, entry_id: str) -> None:
        self.queue.delete_one({"_id": entry_id})

    def get(self, notification_id: str) -> dict[str, Any] | None:
        return self.notifications.find_one({"_id": notification_id})

    def update_channel(self, notification_id: str, channel: str, changes: dict[str, Any]) -> None:
        if changes:
            fields = {f"channels.{channel}.{key}": value for key, value in changes.items()}
            self.notifications.update_one({"_id": notification_id}, {"$set": fields})

    def take_rate_token(self, channel: str, now: datetime, per_second: int) -> bool:
        """At most `per_second` sends per channel and second across all processes: one counter per
        second of the minute, reset when its second comes round again."""
        second = int(now.timestamp())
        slot = f"{channel}:{second % 60:02d}"
        self.rates.update_one({"_id": slot, "second": {"$ne": second}}, {"$set": {"second": second, "n": 0}})
        try:
            counted = self.rates.find_one_and_update(
                {"_id": slot, "second": second}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:
            return False  # the slot turned over under us: count this send in the next second
        return counted["n"] <= per_second

    # --- reading --------------------------------------------------------------------------------------
    def list_for(self, recipient: str, unread_only: bool, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Newest first, from the recipient's inbox index; the page's notifications by _id."""
        inbox = self.inboxes.find_one({"_id": recipient})
        if inbox is None:
            inbox = self._backfill(recipient)
        items = inbox.get("items") or {}
        chosen = [(entry["at"], nid) for nid, entry in items.items() if not (unread_only and entry["read"])]
        chosen.sort(reverse=True)
        rows = [self.notifications.find_one({"_id": nid}) for _, nid in chosen[skip : skip + limit]]
        return [row for row in rows if row is not None], len(chosen)

    def mark_read(self, recipient: str, notification_id: str) -> bool:
        """Mark read (the first read time is kept); False when it is not this recipient's."""
        mine = {"_id": notification_id, "recipient": recipient}
        if not self.notifications.update_one(
            {**mine, "read_at": None}, {"$set": {"read_at": datetime.now(UTC)}}
        ).matched_count:
            found = self.notifications.find_one({"_id": notification_id}, {"recipient": 1})
            if found is None or found["recipient"] != recipient:
                return False
        key = f"items.{notification_id}"
        self.inboxes.update_one({"_id": recipient, key: {"$exists": True}}, {"$set": {f"{key}.read": True}})
        return True

    def _backfill(self, recipient: str) -> dict[str, Any]:
        """Index notifications stored before inboxes existed (once per person: one scan)."""
        for doc in self.notifications.find({"recipient": recipient}, {"created_at": 1, "read_at": 1}):
            self._index(recipient, doc)
        self.inboxes.update_one({"_id": recipient}, {"$setOnInsert": {"items": {}}}, upsert=True)
        return self.inboxes.find_one({"_id": recipient}) or {}

    # --- preferences ----------------------------------------------------------------------------------
    def channels_chosen(self, user_id: str) -> list[str] | None:
        doc = self.preferences.find_one({"_id": user_id})
        return None if doc is None else list(doc["channels"])

    def choose_channels(self, user_id: str, channels: list[str], now: datetime) -> None:
        self.preferences.replace_one({"_id": user_id}, {"channels": channels, "updated_at": now}, upsert=True)

    def count(self) -> int:
        return self.notifications.estimated_document_count()
