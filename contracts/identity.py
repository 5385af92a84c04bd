"""Identity RPC payloads: registration, login, tokens, profiles."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, EmailStr, Field, StringConstraints, model_validator

from contracts.base import Contract
from contracts.common import AccountType, ApplicantType, PageQuery, Role

PHONE_PATTERN = r"^1[3-9][0-9]{9}$"
Phone = Annotated[str, Field(pattern=PHONE_PATTERN, description="11-digit mainland mobile number")]
# Secrets are taken exactly as typed: stripping spaces would change a password (and its length,
# which the published schema checks) behind the user's back.
Verbatim = StringConstraints(strip_whitespace=False)
Password = Annotated[str, Verbatim, Field(min_length=8, max_length=128)]
# A name is printed on notices and certificates: no control characters (a NUL was a name), and at
# least one character that shows.
_NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
PersonName = Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
OrganisationName = Annotated[str, Field(min_length=1, max_length=128, pattern=_NAME_PATTERN)]
PhoneCode = Annotated[str, Field(pattern=r"^[0-9]{6}$", description="the 6-digit code texted to the new phone")]
# An id number's check character X and a credit code's letters, as typed (`x` is common): upper
# case is how they are stored, checked and looked up at login.
NationalCode = Annotated[str, Field(min_length=18, max_length=18), AfterValidator(str.upper)]


class CitizenRegistration(Contract):
    account_type: Literal["citizen"]
    name: PersonName
    id_number: NationalCode
    phone: Phone
    password: Password
    email: EmailStr | None = None


class EnterpriseRegistration(Contract):
    account_type: Literal["enterprise"]
    name: OrganisationName
    credit_code: NationalCode
    legal_person_name: PersonName
    legal_person_id_number: NationalCode
    phone: Phone
    password: Password
    email: EmailStr | None = None


Registration = Annotated[CitizenRegistration | EnterpriseRegistration, Field(discriminator="account_type")]


class RegistrationResult(Contract):
    user_id: str
    account_type: ApplicantType
    name: str
    assurance_level: int


class PhoneCodeRequest(Contract):
    """`POST /api/v1/me/contact/phone-code`: text a one-time code to a phone the account holder
    wants as their new one (the code proves they hold it)."""

    phone: Phone


class PhoneCodeSent(Contract):
    """The answer to a phone-code request: when the code stops working, and how many seconds until
    another may be asked for."""

    phone: str
    expires_at: datetime
    resend_after: int


class ContactChange(Contract):
    """`PUT /api/v1/me/contact`: a new phone number and/or email address (null removes the email),
    confirmed with the account's current password; a new phone also needs the code texted to it."""

    password: Annotated[str, Verbatim, Field(min_length=1, max_length=128)]
    phone: Phone | None = None
    phone_code: PhoneCode | None = None
    email: EmailStr | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> "ContactChange":
        if self.phone is None and "email" not in self.model_fields_set:
            raise ValueError("give a new phone, a new email, or email null to remove it")
        return self


class PasswordChange(Contract):
    """`PUT /api/v1/me/password`: a new password, confirmed with the current one."""

    current_password: Annotated[str, Verbatim, Field(min_length=1, max_length=128)]
    new_password: Password


class StaffPasswordReset(Contract):
    """`POST /api/v1/admin/staff/{username}/password`: an admin sets a new password for a staff
    account (staff have no phone to reset it with); tell it to its holder in person, who must
    choose one of their own at the next login."""

    new_password: Password


class PasswordResetCodeRequest(Contract):
    """`POST /api/v1/auth/password-reset/code`: text a code to the phone of the account this login
    name belongs to (id number, credit code or phone), for a forgotten password."""

    username: Annotated[str, Field(min_length=1, max_length=64)]


class PasswordResetCodeSent(Contract):
    """The same answer whether or not the account exists (no one learns who is registered)."""

    valid_minutes: int
    resend_after: int


class PasswordReset(Contract):
    """`POST /api/v1/auth/password-reset`: a new password, with the code texted to the account's phone."""

    username: Annotated[str, Field(min_length=1, max_length=64)]
    code: PhoneCode
    new_password: Password


class ContactView(Contract):
    """`GET /api/v1/me/contact`: where the account holder is reached (SMS, email)."""

    phone: str | None
    email: str | None


class LoginRequest(Contract):
    username: Annotated[str, Field(min_length=1, max_length=128)]
    password: Annotated[str, Verbatim, Field(min_length=1, max_length=128)]


class LoginAttempt(Contract):
    """What the gateway passes to identity: the request and where it came from (for throttling)."""

    credentials: LoginRequest
    client_address: str


class RefreshRequest(Contract):
    # Any text: one that is not a token of ours is unauthenticated (401), like a spent one, not a
    # malformed field (422); only absurd sizes are refused before identity looks.
    refresh_token: Annotated[str, Verbatim, Field(min_length=1, max_length=4096)]


StaffRole = Literal["reviewer", "supervisor", "admin"]


Username = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{2,31}$")]
DepartmentCode = Annotated[str, Field(pattern=r"^[0-9A-Z]{4,16}$")]


# What `_reviewers_have_a_department` checks, said in the published JSON Schema too.
_REVIEWER_NEEDS_DEPARTMENT = {
    "if": {"properties": {"roles": {"contains": {"const": "reviewer"}}}, "required": ["roles"]},
    "then": {"required": ["department_code"], "properties": {"department_code": {"type": "string"}}},
}


def _reviewers_have_a_department(staff: Any) -> Any:
    """A reviewer acts on its department's cases: without one it could never work a task list."""
    if "reviewer" in staff.roles and staff.department_code is None:
        raise ValueError("a reviewer needs the department_code of the department whose cases it reviews")
    return staff


class StaffCreation(Contract):
    username: Username
    name: PersonName
    password: Password
    roles: Annotated[list[StaffRole], Field(min_length=1)]
    department_code: DepartmentCode | None = None
    model_config = ConfigDict(json_schema_extra=_REVIEWER_NEEDS_DEPARTMENT)

    # The holder must choose a password of their own at first login (the admin knows this one).
    # Off unless asked for: api-v1 promises that a staff account so created can work at once.
    password_change_required: bool = False

    @model_validator(mode="after")
    def _reviewer_in_a_department(self) -> "StaffCreation":
        return _reviewers_have_a_department(self)


class StaffQuery(PageQuery):
    """`GET /api/v1/admin/staff`: the staff directory, by username, optionally narrowed."""

    department_code: DepartmentCode | None = None
    role: StaffRole | None = None
    active: bool | None = None


class StaffView(Contract):
    """One staff account as the directory shows it to admins."""

    user_id: str
    username: str
    name: str
    roles: list[StaffRole]
    department_code: str | None = None
    active: bool = True
    created_at: datetime
    deactivated_at: datetime | None = None
    # Bumped by every change of the account: send it back as `If-Match` so that an edit made from a
    # stale copy is refused (409) rather than undoing another admin's change.
    version: int = 0


class StaffUpdate(Contract):
    """`PUT /api/v1/admin/staff/{username}`: a staff account's name, roles and department, all
    given (what is not to change is sent as it is). A change of roles or department ends the
    account's sessions: its tokens carry them."""

    model_config = ConfigDict(json_schema_extra=_REVIEWER_NEEDS_DEPARTMENT)

    name: PersonName
    roles: Annotated[list[StaffRole], Field(min_length=1)]
    department_code: DepartmentCode | None

    @model_validator(mode="after")
    def _reviewer_in_a_department(self) -> "StaffUpdate":
        return _reviewers_have_a_department(self)


class StaffStatusChange(Contract):
    """`PUT /api/v1/admin/staff/{username}/status`: `false` deactivates a staff account (someone
    who left: every session ends and it cannot log in), `true` lets it in again."""

    active: bool


class StaffCreated(Contract):
    user_id: str
    username: str
    name: str
    roles: list[StaffRole]
    department_code: str | None
    password_change_required: bool = False


class FaceVerification(Contract):
    """The token a face-check (活体检测) SDK hands the app after a live capture."""

    liveness_token: Annotated[str, Verbatim, Field(min_length=1, max_length=4096)]


class AssuranceView(Contract):
    user_id: str
    assurance_level: int


class Certificate(Contract):
    certificate_id: str
    type: str
    name: str
    issued_at: datetime
    valid_until: datetime | None
    case_no: str | None
    data: dict[str, Any] = {}


class CertificateCheck(Contract):
    """Intake asks: are these certificates this applicant's own, and still valid?"""

    certificate_id: str
    owned: bool
    valid: bool
    type: str | None = None


class TokenPair(Contract):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    # The access token opens only GET /me, PUT /me/password and logout until a new password is set.
    password_change_required: bool = False


class UserView(Contract):
    """`GET /api/v1/me`."""

    user_id: str
    account_type: AccountType
    name: str
    roles: list[Role]
    assurance_level: int
    department_code: str | None = None
    password_change_required: bool = False


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


class KeyRotated(Contract):
    """The new signing key's id (`POST /api/v1/admin/signing-keys`): tokens are signed with it."""

    kid: str


class AuditEntry(Contract):
    """One staff action or administrative change (`GET /api/v1/admin/audit`): append-only."""

    actor_id: str
    actor_roles: list[str]
    action: str  # "<METHOD> <route>", e.g. "POST /api/v1/review/cases/<case_no>/decisions"
    target: dict[str, str] = {}  # the route's parameters: case_no, item_code, year ...
    status: int  # the HTTP status the action answered with
    at: datetime
    address: str  # where the request came from
    trace_id: str | None = None


class AuditRecord(AuditEntry):
    """An entry as the gateway hands it to identity (`record_audit`), with an id of its own: a
    request delivered again (its reply lost) stores the entry once. Optional: a gateway older
    than the id still reports (its entry gets an id of identity's)."""

    entry_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None
