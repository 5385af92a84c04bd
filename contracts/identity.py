"""Identity RPC payloads: registration, login, tokens, profiles."""

from typing import Annotated, Literal

from pydantic import EmailStr, Field

from contracts.base import Contract
from contracts.common import AccountType, ApplicantType, Role

Phone = Annotated[str, Field(pattern=r"^1[3-9][0-9]{9}$", description="11-digit mainland mobile number")]
Password = Annotated[str, Field(min_length=8, max_length=128)]
PersonName = Annotated[str, Field(min_length=1, max_length=64)]


class CitizenRegistration(Contract):
    account_type: Literal["citizen"]
    name: PersonName
    id_number: Annotated[str, Field(min_length=18, max_length=18)]
    phone: Phone
    password: Password
    email: EmailStr | None = None


class EnterpriseRegistration(Contract):
    account_type: Literal["enterprise"]
    name: Annotated[str, Field(min_length=1, max_length=128)]
    credit_code: Annotated[str, Field(min_length=18, max_length=18)]
    legal_person_name: PersonName
    legal_person_id_number: Annotated[str, Field(min_length=18, max_length=18)]
    phone: Phone
    password: Password
    email: EmailStr | None = None


Registration = Annotated[CitizenRegistration | EnterpriseRegistration, Field(discriminator="account_type")]


class RegistrationResult(Contract):
    user_id: str
    account_type: ApplicantType
    name: str
    assurance_level: int


class LoginRequest(Contract):
    username: Annotated[str, Field(min_length=1, max_length=128)]
    password: Annotated[str, Field(min_length=1, max_length=128)]


class TokenPair(Contract):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class UserView(Contract):
    """`GET /api/v1/me`."""

    user_id: str
    account_type: AccountType
    name: str
    roles: list[Role]
    assurance_level: int
    department_code: str | None = None


class ApplicantProfile(Contract):
    """What automatic approval may read about an applicant (the `applicant` of a rule)."""

    user_id: str
    account_type: AccountType
    name: str
    age: int | None = None
    gender: Literal["male", "female"] | None = None
    region_code: str | None = None
    assurance_level: int
    certificates: list[str] = []


class Jwk(Contract):
    kty: str
    crv: str | None = None
    x: str | None = None
    kid: str
    alg: str
    use: str = "sig"


class JwkSet(Contract):
    keys: list[Jwk]
