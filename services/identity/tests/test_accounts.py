from datetime import date

import pytest

from contracts.identity import CitizenRegistration, EnterpriseRegistration
from services.common.errors import ValidationFailed
from services.identity import accounts
from services.identity.idnumbers import make_credit_code, make_id_number

ID_NUMBER = make_id_number("620524", date(1940, 5, 6), 13)  # male, born 1940-05-06
FEMALE_ID = make_id_number("110105", date(1990, 12, 31), 2)
CREDIT_CODE = make_credit_code("91620524MA0000001")


def _wrong_check(number):
    return number[:17] + ("0" if number[17] != "0" else "1")


def citizen(**overrides):
    data = {
        "account_type": "citizen",
        "name": "张三",
        "id_number": ID_NUMBER,
        "phone": "13800138000",
        "password": "correct horse battery",
    }
    data.update(overrides)
    return CitizenRegistration.model_validate(data)


def enterprise(**overrides):
    data = {
        "account_type": "enterprise",
        "name": "武山县示例有限公司",
        "credit_code": CREDIT_CODE,
        "legal_person_name": "李四",
        "legal_person_id_number": FEMALE_ID,
        "phone": "13900139000",
        "password": "correct horse battery",
    }
    data.update(overrides)
    return EnterpriseRegistration.model_validate(data)


def _fields(exc_info):
    return [d["field"] for d in exc_info.value.details]


# --- passwords ----------------------------------------------------------------------------------


def test_password_hash_is_not_the_password_and_verifies():
    stored = accounts.hash_password("s3cret-pass")
    assert "s3cret-pass" not in stored
    assert accounts.password_matches(stored, "s3cret-pass")
    assert not accounts.password_matches(stored, "s3cret-pasS")
    assert not accounts.password_matches(stored, "")


def test_hashes_are_salted():
    assert accounts.hash_password("same password") != accounts.hash_password("same password")


@pytest.mark.parametrize("stored", [None, "", "not-a-hash", "$argon2id$v=19$broken"])
def test_missing_or_broken_hash_never_matches(stored):
    assert accounts.password_matches(stored, "anything") is False


# --- registration -------------------------------------------------------------------------------


def test_citizen_document():
    doc = accounts.new_applicant(citizen(email="zhang@example.com"))
    assert doc["account_type"] == "citizen"
    assert doc["name"] == "张三"
    assert doc["login_key"] == ID_NUMBER
    assert doc["id_number"] == ID_NUMBER
    assert doc["phone"] == doc["phone_key"] == "13800138000"
    assert doc["email"] == "zhang@example.com"
    assert doc["roles"] == ["applicant"]
    assert doc["assurance_level"] == 1
    assert doc["department_code"] is None
    assert doc["created_at"].tzinfo is not None
    assert len(doc["_id"]) == 32
    assert "password" not in doc
    assert "correct horse battery" not in str(doc)
    assert accounts.password_matches(doc["password_hash"], "correct horse battery")


def test_each_registration_gets_its_own_id():
    assert accounts.new_applicant(citizen())["_id"] != accounts.new_applicant(citizen())["_id"]


def test_enterprise_document():
    doc = accounts.new_applicant(enterprise())
    assert doc["account_type"] == "enterprise"
    assert doc["login_key"] == CREDIT_CODE
    assert doc["credit_code"] == CREDIT_CODE
    assert doc["legal_person_name"] == "李四"
    assert doc["legal_person_id_number"] == FEMALE_ID
    assert "id_number" not in doc
    assert doc["roles"] == ["applicant"]


def test_national_codes_are_taken_in_lower_case_and_kept_in_upper_case():
    # The check character X is often typed as x; a credit code's letters too.
    with_x = make_id_number("620524", date(1940, 5, 6), 3)
    assert with_x.endswith("X")
    doc = accounts.new_applicant(citizen(id_number=with_x.lower()))
    assert doc["id_number"] == doc["login_key"] == with_x
    doc = accounts.new_applicant(enterprise(credit_code=CREDIT_CODE.lower(), legal_person_id_number=with_x.lower()))
    assert (doc["credit_code"], doc["legal_person_id_number"]) == (CREDIT_CODE, with_x)


def test_wrong_id_check_digit_is_refused():
    with pytest.raises(ValidationFailed) as info:
        accounts.new_applicant(citizen(id_number=_wrong_check(ID_NUMBER)))
    assert _fields(info) == ["id_number"]
    assert "check digit" in info.value.details[0]["issue"]


@pytest.mark.parametrize("password", sorted(accounts.COMMON_PASSWORDS))
def test_common_passwords_are_refused(password):
    with pytest.raises(ValidationFailed) as info:
        accounts.new_applicant(citizen(password=password.upper() if password.isalpha() else password))
    assert _fields(info) == ["password"]


def test_common_password_check_ignores_case():
    with pytest.raises(ValidationFailed):
        accounts.new_applicant(citizen(password="PassWord1"))


def test_every_problem_is_listed_at_once():
    with pytest.raises(ValidationFailed) as info:
        accounts.new_applicant(citizen(password="password", id_number=_wrong_check(ID_NUMBER)))
    assert sorted(_fields(info)) == ["id_number", "password"]


def test_enterprise_problems_name_their_fields():
    bad_code = CREDIT_CODE[:17] + ("0" if CREDIT_CODE[17] != "0" else "1")
    with pytest.raises(ValidationFailed) as info:
        accounts.new_applicant(enterprise(credit_code=bad_code, legal_person_id_number=_wrong_check(FEMALE_ID)))
    assert sorted(_fields(info)) == ["credit_code", "legal_person_id_number"]


def test_future_birth_date_is_refused():
    with pytest.raises(ValidationFailed) as info:
        accounts.new_applicant(citizen(id_number=make_id_number("620524", date(2099, 1, 1), 1)))
    assert _fields(info) == ["id_number"]


def test_id_number_with_full_width_digits_is_refused():
    # Otherwise a full-width copy of a registered number would be a new login_key (no 409).
    full_width = ID_NUMBER[:6].translate(str.maketrans("0123456789", "０１２３４５６７８９")) + ID_NUMBER[6:]
    with pytest.raises(ValidationFailed) as info:
        accounts.new_applicant(citizen(id_number=full_width))
    assert _fields(info) == ["id_number"]


# --- staff, login keys, views -------------------------------------------------------------------


def test_staff_document():
    doc = accounts.new_staff("wang", "王审核", "Reviewer-2026", ["reviewer"], "620524MZ")
    assert doc["account_type"] == "staff"
    assert doc["login_key"] == "staff:wang"
    assert doc["phone"] is None
    assert doc["phone_key"] == f"staff:{doc['_id']}"  # unique placeholder, never a real phone
    assert doc["roles"] == ["reviewer"]
    assert doc["department_code"] == "620524MZ"
    assert doc["assurance_level"] == 2
    assert accounts.password_matches(doc["password_hash"], "Reviewer-2026")


def test_login_keys_cover_id_numbers_credit_codes_and_staff():
    assert accounts.login_keys("62052419400506013x") == ["62052419400506013X", "staff:62052419400506013x"]
    assert accounts.login_keys("admin") == ["ADMIN", "staff:admin"]
    # Staff usernames are lower case: BOB is bob, so both spellings share bob's failed-login
    # allowance (were BOB no one, its 429s or 401s would tell whether bob exists).
    assert accounts.login_keys("BOB") == ["BOB", "staff:bob"]


def test_login_field_names_the_public_field():
    assert accounts.login_field(accounts.new_applicant(citizen())) == "id_number"
    assert accounts.login_field(accounts.new_applicant(enterprise())) == "credit_code"
    assert accounts.login_field(accounts.new_staff("a", "A", "pw-pw-pw-pw", ["admin"], None)) == "username"


def test_registration_result_and_user_view():
    doc = accounts.new_applicant(citizen())
    result = accounts.registration_result(doc)
    assert result.model_dump() == {
        "user_id": doc["_id"],
        "account_type": "citizen",
        "name": "张三",
        "assurance_level": 1,
    }
    view = accounts.user_view(doc)
    assert view.user_id == doc["_id"]
    assert view.roles == ["applicant"]
    assert view.department_code is None
    assert "password_hash" not in view.model_dump()


def test_citizen_profile_is_derived_from_the_id_number():
    doc = accounts.new_applicant(citizen())
    profile = accounts.applicant_profile(doc, date(2026, 5, 5), ["household_register"])
    assert profile.age == 85
    assert profile.gender == "male"
    assert profile.region_code == "620524"
    assert profile.account_type == "citizen"
    assert profile.assurance_level == 1
    assert profile.certificates == ["household_register"]
    assert accounts.applicant_profile(doc, date(2026, 5, 6), []).age == 86


def test_enterprise_profile_has_no_age_and_region_from_credit_code():
    doc = accounts.new_applicant(enterprise())
    profile = accounts.applicant_profile(doc, date(2026, 5, 5), [])
    assert profile.age is None
    assert profile.gender is None
    assert profile.region_code == "620524"
    assert profile.account_type == "enterprise"


def test_staff_profile_has_no_personal_facts():
    doc = accounts.new_staff("wang", "王审核", "Reviewer-2026", ["reviewer"], "620524MZ")
    profile = accounts.applicant_profile(doc, date(2026, 5, 5), [])
    assert profile.age is None
    assert profile.region_code is None


@pytest.mark.parametrize("name", ["13800138000", "19912345678"])
def test_a_mainland_mobile_number_is_looked_up_as_a_phone(name):
    assert accounts.phone_login(name) == name


@pytest.mark.parametrize("name", ["staff:9f1c2a", "620524194005060136", "12800138000", "admin", "138001380001"])
def test_anything_else_is_no_phone(name):
    assert accounts.phone_login(name) == ""
