"""The case lifecycle after submission (services/intake/lifecycle.py): plain functions, no store."""

from datetime import UTC, date, datetime, timedelta
from typing import get_args

import pytest

from contracts.cases import CaseStatus, Decision, Evaluation, ReviewDecision, Supplement
from contracts.catalog import PublishedItem
from contracts.common import Principal
from contracts.events import (
    CaseAccepted,
    CaseApproved,
    CaseEvaluated,
    CaseRejected,
    CaseResubmitted,
    CaseSupplementRequested,
    CaseWithdrawn,
)
from services.catalog.seed_data import seed_items
from services.common.errors import Conflict, Forbidden, NotFound, ValidationFailed
from services.intake import lifecycle
from services.intake.lifecycle import Change
from services.intake.workdays import add_working_days

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Beijing
TODAY = date(2026, 11, 23)
ALL_STATUSES = get_args(CaseStatus)
DEPARTMENT = "620524GA"

APPLICANT = Principal(user_id="u-citizen", account_type="citizen", roles=["applicant"])
STRANGER = Principal(user_id="u-other", account_type="citizen", roles=["applicant"])
REVIEWER = Principal(user_id="r-ga", account_type="staff", roles=["reviewer"], department_code=DEPARTMENT)
OTHER_REVIEWER = Principal(user_id="r-mz", account_type="staff", roles=["reviewer"], department_code="620524MZ")
SUPERVISOR = Principal(user_id="s1", account_type="staff", roles=["supervisor"])
ADMIN = Principal(user_id="a1", account_type="staff", roles=["admin"])

MATERIALS = [
    {"code": "id_card", "name": "居民身份证", "required": True},
    {"code": "photo", "name": "数码照片回执", "required": False},
    {"code": "proof", "name": "户籍证明", "required": False},
]


def item(**overrides):
    [guide] = [i for i in seed_items() if i["item_code"].endswith("GA-QR-0001")]
    return PublishedItem.model_validate(
        {**guide, "version": 2, "materials": MATERIALS, "promised_days": 5, **overrides}
    )


ITEM = item()


def case(status="submitted", version=4, **overrides):
    return {
        "_id": "620524GA-20261120-000001",
        "case_no": "620524GA-20261120-000001",
        "item_code": ITEM.item_code,
        "item_version": 2,
        "item_name": ITEM.name,
        "department_code": DEPARTMENT,
        "applicant": {"user_id": "u-citizen", "name": "张三"},
        "status": status,
        "form": {"reason": "expired"},
        "materials": [{"code": "id_card", "document_id": "d-id"}, {"code": "photo", "document_id": "d-photo"}],
        "submitted_at": datetime(2026, 11, 20, 2, 0, tzinfo=UTC),
        "deadline": "2026-11-27",  # counted from submission until the case is accepted
        "deadline_provisional": False,
        "decision": None,
        "evaluation": None,
        "version": version,
        "awaiting_review": True,
        **overrides,
    }


def decision(action, **fields):
    defaults = {"reject": {"comment": "材料不符合要求"}, "request_supplement": {"missing_materials": ["photo"]}}
    return ReviewDecision.model_validate({"action": action, **defaults.get(action, {}), **fields})


def review(the_case, action, principal=REVIEWER, today=TODAY, now=NOW, the_item=ITEM, **fields):
    return lifecycle.review(the_case, the_item, principal, decision(action, **fields), now, today)


def assert_conditional(change, the_case):
    """Every change is applied on the status and version it was computed from."""
    assert isinstance(change, Change)
    assert change.from_status == the_case["status"]
    assert change.version == the_case["version"]


ALLOWED = {
    "accept": ("submitted",),
    "request_supplement": ("submitted", "accepted", "resubmitted"),
    "approve": ("accepted", "resubmitted"),
    "reject": ("submitted", "accepted", "resubmitted"),
}
TARGET = {
    "accept": "accepted",
    "request_supplement": "supplement_requested",
    "approve": "approved",
    "reject": "rejected",
}
EVENT = {
    "accept": CaseAccepted,
    "request_supplement": CaseSupplementRequested,
    "approve": CaseApproved,
    "reject": CaseRejected,
}
ALLOWED_REVIEWS = [(action, status) for action, statuses in ALLOWED.items() for status in statuses]
DISALLOWED_REVIEWS = [
    (action, status) for action, statuses in ALLOWED.items() for status in ALL_STATUSES if status not in statuses
]


def test_the_tables_match_the_documented_lifecycle():
    assert lifecycle.REVIEW_FROM == ALLOWED
    assert lifecycle.REVIEW_TO == TARGET
    assert set(lifecycle.UNDECIDED) == {"submitted", "accepted", "supplement_requested", "resubmitted"}
    assert set(lifecycle.TASK_STATUSES) == {"submitted", "accepted", "resubmitted"}
    assert len(DISALLOWED_REVIEWS) == 4 * len(ALL_STATUSES) - len(ALLOWED_REVIEWS)


# --- review: who and from where -------------------------------------------------------------------


@pytest.mark.parametrize(("action", "status"), ALLOWED_REVIEWS)
def test_allowed_review(action, status):
    before = case(status)
    change = review(before, action)
    assert_conditional(change, before)
    assert change.set_fields["status"] == TARGET[action]
    assert change.set_fields["awaiting_review"] is (TARGET[action] in ("accepted", "resubmitted"))
    assert change.extra_filter == {}
    assert change.timeline["status"] == TARGET[action]
    assert change.timeline["at"] == NOW
    assert change.timeline["by"] == "r-ga"
    assert type(change.event) is EVENT[action]
    assert change.event.case_no == before["case_no"]
    assert change.event.applicant_id == "u-citizen"
    assert change.event.department_code == DEPARTMENT
    assert before["status"] == status and before["version"] == 4  # the case read is not modified


@pytest.mark.parametrize(("action", "status"), DISALLOWED_REVIEWS)
def test_disallowed_review_is_a_conflict(action, status):
    with pytest.raises(Conflict) as info:
        review(case(status), action)
    assert status in info.value.message


@pytest.mark.parametrize("action", list(ALLOWED))
def test_reviewer_of_another_department_sees_no_case(action):
    with pytest.raises(NotFound):
        review(case(ALLOWED[action][0]), action, principal=OTHER_REVIEWER)


@pytest.mark.parametrize("principal", [SUPERVISOR, ADMIN], ids=["supervisor", "admin"])
@pytest.mark.parametrize("action", list(ALLOWED))
def test_supervisors_and_admins_may_read_but_not_decide(action, principal):
    with pytest.raises(Forbidden):
        review(case(ALLOWED[action][0]), action, principal=principal)


@pytest.mark.parametrize("principal", [APPLICANT, STRANGER], ids=["own-applicant", "stranger"])
def test_applicants_cannot_review(principal):
    with pytest.raises(NotFound):
        review(case("submitted"), "accept", principal=principal)


def test_a_reviewer_without_a_department_sees_no_case():
    nowhere = Principal(user_id="r0", account_type="staff", roles=["reviewer"])
    with pytest.raises(NotFound):
        review(case("submitted"), "accept", principal=nowhere)


def test_who_may_act_is_checked_before_the_status():
    # A stranger learns nothing about the state of someone else's case.
    with pytest.raises(NotFound):
        review(case("withdrawn"), "accept", principal=OTHER_REVIEWER)
    with pytest.raises(Forbidden):
        review(case("withdrawn"), "accept", principal=SUPERVISOR)


# --- accept ---------------------------------------------------------------------------------------


def test_accept_recomputes_the_deadline_from_the_day_of_acceptance():
    before = case("submitted", deadline="2026-11-27")  # five working days after the 20th
    change = review(before, "accept", today=date(2026, 11, 23))
    assert change.set_fields["deadline"] == "2026-11-30"  # five working days after Monday the 23rd
    assert change.set_fields["deadline_provisional"] is False
    assert change.set_fields["accepted_at"] == NOW
    assert change.set_fields["awaiting_review"] is True
    assert change.event.deadline == date(2026, 11, 30)
    assert change.event.at == NOW
    assert change.event.by == "r-ga"


def test_a_moved_deadline_is_warned_of_again_and_no_longer_overdue():
    # Warned (and flagged overdue) under the deadline counted from submission: acceptance moves it,
    # so reviewers must hear of the new one, and the case is not overdue until that has passed.
    before = case("submitted", deadline="2026-11-20", deadline_warned=True, overdue=True)
    change = review(before, "accept", today=date(2026, 11, 23))
    assert change.set_fields["deadline_warned"] is False and change.set_fields["overdue"] is False
    from services.intake import deadlines

    moved = {**before, **change.set_fields, "status": "accepted"}
    assert deadlines.due(moved, "2026-11-30", "2026-11-30", "2026-11-29").flags == ("deadline_warned",)
    warned = {**moved, "deadline_warned": True}
    assert deadlines.due(warned, "2026-11-30", "2026-12-01", "2026-11-30").flags == ("overdue",)


def test_a_deadline_moved_to_a_day_already_past_stays_overdue():
    # Still overdue: neither a "deadline near" warning nor a second overdue notice is due.
    moved = lifecycle.moved_deadline("2026-11-13", date(2026, 11, 20), today=date(2026, 11, 23))
    assert moved == {"deadline": "2026-11-20"}
    assert lifecycle.moved_deadline("2026-11-20", date(2026, 11, 23), today=date(2026, 11, 23))["overdue"] is False
    # Not moved: the flags of that very deadline still hold.
    assert lifecycle.moved_deadline("2026-11-30", date(2026, 11, 30), today=date(2026, 11, 23)) == {
        "deadline": "2026-11-30"
    }


def test_accept_skips_holidays_and_uses_the_items_promise():
    change = review(case("submitted"), "accept", today=date(2026, 9, 30), the_item=item(promised_days=1))
    assert change.set_fields["deadline"] == "2026-10-08"


def test_accept_in_a_year_without_a_calendar_is_provisional():
    change = review(case("submitted"), "accept", today=date(2031, 1, 6))
    assert change.set_fields["deadline"] == "2031-01-13"
    assert change.set_fields["deadline_provisional"] is True


def test_accept_keeps_the_comment_in_timeline_and_event():
    change = review(case("submitted"), "accept", comment="材料齐全，予以受理")
    assert change.timeline["comment"] == "材料齐全，予以受理"
    assert change.event.comment == "材料齐全，予以受理"


# --- request_supplement ---------------------------------------------------------------------------


def test_supplement_request_names_every_missing_material():
    before = case("accepted")
    change = review(before, "request_supplement", missing_materials=["photo", "proof"], comment="照片不清晰")
    expected = [{"code": "photo", "name": "数码照片回执"}, {"code": "proof", "name": "户籍证明"}]
    assert isinstance(change.event, CaseSupplementRequested)
    assert change.event.model_dump()["missing_materials"] == expected
    assert change.event.comment == "照片不清晰"
    assert change.set_fields["missing_materials"] == expected
    assert change.set_fields["clock_stopped_on"] == "2026-11-23"
    assert change.set_fields["awaiting_review"] is False  # the applicant acts next
    assert "deadline" not in change.set_fields


def test_supplement_request_with_only_a_comment():
    change = review(case("submitted"), "request_supplement", missing_materials=[], comment="请补充说明换领原因")
    assert change.event.missing_materials == []
    assert change.set_fields["missing_materials"] == []


def test_supplement_request_for_a_material_the_item_does_not_ask_for_is_refused():
    with pytest.raises(ValidationFailed) as info:
        review(case("accepted"), "request_supplement", missing_materials=["photo", "passport", "visa"])
    [detail] = info.value.details
    assert detail["field"] == "missing_materials"
    assert "passport" in detail["issue"] and "visa" in detail["issue"]
    assert "photo" not in detail["issue"]


def test_the_materials_of_the_version_the_case_was_submitted_under_count():
    older = item(materials=[{"code": "id_card", "name": "居民身份证（旧版）", "required": True}])
    with pytest.raises(ValidationFailed):
        review(case("accepted"), "request_supplement", the_item=older, missing_materials=["photo"])
    change = review(case("accepted"), "request_supplement", the_item=older, missing_materials=["id_card"])
    assert change.event.model_dump()["missing_materials"] == [{"code": "id_card", "name": "居民身份证（旧版）"}]


# --- approve / reject -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["accepted", "resubmitted"])
def test_approval_by_a_reviewer(status):
    certificate = {"type": "id_card", "name": "居民身份证", "valid_days": 3650}
    the_item = item(issues_certificate=certificate)
    assert "reason" in the_item.form_schema["properties"]
    before = case(status, form={"reason": "expired", "holder_note": "免检"})  # one field the schema lacks
    change = review(before, "approve", the_item=the_item, comment="准予")
    verdict = Decision.model_validate(change.set_fields["decision"])
    assert verdict.outcome == "approved"
    assert verdict.decided_by == "r-ga"
    assert verdict.reason == "准予"
    assert verdict.decided_at == NOW
    assert isinstance(change.event, CaseApproved)
    assert change.event.decision == verdict
    assert change.event.issues_certificate.type == "id_card"
    assert change.event.form == {"reason": "expired"}  # only what the form declares reaches the certificate
    assert change.set_fields["awaiting_review"] is False


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_reviewers_decision_keeps_the_rules_that_handed_the_case_over(action):
    handed_over = [
        {
            "rule_id": "local_resident",
            "description": "本县户籍",
            "expression": "applicant.region_code == '620524'",
            "result": "failed",
            "on_fail": "manual_review",
            "inputs": [{"name": "applicant.region_code", "value": "620502"}],
        }
    ]
    change = review(case("accepted", review_explanation=handed_over), action, comment="核实")
    verdict = Decision.model_validate(change.set_fields["decision"])
    assert [r.model_dump(mode="json", exclude_none=True) for r in verdict.explanation] == handed_over
    assert verdict.rule_set_version == 2  # the version the case was submitted under
    assert change.event.decision == verdict


def test_a_decision_on_an_item_without_rules_explains_no_rule():
    verdict = review(case("accepted", review_explanation=[]), "approve").event.decision
    assert verdict.explanation == [] and verdict.rule_set_version is None


def test_a_decision_on_a_case_whose_rules_could_not_run_names_no_rule_set():
    not_run = [
        {
            "rule_id": "rules_not_run",
            "description": "自动审批规则未能运行，由审核人员办理",
            "expression": "",
            "result": "error",
            "on_fail": "manual_review",
            "error": "Unavailable: catalog did not answer",
        }
    ]
    verdict = review(case("accepted", review_explanation=not_run), "approve").event.decision
    assert verdict.explanation[0].rule_id == "rules_not_run" and verdict.rule_set_version is None


def test_approval_without_a_comment():
    change = review(case("accepted"), "approve")
    assert change.event.decision.reason is None
    assert change.event.issues_certificate is None
    assert change.event.form == {}  # no certificate: the form stays with the case


@pytest.mark.parametrize("status", ["submitted", "accepted", "resubmitted"])
def test_rejection_carries_the_reason(status):
    change = review(case(status), "reject", comment="不符合换领条件")
    assert isinstance(change.event, CaseRejected)
    assert change.event.decision.outcome == "rejected"
    assert change.event.decision.reason == "不符合换领条件"
    assert change.set_fields["decision"]["reason"] == "不符合换领条件"
    assert change.timeline["comment"] == "不符合换领条件"


# --- resubmit -------------------------------------------------------------------------------------


def waiting(**overrides):
    """A case waiting for the applicant's supplement, asked for on Monday the 23rd."""
    fields = {
        "status": "supplement_requested",
        "missing_materials": [{"code": "photo", "name": "数码照片回执"}, {"code": "proof", "name": "户籍证明"}],
        "clock_stopped_on": "2026-11-23",
        "deadline": "2026-11-30",
        "awaiting_review": False,
        **overrides,
    }
    return case(**fields)


def supplement(*codes, form=None):
    return Supplement.model_validate(
        {"materials": [{"code": c, "document_id": f"new-{c}"} for c in codes], "form": form}
    )


def test_resubmit_is_refused_while_anything_asked_for_is_missing():
    with pytest.raises(ValidationFailed) as info:
        lifecycle.resubmit(waiting(), APPLICANT, supplement("photo"), NOW, date(2026, 11, 25))
    assert info.value.details == [{"field": "materials", "issue": "still missing: proof"}]
    with pytest.raises(ValidationFailed) as info:
        lifecycle.resubmit(waiting(), APPLICANT, supplement(), NOW, date(2026, 11, 25))
    assert [d["issue"] for d in info.value.details] == ["still missing: photo", "still missing: proof"]


def test_resubmit_pushes_the_deadline_by_the_working_days_paused():
    before = waiting()
    change = lifecycle.resubmit(before, APPLICANT, supplement("photo", "proof"), NOW, date(2026, 11, 25))
    assert_conditional(change, before)
    # Stopped on Monday the 23rd, resumed on Wednesday the 25th: two working days paused.
    assert change.set_fields["deadline"] == "2026-12-02"
    assert change.set_fields["deadline_provisional"] is False
    assert change.set_fields["status"] == "resubmitted"
    assert change.set_fields["awaiting_review"] is True
    assert change.set_fields["missing_materials"] == []
    assert change.timeline == {"status": "resubmitted", "at": NOW, "by": "u-citizen", "comment": None}
    assert isinstance(change.event, CaseResubmitted)
    assert change.event.by == "u-citizen"
    assert change.event.deadline == date(2026, 12, 2)  # the applicant is told the new date
    # Warnings and the overdue flag of the old deadline no longer hold.
    assert change.set_fields["deadline_warned"] is False and change.set_fields["overdue"] is False


def test_the_days_paused_stay_in_the_count_a_loaded_calendar_recomputes_from():
    # A year's calendar recomputes deadlines from deadline_start + deadline_days: the pause must be
    # in those days, or loading a calendar would take it back.
    before = waiting(deadline_start="2026-11-23", deadline_days=5)  # its deadline: the 30th
    change = lifecycle.resubmit(before, APPLICANT, supplement("photo", "proof"), NOW, date(2026, 11, 25))
    assert change.set_fields["deadline_days"] == 7  # two working days paused
    assert add_working_days(date(2026, 11, 23), 7)[0].isoformat() == change.set_fields["deadline"]


def test_a_pause_is_kept_with_its_count_and_counted_again_by_a_loaded_calendar():
    # Paused over 2031's Spring Festival before that year's table was loaded: counted by weekends,
    # the pause pushed the deadline a week too far; the loaded table must count it again.
    from services.intake import workdays

    before = waiting(clock_stopped_on="2031-01-20", deadline="2031-01-27", deadline_start="2031-01-20", deadline_days=5)
    change = lifecycle.resubmit(before, APPLICANT, supplement("photo", "proof"), NOW, date(2031, 2, 3))
    assert change.set_fields["pauses"] == [{"from": "2031-01-20", "to": "2031-02-03", "days": 10}]
    assert change.set_fields["deadline_provisional"] is True  # the pause's count is a guess
    after = {**before, **change.set_fields}
    assert lifecycle.days_to_deadline(after) == (15, True)
    spring_festival = frozenset(date(2031, 1, 22) + timedelta(days=n) for n in range(7))  # a made-up week
    try:
        workdays.use_loaded_years({2031: workdays.YearTable(spring_festival, frozenset())})
        assert lifecycle.days_to_deadline(after) == (10, False)  # the holiday's 5 working days are not paused
    finally:
        workdays.use_loaded_years({})


def test_acceptance_starts_the_time_limit_over_without_earlier_pauses():
    paused = [{"from": "2026-11-03", "to": "2026-11-05", "days": 2}]
    before = case("submitted", deadline_start="2026-11-02", deadline_days=7, pauses=paused)
    change = review(before, "accept", today=date(2026, 11, 23))
    assert change.set_fields["pauses"] == [] and change.set_fields["deadline_days"] == ITEM.promised_days


def test_a_weekend_paused_costs_no_working_day():
    before = waiting(clock_stopped_on="2026-11-27")  # a Friday
    change = lifecycle.resubmit(before, APPLICANT, supplement("photo", "proof"), NOW, date(2026, 11, 29))
    assert change.set_fields["deadline"] == "2026-11-30"


def test_holidays_paused_are_not_counted():
    before = waiting(clock_stopped_on="2026-09-29", deadline="2026-10-12")
    change = lifecycle.resubmit(before, APPLICANT, supplement("photo", "proof"), NOW, date(2026, 10, 9))
    # Working days after the 29th: 30 September, 8 and 9 October.
    assert change.set_fields["deadline"] == "2026-10-15"


def test_resubmit_on_the_day_of_the_request_keeps_the_deadline():
    change = lifecycle.resubmit(waiting(deadline_warned=True), APPLICANT, supplement("photo", "proof"), NOW, TODAY)
    assert change.set_fields["deadline"] == "2026-11-30"
    assert "deadline_warned" not in change.set_fields  # warned of this very deadline already


def test_a_provisional_deadline_stays_provisional():
    before = waiting(deadline_provisional=True)
    change = lifecycle.resubmit(before, APPLICANT, supplement("photo", "proof"), NOW, date(2026, 11, 25))
    assert change.set_fields["deadline_provisional"] is True


def test_without_a_deadline_there_is_nothing_to_push():
    before = waiting(deadline=None)
    change = lifecycle.resubmit(before, APPLICANT, supplement("photo", "proof"), NOW, date(2026, 11, 25))
    assert "deadline" not in change.set_fields


def test_resubmit_replaces_the_given_materials_and_merges_the_form():
    before = waiting()
    change = lifecycle.resubmit(
        before, APPLICANT, supplement("photo", "proof", form={"reason": "damaged", "note": "x"}), NOW, TODAY
    )
    assert change.set_fields["materials"] == [
        {"code": "id_card", "document_id": "d-id"},
        {"code": "photo", "document_id": "new-photo"},
        {"code": "proof", "document_id": "new-proof"},
    ]
    assert change.set_fields["form"] == {"reason": "damaged", "note": "x"}
    assert before["materials"][1] == {"code": "photo", "document_id": "d-photo"}


def test_resubmit_without_a_form_leaves_the_form_alone():
    change = lifecycle.resubmit(waiting(), APPLICANT, supplement("photo", "proof"), NOW, TODAY)
    assert "form" not in change.set_fields


def test_a_comment_only_request_is_answered_by_any_supplement():
    before = waiting(missing_materials=[])
    change = lifecycle.resubmit(before, APPLICANT, supplement(form={"reason": "lost"}), NOW, TODAY)
    assert change.set_fields["status"] == "resubmitted"


@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if s != "supplement_requested"])
def test_resubmit_only_answers_a_supplement_request(status):
    with pytest.raises(Conflict):
        lifecycle.resubmit(waiting(status=status), APPLICANT, supplement("photo", "proof"), NOW, TODAY)


@pytest.mark.parametrize("principal", [STRANGER, REVIEWER, SUPERVISOR], ids=["stranger", "reviewer", "supervisor"])
def test_only_the_applicant_resubmits(principal):
    with pytest.raises(NotFound):
        lifecycle.resubmit(waiting(), principal, supplement("photo", "proof"), NOW, TODAY)


# --- withdraw -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["submitted", "accepted", "supplement_requested", "resubmitted"])
def test_withdraw_before_the_decision(status):
    before = case(status)
    change = lifecycle.withdraw(before, APPLICANT, NOW)
    assert_conditional(change, before)
    assert change.set_fields == {"status": "withdrawn", "awaiting_review": False}
    assert change.timeline == {"status": "withdrawn", "at": NOW, "by": "u-citizen", "comment": None}
    assert isinstance(change.event, CaseWithdrawn)
    assert change.event.applicant_id == "u-citizen"
    assert change.extra_filter == {}


@pytest.mark.parametrize("status", ["approved", "rejected", "withdrawn"])
def test_a_decided_or_withdrawn_case_cannot_be_withdrawn(status):
    with pytest.raises(Conflict):
        lifecycle.withdraw(case(status), APPLICANT, NOW)


@pytest.mark.parametrize("principal", [STRANGER, REVIEWER, ADMIN], ids=["stranger", "reviewer", "admin"])
def test_only_the_applicant_withdraws(principal):
    with pytest.raises(NotFound):
        lifecycle.withdraw(case("submitted"), principal, NOW)


# --- evaluate -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["approved", "rejected"])
@pytest.mark.parametrize(("score", "bad"), [(1, True), (2, True), (3, False), (4, False), (5, False)])
def test_evaluate_once_after_the_decision(status, score, bad):
    before = case(status)
    change = lifecycle.evaluate(before, APPLICANT, Evaluation(score=score, comment="办事快"), NOW)
    assert_conditional(change, before)
    assert change.set_fields == {
        "evaluation": {"score": score, "comment": "办事快", "at": "2026-11-23T02:00:00Z", "bad": bad}
    }
    assert change.extra_filter == {"evaluation": None}  # a second evaluation cannot slip in meanwhile
    assert change.timeline is None  # not a status change
    assert isinstance(change.event, CaseEvaluated)
    assert (change.event.score, change.event.bad) == (score, bad)


@pytest.mark.parametrize("status", ["submitted", "accepted", "supplement_requested", "resubmitted", "withdrawn"])
def test_an_undecided_case_cannot_be_evaluated(status):
    with pytest.raises(Conflict):
        lifecycle.evaluate(case(status), APPLICANT, Evaluation(score=5), NOW)


def test_a_case_is_evaluated_only_once():
    earlier = {"score": 4, "comment": None, "at": NOW.isoformat(), "bad": False}
    with pytest.raises(Conflict):
        lifecycle.evaluate(case("approved", evaluation=earlier), APPLICANT, Evaluation(score=1), NOW)


@pytest.mark.parametrize("principal", [STRANGER, REVIEWER, SUPERVISOR], ids=["stranger", "reviewer", "supervisor"])
def test_only_the_applicant_evaluates(principal):
    with pytest.raises(NotFound):
        lifecycle.evaluate(case("approved"), principal, Evaluation(score=5), NOW)


@pytest.mark.parametrize("action", ["accept", "request_supplement", "reject"])
def test_reviewers_wait_until_the_rules_hand_the_case_over(action):
    # An automatic decision may still land on a submitted case: a person must not race it.
    with pytest.raises(Conflict):
        review(case(awaiting_review=False), action)
