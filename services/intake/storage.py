"""Intake's store: cases (with their pending events) and per-department daily counters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import Binary
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from contracts.envelope import Envelope
from services.common.outbox import OutboxCollection, outbox_fields, outbox_update
from services.intake.lifecycle import Change


class IntakeStore:
    def __init__(self, db: Database) -> None:
        self.cases = db["cases"]
        self.counters = db["counters"]
        self.documents = db["documents"]
        self.document_chunks = db["document_chunks"]
        self.outbox = OutboxCollection(self.cases)

    def ensure_indexes(self) -> None:
        self.cases.create_index([("applicant.user_id", ASCENDING), ("submitted_at", DESCENDING)])
        self.cases.create_index([("department_code", ASCENDING), ("status", ASCENDING)])
        self.cases.create_index(
            [("department_code", ASCENDING), ("awaiting_review", ASCENDING), ("deadline", ASCENDING)]
        )
        # Every case has a key ("none:<case_no>" without a header): the server has no partial indexes.
        self.cases.create_index([("idempotency_key", ASCENDING)], unique=True)
        self.outbox.ensure_indexes()
        self.document_chunks.create_index([("document_id", ASCENDING), ("n", ASCENDING)])

    def next_sequence(self, key: str) -> int:
        counter = self.counters.find_one_and_update(
            {"_id": key}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(counter["value"])

    def insert_case(self, doc: dict[str, Any], events: list[Envelope]) -> bool:
        """Insert; False when another case already holds the same idempotency key."""
        try:
            self.cases.insert_one({**doc, **outbox_fields(events)})
        except DuplicateKeyError:
            if self.by_idempotency_key(doc["idempotency_key"]) is None:
                raise  # not the idempotency index: a real conflict we do not expect
            return False
        return True

    # --- documents ----------------------------------------------------------------------------------
    def begin_document(self, document_id: str, owner: str, now: datetime) -> None:
        self.documents.insert_one({"_id": document_id, "owner": owner, "status": "uploading", "created_at": now})

    def document(self, document_id: str) -> dict[str, Any] | None:
        return self.documents.find_one({"_id": document_id})

    def add_chunk(self, document_id: str, n: int, data: bytes) -> None:
        # Keyed by position: a retried chunk replaces itself instead of duplicating.
        self.document_chunks.replace_one(
            {"_id": f"{document_id}:{n:06d}"}, {"document_id": document_id, "n": n, "data": Binary(data)}, upsert=True
        )

    def chunk_count(self, document_id: str) -> int:
        return self.document_chunks.count_documents({"document_id": document_id})

    def finish_document(self, document_id: str, fields: dict[str, Any]) -> bool:
        result = self.documents.update_one(
            {"_id": document_id, "status": "uploading"}, {"$set": {**fields, "status": "complete"}}
        )
        return result.modified_count == 1

    def drop_document(self, document_id: str) -> None:
        self.document_chunks.delete_many({"document_id": document_id})
        self.documents.delete_one({"_id": document_id})

    def owned_documents(self, owner: str, document_ids: list[str]) -> set[str]:
        """Which of these are complete documents of this owner."""
        found = self.documents.find({"_id": {"$in": document_ids}, "owner": owner, "status": "complete"}, {"_id": 1})
        return {d["_id"] for d in found}

    def by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        return self.cases.find_one({"idempotency_key": key}, {"outbox": 0})

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
            {"$set": set_fields, "$push": push, "$inc": {"version": 1}},
        )
        return result.modified_count == 1

    def transition(self, case_no: str, change: Change, event: Envelope) -> bool:
        """Apply a lifecycle change if the case is still in the status and version it was read in."""
        update = outbox_update([event])
        update["$set"].update(change.set_fields)
        update["$inc"] = {"version": 1}
        if change.timeline is not None:
            update["$push"]["timeline"] = change.timeline
        query = {"_id": case_no, "status": change.from_status, "version": change.version, **change.extra_filter}
        return self.cases.update_one(query, update).modified_count == 1

    def tasks(
        self, department_code: str, statuses: list[str], skip: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        filters = {"department_code": department_code, "awaiting_review": True, "status": {"$in": statuses}}
        total = self.cases.count_documents(filters)
        rows = list(
            self.cases.find(filters, {"outbox": 0, "timeline": 0, "form": 0})
            .sort([("deadline", ASCENDING), ("submitted_at", ASCENDING)])
            .skip(skip)
            .limit(limit)
        )
        return rows, total
