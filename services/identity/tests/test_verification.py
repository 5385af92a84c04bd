from datetime import date

import pytest

from services.common.errors import Conflict, ValidationFailed
from services.identity import verification
from services.identity.idnumbers import make_credit_code, make_id_number
from services.identity.verification import (
    PROVIDERS,
    REAL_NAME,
    REAL_PERSON,
    REGISTERED,
    LocalBusinessRegistry,
    LocalFaceVerifier,
    LocalPopulationRegistry,
)

ID_NUMBER = make_id_number("620524", date(1940, 5, 6), 13)
NOT_IN_REGISTRY = make_id_number("620524", date(1940, 5, 6), 999)  # sequence code 999
LEGAL_PERSON_ID = make_id_number("620524", date(1980, 1, 2), 41)


def citizen(level=REGISTERED, **overrides):
    return {
        "_id": "u-citizen",
        "account_type": "citizen",
        "name": "张三",
        "id_number": ID_NUMBER,
        "assurance_level": level,
        **overrides,
    }


def enterprise(level=REGISTERED, **overrides):
    return {
        "_id": "u-ent",
        "account_type": "enterprise",
        "name": "武山县示例有限公司",
        "credit_code": make_credit_code("91620524MA0000001"),
        "legal_person_name": "李四",
        "legal_person_id_number": LEGAL_PERSON_ID,
        "assurance_level": level,
        **overrides,
    }


class Refusing:
    """A provider that must not be asked."""

    def confirms(self, name, id_number):
        raise AssertionError("the registry was asked")

    def verify(self, id_number, liveness_token):
        raise AssertionError("the face verifier was asked")

    def represents(self, credit_code, enterprise_name, legal_person_name, legal_person_id_number):
        raise AssertionError("the business registry was asked")


def test_levels_are_ordered():
    assert (REGISTERED, REAL_NAME, REAL_PERSON) == (1, 2, 3)


def test_local_providers_are_the_default_set():
    assert PROVIDERS["local"] == (LocalPopulationRegistry, LocalBusinessRegistry, LocalFaceVerifier)


# --- the local population registry --------------------------------------------------------------


def test_registry_confirms_a_well_formed_id_number_with_a_plausible_name():
    assert LocalPopulationRegistry().confirms("张三", ID_NUMBER)
    assert LocalPopulationRegistry().confirms("阿" * 30, ID_NUMBER)


def test_sequence_code_999_is_not_in_the_registry():
    assert NOT_IN_REGISTRY[14:17] == "999"
    assert not LocalPopulationRegistry().confirms("张三", NOT_IN_REGISTRY)


@pytest.mark.parametrize("sequence", [998, 99, 9, 0])
def test_other_sequence_codes_are_in_the_registry(sequence):
    assert LocalPopulationRegistry().confirms("张三", make_id_number("620524", date(1940, 5, 6), sequence))


def test_999_elsewhere_in_the_number_does_not_matter():
    elsewhere = make_id_number("999524", date(1940, 5, 6), 13)
    assert LocalPopulationRegistry().confirms("张三", elsewhere)


@pytest.mark.parametrize("name", ["张", "阿" * 31])
def test_registry_refuses_names_outside_2_to_30_characters(name):
    assert not LocalPopulationRegistry().confirms(name, ID_NUMBER)


# --- the local face verifier --------------------------------------------------------------------


def test_face_token_is_accepted_for_that_person():
    assert LocalFaceVerifier().verify(ID_NUMBER, f"local-live:{ID_NUMBER}")


@pytest.mark.parametrize(
    "token",
    [f"local-live:{LEGAL_PERSON_ID}", "local-live:", ID_NUMBER, f"local-live: {ID_NUMBER}", f"LOCAL-LIVE:{ID_NUMBER}"],
    ids=["another-person", "no-id", "bare-id", "space", "upper-case"],
)
def test_any_other_face_token_is_a_failed_capture(token):
    assert not LocalFaceVerifier().verify(ID_NUMBER, token)


# --- whose identity is checked ------------------------------------------------------------------


def test_a_citizen_is_checked_as_themselves():
    assert verification.person_of(citizen()) == ("张三", ID_NUMBER)


def test_an_enterprise_is_checked_by_its_legal_representative():
    assert verification.person_of(enterprise()) == ("李四", LEGAL_PERSON_ID)


# --- real-name level ----------------------------------------------------------------------------


def test_real_name_check_raises_a_registered_account_to_level_2():
    assert verification.real_name_level(citizen(), LocalPopulationRegistry(), Refusing()) == REAL_NAME


def test_real_name_check_of_an_enterprise_uses_the_legal_person():
    asked = []

    class Recording:
        def confirms(self, name, id_number):
            asked.append((name, id_number))
            return True

        def represents(self, credit_code, enterprise_name, legal_person_name, legal_person_id_number):
            asked.append((credit_code, enterprise_name, legal_person_name, legal_person_id_number))
            return True

    assert verification.real_name_level(enterprise(), Recording(), Recording()) == REAL_NAME
    assert asked == [
        ("李四", LEGAL_PERSON_ID),
        (enterprise()["credit_code"], "武山县示例有限公司", "李四", LEGAL_PERSON_ID),
    ]


def test_an_enterprise_whose_representative_the_business_registry_does_not_confirm_stays_at_its_level():
    # A real person naming themself the legal representative of another company's credit code: the
    # population registry confirms the person, only the business registry knows whose company it is.
    not_registered = enterprise(credit_code=make_credit_code("916205249990000001"[:17]))
    with pytest.raises(ValidationFailed) as info:
        verification.real_name_level(not_registered, LocalPopulationRegistry(), LocalBusinessRegistry())
    assert [d["field"] for d in info.value.details] == ["credit_code"]
    assert verification.real_name_level(enterprise(), LocalPopulationRegistry(), LocalBusinessRegistry()) == REAL_NAME


def test_real_name_not_confirmed_is_a_validation_error_on_the_id_number():
    with pytest.raises(ValidationFailed) as info:
        verification.real_name_level(citizen(id_number=NOT_IN_REGISTRY), LocalPopulationRegistry(), Refusing())
    assert [d["field"] for d in info.value.details] == ["id_number"]


@pytest.mark.parametrize("level", [REAL_NAME, REAL_PERSON])
def test_real_name_check_is_idempotent_at_or_above_level_2(level):
    # Already checked: the registry is not asked again and the level never goes down.
    assert verification.real_name_level(citizen(level), Refusing(), Refusing()) == level


# --- real-person level --------------------------------------------------------------------------


def test_face_check_raises_level_2_to_level_3():
    user = citizen(REAL_NAME)
    assert verification.real_person_level(user, LocalFaceVerifier(), f"local-live:{ID_NUMBER}") == REAL_PERSON


def test_face_check_of_an_enterprise_is_of_the_legal_person():
    faces = LocalFaceVerifier()
    assert verification.real_person_level(enterprise(REAL_NAME), faces, f"local-live:{LEGAL_PERSON_ID}") == 3
    with pytest.raises(ValidationFailed):
        verification.real_person_level(enterprise(REAL_NAME), faces, f"local-live:{ID_NUMBER}")


def test_face_check_needs_the_real_name_check_first():
    with pytest.raises(Conflict, match="real-name"):
        verification.real_person_level(citizen(REGISTERED), Refusing(), f"local-live:{ID_NUMBER}")


def test_face_of_someone_else_is_a_validation_error_on_the_token():
    with pytest.raises(ValidationFailed) as info:
        verification.real_person_level(citizen(REAL_NAME), LocalFaceVerifier(), f"local-live:{LEGAL_PERSON_ID}")
    assert [d["field"] for d in info.value.details] == ["liveness_token"]


def test_face_check_is_idempotent_at_level_3():
    assert verification.real_person_level(citizen(REAL_PERSON), Refusing(), "anything") == REAL_PERSON
