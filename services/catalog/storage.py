"""Catalog store: immutable published versions, a current-summary row per item, departments."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from contracts.envelope import Envelope
from services.common.errors import Conflict
from services.common.outbox import OutboxCollection, outbox_fields

_SUMMARY_FIELDS = ("item_code", "name", "department_code", "item_type", "handling_mode", "promised_days", "version")


class CatalogStore:
    def __init__(self, db: Database) -> None:
        self.versions = db["item_versions"]  # one immutable document per published version
        self.current = db["items_current"]  # the latest published version's summary, for listing
        self.departments = db["departments"]
        self.outbox = OutboxCollection(self.versions)

    def ensure_indexes(self) -> None:
        self.versions.create_index([("item_code", ASCENDING), ("version", DESCENDING)])
        self.current.create_index([("department_code", ASCENDING)])
        self.outbox.ensure_indexes()

    def upsert_department(self, department: dict[str, Any]) -> None:
        self.departments.update_one({"_id": department["code"]}, {"$set": department}, upsert=True)

    def list_departments(self) -> list[dict[str, Any]]:
        return list(self.departments.find({}, {"_id": 0}).sort("code", ASCENDING))

    def latest_version(self, item_code: str) -> dict[str, Any] | None:
        return self.versions.find_one({"item_code": item_code}, sort=[("version", DESCENDING)])

    def get_version(self, item_code: str, version: int) -> dict[str, Any] | None:
        return self.versions.find_one({"_id": f"{item_code}@{version}"})

    def insert_version(self, guide: dict[str, Any], version: int, event: Envelope) -> None:
        """Store a published version with its event; a concurrent publish of the same version conflicts."""
        doc = {**guide, "_id": f"{guide['item_code']}@{version}", "version": version, "published_at": datetime.now(UTC)}
        try:
            self.versions.insert_one({**doc, **outbox_fields([event])})
        except DuplicateKeyError:
            raise Conflict(f"version {version} of {guide['item_code']} was published concurrently") from None
        self._advance_summary({k: doc[k] for k in _SUMMARY_FIELDS})

    def _advance_summary(self, summary: dict[str, Any]) -> None:
        """Point the listing row at this version unless a newer one is already there."""
        code, version = summary["item_code"], summary["version"]
        if self.current.update_one({"_id": code, "version": {"$lt": version}}, {"$set": summary}).matched_count:
            return
        with contextlib.suppress(DuplicateKeyError):  # the row exists with this or a newer version
            self.current.insert_one({"_id": code, **summary})

    def search(self, query: dict[str, Any], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        filters: dict[str, Any] = {}
        for field in ("department_code", "item_type", "handling_mode"):
            if query.get(field):
                filters[field] = query[field]
        if query.get("q"):
            filters["name"] = {"$regex": re.escape(query["q"])}
        total = self.current.count_documents(filters)
        rows = list(self.current.find(filters, {"_id": 0, "version": 0}).sort("_id", ASCENDING).skip(skip).limit(limit))
        return rows, total

    def count_items(self) -> int:
        return self.current.count_documents({})
