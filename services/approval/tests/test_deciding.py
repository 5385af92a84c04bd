from datetime import UTC, datetime, timedelta

import pytest

from contracts.catalog import PublishedItem
from contracts.events import CaseApproved, CaseRejected, CaseReviewRequired, CaseSubmitted
from contracts.identity import ApplicantProfile
from services.approval import deciding
from services.catalog.seed_data import seed_items

NOW = datetime(2026, 11, 23, 2, 0, 5, tzinfo=UTC)


def item(code="MZ-GF-0001", version=4, **overrides):
    """A seed item by the end of its code (the catalog grows: never by position)."""
    [guide] = [i for i in seed_items() if i["item_code"].endswith(code)]
    return PublishedItem.model_validate({**guide, "version": version, **overrides})


def profile(**overrides):
    data = {
        "user_id": "u-citizen",
        "account_type": "citizen",
        "name": "张三",
        "age": 85,
        "gender": "male",
        "region_code": "620524",
        "assurance_level": 1,
        "certificates": ["household_register"],
    }
    data.update(overrides)
    return ApplicantProfile.model_validate(data)


def submitted(published=None, form=None, material_codes=()):
    published = published or item()
    return CaseSubmitted(
        case_no="620524MZ-20261123-000007",
        item_code=published.item_code,
        item_version=published.version,
        item_name=published.name,
        department_code=published.department_code,
        applicant_id="u-citizen",
        form={"bank_account": "6222020200112233445", "contact_phone": "13800138000"} if form is None else form,
        material_codes=list(material_codes),
        submitted_at=NOW,
    )


def _common_fields(event):
    return {k: getattr(event, k) for k in ("case_no", "item_code", "item_name", "department_code", "applicant_id")}


# --- facts --------------------------------------------------------------------------------------


def test_facts_expose_only_the_documented_applicant_attributes():
    facts = deciding.facts(profile(), submitted(material_codes=["household_register"]))
    assert set(facts) == {"applicant", "form", "materials", "certificates"}
    assert facts["applicant"] == {
        "account_type": "citizen",
        "age": 85,
        "gender": "male",
        "region_code": "620524",
        "assurance_level": 1,
        "name": "张三",
    }
    assert "user_id" not in facts["applicant"]
    assert facts["form"]["bank_account"] == "6222020200112233445"
    assert facts["materials"] == ["household_register"]
    assert facts["certificates"] == ["household_register"]


# --- outcomes -----------------------------------------------------------------------------------


def test_all_rules_pass_approves_automatically():
    case = submitted()
    outcome = deciding.decide(item(), profile(), case, now=NOW)
    assert isinstance(outcome, CaseApproved)
    assert outcome.event_type == "case.approved.v1"
    assert _common_fields(outcome) == _common_fields(case)
    decision = outcome.decision
    assert decision.outcome == "approved"
    assert decision.decided_by == "auto"
    assert decision.decided_at == NOW
    assert decision.rule_set_version == 4
    assert decision.reason
    assert [(r.rule_id, r.result) for r in decision.explanation] == [("age_80", "passed"), ("local_resident", "passed")]
    age_rule = decision.explanation[0]
    assert age_rule.expression == "applicant.age >= 80"
    assert age_rule.on_fail == "reject"
    assert [(i.name, i.value) for i in age_rule.inputs] == [("applicant.age", 85)]


def test_approval_carries_the_certificate_to_issue_and_the_form():
    published = item(
        "SC-XK-0001",
        auto_approval={"enabled": True, "rules": [{"id": "ok", "description": "总是", "expression": "true"}]},
    )
    form = {"proposed_name": "武山县某某商贸有限公司", "industry": "零售"}
    outcome = deciding.decide(published, profile(), submitted(published, form), now=NOW)
    assert isinstance(outcome, CaseApproved)
    assert outcome.issues_certificate == published.issues_certificate
    assert outcome.issues_certificate.model_dump() == {
        "type": "name_reservation",
        "name": "企业名称自主申报告知书",
        "valid_days": 60,
    }
    assert outcome.form == form
    dumped = outcome.model_dump(mode="json")
    assert dumped["issues_certificate"]["type"] == "name_reservation"
    assert CaseApproved.model_validate(dumped) == outcome


def test_approval_of_an_item_without_certificate_says_so():
    outcome = deciding.decide(item(), profile(), submitted(), now=NOW)
    assert isinstance(outcome, CaseApproved)
    assert outcome.issues_certificate is None
    assert outcome.form == {}  # no certificate: the form (a bank account) stays with the case


def test_rejection_issues_no_certificate():
    published = item(
        "SC-XK-0001",
        auto_approval={
            "enabled": True,
            "rules": [{"id": "no", "description": "从不", "expression": "false", "on_fail": "reject"}],
        },
    )
    form = {"proposed_name": "武山县某某商贸有限公司", "industry": "零售"}
    outcome = deciding.decide(published, profile(), submitted(published, form), now=NOW)
    assert isinstance(outcome, CaseRejected)
    assert "issues_certificate" not in outcome.model_dump()


def test_failed_reject_rule_rejects_with_its_description_as_reason():
    outcome = deciding.decide(item(), profile(age=79), submitted(), now=NOW)
    assert isinstance(outcome, CaseRejected)
    assert outcome.event_type == "case.rejected.v1"
    assert outcome.decision.outcome == "rejected"
    assert outcome.decision.decided_by == "auto"
    assert outcome.decision.reason == "不符合条件：申请人年满80周岁"
    assert [r.result for r in outcome.decision.explanation] == ["failed", "passed"]


def test_reject_wins_over_manual_review():
    outcome = deciding.decide(item(), profile(age=60, region_code="110105"), submitted(), now=NOW)
    assert isinstance(outcome, CaseRejected)


def test_failed_review_rule_goes_to_a_reviewer_with_explanation():
    case = submitted()
    outcome = deciding.decide(item(), profile(region_code="110105"), case, now=NOW)
    assert isinstance(outcome, CaseReviewRequired)
    assert outcome.event_type == "case.review_required.v1"
    assert _common_fields(outcome) == _common_fields(case)
    assert outcome.rule_set_version == 4
    assert [(r.rule_id, r.result) for r in outcome.explanation] == [("age_80", "passed"), ("local_resident", "failed")]
    assert outcome.explanation[1].inputs[0].value == "110105"


def test_rule_error_goes_to_a_reviewer_never_decides():
    outcome = deciding.decide(item(), profile(age=None), submitted(), now=NOW)
    assert isinstance(outcome, CaseReviewRequired)
    assert outcome.explanation[0].result == "error"
    assert outcome.explanation[0].error


def test_disabled_auto_approval_always_goes_to_a_reviewer():
    published = item("GA-QR-0001")
    outcome = deciding.decide(published, profile(), submitted(published, form={"reason": "lost"}), now=NOW)
    assert isinstance(outcome, CaseReviewRequired)
    assert outcome.explanation == []
    assert outcome.rule_set_version == 4


def test_enabled_without_rules_goes_to_a_reviewer():
    published = item("MZ-GF-0001", auto_approval={"enabled": True, "rules": []})
    outcome = deciding.decide(published, profile(), submitted(published), now=NOW)
    assert isinstance(outcome, CaseReviewRequired)
    assert outcome.explanation == []


def test_rules_read_the_form_and_materials():
    published = item(
        "RS-GF-0001",
        auto_approval={
            "enabled": True,
            "rules": [
                {
                    "id": "insured",
                    "description": "满12个月",
                    "expression": "form.months_insured >= 12",
                    "on_fail": "reject",
                },
                {"id": "card", "description": "有银行卡", "expression": '"bank_card" in materials'},
            ],
        },
    )
    form = {"last_employer": "某公司", "months_insured": 24}
    assert isinstance(
        deciding.decide(published, profile(), submitted(published, form, ["bank_card"]), now=NOW), CaseApproved
    )
    assert isinstance(
        deciding.decide(published, profile(), submitted(published, form, []), now=NOW), CaseReviewRequired
    )
    short = {**form, "months_insured": 6}
    assert isinstance(
        deciding.decide(published, profile(), submitted(published, short, ["bank_card"]), now=NOW), CaseRejected
    )


def test_rules_read_certificates():
    published = item(
        "MZ-GF-0001",
        auto_approval={
            "enabled": True,
            "rules": [{"id": "hr", "description": "户口", "expression": '"household_register" in certificates'}],
        },
    )
    assert isinstance(deciding.decide(published, profile(), submitted(published), now=NOW), CaseApproved)
    no_cert = profile(certificates=[])
    assert isinstance(deciding.decide(published, no_cert, submitted(published), now=NOW), CaseReviewRequired)


def test_decided_at_defaults_to_now_at_the_stores_precision():
    before = datetime.now(UTC) - timedelta(milliseconds=1)  # truncated to the millisecond
    outcome = deciding.decide(item(), profile(), submitted())
    assert before <= outcome.decision.decided_at <= datetime.now(UTC)
    # Milliseconds, as the case's timeline entry of the decision reads back: the two are equal.
    assert outcome.decision.decided_at.microsecond % 1000 == 0


@pytest.mark.parametrize("age", [80, 81, 120])
def test_boundary_ages_are_approved(age):
    assert isinstance(deciding.decide(item(), profile(age=age), submitted(), now=NOW), CaseApproved)


def test_outcome_payloads_serialise_for_the_envelope():
    for applicant in (profile(), profile(age=70), profile(region_code="110105")):
        outcome = deciding.decide(item(), applicant, submitted(), now=NOW)
        dumped = outcome.model_dump(mode="json")
        assert type(outcome).model_validate(dumped) == outcome


def test_a_whole_number_sent_as_a_decimal_in_an_integer_field_is_read_as_the_integer():
    # JSON Schema's integer takes 1.0; CEL's `form.children == 1` errors on a double, which sent a
    # case a rejecting rule should have rejected to a reviewer.
    schema = {
        "type": "object",
        "properties": {
            "children": {"type": "integer"},
            "share": {"type": "number"},
            "n": {"type": ["integer", "null"]},
        },
    }
    rule = {"id": "one_child", "description": "只有一个子女", "expression": "form.children == 1", "on_fail": "reject"}
    published = item(form_schema=schema, auto_approval={"enabled": True, "rules": [rule]}, issues_certificate=None)
    form = {"children": 2.0, "share": 2.0, "n": 3.0, "bank_account": "6222020200112233445"}
    facts = deciding.facts(profile(), submitted(published, form=form), published.form_schema)
    assert facts["form"] == {"children": 2, "share": 2.0, "n": 3, "bank_account": "6222020200112233445"}
    assert type(facts["form"]["children"]) is int and type(facts["form"]["share"]) is float
    assert isinstance(deciding.decide(published, profile(), submitted(published, form=form), NOW), CaseRejected)
    assert isinstance(
        deciding.decide(published, profile(), submitted(published, form={**form, "children": 1.0}), NOW), CaseApproved
    )


def test_a_whole_decimal_beyond_64_bits_stays_a_decimal():
    # int(1e19) is more than CEL's int holds: it made every rule of the case error.
    schema = {"type": "object", "properties": {"household": {"type": "integer"}}}
    form = deciding.form_as_declared({"household": 1e19, "small": 2.0}, schema)
    assert form == {"household": 1e19, "small": 2.0} and type(form["household"]) is float
    assert deciding.form_as_declared({"household": 9.0}, schema) == {"household": 9}


def test_numbers_take_the_type_their_field_declares_nested_fields_included():
    schema = {
        "type": "object",
        "properties": {
            "area": {"type": "number"},
            "rooms": {"type": "integer"},
            "family": {
                "type": "array",
                "items": {"type": "object", "properties": {"income": {"type": "number"}, "age": {"type": "integer"}}},
            },
            "flag": {"type": "boolean"},
        },
    }
    form = {
        "area": 60,
        "rooms": 3.0,
        "family": [{"income": 4000, "age": 40.0}, {"income": 3500.5, "age": 12}],
        "flag": True,
    }
    declared = deciding.form_as_declared(form, schema)
    assert declared == {
        "area": 60.0,
        "rooms": 3,
        "family": [{"income": 4000.0, "age": 40}, {"income": 3500.5, "age": 12}],
        "flag": True,
    }
    assert type(declared["rooms"]) is int and type(declared["family"][0]["age"]) is int
    assert type(declared["area"]) is float and type(declared["family"][0]["income"]) is float
    assert type(declared["flag"]) is bool
    assert deciding.form_as_declared({"area": 2**60}, schema) == {"area": 2**60}  # a double would round it


@pytest.mark.parametrize(
    "expression",
    [
        "form.area * 1.5 >= 90.0",
        "2 * form.area <= 120",
        "form.area + 0.5 > 60",
        "form.area / 2 >= 30",
        "form.income / form.members <= 833.2 == false",  # 833.33, not an int division's 833
    ],
)
def test_a_number_field_decides_the_same_whichever_way_the_applicant_wrote_it(expression):
    # Rules already published keep working for 60, and work for 60.0 the same.
    schema = {
        "type": "object",
        "properties": {"area": {"type": "number"}, "income": {"type": "number"}, "members": {"type": "integer"}},
    }
    rule = {"id": "r", "description": "规则", "expression": expression, "on_fail": "reject"}
    published = item(form_schema=schema, auto_approval={"enabled": True, "rules": [rule]}, issues_certificate=None)
    for area, income in ((60, 2500), (60.0, 2500.0)):
        form = {"area": area, "income": income, "members": 3, "bank_account": "6222020200112233445"}
        case = submitted(published, form=form)
        assert isinstance(deciding.decide(published, profile(), case, NOW), CaseApproved), (expression, area)
