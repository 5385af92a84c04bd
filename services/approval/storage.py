"""Approval's store: one automatic decision per case, with its pending event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from contracts.envelope import Envelope
from services.common.outbox import OutboxCollection


class ApprovalStore:
    def __init__(self, db: Database) -> None:
        self.decisions = db["auto_decisions"]
        self.outbox = OutboxCollection(self.decisions)

    def ensure_indexes(self) -> None:
        self.outbox.ensure_indexes()

    def has_decided(self, case_no: str) -> bool:
        # find_one by _id, not count_documents: FerretDB answers only plain `_id` lookups from an index.
        return self.decisions.find_one({"_id": case_no}, {"_id": 1}) is not None

    def record(self, case_no: str, source_event_id: str, outcome: dict[str, Any], event: Envelope) -> bool:
        """Store the decision and its event once per case; False if it was already there."""
        doc = {
            "_id": case_no,
            "source_event_id": source_event_id,
            "outcome": outcome,
            "decided_at": datetime.now(UTC),
            **self.outbox.fields(case_no, [event]),
        }
        try:
            self.decisions.insert_one(doc)
        except DuplicateKeyError:
            self.outbox.forget([event])
            return False
        return True
