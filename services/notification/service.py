"""Notification service entrypoints: case events become notifications (inbox, SMS, email), and a
timer delivers the outbound ones with retries, backoff and a per-channel rate limit."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

import eventlet
from eventlet.greenpool import GreenPool
from nameko.events import BROADCAST, event_handler
from nameko.timer import timer
from prometheus_client import Counter

from contracts.common import Page, PageQuery, Principal
from contracts.envelope import Envelope, parse_event
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
    ContactChanged,
    PasswordChanged,
)
from contracts.notifications import (
    Contact,
    NotificationPreferences,
    NotificationView,
    SecurityNotice,
    VerificationText,
)
from services.common.consuming import consumes
from services.common.errors import EXPECTED_ERRORS, DomainError, NotFound, Unavailable, ValidationFailed, validated
from services.common.heap import FrozenStartupHeap
from services.common.metrics import Metrics
from services.common.mongo import Storage
from services.common.rpc import ServiceRpc, call, rpc
from services.common.telemetry import Tracing, annotate, continued
from services.notification import deliveries, messages
from services.notification.channels import Outbound, OutboundChannels
from services.notification.contacts import ContactCache, Contacts
from services.notification.deliveries import Outcome, Step
from services.notification.sending_now import SendingNow, SendNow
from services.notification.storage import ORPHAN_AFTER, NotificationStore

log = logging.getLogger(__name__)

DELIVERIES = Counter("yiwang_deliveries", "Outbound deliveries reaching a status", ["channel", "status"])
VERIFICATION_TEXTS = Counter("yiwang_verification_texts", "One-time code texts by the provider's answer", ["outcome"])

# A verification text over the SMS rate limit tries again this much later, until its deadline.
VERIFICATION_RATE_WAIT = timedelta(seconds=0.25)
# How long a security notice waits for the SMS rate limit (nobody waits for it; it must not hang).
NOTICE_RATE_PATIENCE = timedelta(seconds=3)
NOTICE_SEND_TIMEOUT = 4.0  # seconds

# A claimed delivery is someone's for this long; a process that dies mid-send frees it after.
LEASE = timedelta(seconds=60)
# What became of one entry's turn: sent or stepped on ("done"), not this process's or not now
# ("skipped"), held back by the rate limit ("deferred": the person's entries after it wait too).
Attempt = Literal["done", "skipped", "deferred"]
# Claims in a row that ended without an outcome (an attempt that raised, a process that died):
# past them the delivery is `failed`, not tried once a lease for ever while the API says `pending`.
MAX_SILENT_ATTEMPTS = 10
# A send takes at most about 25 s (identity 10, the SMS provider 5, SMTP 10): a handler's send starts
# only with this much of its claim left.
LEASE_LEFT_TO_SEND = timedelta(seconds=30)


class NotificationService:
    name = "notification"

    tracing = Tracing()
    metrics = Metrics()
    startup_heap = FrozenStartupHeap()
    store: NotificationStore = Storage(NotificationStore)
    identity = ServiceRpc("identity")
    outbound: OutboundChannels = Outbound()
    contacts: ContactCache = Contacts()
    sending_now: SendingNow = SendNow()

    # Every process hears of every change (a queue of its own): its kept contact of the person goes.
    @event_handler("identity", ContactChanged.event_type, handler_type=BROADCAST, reliable_delivery=False)
    def forget_kept_contact(self, body: dict[str, Any]) -> None:
        _, changed = parse_event(body, expected=ContactChanged)
        self.contacts.changed(changed.user_id)

    # Once per change (reliably): a channel that can no longer reach the person is switched off, as
    # choosing it would be refused, rather than failing every delivery from now on.
    @consumes("identity", ContactChanged)
    def on_contact_changed(self, envelope: Envelope, changed: ContactChanged) -> None:
        chosen = self.store.channels_chosen(changed.user_id)
        if not chosen:
            return
        contact = Contact.model_validate(call(self.identity.contact, changed.user_id))
        unreachable = [channel for channel in chosen if deliveries.unreachable(channel, contact)]
        if unreachable:
            self.store.drop_channels(changed.user_id, unreachable, datetime.now(UTC))

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

    @consumes("identity", PasswordChanged)
    def on_password_changed(self, envelope: Envelope, payload: PasswordChanged) -> None:
        # A security notice: a change the holder did not make must not go unnoticed.
        audience = "reviewer" if payload.account_type == "staff" else "applicant"
        context = {**payload.model_dump(), "changed_at": messages.local_time(payload.changed_at)}
        self._notify(envelope, [payload.user_id], audience, None, context)

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
            {"field": f"channels.{n}", "issue": why}  # where the caller put it (validation adds the inbox)
            for n, channel in enumerate(payload["channels"])
            if (why := deliveries.unreachable(channel, contact))
        ]
        if problems:
            raise ValidationFailed("a chosen channel cannot reach this account", problems)
        self.store.choose_channels(who.user_id, list(wanted.channels), datetime.now(UTC))
        return wanted.model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=("payload",))
    def send_verification_code(self, payload: dict[str, Any]) -> None:
        """Text a one-time code now (identity asks; the person waits for it): not stored, never
        retried later, within the SMS rate limit, and not at all after its deadline (identity has
        given up and voided the code). Unavailable when it does not go out."""
        text = validated(VerificationText, payload)
        body = messages.render_sms(f"verification.{text.purpose}", text.model_dump())
        # Past its deadline before it waits for a token too: a backlog of stale requests (after a
        # provider's stall) would take the tokens case texts need, and send nothing.
        self._refuse_past(text.not_after)
        self._take_sms_token(text.not_after)
        left = self._refuse_past(text.not_after)
        outcome = self.outbound.sms.send(text.phone, body, text.reference, timeout=left)
        VERIFICATION_TEXTS.labels(outcome.kind).inc()
        if outcome.kind == "permanent":
            raise ValidationFailed(
                "this phone cannot receive texts", [{"field": "phone", "issue": "refused by the SMS provider"}]
            )
        if outcome.kind == "temporary":
            log.warning("verification text %s not sent: %s", text.reference, outcome.error)
            raise Unavailable("the text could not be sent; try again in a moment")

    @staticmethod
    def _refuse_past(not_after: datetime) -> float:
        """Seconds left until the code's deadline; Unavailable once it has passed."""
        left = (not_after - datetime.now(UTC)).total_seconds()
        if left <= 0:
            raise Unavailable("the code's deadline passed before it could be sent")
        return left

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=("payload",))
    def send_security_notice(self, payload: dict[str, Any]) -> None:
        """Tell a number the account just left what happened (identity asks after a change of
        phone): the holder of the old number learns of a change they may not have made. Sent at
        once, within the SMS rate limit; Unavailable when it does not go out (identity logs it)."""
        notice = validated(SecurityNotice, payload)
        context = {**notice.model_dump(), "at": messages.local_time(notice.at)}
        body = messages.render_sms(f"notice.{notice.kind}", context)
        self._take_sms_token(datetime.now(UTC) + NOTICE_RATE_PATIENCE)
        # Within identity's wait (10 s): the rate limit's patience, then this.
        outcome = self.outbound.sms.send(notice.phone, body, notice.reference, timeout=NOTICE_SEND_TIMEOUT)
        if outcome.kind in ("temporary", "permanent"):
            raise Unavailable(f"the notice was not sent: {outcome.kind}")

    def _take_sms_token(self, not_after: datetime) -> None:
        """A token of the SMS rate limit, waiting for one until `not_after` (then Unavailable)."""
        while not self.store.take_rate_token("sms", datetime.now(UTC), self.outbound.rate_limits["sms"]):
            if datetime.now(UTC) + VERIFICATION_RATE_WAIT > not_after:
                raise Unavailable("the SMS channel is at its rate limit; try again in a moment")
            eventlet.sleep(VERIFICATION_RATE_WAIT.total_seconds())

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
        finished: list[str] = []  # receipts read: their entries go in one delete after the run
        attempt = partial(self._attempt, finished=finished)
        attempted = sum(
            pool.imap(
                lambda context, entries: context.run(self._in_order, entries, attempt), contexts, by_recipient.values()
            )
        )
        # One delete for them all (one per SMS before). Until then they stay due: another process
        # may ask for a receipt again, which is harmless.
        self.store.finish_all(finished)
        return attempted

    def _in_order(
        self,
        entries: list[dict[str, Any]],
        attempt: Callable[[dict[str, Any]], Attempt],
        leave_the_rest: Callable[[dict[str, Any], list[dict[str, Any]]], None] = lambda held, rest: None,
    ) -> int:
        """One recipient's deliveries, in order; how many were attempted. A failure is logged and
        leaves a send claimed: it is tried again when its lease ends. A send the rate limit held
        back holds back the ones after it too (`leave_the_rest`), so a later text cannot overtake
        it ("approved" before "received")."""
        attempted = 0
        for index, entry in enumerate(entries):
            try:
                outcome = attempt(entry)
            except Exception:
                log.exception("delivery attempt failed", extra={"entry_id": entry["_id"]})
                continue
            attempted += outcome != "skipped"
            if outcome == "deferred":
                leave_the_rest(entry, entries[index + 1 :])
                break
        return attempted

    def _attempt(self, entry: dict[str, Any], finished: list[str]) -> Attempt:
        """Send, or ask for a receipt; "skipped" when another process has the entry, "deferred"
        when the rate limit held the send back. Entries left in a run stay due, after it."""
        # This attempt's moment, not the run's: a run may last long (slow sends one after another),
        # and a claim made late in it must still last a whole lease from now, or another process's
        # run could take the entry while this one sends it.
        now = datetime.now(UTC)
        channel, notification_id = entry["channel"], entry["notification_id"]
        sent: dict[str, Any] | None = entry.get("sent")
        if sent is not None:
            # Asking for a receipt twice is harmless (both answers are the same, and a status only
            # moves forward), so it is not claimed: one write less per SMS.
            return self._step(entry, sent, {"status": "sent", **sent}, now, finished)
        claimed = self.store.claim(entry["_id"], now, LEASE)
        if claimed is None:
            return "skipped"
        if claimed.get("leases", 0) >= MAX_SILENT_ATTEMPTS:
            self._give_up(entry, now)
            return "done"
        if "send" in claimed and not claimed.get("leases"):
            # What the entry kept spares reading the notification.
            return self._send_kept(entry, claimed["send"], now)
        # An older entry, a redelivery's, or an attempt that ended without a word.
        doc = self.store.get(notification_id)
        if doc is None:
            self._orphan(entry, now)
        elif channel not in doc["channels"]:  # queued by an older redelivery: nothing to send
            self.store.finish(entry["_id"])
        else:
            return self._step(entry, deliveries.send_context(doc, channel), doc["channels"][channel], now, finished)
        return "done"

    def _give_up(self, entry: dict[str, Any], now: datetime) -> None:
        log.error("delivery given up: its attempts kept ending without an outcome", extra={"entry_id": entry["_id"]})
        error = f"its last {MAX_SILENT_ATTEMPTS} attempts ended without an outcome"
        self.store.update_channel(
            entry["notification_id"], entry["channel"], {"status": "failed", "updated_at": now, "error": error}
        )
        self.store.finish(entry["_id"])

    def _send_kept(self, entry: dict[str, Any], send: dict[str, Any], now: datetime) -> Attempt:
        """A new entry's send, from what the entry keeps (`send`): it reads no notification."""
        return self._step(entry, send, {"status": "pending", "attempts": send["attempts"]}, now, [])

    def _step(
        self, entry: dict[str, Any], about: dict[str, Any], state: dict[str, Any], now: datetime, finished: list[str]
    ) -> Attempt:
        """Send or ask for a receipt, and record what follows, in the notification's trace."""
        channel = entry["channel"]
        with continued(about.get("traceparent"), f"notification.deliver {channel}"):
            annotate(case_no=about.get("case_no"), event_id=about["event_id"], channel=channel)
            step = self._next_step(about, state, channel, entry, now)
            if step is None:
                return "deferred"
            annotate(delivery_status=step.changes.get("status"))
            self._record(entry, state, about, step, finished)  # in the case's trace: its log lines lead there

    def _orphan(self, entry: dict[str, Any], now: datetime) -> None:
        """An entry whose notification was never stored (entries were queued first before 2026-11-27)."""
        created = entry["created_at"].replace(tzinfo=entry["created_at"].tzinfo or UTC)
        if now - created > ORPHAN_AFTER:
            self.store.finish(entry["_id"])
        else:
            self.store.reschedule(entry["_id"], now + timedelta(seconds=5))

    def _record(
        self, entry: dict[str, Any], state: dict[str, Any], about: dict[str, Any], step: Step, finished: list[str]
    ) -> None:
        """Store a step's outcome. A delivery that goes on is rescheduled first, keeping in its entry
        what comes next: a crash before the notification's own write then costs that write only
        (the next step makes up for it). A finished one is recorded first and its entry deleted after:
        a crash in between leaves the entry claimed, and its next attempt reads the notification.
        A receipt's entry (never claimed) is added to `finished`, deleted with the run's others."""
        channel, status = entry["channel"], step.changes.get("status")
        if step.next_at is None:
            written = self.store.update_channel(entry["notification_id"], channel, step.changes)
            if "sent" in entry:
                finished.append(entry["_id"])
            else:
                self.store.finish(entry["_id"])
        else:
            now_state = {**state, **step.changes}
            keep_sent = now_state["status"] == "sent" and "sent" not in entry
            sent = deliveries.receipt_context(about, now_state) if keep_sent else None
            attempts = step.changes.get("attempts") if "send" in entry else None
            self.store.reschedule(entry["_id"], step.next_at, sent=sent, attempts=attempts)
            written = self.store.update_channel(entry["notification_id"], channel, step.changes)
        if written and status in ("sent", "delivered", "failed"):
            DELIVERIES.labels(channel, status).inc()
        if status == "failed":
            extra = {"notification_id": entry["notification_id"], "channel": channel, "case_no": about.get("case_no")}
            log.warning("delivery failed", extra=extra)

    def _next_step(
        self, about: dict[str, Any], state: dict[str, Any], channel: str, entry: dict[str, Any], now: datetime
    ) -> Step | None:
        """Send (or ask for a receipt) and say what follows; None when the rate limit says wait."""
        policy = self.outbound.policy
        if state["status"] == "sent":
            outcome = self.outbound.sms.receipt(state["reference"])
            return deliveries.after_receipt(state, outcome, now, policy)
        if state["status"] == "pending":
            contact = self._contact(about["recipient"], channel)
            if isinstance(contact, Outcome):  # nothing to send: no token taken
                return deliveries.after_send(state, contact, now, policy)
            # Taken just before the send, after the contact lookup (which may wait for identity):
            # the second counted is the second the provider hears of it.
            if not self.store.take_rate_token(channel, datetime.now(UTC), self.outbound.rate_limits[channel]):
                # Over the limit: no attempt. Due again at once, at its place among the person's
                # entries (the timer sends the earliest first, from its next run on).
                self.store.reschedule(entry["_id"], min(entry["next_at"], now))
                return None
            return deliveries.after_send(state, self._send(contact, about, channel, entry["_id"]), now, policy)
        return Step()  # delivered or failed already (a duplicate entry)

    def _contact(self, recipient: str, channel: str) -> Contact | Outcome:
        """Where to reach the recipient on `channel`, or the outcome of a send that cannot be made."""
        try:
            contact = self.contacts.get(recipient, lambda: call(self.identity.contact, recipient))
        except NotFound:
            return Outcome("permanent", error="the account no longer exists")
        except DomainError as exc:  # identity unavailable: try again later
            return Outcome("temporary", error=f"contact lookup failed: {exc.code}")
        except Exception as exc:  # an answer not understood: counted as an attempt, so it ends as failed
            log.exception("contact lookup failed", extra={"channel": channel})
            return Outcome("temporary", error=f"contact lookup failed: {type(exc).__name__}")
        if why := deliveries.unreachable(channel, contact):
            return Outcome("permanent", error=why)
        return contact

    def _send(self, contact: Contact, about: dict[str, Any], channel: str, reference: str) -> Outcome:
        content = about["content"]
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
        """Into each reviewer's digest of the day (`messages.DIGEST_SHOWN`): the inbox only, which
        is all a staff account has."""
        annotate(case_no=payload.case_no, event_id=envelope.event_id)
        reviewers = call(self.identity.reviewers_of, payload.department_code)
        if not reviewers:
            log.warning("no reviewer to tell", extra={"department_code": payload.department_code})
        now, entry = datetime.now(UTC), messages.digest_entry(payload.item_name, payload.deadline)
        for reviewer in reviewers:
            digest = messages.digest(envelope.type, reviewer, envelope.occurred_at, now)
            self.store.add_to_digest(digest, payload.case_no, entry)

    def _notify(
        self, envelope: Envelope, recipients: list[str], audience: str, case_no: str | None, context: dict[str, Any]
    ) -> None:
        annotate(case_no=case_no, event_id=envelope.event_id)
        now = datetime.now(UTC)
        for recipient in recipients:
            channels = deliveries.channels_for(audience, self.store.channels_to_notify(recipient))
            doc = messages.notification(envelope, recipient, case_no, context, channels, now)
            outbound = [c for c in channels if c != "inbox"]
            if not outbound:
                self.store.create(doc, [], now)
                continue
            # Sent as soon as this handler is done, claimed as they are queued (see sending_now);
            # without a free slot, or for a redelivered event (None: nothing new), by the timer.
            with self.sending_now.slot(recipient) as slot:
                created = self.store.create(doc, outbound, now, claim_for=LEASE if slot.free else None)
                if slot.free and created:
                    slot.send(lambda entries=created: self._in_order(entries, self._send_new, self._leave_to_timer))

    def _send_new(self, entry: dict[str, Any]) -> Attempt:
        """An entry its handler queued claimed; "skipped" when its claim is nearly over (it waited
        behind the person's slow sends): the timer may take it then, and two senders could send it
        twice. Left to the timer as well when a send before it was held back ("deferred")."""
        now = datetime.now(UTC)
        if entry["next_at"] - now < LEASE_LEFT_TO_SEND:
            return "skipped"
        if self.sending_now.held(entry["recipient"]):
            self._leave_to_timer(entry, [entry])
            return "skipped"  # not attempted; the entries after it are left by the loop's next turns
        return self._send_kept(entry, entry["send"], now)

    def _leave_to_timer(self, held: dict[str, Any], entries: list[dict[str, Any]]) -> None:
        """Give up the claims of a person's handed-over entries, in order, after `held`, the one the
        rate limit held back (due now); the person's later hand-overs go to the timer too, until
        their greenthread has none left (`SendingNow.hold`)."""
        self.sending_now.hold(held["recipient"])
        now = datetime.now(UTC)
        for place, entry in enumerate(entries, start=1):
            # Milliseconds apart: the store keeps times to the millisecond, and the timer sends the
            # earliest first.
            self.store.reschedule(entry["_id"], now + timedelta(milliseconds=place))


def _audience(who: Principal) -> str:
    # Staff get what reviewers get: their accounts have no phone or email.
    return "applicant" if "applicant" in who.roles else "reviewer"
