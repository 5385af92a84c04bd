"""Catalog service entrypoints: published guides and their versions, drafts, withdrawals, search,
answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import eventlet.semaphore
from nameko.timer import timer

from contracts.catalog import (
    AnswerQuery,
    Department,
    Draft,
    ItemQuery,
    ItemSummary,
    ItemWithdrawal,
    ItemWithdrawalRequest,
    ServiceGuide,
    VersionSummary,
)
from contracts.common import Page, Principal
from contracts.envelope import new_event
from contracts.events import ItemPublished, ItemWithdrawn
from services.catalog import answers, guides, search
from services.catalog.seed_catalog import departments, seed_fingerprint, seed_guides
from services.catalog.storage import CatalogStore, version_id
from services.common.errors import (
    EXPECTED_ERRORS,
    Conflict,
    Forbidden,
    NotFound,
    Unavailable,
    ValidationFailed,
    validated,
)
from services.common.heap import FrozenStartupHeap
from services.common.metrics import Metrics
from services.common.mongo import Storage
from services.common.publishing import EventPublisher
from services.common.rpc import rpc
from services.common.telemetry import Tracing, annotate

SEED_BATCH = 100
SEED_RETRY_SECONDS = 15  # how soon a seed that failed part way is taken up again
_seeding = eventlet.semaphore.Semaphore()
# A withdrawn item is not found like an unknown one, but says so in a field clients can read.
WITHDRAWN_DETAILS = [{"field": "item_code", "issue": "withdrawn"}]


class CatalogService:
    name = "catalog"

    tracing = Tracing()
    metrics = Metrics()
    startup_heap = FrozenStartupHeap()
    store: CatalogStore = Storage(CatalogStore)
    events = EventPublisher()

    # --- published guides -------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_item(self, item_code: str, version: int | None = None) -> dict[str, Any]:
        """The published guide (latest, or the given version a case was submitted under)."""
        annotate(item_code=item_code)
        # `is None`, not falsiness: version 0 is a version asked for (there is none), not the latest.
        latest = version is None
        doc = self.store.latest_version(item_code) if latest else self.store.get_version(item_code, version)
        if doc is None:
            raise NotFound(f"no published item {item_code}" + ("" if latest else f" version {version}"))
        if latest and "withdrawn" in doc:  # its versions stay readable: cases were submitted under them
            raise NotFound(guides.withdrawn_message(item_code, doc["withdrawn"]), WITHDRAWN_DETAILS)
        return guides.published(doc).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_versions(self, item_code: str) -> dict[str, Any]:
        rows = self.store.list_versions(item_code)
        if not rows:
            raise NotFound(f"no published item {item_code}")
        return {
            "items": [
                VersionSummary.model_validate({k: r[k] for k in VersionSummary.model_fields}).model_dump(mode="json")
                for r in rows
            ]
        }

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def search_items(self, query: dict[str, Any]) -> dict[str, Any]:
        q = validated(ItemQuery, query, "query")
        filters = {
            field: value
            for field, value in (
                ("department_code", q.department),
                ("item_type", q.item_type),
                ("handling_mode", q.handling_mode),
            )
            if value
        }
        skip = (q.page - 1) * q.page_size
        tokens = search.query_tokens(q.q or "")
        if tokens:
            ranked = search.rank(q.q or "", self.store.candidates(tokens, filters))
            rows, total = [doc for _, doc in ranked[skip : skip + q.page_size]], len(ranked)
        elif q.q and q.q.strip():  # nothing to search by (税, 办理): names and keywords holding it
            found = search.containing(q.q, self.store.matching(filters))
            rows, total = found[skip : skip + q.page_size], len(found)
        else:
            rows, total = self.store.filtered(filters, skip, q.page_size)
        items = [guides.summary(r) for r in rows]
        return Page[ItemSummary](items=items, total=total, page=q.page, page_size=q.page_size).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def answer(self, query: dict[str, Any]) -> dict[str, Any]:
        q = validated(AnswerQuery, query, "query")
        found = answers.answer(q.q, self.store.candidates(search.query_tokens(q.q), {}), q.limit)
        return {"answers": [a.model_dump(mode="json") for a in found]}

    @rpc
    def list_departments(self) -> list[dict[str, Any]]:
        return [Department.model_validate(d).model_dump(mode="json") for d in self.store.list_departments()]

    # --- drafts and publishing (admins) ----------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_draft(
        self, principal: dict[str, Any], guide: dict[str, Any], request_key: str | None = None
    ) -> dict[str, Any]:
        """A new item's draft. `request_key`: the gateway's for this request, kept on the draft;
        the same request delivered again (its reply lost as the broker went away) answers the
        draft it made, not 409."""
        who = self._admin(principal)
        checked = self._checked(guide)
        if self.store.latest_version(checked.item_code) is not None:
            raise Conflict(f"{checked.item_code} is already published; edit its next version with PUT")
        try:
            self.store.create_draft(checked.model_dump(mode="json"), who.user_id, request_key)
        except Conflict:
            made = self.store.get_draft(checked.item_code)
            if request_key is None or made is None or made.get("request_key") != request_key:
                raise
        return self.get_draft(principal, checked.item_code)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_draft(self, principal: dict[str, Any], item_code: str, guide: dict[str, Any]) -> dict[str, Any]:
        who = self._admin(principal)
        checked = self._checked(guide)
        if checked.item_code != item_code:
            raise ValidationFailed(
                "the item code cannot change", [{"field": "item_code", "issue": f"must be {item_code}"}]
            )
        if self.store.get_draft(item_code) is None and self.store.latest_version(item_code) is None:
            raise NotFound(f"no item {item_code}; create it with POST /api/v1/catalog/items")
        self.store.save_draft(checked.model_dump(mode="json"), who.user_id)
        return self.get_draft(principal, item_code)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_draft(self, principal: dict[str, Any], item_code: str) -> dict[str, Any]:
        self._admin(principal)
        draft = self.store.get_draft(item_code)
        if draft is None:
            raise NotFound(f"no draft of {item_code}")
        return Draft.model_validate({k: draft[k] for k in Draft.model_fields if k in draft}).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def publish_draft(self, principal: dict[str, Any], item_code: str) -> dict[str, Any]:
        """The draft becomes the item's next immutable version, which applicants then see."""
        self._admin(principal)
        draft = self.store.get_draft(item_code)
        if draft is None:
            return self._published_already(item_code)
        guide = self._checked({k: v for k, v in draft.items() if k in ServiceGuide.model_fields})
        # The same number for a retry of this publish: one version, not two.
        published = self.publish_guide(guide.model_dump(mode="json"), self.store.draft_version(draft))
        self.store.mark_published(item_code, draft["updated_at"])
        return published

    def _published_already(self, item_code: str) -> dict[str, Any]:
        """A publish retried after it completed (its answer lost on the way) gets that answer
        again, while the version it made is still what applicants see; else there is nothing to
        publish."""
        version = self.store.published_draft(item_code)
        latest = self.store.latest_version(item_code) if version is not None else None
        if latest is None or latest["version"] != version or "withdrawn" in latest:
            raise NotFound(f"no draft of {item_code} to publish")
        return guides.published(latest).model_dump(mode="json")

    def publish_guide(self, guide: dict[str, Any], version: int | None = None) -> dict[str, Any]:
        """Publish a guide as the item's immutable version `version` (its next one by default) and
        announce it. Not an RPC method: it asks for no principal, so anything on the broker could
        have published; admins publish a draft (`publish_draft`)."""
        checked = self._checked(guide)
        annotate(item_code=checked.item_code)
        version = version or self.store.next_version(checked.item_code)
        event = new_event(
            ItemPublished(item_code=checked.item_code, version=version, department_code=checked.department_code),
            producer=self.name,
        )
        doc, inserted = self.store.insert_version(checked.model_dump(mode="json"), version, event)
        if inserted:  # else a retry: the first try's event announces this version (or its relay will)
            self.events.publish(self.store.outbox, doc["_id"], [event])
        return guides.published(doc).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def withdraw_item(
        self, principal: dict[str, Any], item_code: str, request: dict[str, Any], request_key: str | None = None
    ) -> dict[str, Any]:
        """The item takes no more applications: gone from search, its guide unpublished. Running
        cases go on under their versions; publishing a new version brings the item back.
        `request_key`: as for `create_draft` (the same request again answers its withdrawal)."""
        who = self._admin(principal)
        reason = validated(ItemWithdrawalRequest, request).reason
        annotate(item_code=item_code)
        latest = self.store.latest_version(item_code)
        if latest is None:
            raise NotFound(f"no published item {item_code}")
        if "withdrawn" in latest:
            if request_key is not None and latest["withdrawn"].get("request_key") == request_key:
                # This very request again: the withdrawal it made, as its first answer gave it.
                made = {k: v for k, v in latest["withdrawn"].items() if k in ItemWithdrawal.model_fields}
                return ItemWithdrawal.model_validate({**made, "item_code": item_code}).model_dump(mode="json")
            raise Conflict(guides.withdrawn_message(item_code, latest["withdrawn"]))
        withdrawal = ItemWithdrawal(
            item_code=item_code,
            version=latest["version"],
            reason=reason,
            withdrawn_at=datetime.now(UTC),
            withdrawn_by=who.user_id,
        )
        event = new_event(
            ItemWithdrawn(item_code=item_code, version=latest["version"], department_code=latest["department_code"]),
            producer=self.name,
        )
        kept = (
            withdrawal.model_dump() if request_key is None else {**withdrawal.model_dump(), "request_key": request_key}
        )
        if not self.store.withdraw(kept, event):
            raise Conflict(f"{item_code} was published or withdrawn meanwhile; read it again")
        self._withdrawal_listed(item_code, event)
        self.events.publish(self.store.current_outbox, item_code, [event])
        return withdrawal.model_dump(mode="json")

    # --- seeding and plumbing ---------------------------------------------------------------------
    @rpc
    @timer(interval=3600, eager=True)
    def seed(self) -> int:
        """Load the seed catalog once per seed version; items that already exist are left alone."""
        with _seeding:  # one seed at a time in a process: the start's and `seed_until_done`'s
            return self._seed()

    @timer(interval=SEED_RETRY_SECONDS)
    def seed_until_done(self) -> None:
        """A first seed that failed part way (a broker blip, a store error) is taken up again
        within moments: the catalog answers 'unavailable' until it is in, and the hourly round
        would leave it so for up to an hour."""
        if not _seeding.locked():  # else a seed is running in this process already
            self.seed()

    def _seed(self) -> int:
        fingerprint = seed_fingerprint()
        if self.store.seeded(fingerprint):
            return 0
        for department in departments():
            self.store.upsert_department(department)
        existing = self.store.existing_codes()
        fresh = [g for g in seed_guides() if g["item_code"] not in existing]
        for start in range(0, len(fresh), SEED_BATCH):
            batch = fresh[start : start + SEED_BATCH]
            events = [
                new_event(
                    ItemPublished(item_code=g["item_code"], version=1, department_code=g["department_code"]), self.name
                )
                for g in batch
            ]
            self.store.insert_versions(batch, events)
            pending = [(version_id(g["item_code"], 1), e) for g, e in zip(batch, events, strict=True)]
            self.events.publish_all(self.store.outbox, pending)
        self.store.repair_current()
        self.store.mark_seeded(fingerprint)
        return len(fresh)

    @rpc
    def ping(self) -> str:
        # Ready once the starter catalog is in (a first start seeds it): `make run`, `make up
        # --wait` and readiness probes wait for it, so the first request finds the catalog.
        if not self.store.seeded(seed_fingerprint()):
            raise Unavailable("the starter catalog is still being loaded")
        return "pong"

    @timer(interval=2)
    def relay_outbox(self) -> None:
        # A version whose publisher died before moving the current row is served before it is announced.
        self.events.relay(self.store.outbox, before_publish=self._version_current)
        # A withdrawal whose writer died before telling the listings does so before its event goes.
        self.events.relay(self.store.current_outbox, before_publish=self._withdrawal_listed)

    def _version_current(self, version_doc_id: str, event: dict[str, Any]) -> None:
        self.store.advance_current_to(event["payload"]["item_code"], event["payload"]["version"])
        # Always: a publisher that moved the row and died before telling the listings left every
        # process's cached listing without this version, and the move above then changes nothing.
        self.store.listing_changed()

    def _withdrawal_listed(self, item_code: str, event: Any) -> None:
        self.store.listing_changed()

    def _checked(self, guide: dict[str, Any]) -> ServiceGuide:
        checked = guides.checked_guide(guide)
        if not self.store.department_exists(checked.department_code):
            raise ValidationFailed(
                "unknown department",
                [{"field": "department_code", "issue": f"no department {checked.department_code}"}],
            )
        return checked

    def _admin(self, principal: dict[str, Any]) -> Principal:
        who = validated(Principal, principal)
        if "admin" not in who.roles:
            raise Forbidden("this needs the role admin")
        return who
