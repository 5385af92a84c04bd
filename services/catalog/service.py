"""Catalog service entrypoints: published guides, search, departments, publishing."""

from __future__ import annotations

from typing import Any

from nameko.rpc import rpc
from nameko.timer import timer

from contracts.catalog import Department, ItemQuery, ItemSummary, PublishedItem
from contracts.common import Page
from contracts.envelope import new_event
from contracts.events import ItemPublished
from services.catalog import guides
from services.catalog.seed_data import DEPARTMENTS, seed_items
from services.catalog.storage import CatalogStore
from services.common.errors import EXPECTED_ERRORS, NotFound, validated
from services.common.mongo import Storage
from services.common.publishing import EventPublisher
from services.common.telemetry import Tracing, annotate


class CatalogService:
    name = "catalog"

    tracing = Tracing()
    store: CatalogStore = Storage(CatalogStore)
    events = EventPublisher()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_item(self, item_code: str, version: int | None = None) -> dict[str, Any]:
        """The published guide (latest, or the given version a case was submitted under)."""
        annotate(item_code=item_code)
        doc = self.store.get_version(item_code, version) if version else self.store.latest_version(item_code)
        if doc is None:
            raise NotFound(f"no published item {item_code}")
        return PublishedItem.model_validate(
            {k: v for k, v in doc.items() if k in PublishedItem.model_fields}
        ).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def search_items(self, query: dict[str, Any]) -> dict[str, Any]:
        q = validated(ItemQuery, query)
        rows, total = self.store.search(
            {"q": q.q, "department_code": q.department, "item_type": q.item_type, "handling_mode": q.handling_mode},
            skip=(q.page - 1) * q.page_size,
            limit=q.page_size,
        )
        page = Page[ItemSummary](
            items=[guides.summary(r) for r in rows], total=total, page=q.page, page_size=q.page_size
        )
        return page.model_dump(mode="json")

    @rpc
    def list_departments(self) -> list[dict[str, Any]]:
        return [Department.model_validate(d).model_dump(mode="json") for d in self.store.list_departments()]

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def publish_guide(self, guide: dict[str, Any]) -> dict[str, Any]:
        """Publish a guide as the item's next immutable version and announce it.

        (Not `publish`: nameko's RPC client object already has an attribute of that name.)
        """
        checked = guides.checked_guide(guide)
        annotate(item_code=checked.item_code)
        latest = self.store.latest_version(checked.item_code)
        version = (latest["version"] if latest else 0) + 1
        event = new_event(
            ItemPublished(item_code=checked.item_code, version=version, department_code=checked.department_code),
            producer=self.name,
        )
        self.store.insert_version(checked.model_dump(mode="json"), version, event)
        self.events.publish(self.store.outbox, f"{checked.item_code}@{version}", [event])
        return {"item_code": checked.item_code, "version": version}

    @rpc
    def ping(self) -> str:
        self.store.count_items()
        return "pong"

    @rpc
    @timer(interval=3600, eager=True)
    def seed(self) -> None:
        """First start: load the starter departments and items once."""
        for department in DEPARTMENTS:
            self.store.upsert_department(department)
        for guide in seed_items():
            if self.store.latest_version(guide["item_code"]) is None:
                self.publish_guide(guide)

    @timer(interval=2)
    def relay_outbox(self) -> None:
        self.events.relay(self.store.outbox)
