"""Raising an account's assurance level: real-name (registry) and real-person (face) checks.

Both are provider interfaces; production plugs in the population registry and a face-check SDK.
The local providers, for development and tests, hold no personal data and behave as documented:

- LocalPopulationRegistry confirms any well-formed id number with a 2–30 character name, except
  id numbers whose sequence code (digits 15–17) is `999`: those are "not in the registry".
- LocalBusinessRegistry confirms any enterprise and legal representative, except credit codes whose
  organization code (characters 9–17) begins with `999`: those are "not in the registry".
- LocalFaceVerifier accepts the liveness token `local-live:<id number>` for that person only;
  any other token is a failed capture.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from services.common.errors import Conflict, ValidationFailed

REGISTERED, REAL_NAME, REAL_PERSON = 1, 2, 3


class PopulationRegistry(Protocol):
    def confirms(self, name: str, id_number: str) -> bool: ...


class BusinessRegistry(Protocol):
    """The market regulator's register (国家企业信用信息): is this person the legal representative
    of the enterprise registered under this credit code and name?"""

    def represents(
        self, credit_code: str, enterprise_name: str, legal_person_name: str, legal_person_id_number: str
    ) -> bool: ...


class FaceVerifier(Protocol):
    def verify(self, id_number: str, liveness_token: str) -> bool: ...


class LocalPopulationRegistry:
    def confirms(self, name: str, id_number: str) -> bool:
        return 2 <= len(name) <= 30 and id_number[14:17] != "999"


class LocalBusinessRegistry:
    def represents(
        self, credit_code: str, enterprise_name: str, legal_person_name: str, legal_person_id_number: str
    ) -> bool:
        return not credit_code[8:17].startswith("999")


class LocalFaceVerifier:
    def verify(self, id_number: str, liveness_token: str) -> bool:
        return liveness_token == f"local-live:{id_number}"


class Providers(NamedTuple):
    """One set of providers: their classes in PROVIDERS, instances where they are used."""

    people: Any  # a PopulationRegistry
    businesses: Any  # a BusinessRegistry
    faces: Any  # a FaceVerifier


PROVIDERS: dict[str, Providers] = {
    "local": Providers(LocalPopulationRegistry, LocalBusinessRegistry, LocalFaceVerifier)
}


def person_of(user: dict[str, Any]) -> tuple[str, str]:
    """The natural person checked: the citizen, or an enterprise's legal representative."""
    if user["account_type"] == "enterprise":
        return user["legal_person_name"], user["legal_person_id_number"]
    return user["name"], user["id_number"]


def real_name_level(user: dict[str, Any], registry: PopulationRegistry, businesses: BusinessRegistry) -> int:
    """The level after a real-name check (unchanged if already there), or ValidationFailed. An
    enterprise's is two: its legal representative is a real person (the population registry), and
    is that enterprise's (the business registry); the first alone let anyone name themself the
    representative of another company's credit code and raise that account to level 3."""
    if user["assurance_level"] >= REAL_NAME:
        return user["assurance_level"]
    name, id_number = person_of(user)
    if not registry.confirms(name, id_number):
        field = "legal_person_id_number" if user["account_type"] == "enterprise" else "id_number"
        raise ValidationFailed(
            "the population registry does not confirm this name and id number",
            [{"field": field, "issue": "not confirmed by the population registry"}],
        )
    if user["account_type"] == "enterprise" and not businesses.represents(
        user["credit_code"], user["name"], name, id_number
    ):
        raise ValidationFailed(
            "the business registry does not confirm this enterprise and its legal representative",
            [{"field": "credit_code", "issue": "not confirmed by the business registry"}],
        )
    return REAL_NAME


def real_person_level(user: dict[str, Any], faces: FaceVerifier, liveness_token: str) -> int:
    if user["assurance_level"] >= REAL_PERSON:
        return user["assurance_level"]
    if user["assurance_level"] < REAL_NAME:
        raise Conflict("complete the real-name check before the face check")
    _, id_number = person_of(user)
    if not faces.verify(id_number, liveness_token):
        raise ValidationFailed(
            "the face check did not match this person", [{"field": "liveness_token", "issue": "not verified"}]
        )
    return REAL_PERSON
