"""Property-based tests (hypothesis) of the validators that stand between the public and the
store: identity numbers, credit codes, phone numbers, JSON Schema forms, CEL rules."""

from __future__ import annotations

import contextlib
from datetime import date

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from contracts.identity import Phone
from services.common.rules import RuleCompileError, compile_rule, evaluate_rule
from services.identity.idnumbers import (
    credit_code_problem,
    id_number_problem,
    make_credit_code,
    make_id_number,
)
from services.intake.cases import form_problems

CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
regions = st.from_regex(r"\A[1-6][0-9]{5}\Z")
births = st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31))
sequences = st.integers(min_value=0, max_value=999)


@given(regions, births, sequences)
def test_every_well_made_id_number_is_valid(region, born, sequence):
    assert id_number_problem(make_id_number(region, born, sequence)) is None


@given(regions, births, sequences, st.integers(min_value=0, max_value=16), st.integers(min_value=1, max_value=9))
def test_any_single_wrong_digit_in_an_id_number_is_caught(region, born, sequence, position, shift):
    valid = make_id_number(region, born, sequence)
    wrong = valid[:position] + str((int(valid[position]) + shift) % 10) + valid[position + 1 :]
    assert id_number_problem(wrong) is not None  # the check digit, or the date it breaks


@given(st.text(max_size=40))
def test_arbitrary_text_never_crashes_the_id_number_check(text):
    assert id_number_problem(text) is None or isinstance(id_number_problem(text), str)


@given(st.text(alphabet=CREDIT_CHARSET, min_size=17, max_size=17))
def test_every_well_made_credit_code_is_valid(first17):
    assert credit_code_problem(make_credit_code(first17)) is None


@given(
    st.text(alphabet=CREDIT_CHARSET, min_size=17, max_size=17),
    st.integers(min_value=0, max_value=16),
    st.integers(min_value=1, max_value=30),
)
def test_any_single_wrong_character_in_a_credit_code_is_caught(first17, position, shift):
    valid = make_credit_code(first17)
    replaced = CREDIT_CHARSET[(CREDIT_CHARSET.index(valid[position]) + shift) % 31]
    assert credit_code_problem(valid[:position] + replaced + valid[position + 1 :]) is not None


@given(st.text(max_size=30))
def test_arbitrary_text_never_crashes_the_credit_code_check(text):
    problem = credit_code_problem(text)
    assert problem is None or isinstance(problem, str)


PHONES = TypeAdapter(Phone)


@given(st.from_regex(r"\A1[3-9][0-9]{9}\Z"))
def test_mainland_mobile_numbers_are_accepted(phone):
    assert PHONES.validate_python(phone) == phone


@given(
    st.text(max_size=20).filter(
        lambda t: not (len(t) == 11 and t[0] == "1" and t[1] in "3456789" and t.isascii() and t.isdigit())
    )
)
def test_anything_else_is_refused_as_a_phone(text):
    with pytest.raises(ValidationError):
        PHONES.validate_python(text)


FORM_SCHEMA = {
    "type": "object",
    "required": ["bank_account", "contact_phone"],
    "properties": {
        "bank_account": {"type": "string", "pattern": "^[0-9]{16,19}$"},
        "contact_phone": {"type": "string", "pattern": "^1[3-9][0-9]{9}$"},
        "area": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(sorted(FORM_SCHEMA["properties"])) | st.text(max_size=12), json_values, max_size=6)
)
def test_any_form_gets_a_list_of_field_problems_never_an_exception(form):
    problems = form_problems(FORM_SCHEMA, form)
    assert all(p["field"].startswith("form") and p["issue"] for p in problems)
    if set(form) - set(FORM_SCHEMA["properties"]):
        assert problems  # unknown fields are refused


valid_forms = st.fixed_dictionaries(
    {"bank_account": st.from_regex(r"\A[0-9]{16,19}\Z"), "contact_phone": st.from_regex(r"\A1[3-9][0-9]{9}\Z")},
    optional={"area": st.integers(min_value=0)},
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(valid_forms, st.dictionaries(st.text(max_size=12), json_values, max_size=2))
def test_a_valid_form_passes_and_any_field_beyond_the_schema_is_named(form, extra):
    assert form_problems(FORM_SCHEMA, form) == []
    unknown = set(extra) - set(FORM_SCHEMA["properties"])
    problems = form_problems(FORM_SCHEMA, {**form, **{k: extra[k] for k in unknown}})
    assert bool(problems) == bool(unknown)  # exactly the unknown fields are what is wrong


@given(st.integers(min_value=-5, max_value=130) | json_values, st.sampled_from(["620524", "620502"]) | json_values)
@example(2**63, "620524")  # past CEL's 64-bit int: an error, never a pass
@example(85, "620524")
def test_a_rule_on_any_input_passes_fails_or_errors_and_never_raises(age, region):
    rule = {"id": "r", "description": "d", "expression": 'applicant.age >= 80 && applicant.region_code == "620524"'}
    outcome = evaluate_rule(
        rule, {"applicant": {"age": age, "region_code": region}, "form": {}, "materials": [], "certificates": []}
    )
    number = isinstance(age, int | float) and not isinstance(age, bool)
    holds = number and isinstance(region, str) and age >= 80 and region == "620524"
    assert outcome.result in ("passed", "failed", "error")
    if outcome.result == "passed":  # never for a value of the wrong type
        assert holds
    # Well typed (an int CEL holds: 64 bits) and a string: passes exactly when it holds.
    if type(age) is int and -(2**63) <= age < 2**63 and isinstance(region, str):
        assert outcome.result == ("passed" if holds else "failed")


@given(st.text(max_size=200))
def test_any_expression_text_compiles_or_is_refused_cleanly(expression):
    with contextlib.suppress(RuleCompileError):  # the item is refused with the reason
        compile_rule(expression)


@pytest.mark.parametrize(
    "expression, result",
    [
        ("[1, 2, 3].map(x, [1, 2, 3].map(y, x * y)).size() > 0", "passed"),  # bounded: CEL has no loops
        ('"a" + "b" == "ab"', "passed"),
        ('"a" + "b" == "ba"', "failed"),
    ],
)
def test_rules_terminate_cel_has_no_unbounded_loops(expression, result):
    outcome = evaluate_rule({"id": "r", "description": "d", "expression": expression}, {})
    assert outcome.result == result


def test_macros_nested_three_deep_are_refused_when_compiled():
    with pytest.raises(RuleCompileError):
        compile_rule("[1, 2].map(x, [1].map(y, [1].map(z, x * y * z))).size() > 0")
