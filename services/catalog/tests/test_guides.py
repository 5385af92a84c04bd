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


def test_invalid_form_schema_is_refused():
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(form_schema={"type": "no-such-type"}))
    assert err.value.details[0]["field"] == "form_schema"


def test_item_code_pattern_is_enforced():
    with pytest.raises(ValidationFailed) as err:
        checked_guide(_guide(item_code="not-a-code"))
    assert err.value.details[0]["field"] == "item_code"
