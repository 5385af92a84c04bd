"""Versioned domain events. Each is published inside an `Envelope`; `type` is `event_type`."""

from datetime import date, datetime
from typing import Any, Literal

from pydantic import model_validator

from contracts.base import Contract
from contracts.cases import Decision, RuleResult
from contracts.catalog import IssuedCertificate
from contracts.envelope import EventPayload, register
from contracts.identity import ApplicantProfile


@register
class CaseSubmitted(EventPayload):
    event_type = "case.submitted.v1"
    case_no: str
    item_code: str
    item_version: int
    item_name: str
    department_code: str
    applicant_id: str
    form: dict[str, Any]
    material_codes: list[str]
    submitted_at: datetime
    # The applicant as identity knew them at submission, which is what the rules judge (data
    # travels with the case: approval need not ask again). Absent in events of older producers.
    applicant: ApplicantProfile | None = None

    @model_validator(mode="after")
    def _one_applicant(self) -> "CaseSubmitted":
        if self.applicant is not None and self.applicant.user_id != self.applicant_id:
            raise ValueError("applicant.user_id must be applicant_id")
        return self


class _CaseDecided(EventPayload):
    case_no: str
    item_code: str
    item_name: str
    department_code: str
    applicant_id: str
    decision: Decision


@register
class CaseApproved(_CaseDecided):
    event_type = "case.approved.v1"
    # What identity needs to issue the item's electronic certificate (电子证照), if it issues one.
    issues_certificate: IssuedCertificate | None = None
    # The form's fields the certificate carries (ServiceGuide.form_for_certificate): empty for an
    # item that issues none.
    form: dict[str, Any] = {}


@register
class CaseRejected(_CaseDecided):
    event_type = "case.rejected.v1"


@register
class CaseReviewRequired(EventPayload):
    """Automatic approval could not decide: the department's reviewers must."""

    event_type = "case.review_required.v1"
    case_no: str
    item_code: str
    item_name: str
    department_code: str
    applicant_id: str
    explanation: list[RuleResult]
    rule_set_version: int | None


@register
class ItemPublished(EventPayload):
    event_type = "catalog.item_published.v1"
    item_code: str
    version: int
    department_code: str


@register
class ItemWithdrawn(EventPayload):
    """The item takes no more applications until a new version is published; running cases go on.
    (The admin's free-text reason stays in the catalog: no consumer needs it on the bus.)"""

    event_type = "catalog.item_withdrawn.v1"
    item_code: str
    version: int
    department_code: str


@register
class ContactChanged(EventPayload):
    """The account's phone or email changed. It names no number or address: whoever keeps one asks
    identity again."""

    event_type = "identity.contact_changed.v1"
    user_id: str
    changed: list[Literal["phone", "email"]]


@register
class PasswordChanged(EventPayload):
    """The account's password was changed by its holder, reset with a code texted to its phone, or
    (a staff account's) reset by an admin; every other session was ended. The holder is told, so a
    change they did not make is noticed."""

    event_type = "identity.password_changed.v1"
    user_id: str
    account_type: Literal["citizen", "enterprise", "staff"]
    how: Literal["changed", "reset", "reset_by_admin"]
    changed_at: datetime
    # The session that made the change goes on (none for a reset); identity ends the others.
    kept_session_id: str | None = None


@register
class StaffStatusChanged(EventPayload):
    """An admin deactivated a staff account (someone who left) or let it in again. Identity ends
    the sessions of a deactivated account on hearing it, and keeps its staff directory in step, so
    both happen even when the process that stored the change dies right after."""

    event_type = "identity.staff_status_changed.v1"
    user_id: str
    active: bool
    changed_at: datetime


@register
class StaffChanged(EventPayload):
    """An admin changed a staff account's name, roles or department. Identity keeps its staff
    directory in step on hearing it, and ends the account's sessions when roles or department
    changed (its tokens carry them)."""

    event_type = "identity.staff_changed.v1"
    user_id: str
    changed: list[Literal["name", "roles", "department_code"]]
    changed_at: datetime


@register
class AssuranceRaised(EventPayload):
    """An account's assurance level went up: 2 real-name checked, 3 real-person (face) verified."""

    event_type = "identity.assurance_raised.v1"
    user_id: str
    previous_level: int
    assurance_level: int
    method: str


@register
class SessionRevoked(EventPayload):
    """Access tokens of this session must stop working now (logout, refresh-token reuse)."""

    event_type = "identity.session_revoked.v1"
    session_id: str
    user_id: str
    reason: str
    expires_at: datetime  # after this, no access token of the session can be valid anyway


@register
class CertificateIssued(EventPayload):
    event_type = "identity.certificate_issued.v1"
    certificate_id: str
    certificate_type: str
    case_no: str
    user_id: str
    certificate_name: str | None = None  # e.g. 营业执照; optional for events from before it was added
    item_name: str | None = None


class _CaseTransition(EventPayload):
    case_no: str
    item_code: str
    item_name: str
    department_code: str
    applicant_id: str
    by: str
    at: datetime
    comment: str | None = None


@register
class CaseAccepted(_CaseTransition):
    event_type = "case.accepted.v1"
    deadline: date | None = None


class MissingMaterial(Contract):
    """A material the applicant is to give: its code and the name the notice lists."""

    code: str
    name: str


@register
class CaseSupplementRequested(_CaseTransition):
    """一次性告知: one notice that lists everything missing."""

    event_type = "case.supplement_requested.v1"
    missing_materials: list[MissingMaterial]


@register
class CaseResubmitted(_CaseTransition):
    event_type = "case.resubmitted.v1"
    deadline: date | None = None  # pushed out by the working days the supplement took


@register
class CaseWithdrawn(_CaseTransition):
    event_type = "case.withdrawn.v1"


@register
class CaseEvaluated(_CaseTransition):
    event_type = "case.evaluated.v1"
    score: int
    bad: bool  # 1 or 2: a bad evaluation the department must answer


class _DeadlineEvent(EventPayload):
    case_no: str
    item_code: str
    item_name: str
    department_code: str
    applicant_id: str
    deadline: date


@register
class CaseDeadlineWarning(_DeadlineEvent):
    """One working day before the deadline (预警): for the department's reviewers."""

    event_type = "case.deadline_warning.v1"


@register
class CaseOverdue(_DeadlineEvent):
    """The deadline passed without a decision (超期)."""

    event_type = "case.overdue.v1"
