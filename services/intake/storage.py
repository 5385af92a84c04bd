"""Intake's store: cases (with their pending events) and per-department daily counters."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database

from contracts.envelope import Envelope
from services.common.outbox import OutboxCollection, outbox_fields


class IntakeStore:
    def __init__(self, db: Database) -> None:
        self.cases = db["cases"]
        self.counters = db["counters"]
        self.outbox = OutboxCollection(self.cases)

    def ensure_indexes(self) -> None:
        self.cases.create_index([("applicant.user_id", ASCENDING), ("submitted_at", DESCENDING)])
        self.cases.create_index([("department_code", ASCENDING), ("status", ASCENDING)])
        self.outbox.ensure_indexes()

    def next_sequence(self, key: str) -> int:
        counter = self.counters.find_one_and_update(
            {"_id": key}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(counter["value"])

    def insert_case(self, doc: dict[str, Any], events: list[Envelope]) -> None:
        self.cases.insert_one({**doc, **outbox_fields(events)})

    def get(self, case_no: str) -> dict[str, Any] | None:
        return self.cases.find_one({"_id": case_no}, {"outbox": 0, "outbox_ids": 0, "outbox_at": 0})

    def list_for_applicant(
        self, user_id: str, status: str | None, skip: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        filters: dict[str, Any] = {"applicant.user_id": user_id}
        if status:
            filters["status"] = status
        total = self.cases.count_documents(filters)
        rows = list(self.cases.find(filters).sort("submitted_at", DESCENDING).skip(skip).limit(limit))
        return rows, total

    def apply_event(
        self,
        case_no: str,
        event_id: str,
        allowed_from: list[str],
        set_fields: dict[str, Any],
        timeline_entry: dict[str, Any] | None = None,
    ) -> bool:
        """Apply one event's change once: the event id is recorded in the same atomic update."""
        push: dict[str, Any] = {"applied_events": event_id}
        if timeline_entry is not None:
            push["timeline"] = timeline_entry
        result = self.cases.update_one(
            {"_id": case_no, "applied_events": {"$ne": event_id}, "status": {"$in": allowed_from}},
            {"$set": set_fields, "$push": push},
        )
        return result.modified_count == 1
