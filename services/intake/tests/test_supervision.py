from datetime import UTC, date, datetime

from services.intake import supervision

CASE = {
    "department_code": "620524MZ",
    "deadline": "2026-11-30",
    "submitted_at": datetime(2026, 11, 26, 1, 0, tzinfo=UTC),
    "decision": {"outcome": "approved", "decided_by": "auto"},
}


def test_decision_fact_knows_auto_on_time_and_hours():
    fact = supervision.decision_fact("e1", CASE, datetime(2026, 11, 26, 3, 30, tzinfo=UTC), date(2026, 11, 26))
    assert fact == {
        "_id": "e1",
        "kind": "approved",
        "department_code": "620524MZ",
        "day": "2026-11-26",
        "auto": 1,
        "on_time": 1,
        "hours": 2.5,
    }
    late = supervision.decision_fact("e2", CASE, datetime(2026, 12, 2, tzinfo=UTC), date(2026, 12, 2))
    assert late["on_time"] == 0


def test_summary_derives_ratios_and_handles_empty_periods():
    rows = [
        {"_id": "submitted", "count": 10},
        {"_id": "approved", "count": 6, "auto": 4, "on_time": 6, "hours": 12.0},
        {"_id": "rejected", "count": 2, "auto": 0, "on_time": 1, "hours": 20.0},
        {"_id": "withdrawn", "count": 1},
        {"_id": "overdue", "count": 1},
        {"_id": "evaluated", "count": 4, "score": 14, "bad": 1},
    ]
    summary = supervision.summarize(rows, in_progress=3)
    assert summary.model_dump() == {
        "submitted": 10,
        "approved": 6,
        "rejected": 2,
        "withdrawn": 1,
        "in_progress": 3,
        "overdue": 1,
        "auto_decided_ratio": 0.5,
        "on_time_ratio": 0.875,
        "avg_handling_hours": 4.0,
        "evaluation_avg": 3.5,
        "bad_evaluations": 1,
    }
    empty = supervision.summarize([], in_progress=0)
    assert empty.auto_decided_ratio is None and empty.evaluation_avg is None and empty.submitted == 0
