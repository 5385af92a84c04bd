"""Intake service entrypoints: submit and read cases, record decisions from approval."""

from __future__ import annotations

from typing import Any

from nameko.rpc import ServiceRpc, rpc
from nameko.timer import timer

from contracts.cases import CaseSummary, SubmitCase
from contracts.catalog import PublishedItem
from contracts.common import Page, PageQuery, Principal
from contracts.envelope import Envelope, new_event
from contracts.events import CaseApproved, CaseRejected, CaseReviewRequired, CertificateIssued
from contracts.identity import CertificateCheck
from services.common.consuming import consumes
from services.common.errors import EXPECTED_ERRORS, NotFound, validated
from services.common.mongo import Storage
from services.common.publishing import EventPublisher
from services.common.rpc import call
from services.common.telemetry import Tracing, annotate
from services.intake import cases
from services.intake.storage import IntakeStore

UNDECIDED = ["submitted", "accepted", "resubmitted"]


class IntakeService:
    name = "intake"

    tracing = Tracing()
    store: IntakeStore = Storage(IntakeStore)
    events = EventPublisher()
    catalog = ServiceRpc("catalog")
    identity = ServiceRpc("identity")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def submit_case(self, principal: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        request = validated(SubmitCase, payload)
        item = PublishedItem.model_validate(call(self.catalog.get_item, request.item_code))
        annotate(item_code=item.item_code, department_code=item.department_code)
        offered = [m.certificate_id for m in request.materials if m.certificate_id]
        checks = call(self.identity.check_certificates, who.user_id, offered) if offered else []
        cases.check_submission(item, who, request, {c["certificate_id"]: CertificateCheck(**c) for c in checks})
        applicant = call(self.identity.get_user, who.user_id)

        now = cases.now_utc()
        today = cases.local_date(now)
        sequence = self.store.next_sequence(f"{item.department_code}-{today:%Y%m%d}")
        case_no = cases.case_number(item.department_code, today, sequence)
        doc, payload_event = cases.new_case(case_no, item, who, applicant["name"], request, now)
        event = new_event(payload_event, producer=self.name)
        self.store.insert_case(doc, [event])
        annotate(case_no=case_no, event_id=event.event_id)
        self.events.publish(self.store.outbox, case_no, [event])
        return cases.created(doc).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_case(self, principal: dict[str, Any], case_no: str) -> dict[str, Any]:
        doc = self.store.get(case_no)
        if doc is None:
            raise NotFound(f"no case {case_no}")
        annotate(case_no=case_no, item_code=doc["item_code"])
        return cases.view(doc, validated(Principal, principal)).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_cases(self, principal: dict[str, Any], status: str | None, page: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        paging = validated(PageQuery, page)
        rows, total = self.store.list_for_applicant(
            who.user_id, status, (paging.page - 1) * paging.page_size, paging.page_size
        )
        result = Page[CaseSummary](
            items=[cases.summary(r) for r in rows], total=total, page=paging.page, page_size=paging.page_size
        )
        return result.model_dump(mode="json")

    @rpc
    def ping(self) -> str:
        self.store.get("ping")
        return "pong"

    @consumes("approval", CaseApproved)
    def on_case_approved(self, envelope: Envelope, payload: CaseApproved) -> None:
        self._record_decision(envelope, payload, "approved")

    @consumes("approval", CaseRejected)
    def on_case_rejected(self, envelope: Envelope, payload: CaseRejected) -> None:
        self._record_decision(envelope, payload, "rejected")

    @consumes("approval", CaseReviewRequired)
    def on_review_required(self, envelope: Envelope, payload: CaseReviewRequired) -> None:
        annotate(case_no=payload.case_no, event_id=envelope.event_id)
        entry = {"status": "submitted", "at": envelope.occurred_at, "by": "auto", "comment": "转人工审核"}
        self.store.apply_event(
            payload.case_no,
            envelope.event_id,
            UNDECIDED,
            {"review_explanation": [r.model_dump(mode="json") for r in payload.explanation]},
            entry,
        )

    @consumes("identity", CertificateIssued)
    def on_certificate_issued(self, envelope: Envelope, issued: CertificateIssued) -> None:
        annotate(case_no=issued.case_no, event_id=envelope.event_id)
        # Events of two producers are not ordered: the certificate may come before the decision.
        self.store.apply_event(
            issued.case_no, envelope.event_id, [*UNDECIDED, "approved"], {"certificate_id": issued.certificate_id}
        )

    def _record_decision(self, envelope: Envelope, payload: CaseApproved | CaseRejected, status: str) -> None:
        annotate(case_no=payload.case_no, event_id=envelope.event_id, outcome=status)
        change = cases.decision_update(payload.decision, status)
        self.store.apply_event(payload.case_no, envelope.event_id, UNDECIDED, change["set"], change["timeline"])

    @timer(interval=2)
    def relay_outbox(self) -> None:
        self.events.relay(self.store.outbox)
