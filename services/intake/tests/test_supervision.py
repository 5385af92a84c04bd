from datetime import UTC, date, datetime

from contracts.envelope import new_event
from contracts.events import (
    CaseAccepted,
    CaseApproved,
    CaseEvaluated,
    CaseOverdue,
    CaseRejected,
    CaseSubmitted,
    CaseWithdrawn,
)
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


# --- which of intake's events add which fact (fact_of) ---------------------------------------------
OCCURRED = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)  # 01:00 on the 27th in China
COMMON = {"case_no": "C-1", "item_code": "I", "item_name": "事项", "department_code": "620524MZ", "applicant_id": "u"}
TRANSITION = {**COMMON, "by": "u", "at": OCCURRED}


def counted(payload):
    envelope = new_event(payload, producer="intake").model_copy(update={"occurred_at": OCCURRED})
    return supervision.fact_of(payload, envelope, {**CASE, "status": "approved"}), envelope.event_id


def test_submissions_withdrawals_and_overdue_cases_count_on_their_day_in_china():
    submitted = CaseSubmitted(**COMMON, item_version=1, form={}, material_codes=[], submitted_at=OCCURRED)
    for payload, kind in [(submitted, "submitted"), (CaseWithdrawn(**TRANSITION), "withdrawn")]:
        fact, event_id = counted(payload)
        assert fact == {"_id": event_id, "kind": kind, "department_code": "620524MZ", "day": "2026-11-27"}
    fact, _ = counted(CaseOverdue(**COMMON, deadline=date(2026, 11, 26)))
    overdue_key = f"overdue:{COMMON['case_no']}"
    assert fact == {
        "_id": overdue_key,
        "kind": "overdue",
        "department_code": "620524MZ",
        "day": "2026-11-27",
        "deadline": "2026-11-26",  # the deadline it was judged against (see IntakeStore.forget_overdue)
    }


def test_a_case_overdue_again_after_its_deadline_moved_counts_once():
    # Acceptance or a supplement moves the deadline and clears the flag: passing the new one tells
    # reviewers again (a new event) but it is still one overdue case.
    first, _ = counted(CaseOverdue(**COMMON, deadline=date(2026, 11, 26)))
    again, _ = counted(CaseOverdue(**COMMON, deadline=date(2026, 12, 4)))
    assert first["_id"] == again["_id"]


def test_an_evaluation_counts_with_its_score():
    fact, _ = counted(CaseEvaluated(**TRANSITION, score=2, bad=True))
    assert (fact["kind"], fact["score"], fact["bad"]) == ("evaluated", 2, 1)


def test_a_decision_counts_only_when_the_case_took_it():
    decision = {"outcome": "approved", "decided_by": "auto", "reason": "r", "decided_at": OCCURRED}
    fact, event_id = counted(CaseApproved(**COMMON, decision=decision))
    assert fact["_id"] == event_id and (fact["kind"], fact["auto"], fact["day"]) == ("approved", 1, "2026-11-27")
    by_a_person = {**decision, "decided_by": "r-1"}  # the case holds an automatic decision
    assert counted(CaseApproved(**COMMON, decision=by_a_person))[0] is None
    assert counted(CaseRejected(**COMMON, decision={**decision, "outcome": "rejected"}))[0] is None


def test_other_events_are_not_counted():
    assert counted(CaseAccepted(**TRANSITION))[0] is None
