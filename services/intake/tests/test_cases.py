from datetime import UTC, date, datetime

import pytest

from contracts.cases import CaseView, Decision, MaterialRef, SubmitCase
from contracts.catalog import AutoApproval, PublishedItem
from contracts.common import Principal
from contracts.events import CaseSubmitted
from contracts.identity import ApplicantProfile, CertificateCheck
from services.catalog.seed_data import seed_items
from services.common.errors import NotFound, ValidationFailed
from services.intake import cases, lifecycle
from services.intake.workdays import add_working_days

CITIZEN = Principal(user_id="u-citizen", account_type="citizen", roles=["applicant"])
PROFILE = ApplicantProfile(user_id="u-citizen", account_type="citizen", name="张三", age=85, assurance_level=1)
ENTERPRISE = Principal(user_id="u-ent", account_type="enterprise", roles=["applicant"])
GOOD_FORM = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Beijing


def published(code="MZ-GF-0001", **overrides):
    """A seed item by the end of its code (the catalog grows: never by position)."""
    [guide] = [i for i in seed_items() if i["item_code"].endswith(code)]
    return PublishedItem.model_validate({**guide, "version": 3, **overrides})


def allowance():
    """高龄津贴申领: citizens only, a form with two required fields, one optional certificate."""
    return published("MZ-GF-0001")


def with_materials():
    return published(
        "GA-QR-0001",
        materials=[
            {"code": "id_card", "name": "居民身份证", "required": True},
            {"code": "photo", "name": "数码照片回执", "required": False},
            {
                "code": "household_register",
                "name": "居民户口簿",
                "required": True,
                "source": "certificate",
                "certificate_type": "household_register",
            },
        ],
    )


def request(item_code=None, form=None, materials=()):
    return SubmitCase(
        item_code=item_code or allowance().item_code,
        form=GOOD_FORM if form is None else form,
        materials=[MaterialRef.model_validate(m) for m in materials],
    )


def profile_of(principal):
    return ApplicantProfile(
        user_id=principal.user_id, account_type=principal.account_type, name="张三", assurance_level=1
    )


def doc_for(principal=CITIZEN, item=None, now=NOW):
    item = item or allowance()
    case_no, applicant = "620524MZ-20261123-000001", profile_of(principal)
    doc, _ = cases.new_case(case_no, item, principal, applicant, request(item.item_code), now)
    return doc


# --- form_problems ------------------------------------------------------------------------------


def test_valid_form_has_no_problems():
    assert cases.form_problems(allowance().form_schema, GOOD_FORM) == []


def test_every_missing_required_field_is_named():
    problems = cases.form_problems(allowance().form_schema, {})
    assert sorted(p["field"] for p in problems) == ["form.bank_account", "form.contact_phone"]
    assert all("required" in p["issue"] for p in problems)


def test_every_violation_is_listed_with_its_path():
    problems = cases.form_problems(allowance().form_schema, {"bank_account": "12", "contact_phone": "110"})
    assert sorted(p["field"] for p in problems) == ["form.bank_account", "form.contact_phone"]


def test_unexpected_field_is_reported_on_the_form():
    problems = cases.form_problems(allowance().form_schema, {**GOOD_FORM, "extra": 1})
    assert [p["field"] for p in problems] == ["form"]
    assert "extra" in problems[0]["issue"]


def test_nested_paths_are_dotted():
    schema = {
        "type": "object",
        "properties": {
            "family": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
                },
            }
        },
    }
    problems = cases.form_problems(schema, {"family": [{"name": "a", "age": -1}, {"age": 3}]})
    assert [p["field"] for p in problems] == ["form.family.0.age", "form.family.1.name"]


def test_wrong_type_is_reported():
    problems = cases.form_problems(
        published("RS-GF-0001").form_schema, {"last_employer": "某公司", "months_insured": "12"}
    )
    assert [p["field"] for p in problems] == ["form.months_insured"]


# --- submission_problems ------------------------------------------------------------------------


def test_valid_submission():
    assert cases.submission_problems(allowance(), CITIZEN, request()) == []
    cases.check_submission(allowance(), CITIZEN, request(), {})


def test_applicant_type_must_be_accepted_by_the_item():
    problems = cases.submission_problems(allowance(), ENTERPRISE, request())
    assert problems == [{"field": "item_code", "issue": "this item is not open to enterprise applicants"}]


def test_item_open_to_both_types():
    item = published("SC-XK-0001")
    form = {"proposed_name": "武山县某某商贸有限公司", "industry": "零售"}
    for who in (CITIZEN, ENTERPRISE):
        assert cases.submission_problems(item, who, request(item.item_code, form)) == []


def test_unknown_material_is_named_by_position():
    item = with_materials()
    materials = [
        {"code": "id_card", "document_id": "d1"},
        {"code": "passport", "document_id": "d2"},
        {"code": "household_register", "certificate_id": "c1"},
    ]
    problems = cases.submission_problems(item, CITIZEN, request(item.item_code, {}, materials))
    assert problems == [{"field": "materials.1.code", "issue": "the item does not ask for passport"}]


def test_duplicate_material_is_refused():
    item = with_materials()
    materials = [
        {"code": "id_card", "document_id": "d1"},
        {"code": "id_card", "document_id": "d2"},
        {"code": "household_register", "certificate_id": "c1"},
    ]
    problems = cases.submission_problems(item, CITIZEN, request(item.item_code, {}, materials))
    assert [p["field"] for p in problems] == ["materials"]
    assert "more than once" in problems[0]["issue"]


def test_every_missing_required_material_is_listed():
    item = with_materials()
    problems = cases.submission_problems(
        item, CITIZEN, request(item.item_code, {}, [{"code": "photo", "document_id": "d"}])
    )
    assert [p["field"] for p in problems] == ["materials", "materials"]
    assert "id_card" in problems[0]["issue"]
    assert "household_register" in problems[1]["issue"]


def test_optional_material_may_be_left_out():
    item = with_materials()
    materials = [{"code": "id_card", "document_id": "d1"}, {"code": "household_register", "certificate_id": "c1"}]
    assert cases.submission_problems(item, CITIZEN, request(item.item_code, {}, materials)) == []


def test_all_problems_come_back_together():
    item = with_materials()
    with pytest.raises(ValidationFailed) as info:
        cases.check_submission(
            item,
            ENTERPRISE,
            request(item.item_code, {"reason": "stolen"}, [{"code": "x", "document_id": "d"}]),
            {},
        )
    fields = [d["field"] for d in info.value.details]
    assert fields[0] == "item_code"
    assert "form.reason" in fields
    assert "materials.0.code" in fields
    assert fields.count("materials") == 2
    assert info.value.code == "validation_failed"


# --- certificate_problems -----------------------------------------------------------------------


def check(certificate_id, owned=True, valid=True, type_="household_register"):
    return CertificateCheck(certificate_id=certificate_id, owned=owned, valid=valid, type=type_ if owned else None)


def cert_request(item, materials):
    return request(item.item_code, {}, materials)


def test_own_valid_certificate_of_the_asked_type_has_no_problems():
    item = with_materials()
    materials = [{"code": "id_card", "document_id": "d1"}, {"code": "household_register", "certificate_id": "c1"}]
    assert cases.certificate_problems(item, cert_request(item, materials), {"c1": check("c1")}) == []


def test_certificate_held_by_the_government_must_be_referenced_not_uploaded():
    item = with_materials()
    materials = [{"code": "id_card", "document_id": "d1"}, {"code": "household_register", "document_id": "d2"}]
    problems = cases.certificate_problems(item, cert_request(item, materials), {})
    assert [p["field"] for p in problems] == ["materials.1.certificate_id"]
    assert "household_register" in problems[0]["issue"]


def test_someone_elses_certificate_is_refused():
    item = with_materials()
    materials = [{"code": "household_register", "certificate_id": "c-theirs"}]
    problems = cases.certificate_problems(item, cert_request(item, materials), {"c-theirs": check("c-theirs", False)})
    assert problems == [{"field": "materials.0.certificate_id", "issue": "no such certificate of yours"}]


def test_unknown_certificate_reads_like_someone_elses():
    item = with_materials()
    materials = [{"code": "household_register", "certificate_id": "c-nowhere"}]
    problems = cases.certificate_problems(item, cert_request(item, materials), {})
    assert problems == [{"field": "materials.0.certificate_id", "issue": "no such certificate of yours"}]


def test_expired_or_revoked_certificate_is_refused():
    item = with_materials()
    materials = [{"code": "household_register", "certificate_id": "c-old"}]
    problems = cases.certificate_problems(item, cert_request(item, materials), {"c-old": check("c-old", valid=False)})
    assert [p["field"] for p in problems] == ["materials.0.certificate_id"]
    assert "expired" in problems[0]["issue"]


def test_certificate_of_the_wrong_type_is_refused():
    item = with_materials()
    materials = [{"code": "household_register", "certificate_id": "c-licence"}]
    checks = {"c-licence": check("c-licence", type_="business_licence")}
    problems = cases.certificate_problems(item, cert_request(item, materials), checks)
    assert problems == [{"field": "materials.0.certificate_id", "issue": "not a household_register"}]


def test_every_certificate_problem_is_listed_by_position():
    item = published(
        "GA-QR-0001",
        materials=[
            {"code": "photo", "name": "数码照片回执", "required": False},
            {"code": "a", "name": "A", "source": "certificate", "certificate_type": "household_register"},
            {"code": "b", "name": "B", "source": "certificate", "certificate_type": "household_register"},
            {"code": "c", "name": "C", "source": "certificate", "certificate_type": "household_register"},
            {"code": "d", "name": "D", "source": "certificate", "certificate_type": "household_register"},
            {"code": "e", "name": "E", "source": "certificate", "certificate_type": "household_register"},
        ],
    )
    materials = [
        {"code": "photo", "document_id": "d0"},
        {"code": "a", "document_id": "d1"},
        {"code": "b", "certificate_id": "theirs"},
        {"code": "c", "certificate_id": "old"},
        {"code": "d", "certificate_id": "licence"},
        {"code": "e", "certificate_id": "good"},
    ]
    checks = {
        "theirs": check("theirs", owned=False),
        "old": check("old", valid=False),
        "licence": check("licence", type_="business_licence"),
        "good": check("good"),
    }
    problems = cases.certificate_problems(item, cert_request(item, materials), checks)
    assert [p["field"] for p in problems] == [
        "materials.1.certificate_id",
        "materials.2.certificate_id",
        "materials.3.certificate_id",
        "materials.4.certificate_id",
    ]


def test_unknown_material_codes_are_left_to_submission_problems():
    item = with_materials()
    materials = [{"code": "passport", "certificate_id": "c1"}]
    assert cases.certificate_problems(item, cert_request(item, materials), {}) == []


def test_check_submission_lists_certificate_and_other_problems_together():
    item = with_materials()
    materials = [{"code": "passport", "document_id": "d"}, {"code": "household_register", "certificate_id": "c-x"}]
    with pytest.raises(ValidationFailed) as info:
        cases.check_submission(item, CITIZEN, cert_request(item, materials), {"c-x": check("c-x", owned=False)})
    fields = [d["field"] for d in info.value.details]
    assert "materials.0.code" in fields
    assert "materials" in fields  # id_card missing
    assert "materials.1.certificate_id" in fields


def test_check_submission_with_own_valid_certificate_passes():
    item = with_materials()
    materials = [{"code": "id_card", "document_id": "d1"}, {"code": "household_register", "certificate_id": "c1"}]
    cases.check_submission(item, CITIZEN, cert_request(item, materials), {"c1": check("c1")})


# --- a new case ---------------------------------------------------------------------------------


def test_case_number_is_department_date_sequence():
    assert cases.case_number("620524MZ", date(2026, 11, 26), 42) == "620524MZ-20261126-000042"
    assert cases.case_number("620524MZ", date(2026, 1, 2), 1) < cases.case_number("620524MZ", date(2026, 1, 2), 10)


def test_new_case_document():
    item = with_materials()
    materials = [{"code": "id_card", "document_id": "d1"}, {"code": "household_register", "certificate_id": "c1"}]
    doc, event = cases.new_case(
        "620524GA-20261123-000001", item, CITIZEN, PROFILE, request(item.item_code, {"reason": "lost"}, materials), NOW
    )
    assert doc["_id"] == doc["case_no"] == "620524GA-20261123-000001"
    assert doc["item_code"] == item.item_code
    assert doc["item_version"] == 3
    assert doc["item_name"] == "居民身份证换领"
    assert doc["department_code"] == "620524GA"
    assert doc["applicant"] == {"user_id": "u-citizen", "name": "张三"}
    assert doc["status"] == "submitted"
    assert doc["form"] == {"reason": "lost"}
    assert doc["materials"] == materials  # no null document_id / certificate_id
    assert doc["submitted_at"] == NOW
    assert doc["timeline"] == [{"status": "submitted", "at": NOW, "by": "u-citizen", "comment": None}]
    assert doc["decision"] is None
    assert doc["applied_events"] == []
    expected, provisional = add_working_days(date(2026, 11, 23), 20)
    assert doc["deadline"] == expected.isoformat()
    assert doc["deadline_provisional"] is provisional

    assert isinstance(event, CaseSubmitted)
    assert event.case_no == doc["case_no"]
    assert event.item_version == 3
    assert event.applicant_id == "u-citizen"
    assert event.material_codes == ["id_card", "household_register"]
    assert event.form == {"reason": "lost"}
    assert event.submitted_at == NOW
    assert event.applicant == PROFILE  # what the rules will judge travels with the case


def test_deadline_counts_promised_working_days():
    doc = doc_for()  # promised_days = 5, submitted on a Monday
    assert doc["deadline"] == "2026-11-30"
    assert doc["deadline_provisional"] is False


def test_deadline_in_an_unknown_year_is_provisional():
    doc = doc_for(now=datetime(2031, 1, 6, 2, 0, tzinfo=UTC))
    assert doc["deadline_provisional"] is True


def test_deadline_counts_from_the_day_of_submission_in_china():
    early_monday_in_beijing = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    doc = doc_for(now=early_monday_in_beijing)
    assert doc["deadline"] == add_working_days(date(2026, 11, 23), 5)[0].isoformat() == "2026-11-30"


def test_created_answer():
    created = cases.created(doc_for())
    assert created.model_dump(mode="json") == {
        "case_no": "620524MZ-20261123-000001",
        "status": "submitted",
        "item_code": allowance().item_code,
        "item_version": 3,
        "submitted_at": "2026-11-23T02:00:00Z",
    }


def test_summary():
    summary = cases.summary(doc_for())
    assert summary.case_no == "620524MZ-20261123-000001"
    assert summary.item_name == "高龄津贴申领"
    assert summary.deadline == date(2026, 11, 30)


# --- who may read -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        (CITIZEN, True),
        (Principal(user_id="someone-else", account_type="citizen", roles=["applicant"]), False),
        (Principal(user_id="r1", account_type="staff", roles=["reviewer"], department_code="620524MZ"), True),
        (Principal(user_id="r2", account_type="staff", roles=["reviewer"], department_code="620524GA"), False),
        (Principal(user_id="r3", account_type="staff", roles=["reviewer"]), False),
        (Principal(user_id="s1", account_type="staff", roles=["supervisor"]), True),
        (Principal(user_id="a1", account_type="staff", roles=["admin"]), True),
        (Principal(user_id="x", account_type="staff", roles=[], department_code="620524MZ"), False),
    ],
    ids=[
        "applicant",
        "stranger",
        "reviewer-same-dept",
        "reviewer-other-dept",
        "reviewer-no-dept",
        "supervisor",
        "admin",
        "staff-no-role",
    ],
)
def test_who_may_read_a_case(principal, allowed):
    doc = doc_for()
    assert cases.can_read(principal, doc) is allowed
    if allowed:
        assert isinstance(cases.view(doc, principal), CaseView)
    else:
        with pytest.raises(NotFound) as info:
            cases.view(doc, principal)
        assert info.value.message == f"no case {doc['case_no']}"


def test_view_has_the_public_fields_only():
    view = cases.view(doc_for(), CITIZEN).model_dump(mode="json")
    assert "applied_events" not in view
    assert "_id" not in view
    assert view["applicant"] == {"user_id": "u-citizen", "name": "张三"}
    assert view["deadline"] == "2026-11-30"
    assert view["timeline"][0]["by"] == "u-citizen"


# --- decisions ----------------------------------------------------------------------------------


def test_decision_update():
    decided_at = datetime(2026, 11, 23, 2, 0, 5, tzinfo=UTC)
    decision = Decision(outcome="rejected", decided_by="auto", reason="申请人年满80周岁", decided_at=decided_at)
    change = cases.decision_update(decision, "rejected")
    assert change["set"] == {"status": "rejected", "decision": decision.model_dump(mode="json")}
    assert change["timeline"] == {"status": "rejected", "at": decided_at, "by": "auto", "comment": "申请人年满80周岁"}


def test_now_is_aware_utc():
    assert cases.now_utc().utcoffset().total_seconds() == 0


def test_a_write_that_makes_a_case_wait_for_a_person_marks_it_for_good():
    from services.intake.storage import marked_if_task

    fields = {"status": "accepted", "awaiting_review": True}
    assert marked_if_task(fields) == {**fields, "ever_task": True}
    assert fields == {"status": "accepted", "awaiting_review": True}  # the caller's fields untouched
    # Nothing clears the mark: a write that ends the wait leaves it as it is.
    assert marked_if_task({"status": "approved", "awaiting_review": False}) == {
        "status": "approved",
        "awaiting_review": False,
    }


def test_a_case_of_an_item_without_rules_waits_for_a_reviewer_from_its_submission():
    # Nothing for the rules to decide: reviewers may act at once, and it is on their task board.
    no_rules = allowance().model_copy(update={"auto_approval": AutoApproval(enabled=False, rules=[])})
    doc = doc_for(item=no_rules)
    assert doc["awaiting_review"] is True and doc["ever_task"] is True
    assert not lifecycle.rules_pending(doc)


def test_a_case_of_an_item_with_rules_waits_for_them_first():
    doc = doc_for()
    assert allowance().auto_approval.enabled
    assert doc["awaiting_review"] is False and doc["ever_task"] is False
    assert lifecycle.rules_pending(doc)


def test_an_evaluation_reads_with_its_time_written_as_every_other():
    # Stored before 27 November with +00:00, since then with Z: both read back alike.
    for stored in ("2026-11-26T10:00:00.123000+00:00", "2026-11-26T10:00:00.123000Z"):
        doc = {
            **doc_for(),
            "status": "approved",
            "evaluation": {"score": 2, "comment": "慢", "at": stored, "bad": True},
        }
        view = cases.view(doc, CITIZEN).model_dump(mode="json")
        assert view["evaluation"] == {"score": 2, "comment": "慢", "at": "2026-11-26T10:00:00.123000Z", "bad": True}


@pytest.mark.parametrize("code", ["", "X" * 65])
def test_a_code_no_item_can_have_is_not_found(code):
    with pytest.raises(NotFound) as raised:
        cases.require_possible_item_code(code)
    assert code not in str(raised.value) or not code  # not repeated back


@pytest.mark.parametrize("code", ["62052400MZ-GF-0001", "NOPE-1", "X" * 64])
def test_any_other_code_is_for_catalog_to_answer(code):
    cases.require_possible_item_code(code)
