"""Intake service entrypoints: submit and read cases, record decisions from approval."""

from __future__ import annotations

import base64
import dataclasses
import logging
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import eventlet
import eventlet.semaphore
from nameko.events import BROADCAST, event_handler
from nameko.timer import timer
from prometheus_client import Counter
from pydantic import ValidationError

from contracts.cases import (
    CalendarYear,
    CaseSummary,
    DocumentFinish,
    DocumentStored,
    Evaluation,
    ReviewDecision,
    SubmitCase,
    SupervisionQuery,
    Supplement,
    Task,
)
from contracts.catalog import PublishedItem
from contracts.common import Page, PageQuery, Principal
from contracts.envelope import Envelope, UnknownEventType, new_event, parse_event
from contracts.events import (
    CaseApproved,
    CaseDeadlineWarning,
    CaseOverdue,
    CaseRejected,
    CaseReviewRequired,
    CertificateIssued,
    ItemPublished,
    ItemWithdrawn,
)
from contracts.identity import ApplicantProfile, CertificateCheck
from services.common.consuming import consumes
from services.common.errors import EXPECTED_ERRORS, Conflict, Forbidden, NotFound, ValidationFailed, validated
from services.common.heap import FrozenStartupHeap
from services.common.metrics import Metrics
from services.common.mongo import Storage
from services.common.publishing import EventPublisher
from services.common.rpc import ServiceRpc, call, rpc
from services.common.telemetry import Tracing, annotate
from services.intake import cases, deadlines, lifecycle, supervision, workdays
from services.intake.latest_items import LatestItems
from services.intake.storage import IntakeStore

log = logging.getLogger(__name__)

# Cases by the status they enter (Prometheus; rates and totals per status).
CASES_ENTERING = Counter("yiwang_cases_entering", "Cases entering a status", ["status"])

# Automatic decisions apply only while nobody has acted on the case yet.
AUTO_DECIDABLE = ["submitted"]
# How long a reviewer's action on a just-submitted case waits for its automatic rules.
RULES_WAIT_SECONDS, RULES_POLL_SECONDS = 3.0, 0.1
# Writes of a recomputed deadline over a case that changed meanwhile, each after reading it again.
RECOMPUTE_ATTEMPTS = 3
# Judgements of a command over a case whose version moved meanwhile by a write that is no one's
# action (see IntakeService._apply); a change to what it is judged on is a conflict at once.
JUDGE_ATTEMPTS = 3
JUDGED_ON = ("status", "form", "materials", "evaluation")
CHANGED_MEANWHILE = "the case changed meanwhile (someone else acted on it); reload and try again"
RULES_RECENT_SECONDS = 30  # a case whose rules have not answered by then is not waited for
_RULE_WAITERS = eventlet.semaphore.Semaphore(3)  # reviewers waiting at once, per process


class IntakeService:
    name = "intake"

    tracing = Tracing()
    metrics = Metrics()
    startup_heap = FrozenStartupHeap()
    store: IntakeStore = Storage(IntakeStore)
    events = EventPublisher()
    catalog = ServiceRpc("catalog")
    latest_items = LatestItems()
    identity = ServiceRpc("identity")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def submit_case(
        self, principal: dict[str, Any], payload: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Validate everything, store the case with its event, announce it. With an idempotency key
        the answer also says whether it `replayed` an earlier submission of the same body."""
        who = validated(Principal, principal)
        request = validated(SubmitCase, payload)
        cases.require_possible_item_code(request.item_code)
        key = cases.idempotency_key(who.user_id, idempotency_key)
        request_hash = cases.request_hash(request)
        if key:
            earlier = self.store.by_idempotency_key(key)
            if earlier is not None:
                return cases.replay(earlier, request_hash)
        item = self.latest_items.get(request.item_code, lambda: call(self.catalog.get_item, request.item_code))
        annotate(item_code=item.item_code, department_code=item.department_code)
        self._check_application(who, item, request)
        # The profile the rules will judge travels in case.submitted (approval need not ask again).
        applicant = ApplicantProfile.model_validate(call(self.identity.applicant_profile, who.user_id))

        now = cases.now_utc()
        today = cases.local_date(now)
        sequence = self.store.next_sequence(f"{item.department_code}-{today:%Y%m%d}")
        case_no = cases.case_number(item.department_code, today, sequence)
        if key:
            # One case number per key, ever: a retry completes the number of a request that died.
            case_no = cases.claimed_number(self.store.claim_key(key, case_no, request_hash), request_hash)
        doc, payload_event = cases.new_case(case_no, item, who, applicant, request, now)
        doc.update({"idempotency_key": key or f"none:{case_no}", "request_hash": request_hash})
        event = new_event(payload_event, producer=self.name)
        if not self.store.insert_case(doc, [event]):
            # A concurrent retry with the same key won the unique index: answer with its case.
            return cases.replay(self.store.by_idempotency_key(key), request_hash)
        annotate(case_no=case_no, event_id=event.event_id)
        CASES_ENTERING.labels("submitted").inc()
        log.info("case submitted", extra={"case_no": case_no, "item_code": item.item_code, "event_id": event.event_id})
        self._announce(case_no, [event], doc)
        created = cases.created(doc).model_dump(mode="json")
        return {**created, "replayed": False} if key else created

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

    # --- the lifecycle after submission --------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def review_case(
        self, principal: dict[str, Any], case_no: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        who, case = self._case_for(principal, case_no)
        decision = validated(ReviewDecision, payload)
        lifecycle.check_reviewer(who, case)
        keyed = cases.keyed_command(who.user_id, idempotency_key, "review", decision.model_dump(mode="json"))
        if (done := cases.answer_if_done(case, who, keyed)) is not None:
            return done
        case = self._after_the_rules(case)
        item = self._item_of(case)
        now = cases.now_utc()
        today = cases.local_date(now)
        change = lifecycle.review(case, item, who, decision, now, today)  # refused before identity is asked
        if decision.action == "approve":
            self._certificates_still_valid(case, item)
        return self._apply(
            case, lambda current: lifecycle.review(current, item, who, decision, now, today), who, change, keyed
        )

    def _after_the_rules(self, case: dict[str, Any]) -> dict[str, Any]:
        """The case once its automatic rules are done with it (they take well under a second), or as
        it is after RULES_WAIT_SECONDS: a reviewer who acts on a case at once gets an answer, not a
        409 for a race the API does not show. Only for a case submitted moments ago (one whose rules
        never answered, say a dead-lettered event, is 409 at once), and for a few reviewers at a
        time per process: a waiting worker is one the hand-over itself may need."""
        recent = cases.now_utc() - case["submitted_at"] < timedelta(seconds=RULES_RECENT_SECONDS)
        if not (lifecycle.rules_pending(case) and recent) or not _RULE_WAITERS.acquire(blocking=False):
            return case
        try:
            waited = 0.0
            while lifecycle.rules_pending(case) and waited < RULES_WAIT_SECONDS:
                eventlet.sleep(RULES_POLL_SECONDS)
                waited += RULES_POLL_SECONDS
                case = self.store.get(case["case_no"]) or case
        finally:
            _RULE_WAITERS.release()
        return case

    def _certificates_still_valid(self, case: dict[str, Any], item: PublishedItem) -> None:
        """Checked at submission, a certificate among the materials may have expired or been revoked
        while the case waited: a reviewer must not approve on it (a business licence on an expired
        name reservation). The same check as a submission's; a conflict, since the request is sound."""
        request = SubmitCase(item_code=item.item_code, form=case["form"], materials=case["materials"])
        certificates = self._certificate_checks(case["applicant"]["user_id"], request)
        problems = cases.certificate_problems(item, request, certificates)
        if problems:
            raise Conflict(
                "a certificate among the materials is no longer valid: request a new one or reject", problems
            )

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def resubmit_case(
        self, principal: dict[str, Any], case_no: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        who, case = self._case_for(principal, case_no)
        supplement = validated(Supplement, payload)
        keyed = cases.keyed_command(who.user_id, idempotency_key, "supplement", supplement.model_dump(mode="json"))
        if (done := cases.answer_if_done(case, who, keyed)) is not None:
            return done
        now = cases.now_utc()
        today = cases.local_date(now)
        change = lifecycle.resubmit(case, who, supplement, now, today)
        item = self._item_of(case)
        joined = change.set_fields["materials"]
        resubmission = SubmitCase(
            item_code=item.item_code, form=change.set_fields.get("form", case["form"]), materials=joined
        )
        try:
            self._check_application(who, item, resubmission)
        except ValidationFailed as problems:
            details = cases.supplement_problems(problems.details, joined, len(supplement.materials))
            raise ValidationFailed(problems.message, details) from None
        return self._apply(
            case, lambda current: lifecycle.resubmit(current, who, supplement, now, today), who, change, keyed
        )

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def withdraw_case(
        self, principal: dict[str, Any], case_no: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        who, case = self._case_for(principal, case_no)
        keyed = cases.keyed_command(who.user_id, idempotency_key, "withdrawal", {})
        if (done := cases.answer_if_done(case, who, keyed)) is not None:
            return done
        now = cases.now_utc()
        return self._apply(case, lambda current: lifecycle.withdraw(current, who, now), who, keyed=keyed)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def evaluate_case(
        self, principal: dict[str, Any], case_no: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        who, case = self._case_for(principal, case_no)
        evaluation = validated(Evaluation, payload)
        keyed = cases.keyed_command(who.user_id, idempotency_key, "evaluation", evaluation.model_dump(mode="json"))
        if (done := cases.answer_if_done(case, who, keyed)) is not None:
            return done
        now = cases.now_utc()
        return self._apply(case, lambda current: lifecycle.evaluate(current, who, evaluation, now), who, keyed=keyed)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def review_tasks(self, principal: dict[str, Any], status: str | None, page: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        if "reviewer" not in who.roles or not who.department_code:
            raise Forbidden("the task list is for reviewers of a department")
        statuses = list(lifecycle.TASK_STATUSES)
        if status:
            if status not in statuses:
                raise ValidationFailed(
                    "bad status", [{"field": "query.status", "issue": f"one of {', '.join(statuses)}"}]
                )
            statuses = [status]
        paging = validated(PageQuery, page, "query")
        rows, total = self.store.tasks(
            who.department_code, statuses, (paging.page - 1) * paging.page_size, paging.page_size
        )
        today = cases.local_date(cases.now_utc())
        items = [cases.task(r, today) for r in rows]
        return Page[Task](items=items, total=total, page=paging.page, page_size=paging.page_size).model_dump(
            mode="json"
        )

    # --- documents (the gateway streams an upload in chunks) ----------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def begin_document(self, principal: dict[str, Any]) -> str:
        who = validated(Principal, principal)
        document_id = uuid.uuid4().hex
        self.store.begin_document(document_id, who.user_id, cases.now_utc())
        return document_id

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=("data",))
    def add_document_chunk(self, principal: dict[str, Any], document_id: str, n: int, data: str) -> None:
        self._uploading(principal, document_id)
        self.store.add_chunk(document_id, n, base64.b64decode(data))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def finish_document(self, principal: dict[str, Any], document_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._uploading(principal, document_id)
        finish = validated(DocumentFinish, payload)
        if self.store.chunk_count(document_id) != finish.chunks:
            raise Conflict("the upload is incomplete")
        fields = finish.model_dump(exclude={"chunks"})
        if not self.store.finish_document(document_id, {**fields, "chunks": finish.chunks}):
            raise Conflict("the upload was already finished")
        return DocumentStored(
            document_id=document_id, **finish.model_dump(include={"sha256", "size", "content_type"})
        ).model_dump()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def abort_document(self, principal: dict[str, Any], document_id: str) -> None:
        self._uploading(principal, document_id)
        self.store.drop_document(document_id)

    def _uploading(self, principal: dict[str, Any], document_id: str) -> None:
        who = validated(Principal, principal)
        doc = self.store.document(document_id)
        if doc is None or doc["owner"] != who.user_id:
            raise NotFound("no such upload")
        if doc["status"] != "uploading":
            raise Conflict("the upload was already finished")

    def _check_application(self, who: Principal, item: PublishedItem, request: SubmitCase) -> None:
        """Everything a submission or resubmission must satisfy, certificates and documents included."""
        # Only what the item asks for is looked up: the rest is refused for its code anyway.
        asked = request.model_copy(update={"materials": cases.asked_for(item, request.materials)})
        certificates = self._certificate_checks(who.user_id, asked)
        cases.check_submission(item, who, request, certificates, self._owned(who, asked))

    def _certificate_checks(self, user_id: str, request: SubmitCase) -> dict[str, CertificateCheck]:
        """What identity says of the certificates among the materials, by id (nothing to ask: none)."""
        offered = [m.certificate_id for m in request.materials if m.certificate_id]
        checks = call(self.identity.check_certificates, user_id, offered) if offered else []
        return {c["certificate_id"]: CertificateCheck(**c) for c in checks}

    def _owned(self, who: Principal, request: SubmitCase) -> set[str]:
        offered = [m.document_id for m in request.materials if m.document_id]
        return self.store.owned_documents(who.user_id, offered) if offered else set()

    def _case_for(self, principal: dict[str, Any], case_no: str) -> tuple[Principal, dict[str, Any]]:
        who = validated(Principal, principal)
        case = self.store.get(case_no)
        if case is None or not cases.can_read(who, case):
            raise NotFound(f"no case {case_no}")
        annotate(case_no=case_no, item_code=case["item_code"], department_code=case["department_code"])
        return who, case

    def _item_of(self, case: dict[str, Any]) -> PublishedItem:
        # The version the case was submitted under, not today's.
        return PublishedItem.model_validate(call(self.catalog.get_item, case["item_code"], case["item_version"]))

    def _apply(
        self,
        case: dict[str, Any],
        judge: Callable[[dict[str, Any]], lifecycle.Change],
        who: Principal,
        judged: lifecycle.Change | None = None,
        keyed: cases.KeyedCommand | None = None,
    ) -> dict[str, Any]:
        """Write the change `judge` makes of the case, over the version read (`judged`: that change,
        made already). Writes that are no one's action (a deadline flag, a certificate recorded, a
        recomputed deadline, the rules' hand-over) move the version too: the command is judged again
        on the case as it is now, unless what it was judged on changed (then someone acted: a
        conflict). `keyed`: the command's Idempotency-Key, kept in the same write."""
        for _ in range(JUDGE_ATTEMPTS):
            change = judged or judge(case)
            judged = None
            if keyed is not None:
                change = dataclasses.replace(change, set_fields={**change.set_fields, keyed.field: keyed.request_hash})
            event = new_event(change.event, producer=self.name)
            if self.store.transition(case["case_no"], change, event):
                break
            current = self.store.get(case["case_no"])
            if current is not None and (done := cases.answer_if_done(current, who, keyed)) is not None:
                return done  # the same command, sent twice at once
            if current is None or any(current.get(k) != case.get(k) for k in JUDGED_ON):
                raise Conflict(CHANGED_MEANWHILE)
            case = current
        else:
            raise Conflict(CHANGED_MEANWHILE)
        status = change.set_fields.get("status", case["status"])
        annotate(event_id=event.event_id, outcome=status)
        if "status" in change.set_fields:  # an evaluation enters no status
            CASES_ENTERING.labels(status).inc()
        self._announce(case["case_no"], [event])
        return cases.view(self.store.get(case["case_no"]), who).model_dump(mode="json")

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
        written = self.store.apply_event(
            payload.case_no,
            envelope.event_id,
            AUTO_DECIDABLE,
            {"review_explanation": [r.model_dump(mode="json") for r in payload.explanation], "awaiting_review": True},
            entry,
            # A case of an item without rules waits for a person from its submission on: nothing to hand over.
            extra_filter={"awaiting_review": False},
        )
        self.store.sync_views(payload.case_no, written)  # read back only for a redelivery

    # Every process hears of every publication (a queue of its own): its kept versions go stale.
    @event_handler("catalog", ItemPublished.event_type, handler_type=BROADCAST, reliable_delivery=False)
    def on_item_published(self, body: dict[str, Any]) -> None:
        _, published = parse_event(body, expected=ItemPublished)
        self.latest_items.announced(published.item_code, published.version)

    @event_handler("catalog", ItemWithdrawn.event_type, handler_type=BROADCAST, reliable_delivery=False)
    def on_item_withdrawn(self, body: dict[str, Any]) -> None:
        _, withdrawn = parse_event(body, expected=ItemWithdrawn)
        self.latest_items.withdrawn(withdrawn.item_code, withdrawn.version)

    @consumes("identity", CertificateIssued)
    def on_certificate_issued(self, envelope: Envelope, issued: CertificateIssued) -> None:
        annotate(case_no=issued.case_no, event_id=envelope.event_id)
        # Events of two producers are not ordered: the certificate may come before the decision.
        self.store.apply_event(
            issued.case_no,
            envelope.event_id,
            [*lifecycle.UNDECIDED, "approved"],
            {"certificate_id": issued.certificate_id},
        )

    def _record_decision(self, envelope: Envelope, payload: CaseApproved | CaseRejected, status: str) -> None:
        """Take an automatic decision if the case still can (the applicant may have withdrawn it
        meanwhile) and announce it as intake's own event: identity issues certificates, and
        notification tells the applicant, only from intake's events — decisions the case took."""
        annotate(case_no=payload.case_no, event_id=envelope.event_id, outcome=status)
        change = cases.decision_update(payload.decision, status)
        taken = new_event(payload, producer=self.name)
        written = self.store.apply_event(
            payload.case_no, envelope.event_id, AUTO_DECIDABLE, change["set"], change["timeline"], [taken]
        )
        if written is not None:
            CASES_ENTERING.labels(status).inc()
            self._announce(payload.case_no, [taken], written)
        else:
            self.store.sync_views(payload.case_no)  # a redelivery: the relay publishes what it left

    # --- after every write that carries events -------------------------------------------------
    def _announce(self, case_no: str, events: list[Envelope], written: dict[str, Any] | None = None) -> None:
        """`written`: the case as the write left it, if the write returned it (saves a read)."""
        self._prepare(case_no, events, written)
        self.events.publish(self.store.outbox, case_no, events)

    def _prepare(
        self, case_no: str, events: list[Envelope] | list[dict[str, Any]], written: dict[str, Any] | None = None
    ) -> None:
        """What must be done before events go out: the read models brought in line, and one
        supervision fact per counted event (by event id: a repeat counts once). The outbox relay
        does the same for events whose writer died before publishing them, so no consumer of
        intake's events needs to redo either (intake no longer consumes its own events)."""
        case = self.store.sync_views(case_no, written)
        if case is None:
            return
        for event in events:
            try:
                envelope, payload = parse_event(event.model_dump(mode="json") if isinstance(event, Envelope) else event)
            except (ValidationError, UnknownEventType):
                continue  # not an event at all: publishing skips it too, and says so
            if (fact := supervision.fact_of(payload, envelope, case)) is not None:
                self.store.add_fact(fact)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def supervision_summary(self, principal: dict[str, Any], query: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        if not set(who.roles) & {"supervisor", "admin"}:
            raise Forbidden("supervision is for supervisors and admins")
        q = validated(SupervisionQuery, query, "query")
        first, last = (q.from_.isoformat() if q.from_ else None), (q.to.isoformat() if q.to else None)
        rows = self.store.fact_sums(q.department, first, last)
        running = self.store.count_in_progress(q.department, list(lifecycle.UNDECIDED))
        return supervision.summarize(rows, running).model_dump(mode="json")

    # --- calendar and deadlines -----------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def calendar_year(self, year: int) -> dict[str, Any]:
        if not 2000 <= year <= 2100:
            raise NotFound(f"no calendar for {year}")
        return workdays.year_view(year)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def load_calendar(self, principal: dict[str, Any], year: int, payload: dict[str, Any]) -> dict[str, Any]:
        """Load a year from the State Council's notice; provisional deadlines are then recomputed."""
        who = validated(Principal, principal)
        if "admin" not in who.roles:
            raise Forbidden("this needs the role admin")
        table = validated(CalendarYear, payload)
        problems = workdays.table_problems(year, table.holidays, table.workdays)
        if problems or not 2000 <= year <= 2100:
            raise ValidationFailed("the calendar is not valid", problems or [{"field": "year", "issue": "2000–2100"}])
        self.store.save_calendar(
            year,
            sorted(d.isoformat() for d in table.holidays),
            sorted(d.isoformat() for d in table.workdays),
            who.user_id,
        )
        workdays.use_loaded_years(self._loaded_years())
        # Always, even for a year loaded again unchanged: that finishes a load that died midway.
        return {**workdays.year_view(year), "recomputed": self._recompute_provisional()}

    @timer(interval=30, eager=True)
    def refresh_calendar(self) -> int:
        """Pick up years loaded through any intake process. When they changed, recompute provisional
        deadlines again: until now this process set them without the new year, and the loading
        process's recompute may have passed those cases already. How many moved."""
        if workdays.use_loaded_years(self._loaded_years()):
            return self._recompute_provisional()
        return 0

    def _loaded_years(self) -> dict[int, workdays.YearTable]:
        return {
            doc["_id"]: workdays.YearTable(
                frozenset(date.fromisoformat(d) for d in doc["holidays"]),
                frozenset(date.fromisoformat(d) for d in doc["workdays"]),
            )
            for doc in self.store.calendars_loaded()
        }

    @rpc
    @timer(interval=3600)
    def prune_task_board(self) -> int:
        """Empty task-list slots of deadlines a week past leave the departments' summaries."""
        return self.store.prune_task_board((cases.local_date(cases.now_utc()) - timedelta(days=7)).isoformat())

    @rpc
    @timer(interval=60)
    def check_deadlines(self) -> dict[str, int]:
        """Warn one working day before a deadline, flag it when it has passed. Safe with several
        processes: each flag is set by one conditional update, which carries the event."""
        today = cases.local_date(cases.now_utc())
        warn_latest, overdue_latest = deadlines.limits(today)
        models = {"deadline_warned": CaseDeadlineWarning, "overdue": CaseOverdue}
        counts = dict.fromkeys(models, 0)
        for day, additions in sorted(self.store.watched_days().items()):
            if day > warn_latest:
                break
            remaining = 0
            for case_no in self.store.watched(day):
                case = self.store.deadline_view(case_no)
                due = deadlines.due(case, day, warn_latest, overdue_latest)
                for flag in due.flags:
                    counts[flag] += self._raise_deadline_flag(case, flag, models[flag])
                if due.done:
                    self.store.unwatch(day, case_no, case.get("version", 0) if case else None)
                else:
                    remaining += 1
            if not remaining:
                self.store.drop_day(day, additions)
        return counts

    def _raise_deadline_flag(self, case: dict[str, Any], flag: str, model: type) -> int:
        event = new_event(
            model(
                case_no=case["case_no"],
                item_code=case["item_code"],
                item_name=case["item_name"],
                department_code=case["department_code"],
                applicant_id=case["applicant"]["user_id"],
                deadline=case["deadline"],
            ),
            producer=self.name,
        )
        statuses = list(lifecycle.TASK_STATUSES)
        if not self.store.flag_once(case["case_no"], flag, case["deadline"], statuses, event):
            return 0
        self._announce(case["case_no"], [event])
        return 1

    def _recompute_provisional(self) -> int:
        recomputed, after, today = 0, "", cases.local_date(cases.now_utc())
        while batch := self.store.provisional_cases(after, 500):
            for case in batch:
                after = case["_id"]
                recomputed += self._recompute_deadline(case, today)
        return recomputed

    def _recompute_deadline(self, read: dict[str, Any], today: date) -> int:
        """1 when the case's deadline was recomputed. Written over the version read; another write
        meanwhile (a flag, a hand-over, an acceptance) means reading the case again and computing
        from what it is now (an acceptance's own deadline may no longer be provisional at all)."""
        case: dict[str, Any] | None = read
        for _ in range(RECOMPUTE_ATTEMPTS):
            if case is None or "deadline_start" not in case:
                return 0
            days, pause_guessed = lifecycle.days_to_deadline(case)
            deadline, provisional = workdays.add_working_days(date.fromisoformat(case["deadline_start"]), days)
            fields = {
                **lifecycle.moved_deadline(case.get("deadline"), deadline, today),
                "deadline_provisional": provisional or pause_guessed,
            }
            guessed = case.get("deadline") if fields.get("overdue") is False else None
            if self.store.set_deadline(case["_id"], case.get("version", 0), fields, guessed):
                break
            case = self.store.provisional_case(case["_id"])
        else:
            if case is not None:
                log.warning("deadline not recomputed: the case kept changing", extra={"case_no": read["_id"]})
            return 0
        if fields.get("overdue") is False:
            self.store.forget_overdue(case["_id"], case.get("deadline"))
        for earlier in case.get("overdue_guesses") or []:  # a load that died before forgetting them
            self.store.forget_overdue(case["_id"], earlier)
        # Marked until its read models (the deadline index among them) have the new deadline: a
        # load that dies in between (its answer an error) is finished by loading again.
        self.store.sync_views(case["_id"])
        self.store.deadline_synced(case["_id"])
        return 1

    @timer(interval=2)
    def relay_outbox(self) -> None:
        # A writer that died between its write and its publish had maybe not synced the views yet.
        self.events.relay(self.store.outbox, before_publish=lambda case_no, raw: self._prepare(case_no, [raw]))
