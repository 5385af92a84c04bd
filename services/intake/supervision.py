"""Supervision (电子监察): facts recorded from events, summed per department and period.

Each event that matters becomes one small fact row keyed by its event id, so redelivery cannot
count twice and concurrent updates cannot lose counts. The summary is a `$match`/`$group` with
`$sum` over those rows; ratios are derived here.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from contracts.cases import SupervisionSummary

KINDS = ("submitted", "approved", "rejected", "withdrawn", "overdue", "evaluated")


def fact(event_id: str, kind: str, case: dict[str, Any], day: date, **values: float) -> dict[str, Any]:
    return {"_id": event_id, "kind": kind, "department_code": case["department_code"], "day": day.isoformat(), **values}


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
