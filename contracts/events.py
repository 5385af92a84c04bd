"""Versioned domain events. Each is published inside an `Envelope`; `type` is `event_type`."""

from datetime import datetime
from typing import Any

from contracts.cases import Decision, RuleResult
from contracts.envelope import EventPayload, register


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
