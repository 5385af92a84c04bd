"""Notification service entrypoints: case events become notifications (inbox, SMS, email), and a
timer delivers the outbound ones with retries, backoff and a per-channel rate limit."""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from eventlet.greenpool import GreenPool
from nameko.timer import timer
from prometheus_client import Counter

from contracts.common import Page, PageQuery, Principal
from contracts.envelope import Envelope
from contracts.events import (
    CaseAccepted,
    CaseApproved,
    CaseDeadlineWarning,
    CaseOverdue,
    CaseRejected,
    CaseResubmitted,
    CaseSubmitted,
    CaseSupplementRequested,
    CaseWithdrawn,
    CertificateIssued,
)
from contracts.notifications import Contact, NotificationPreferences, NotificationView
from services.common.consuming import consumes
from services.common.errors import EXPECTED_ERRORS, DomainError, NotFound, ValidationFailed, validated
from services.common.metrics import Metrics
from services.common.mongo import Storage
from services.common.rpc import ServiceRpc, call, rpc
from services.common.telemetry import Tracing, annotate, continued
from services.notification import deliveries, messages
from services.notification.channels import Outbound, OutboundChannels
from services.notification.contacts import ContactCache, Contacts
from services.notification.deliveries import Outcome, Step
from services.notification.storage import ORPHAN_AFTER, NotificationStore

log = logging.getLogger(__name__)

DELIVERIES = Counter("yiwang_deliveries", "Outbound deliveries reaching a status", ["channel", "status"])

# A claimed delivery is someone's for this long; a process that dies mid-send frees it after.
LEASE = timedelta(seconds=60)


class NotificationService:
    name = "notification"

    tracing = Tracing()
    metrics = Metrics()
    store: NotificationStore = Storage(NotificationStore)
    identity = ServiceRpc("identity")
    outbound: OutboundChannels = Outbound()
    contacts: ContactCache = Contacts()

    # --- case events, to the applicant ---------------------------------------------------------------
    @consumes("intake", CaseSubmitted)
    def on_case_submitted(self, envelope: Envelope, payload: CaseSubmitted) -> None:
        # The applicant's profile (for approval's rules) is no business of the message templates.
        context = {
            **payload.model_dump(exclude={"applicant"}),
            "submitted_at": messages.local_time(payload.submitted_at),
        }
        self._notify(envelope, [payload.applicant_id], "applicant", payload.case_no, context)

    # Decisions as intake announces them (automatic ones included): only what the case took, so a
    # decision that came after a withdrawal is never told.
    @consumes("intake", CaseApproved)
    def on_case_approved(self, envelope: Envelope, payload: CaseApproved) -> None:
        self._notify_decision(envelope, payload)

    @consumes("intake", CaseRejected)
    def on_case_rejected(self, envelope: Envelope, payload: CaseRejected) -> None:
        self._notify_decision(envelope, payload)

    @consumes("intake", CaseAccepted)
    def on_case_accepted(self, envelope: Envelope, payload: CaseAccepted) -> None:
        self._notify_transition(envelope, payload)

    @consumes("intake", CaseSupplementRequested)
    def on_supplement_requested(self, envelope: Envelope, payload: CaseSupplementRequested) -> None:
        self._notify_transition(envelope, payload)

    @consumes("intake", CaseResubmitted)
    def on_case_resubmitted(self, envelope: Envelope, payload: CaseResubmitted) -> None:
        self._notify_transition(envelope, payload)

    @consumes("intake", CaseWithdrawn)
    def on_case_withdrawn(self, envelope: Envelope, payload: CaseWithdrawn) -> None:
        self._notify_transition(envelope, payload)

    @consumes("identity", CertificateIssued)
    def on_certificate_issued(self, envelope: Envelope, payload: CertificateIssued) -> None:
        self._notify(envelope, [payload.user_id], "applicant", payload.case_no, payload.model_dump())

    # --- deadline events, to the department's reviewers ----------------------------------------------
    @consumes("intake", CaseDeadlineWarning)
    def on_deadline_warning(self, envelope: Envelope, payload: CaseDeadlineWarning) -> None:
        self._notify_reviewers(envelope, payload)

    @consumes("intake", CaseOverdue)
    def on_overdue(self, envelope: Envelope, payload: CaseOverdue) -> None:
        self._notify_reviewers(envelope, payload)

    # --- the inbox and preferences -------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_notifications(self, principal: dict[str, Any], unread: bool, page: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        paging = validated(PageQuery, page)
        rows, total = self.store.list_for(who.user_id, unread, (paging.page - 1) * paging.page_size, paging.page_size)
        items = [NotificationView.model_validate(messages.view(row)) for row in rows]
        return Page[NotificationView](
            items=items, total=total, page=paging.page, page_size=paging.page_size
        ).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def mark_read(self, principal: dict[str, Any], notification_id: str) -> None:
        who = validated(Principal, principal)
        if not self.store.mark_read(who.user_id, notification_id):
            raise NotFound("no such notification")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_preferences(self, principal: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        chosen = self.store.channels_chosen(who.user_id)
        channels = deliveries.channels_for(_audience(who), chosen)
        return NotificationPreferences(channels=channels).model_dump(mode="json")  # type: ignore[arg-type]

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_preferences(self, principal: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        wanted = validated(NotificationPreferences, payload)
        contact = Contact.model_validate(call(self.identity.contact, who.user_id))
        problems = [
            {"field": f"channels.{n}", "issue": why}
            for n, channel in enumerate(wanted.channels)
            if (why := deliveries.unreachable(channel, contact))
        ]
        if problems:
            raise ValidationFailed("a chosen channel cannot reach this account", problems)
        self.store.choose_channels(who.user_id, list(wanted.channels), datetime.now(UTC))
        return wanted.model_dump(mode="json")

    @rpc
    def ping(self) -> str:
        self.store.count()
        return "pong"

    # --- delivering -----------------------------------------------------------------------------------
    @rpc
    @timer(interval=1)
    def deliver_due(self) -> int:
        """Send what is due, oldest first, several at a time. Safe with several processes: each
        entry is claimed first. Returns how many were attempted."""
        now = datetime.now(UTC)
        # One at a time, a process sent about 16 SMS a second under load (each waits for identity,
        # the provider and the store), fewer than the cases produced. A person's own messages
        # still go in order ("received" before "approved"), so the unit of concurrency is the
        # recipient. Each keeps the timer's trace context (greenthreads start without one).
        by_recipient: dict[str, list[dict[str, Any]]] = {}
        for entry in self.store.due(now, limit=100):
            by_recipient.setdefault(entry.get("recipient") or entry["_id"], []).append(entry)
        contexts = [contextvars.copy_context() for _ in by_recipient]
        pool = GreenPool(self.outbound.concurrency)
        return sum(
            pool.imap(
                lambda context, entries: context.run(self._deliver, entries, now), contexts, by_recipient.values()
            )
        )

    def _deliver(self, entries: list[dict[str, Any]], now: datetime) -> int:
        """One recipient's due deliveries, in order; how many were attempted. A failure is logged
        and leaves the entry claimed: it is tried again when its lease ends."""
        attempted = 0
        for entry in entries:
            try:
                if self.store.claim(entry["_id"], now, LEASE):
                    self._attempt(entry, now)
                    attempted += 1
            except Exception:
                log.exception("delivery attempt failed", extra={"entry_id": entry["_id"]})
        return attempted

    def _attempt(self, entry: dict[str, Any], now: datetime) -> None:
        channel, notification_id = entry["channel"], entry["notification_id"]
        # After a send, its entry holds what asking for the receipt needs: no read of the notification.
        # (An entry without it, while its notification says `sent`, takes the longer way below.)
        sent: dict[str, Any] | None = entry.get("sent")
        doc = None if sent else self.store.get(notification_id)
        if sent is None and doc is None:  # queued, but the notification itself was never stored (yet)
            created = entry["created_at"].replace(tzinfo=entry["created_at"].tzinfo or UTC)
            if now - created > ORPHAN_AFTER:
                self.store.finish(entry["_id"])
            else:
                self.store.reschedule(entry["_id"], now + timedelta(seconds=5))
            return
        about: dict[str, Any] = sent or doc or {}
        with continued(about.get("traceparent"), f"notification.deliver {channel}"):
            annotate(case_no=about.get("case_no"), event_id=about["event_id"], channel=channel)
            if sent:
                step: Step | None = self._receipt_step(sent, now)
            else:
                step = self._next_step(about, channel, entry, now)
            if step is None:
                return
            annotate(delivery_status=step.changes.get("status"))
        self.store.update_channel(notification_id, channel, step.changes)
        if step.changes.get("status") in ("sent", "delivered", "failed"):
            DELIVERIES.labels(channel, step.changes["status"]).inc()
        if step.next_at is None:
            self.store.finish(entry["_id"])
        elif doc is not None and step.changes.get("status") == "sent":
            self.store.reschedule(entry["_id"], step.next_at, sent=_receipt_context(doc, step.changes))
        else:
            self.store.reschedule(entry["_id"], step.next_at)
        if step.changes.get("status") == "failed":
            log.warning("delivery failed", extra={"notification_id": notification_id, "channel": channel})

    def _receipt_step(self, sent: dict[str, Any], now: datetime) -> Step:
        outcome = self.outbound.sms.receipt(sent["reference"])
        return deliveries.after_receipt(sent, outcome, now, self.outbound.policy)

    def _next_step(self, doc: dict[str, Any], channel: str, entry: dict[str, Any], now: datetime) -> Step | None:
        """Send (or ask for a receipt) and say what follows; None when the rate limit says wait."""
        state, policy = doc["channels"][channel], self.outbound.policy
        if state["status"] == "sent":
            return self._receipt_step(state, now)
        if state["status"] == "pending":
            # The second the send happens in (a timer run may cross into the next one).
            if not self.store.take_rate_token(channel, datetime.now(UTC), self.outbound.rate_limits[channel]):
                self.store.reschedule(entry["_id"], now + timedelta(seconds=1))  # over the limit: no attempt
                return None
            return deliveries.after_send(state, self._send(doc, channel, entry["_id"]), now, policy)
        return Step()  # delivered or failed already (a duplicate entry)

    def _send(self, doc: dict[str, Any], channel: str, reference: str) -> Outcome:
        try:
            contact = self.contacts.get(doc["recipient"], lambda: call(self.identity.contact, doc["recipient"]))
        except NotFound:
            return Outcome("permanent", error="the account no longer exists")
        except DomainError as exc:  # identity unavailable: try again later
            return Outcome("temporary", error=f"contact lookup failed: {exc.code}")
        if why := deliveries.unreachable(channel, contact):
            return Outcome("permanent", error=why)
        content = doc["content"][channel]
        if channel == "sms":
            return self.outbound.sms.send(contact.phone or "", content["body"], reference)
        return self.outbound.email.send(contact.email or "", content["title"], content["body"], reference)

    # --- building notifications -------------------------------------------------------------------------
    def _notify_decision(self, envelope: Envelope, payload: CaseApproved | CaseRejected) -> None:
        decision = payload.decision
        context = {
            **payload.model_dump(),
            "decided_at": messages.local_time(decision.decided_at),
            "decided_by": decision.decided_by,
            "reason": decision.reason or "",
        }
        self._notify(envelope, [payload.applicant_id], "applicant", payload.case_no, context)

    def _notify_transition(
        self, envelope: Envelope, payload: CaseAccepted | CaseSupplementRequested | CaseResubmitted | CaseWithdrawn
    ) -> None:
        context = {"deadline": None, **payload.model_dump(), "at": messages.local_time(payload.at)}
        if context["deadline"]:
            context["deadline"] = messages.local_day(context["deadline"])
        self._notify(envelope, [payload.applicant_id], "applicant", payload.case_no, context)

    def _notify_reviewers(self, envelope: Envelope, payload: CaseDeadlineWarning | CaseOverdue) -> None:
        reviewers = call(self.identity.reviewers_of, payload.department_code)
        if not reviewers:
            log.warning("no reviewer to tell", extra={"department_code": payload.department_code})
        context = {**payload.model_dump(), "deadline": messages.local_day(payload.deadline)}
        self._notify(envelope, reviewers, "reviewer", payload.case_no, context)

    def _notify(
        self, envelope: Envelope, recipients: list[str], audience: str, case_no: str, context: dict[str, Any]
    ) -> None:
        annotate(case_no=case_no, event_id=envelope.event_id)
        now = datetime.now(UTC)
        for recipient in recipients:
            channels = deliveries.channels_for(audience, self.store.channels_chosen(recipient))
            doc = messages.notification(envelope, recipient, case_no, context, channels, now)
            self.store.create(doc, [c for c in channels if c != "inbox"], now)


def _receipt_context(doc: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """What the receipt step needs, kept in the delivery's queue entry: the provider's message id,
    when it was sent, and the notification's trace and identifiers."""
    return {
        "reference": sent["reference"],
        "sent_at": sent["sent_at"],
        **{key: doc.get(key) for key in ("traceparent", "case_no", "event_id")},
    }


def _audience(who: Principal) -> str:
    # Staff get what reviewers get: their accounts have no phone or email.
    return "applicant" if "applicant" in who.roles else "reviewer"
