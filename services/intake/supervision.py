"""Supervision (电子监察): facts recorded from intake's events, summed per department and period.

Each event that matters becomes one small fact row keyed by its event id, written by the writer
of the event before it goes out (or by the outbox relay, for a writer that died), so a retry
cannot count twice and concurrent updates cannot lose counts. The summary is a `$match`/`$group` with
`$sum` over those rows; ratios are derived here.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from contracts.cases import SupervisionSummary
from contracts.envelope import Envelope, EventPayload
from contracts.events import CaseApproved, CaseEvaluated, CaseOverdue, CaseRejected, CaseSubmitted, CaseWithdrawn
from services.intake.cases import local_date

KINDS = ("submitted", "approved", "rejected", "withdrawn", "overdue", "evaluated")


# Events counted by kind alone; decisions and evaluations carry figures (see fact_of).
COUNTED: dict[type, str] = {CaseSubmitted: "submitted", CaseWithdrawn: "withdrawn"}


def fact(event_id: str, kind: str, case: dict[str, Any], day: date, **values: float) -> dict[str, Any]:
    return {"_id": event_id, "kind": kind, "department_code": case["department_code"], "day": day.isoformat(), **values}


def fact_of(event: EventPayload, envelope: Envelope, case: dict[str, Any]) -> dict[str, Any] | None:
    """The fact one of intake's own events adds (keyed by its event id), counted by the writer
    before the event goes out; None for events that are not counted. `case` is the case as the
    writer left it (department, submission, deadline, decision, status)."""
    if isinstance(event, CaseApproved | CaseRejected):
        decision = case.get("decision") or {}
        # Only a decision the case actually took (an automatic one may have come too late).
        taken = (decision.get("decided_by"), decision.get("outcome"))
        if taken != (event.decision.decided_by, event.decision.outcome) or case["status"] != decision.get("outcome"):
            return None
        return decision_fact(envelope.event_id, case, event.decision.decided_at, local_date(event.decision.decided_at))
    day = local_date(envelope.occurred_at)
    if isinstance(event, CaseEvaluated):
        return fact(envelope.event_id, "evaluated", case, day, score=event.score, bad=int(event.bad))
    if isinstance(event, CaseOverdue):
        # Once per case: a case whose deadline moved (acceptance, a supplement) may pass its new one
        # too, and reviewers hear of it again, but it is one overdue case.
        # With the deadline it was judged against: a loaded calendar forgets only a guess's lateness.
        return {**fact(overdue_fact_id(event.case_no), "overdue", case, day), "deadline": event.deadline.isoformat()}
    kind = COUNTED.get(type(event))
    return fact(envelope.event_id, kind, case, day) if kind else None


def overdue_fact_id(case_no: str) -> str:
    """One per case: a case overdue again after its deadline moved (acceptance, a supplement) is
    still one overdue case, and one that was late stays counted when acceptance gives it a new
    deadline (a reviewer cannot wipe lateness). Only a loaded calendar that moves a provisional
    deadline past today takes it out (IntakeStore.forget_overdue), if it was counted against that
    deadline: that lateness was never real."""
    return f"overdue:{case_no}"


def decision_fact(event_id: str, case: dict[str, Any], decided_at: datetime, day: date) -> dict[str, Any]:
    """A decision: automatic or not, on time or not, and how long it took from submission."""
    decision = case["decision"]
    on_time = case.get("deadline") is None or day.isoformat() <= case["deadline"]
    hours = (decided_at - case["submitted_at"]).total_seconds() / 3600
    return fact(
        event_id,
        decision["outcome"],
        case,
        day,
        auto=int(decision["decided_by"] == "auto"),
        on_time=int(on_time),
        hours=round(max(hours, 0.0), 4),
    )


def summarize(rows: list[dict[str, Any]], in_progress: int) -> SupervisionSummary:
    """`rows`: one per kind with sums of count, auto, on_time, hours, score, bad."""
    by = {r["_id"]: r for r in rows}

    def total(kind: str, field: str = "count") -> float:
        return by.get(kind, {}).get(field, 0) or 0

    decided = total("approved") + total("rejected")
    evaluated = total("evaluated")
    return SupervisionSummary(
        submitted=int(total("submitted")),
        approved=int(total("approved")),
        rejected=int(total("rejected")),
        withdrawn=int(total("withdrawn")),
        in_progress=in_progress,
        overdue=int(total("overdue")),
        auto_decided_ratio=round((total("approved", "auto") + total("rejected", "auto")) / decided, 4)
        if decided
        else None,
        on_time_ratio=round((total("approved", "on_time") + total("rejected", "on_time")) / decided, 4)
        if decided
        else None,
        avg_handling_hours=round((total("approved", "hours") + total("rejected", "hours")) / decided, 2)
        if decided
        else None,
        evaluation_avg=round(total("evaluated", "score") / evaluated, 2) if evaluated else None,
        bad_evaluations=int(total("evaluated", "bad")),
    )
