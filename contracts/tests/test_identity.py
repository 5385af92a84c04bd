import pytest
from pydantic import ValidationError

from contracts.identity import CitizenRegistration, EnterpriseRegistration, RefreshRequest, StaffCreation

CITIZEN = {"account_type": "citizen", "id_number": "620524194005060136", "phone": "13800138000", "password": "p" * 9}


@pytest.mark.parametrize("name", ["张三", "Ann-Marie O'Neil", "  李四 ", "阿卜杜·热合曼"])
def test_a_name_that_shows_is_taken(name):
    assert CitizenRegistration(name=name, **CITIZEN).name == name.strip()


@pytest.mark.parametrize("name", ["\u0000", "张\u0000三", "a\tb", "a\nb", "\u3000", "\x7f"])
def test_a_name_with_control_characters_or_nothing_that_shows_is_refused(name):
    with pytest.raises(ValidationError):
        CitizenRegistration(name=name, **CITIZEN)
    with pytest.raises(ValidationError):
        StaffCreation(username="li.si", name=name, password="p" * 9, roles=["reviewer"], department_code="620524GA")


def test_an_enterprise_name_is_held_to_the_same():
    body = {
        "account_type": "enterprise",
        "credit_code": "91620524MA0000001X",
        "legal_person_name": "李四",
        "legal_person_id_number": "620524194005060136",
        "phone": "13800138000",
        "password": "p" * 9,
    }
    with pytest.raises(ValidationError) as refused:
        EnterpriseRegistration(name="公司\u0000", **body)
    assert refused.value.errors()[0]["loc"] == ("name",)


def test_a_refresh_token_is_at_most_4096_characters():
    assert RefreshRequest(refresh_token="r" * 4096)
    with pytest.raises(ValidationError):
        RefreshRequest(refresh_token="r" * 4097)
