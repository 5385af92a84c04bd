"""Notification store: one document per (event, recipient)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError


class NotificationStore:
    def __init__(self, db: Database) -> None:
        self.notifications = db["notifications"]

    def ensure_indexes(self) -> None:
        self.notifications.create_index([("recipient", ASCENDING), ("created_at", DESCENDING)])

    def insert_once(self, doc: dict[str, Any]) -> bool:
        """Insert unless the same event already notified this recipient (the id encodes both)."""
        try:
            self.notifications.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    def list_for(self, recipient: str, unread_only: bool, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        filters: dict[str, Any] = {"recipient": recipient}
        if unread_only:
            filters["read_at"] = None
        total = self.notifications.count_documents(filters)
        rows = list(self.notifications.find(filters).sort("created_at", DESCENDING).skip(skip).limit(limit))
        return rows, total

    def mark_read(self, recipient: str, notification_id: str) -> bool:
        """Mark read (the first read time is kept); False when it is not this recipient's."""
        mine = {"_id": notification_id, "recipient": recipient}
        if self.notifications.update_one(
            {**mine, "read_at": None}, {"$set": {"read_at": datetime.now(UTC)}}
        ).matched_count:
            return True
        return self.notifications.count_documents(mine, limit=1) == 1

    def count(self) -> int:
        return self.notifications.estimated_document_count()
