"""Transactional outbox without transactions.

Pending events are written into the very document whose change they announce, in the same
single-document write, so a crash between "store" and "publish" loses nothing: a relay finds
documents with pending events and publishes them again. Layout inside such a document:
`outbox: {event_id: envelope}`, `outbox_ids: [event_id, ...]`, `outbox_at: datetime`.
(FerretDB cannot `$pull` by a sub-document condition, hence the id list.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection

from contracts.envelope import Envelope


def outbox_fields(events: Iterable[Envelope]) -> dict[str, Any]:
    """Fields to include in a newly inserted document."""
    events = list(events)
    return {
        "outbox": {e.event_id: e.model_dump(mode="json") for e in events},
        "outbox_ids": [e.event_id for e in events],
        "outbox_at": datetime.now(UTC),
    }


def outbox_update(events: Iterable[Envelope]) -> dict[str, Any]:
    """Update operators that queue events on an existing document (merge with your own $set)."""
    events = list(events)
    return {
        "$set": {
            **{f"outbox.{e.event_id}": e.model_dump(mode="json") for e in events},
            "outbox_at": datetime.now(UTC),
        },
        "$push": {"outbox_ids": {"$each": [e.event_id for e in events]}},
    }


class OutboxCollection:
    """Storage side of the outbox for one collection."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("outbox_ids", ASCENDING)])

    def pending(self, older_than: timedelta, limit: int = 100) -> list[tuple[Any, dict[str, Any]]]:
        """(document id, envelope) pairs queued longer ago than `older_than`, oldest documents first."""
        before = datetime.now(UTC) - older_than
        cursor = (
            self.collection.find({"outbox_ids.0": {"$exists": True}, "outbox_at": {"$lt": before}}, {"outbox": 1})
            .sort("outbox_at", ASCENDING)
            .limit(limit)
        )
        return [(doc["_id"], event) for doc in cursor for event in doc.get("outbox", {}).values()]

    def clear(self, doc_ids: list[Any]) -> None:
        """Mark every pending event of these documents published (after a bulk publish)."""
        self.collection.update_many({"_id": {"$in": doc_ids}}, {"$set": {"outbox": {}, "outbox_ids": []}})

    def mark_published(self, doc_id: Any, event_id: str) -> None:
        self.collection.update_one(
            {"_id": doc_id}, {"$pull": {"outbox_ids": event_id}, "$unset": {f"outbox.{event_id}": ""}}
        )
