import pytest

from services.common import rules

FACTS = {
    "applicant": {"age": 82, "region_code": "620524", "account_type": "citizen"},
    "form": {"bank_account": "6222020200112233445"},
    "materials": ["id_card"],
    "certificates": [],
}


def rule(rule_id, expression, on_fail="manual_review"):
    return {"id": rule_id, "description": rule_id, "expression": expression, "on_fail": on_fail}


def test_all_rules_pass_approves_and_explains_inputs():
    result = rules.evaluate(
        [rule("age", "applicant.age >= 80"), rule("region", 'applicant.region_code.startsWith("6205")')], FACTS
    )
    assert result.outcome == "approved"
    assert [r.result for r in result.results] == ["passed", "passed"]
    assert result.results[0].inputs == [{"name": "applicant.age", "value": 82}]


def test_failed_reject_rule_rejects_with_its_description():
    result = rules.evaluate([rule("age", "applicant.age >= 90", on_fail="reject")], FACTS)
    assert result.outcome == "rejected"
    assert result.reason == "age"


def test_failed_review_rule_goes_to_manual_review():
    result = rules.evaluate([rule("cert", '"business_licence" in certificates')], FACTS)
    assert result.outcome == "manual_review"


def test_runtime_error_never_approves_or_rejects():
    result = rules.evaluate([rule("missing", "form.nothing > 3", on_fail="reject")], FACTS)
    assert result.outcome == "manual_review"
    assert result.results[0].result == "error"
    assert result.results[0].error


def test_non_boolean_result_is_an_error():
    result = rules.evaluate([rule("num", "applicant.age + 1")], FACTS)
    assert result.results[0].result == "error"


def test_compile_error_is_reported():
    with pytest.raises(rules.RuleCompileError):
        rules.compile_rule("applicant.age >=")


def test_referenced_inputs_ignores_string_literals():
    assert rules.referenced_inputs('form.kind == "applicant.age" && size(materials) > 0') == ["form.kind", "materials"]
