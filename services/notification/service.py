"""Notification service entrypoints: turn case events into the applicant's inbox messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nameko.rpc import rpc

from contracts.common import Page, PageQuery, Principal
from contracts.envelope import Envelope
from contracts.events import (
    CaseAccepted,
    CaseApproved,
    CaseRejected,
    CaseSubmitted,
    CaseSupplementRequested,
    CaseWithdrawn,
)
from contracts.notifications import NotificationView
from services.common.consuming import consumes
from services.common.errors import EXPECTED_ERRORS, NotFound, validated
from services.common.mongo import Storage
from services.common.telemetry import Tracing, annotate
from services.notification import messages
from services.notification.storage import NotificationStore


class NotificationService:
    name = "notification"

    tracing = Tracing()
    store: NotificationStore = Storage(NotificationStore)

    @consumes("intake", CaseSubmitted)
    def on_case_submitted(self, envelope: Envelope, payload: CaseSubmitted) -> None:
        context = {**payload.model_dump(), "submitted_at": messages.local_time(payload.submitted_at)}
        self._notify(envelope, payload.applicant_id, payload.case_no, context)

    @consumes("approval", CaseApproved)
    def on_case_approved(self, envelope: Envelope, payload: CaseApproved) -> None:
        self._notify_decision(envelope, payload)

    @consumes("approval", CaseRejected)
    def on_case_rejected(self, envelope: Envelope, payload: CaseRejected) -> None:
        self._notify_decision(envelope, payload)

    @consumes("intake", CaseApproved)
    def on_case_approved_by_reviewer(self, envelope: Envelope, payload: CaseApproved) -> None:
        self._notify_decision(envelope, payload)

    @consumes("intake", CaseRejected)
    def on_case_rejected_by_reviewer(self, envelope: Envelope, payload: CaseRejected) -> None:
        self._notify_decision(envelope, payload)

    @consumes("intake", CaseAccepted)
    def on_case_accepted(self, envelope: Envelope, payload: CaseAccepted) -> None:
        self._notify_transition(envelope, payload)

    @consumes("intake", CaseSupplementRequested)
    def on_supplement_requested(self, envelope: Envelope, payload: CaseSupplementRequested) -> None:
        self._notify_transition(envelope, payload)

    @consumes("intake", CaseWithdrawn)
    def on_case_withdrawn(self, envelope: Envelope, payload: CaseWithdrawn) -> None:
        self._notify_transition(envelope, payload)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_notifications(self, principal: dict[str, Any], unread: bool, page: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        paging = validated(PageQuery, page)
        rows, total = self.store.list_for(who.user_id, unread, (paging.page - 1) * paging.page_size, paging.page_size)
        items = [NotificationView.model_validate({k: r.get(k) for k in NotificationView.model_fields}) for r in rows]
        return Page[NotificationView](
            items=items, total=total, page=paging.page, page_size=paging.page_size
        ).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def mark_read(self, principal: dict[str, Any], notification_id: str) -> None:
        who = validated(Principal, principal)
        if not self.store.mark_read(who.user_id, notification_id):
            raise NotFound("no such notification")

    @rpc
    def ping(self) -> str:
        self.store.count()
        return "pong"

    def _notify_decision(self, envelope: Envelope, payload: CaseApproved | CaseRejected) -> None:
        decision = payload.decision
        context = {
            **payload.model_dump(),
            "decided_at": messages.local_time(decision.decided_at),
            "decided_by": decision.decided_by,
            "reason": decision.reason or "",
        }
        self._notify(envelope, payload.applicant_id, payload.case_no, context)

    def _notify_transition(
        self, envelope: Envelope, payload: CaseAccepted | CaseSupplementRequested | CaseWithdrawn
    ) -> None:
        context = {**payload.model_dump(), "at": messages.local_time(payload.at)}
        if context.get("deadline"):
            context["deadline"] = f"{context['deadline']:%Y年%m月%d日}"
        self._notify(envelope, payload.applicant_id, payload.case_no, context)

    def _notify(self, envelope: Envelope, recipient: str, case_no: str, context: dict[str, Any]) -> None:
        annotate(case_no=case_no, event_id=envelope.event_id)
        title, body = messages.render("inbox", envelope.type, context)
        notification_id = messages.notification_id(envelope.event_id, recipient)
        self.store.insert_once(
            {
                "_id": notification_id,
                "notification_id": notification_id,
                "event_id": envelope.event_id,
                "recipient": recipient,
                "case_no": case_no,
                "type": envelope.type,
                "title": title,
                "body": body,
                "created_at": datetime.now(UTC),
                "read_at": None,
                # Only the inbox in the skeleton; SMS and email deliveries come with the notification issue.
                "deliveries": [{"channel": "inbox", "status": "delivered"}],
            }
        )
