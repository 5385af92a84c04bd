import pytest

from services.catalog.guides import checked_guide
from services.catalog.seed_data import seed_items
from services.common.errors import ValidationFailed


def _guide(**changes):
    guide = seed_items()[0].copy()
    guide.update(changes)
    return guide


def test_seed_items_are_valid_guides():
    for item in seed_items():
        checked_guide(item)


def test_rule_that_does_not_compile_is_named():
    bad = _guide(
        auto_approval={"enabled": True, "rules": [{"id": "age", "description": "d", "expression": "applicant.age >="}]}
    )
    with pytest.raises(ValidationFailed) as err:
        checked_guide(bad)
    assert err.value.details[0]["field"] == "auto_approval.rules.0.expression"
    assert "rule age" in err.value.details[0]["issue"]


def _issues(guide):
    with pytest.raises(ValidationFailed) as err:
        checked_guide(guide)
    return {d["field"]: d["issue"] for d in err.value.details}


def test_two_rules_of_one_id_are_refused():
    # A decision's explanation names the rules that failed: two of one id are indistinguishable.
    rules = seed_items()[0]["auto_approval"]["rules"]
    twice = {"enabled": True, "rules": [rules[0], {**rules[1], "id": rules[0]["id"]}]}
    assert _issues(_guide(auto_approval=twice)) == {"auto_approval.rules": "rule ids must be unique"}


def test_automatic_approval_without_a_rule_is_refused():
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(auto_approval={"enabled": True, "rules": []}))
    assert [d["field"] for d in err.value.details] == ["auto_approval.rules"]
    assert checked_guide(_guide(auto_approval={"enabled": False, "rules": []}))


def test_two_process_steps_of_one_number_are_refused():
    steps = seed_items()[0]["process"]
    again = [*steps, {**steps[-1], "name": "再审"}]
    assert _issues(_guide(process=again)) == {"process": "step numbers must be unique"}


@pytest.mark.parametrize(
    ("mode", "visits", "issue"),
    [
        ("online", 1, "must be 0 for online"),
        ("one_visit", 2, "must be at most 1 for one_visit"),
        ("onsite", 0, "must be at least 1 for onsite"),
    ],
)
def test_visits_must_fit_the_handling_mode(mode, visits, issue):
    # 零见面 with a visit, or 到现场办 with none, would be read out to applicants (需到现场0次).
    assert _issues(_guide(handling_mode=mode, visits_required=visits)) == {"visits_required": issue}
    checked_guide(_guide(handling_mode=mode, visits_required=1 if mode == "onsite" else 0))


def test_invalid_form_schema_is_refused():
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(form_schema={"type": "no-such-type"}))
    assert err.value.details[0]["field"] == "form_schema"


def test_a_form_schema_reaching_outside_itself_or_with_a_backtracking_pattern_is_refused():
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "file:///etc/passwd"}, "b": {"type": "string", "pattern": "^(a)\\1$"}},
    }
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(form_schema=schema))
    fields = [d["field"] for d in err.value.details]
    assert "form_schema.properties.a.$ref" in fields and "form_schema.properties.b.pattern" in fields


def test_item_code_pattern_is_enforced():
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(item_code="not-a-code"))
    assert err.value.details[0]["field"] == "item_code"


def test_what_reading_answers_besides_the_guide_is_ignored():
    read = _guide(version=3, updated_at="2026-11-27T10:00:00Z", updated_by="admin-1")
    assert checked_guide(read).model_dump() == checked_guide(_guide()).model_dump()


@pytest.mark.parametrize("field", ["legal_days", "promised_days"])
def test_time_limits_are_bounded(field):
    # A count of 10**15 working days would never be counted out (a deadline is counted day by day).
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(legal_days=10**15, promised_days=10**15))
    assert field in {detail["field"] for detail in err.value.details}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"legal_days": True}, "legal_days"),
        ({"promised_days": "5"}, "promised_days"),
        ({"visits_required": 0.0}, "visits_required"),
        ({"fees": [{"name": "工本费", "amount": "20"}]}, "fees.0.amount"),
        ({"fees": [{"name": "工本费", "amount": False}]}, "fees.0.amount"),
    ],
)
def test_counts_and_amounts_are_json_numbers(change, field):
    # pydantic alone would read true as 1 day and "5" as 5: a guide says what it means.
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(**change))
    assert field in {detail["field"] for detail in err.value.details}


def test_a_whole_fee_amount_is_a_number():
    assert checked_guide(_guide(fees=[{"name": "工本费", "amount": 20}])).fees[0].amount == 20


def test_every_time_limit_is_at_most_1000_working_days_and_a_certificate_valid_at_most_36500_days():
    # The README's bounds, written out: each field at its bound is taken, one beyond is refused.
    process = _guide()["process"]
    certificate = {"type": "test_licence", "name": "测试许可证", "valid_days": 36500}
    closed = {**_guide()["form_schema"], "additionalProperties": False}
    at_bounds = _guide(
        legal_days=1000,
        promised_days=1000,
        process=[{**process[0], "days": 1000}],
        issues_certificate=certificate,
        form_schema=closed,
    )
    assert checked_guide(at_bounds)
    beyond = [  # (a promise may not exceed the legal limit, so promised_days goes beyond with it)
        (["legal_days"], {"legal_days": 1001}),
        (["legal_days", "promised_days"], {"legal_days": 1001, "promised_days": 1001}),
        (["process.0.days"], {"process": [{**process[0], "days": 1001}]}),
        (["issues_certificate.valid_days"], {"issues_certificate": {**certificate, "valid_days": 36501}}),
    ]
    for fields, change in beyond:
        with pytest.raises(ValidationFailed) as err:
            checked_guide({**at_bounds, **change})
        assert [d["field"] for d in err.value.details] == fields


def test_an_item_that_issues_a_certificate_declares_its_form_fields():
    certificate = {"type": "test_licence", "name": "测试许可证", "valid_days": 365}
    opened = {"type": "object", "properties": {"shop_name": {"type": "string"}}}
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(issues_certificate=certificate, form_schema=opened))
    assert err.value.details[0]["field"] == "form_schema.additionalProperties"
    closed = {**opened, "additionalProperties": False}
    assert checked_guide(_guide(issues_certificate=certificate, form_schema=closed)).issues_certificate
    assert checked_guide(_guide(issues_certificate=None, form_schema=opened))  # no certificate: open is fine


@pytest.mark.parametrize("name", ["高龄津贴\n申领", "高龄津贴\r申领", "高龄\t津贴", "\u3000\u3000"])
def test_names_that_are_shown_on_one_line_are_one_line(name):
    # An item's name is a notice's title and an email's subject: a line break cut the title in
    # two, and a carriage return made every email of the item fail (no subject can hold one).
    assert "name" in _issues(_guide(name=name))
    materials = [{**seed_items()[0]["materials"][0], "name": name}]
    assert "materials.0.name" in _issues(_guide(materials=materials))
    certificate = {"type": "elderly_allowance", "name": name, "valid_days": 365}
    assert "issues_certificate.name" in _issues(_guide(issues_certificate=certificate))


def test_a_name_with_spaces_inside_is_one_line():
    assert checked_guide(_guide(name="高龄 津贴 申领")).name == "高龄 津贴 申领"
