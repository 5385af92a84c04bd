"""Automatic approval of one case: gather the facts, run the item's rules, explain the outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contracts.cases import Decision, RuleResult
from contracts.catalog import PublishedItem
from contracts.events import CaseApproved, CaseRejected, CaseReviewRequired, CaseSubmitted
from contracts.identity import ApplicantProfile
from services.common import rules
from services.common.stored_time import to_stored_precision

APPLICANT_FACTS = ("account_type", "age", "gender", "region_code", "assurance_level", "name")


def facts(
    profile: ApplicantProfile, submitted: CaseSubmitted, form_schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "applicant": profile.model_dump(include=set(APPLICANT_FACTS)),
        "form": form_as_declared(submitted.form, form_schema or {}),
        "materials": submitted.material_codes,
        "certificates": profile.certificates,
    }


def form_as_declared(form: dict[str, Any], form_schema: dict[str, Any]) -> dict[str, Any]:
    """The form with a whole number sent as 1.0 in a field declared `integer` read as 1: JSON
    Schema's `integer` takes 1.0, and CEL compares no double with an int (`form.g == 1` errors),
    so an applicant could turn a rejecting rule into a reviewer's case by writing 1.0."""
    declared = form_schema.get("properties")
    if not isinstance(declared, dict):
        return form
    return {
        name: int(value) if isinstance(value, float) and value.is_integer() and _integer(declared.get(name)) else value
        for name, value in form.items()
    }


def _integer(field_schema: Any) -> bool:
    kind = field_schema.get("type") if isinstance(field_schema, dict) else None
    return kind == "integer" or (isinstance(kind, list) and "integer" in kind and "number" not in kind)


def decide(
    item: PublishedItem, profile: ApplicantProfile, submitted: CaseSubmitted, now: datetime | None = None
) -> CaseApproved | CaseRejected | CaseReviewRequired:
    common = {
        "case_no": submitted.case_no,
        "item_code": submitted.item_code,
        "item_name": submitted.item_name,
        "department_code": submitted.department_code,
        "applicant_id": submitted.applicant_id,
    }
    if not item.auto_approval.enabled:
        return CaseReviewRequired(**common, explanation=[], rule_set_version=item.version)
    evaluation = rules.evaluate(
        [r.model_dump() for r in item.auto_approval.rules], facts(profile, submitted, item.form_schema)
    )
    explanation = [RuleResult.model_validate(vars(r)) for r in evaluation.results]
    if evaluation.outcome == "manual_review":
        return CaseReviewRequired(**common, explanation=explanation, rule_set_version=item.version)
    decision = Decision(
        outcome=evaluation.outcome,
        decided_by="auto",
        reason=evaluation.reason,
        explanation=explanation,
        rule_set_version=item.version,
        # At the store's precision: the timeline entry of the decision, read back, equals it.
        decided_at=to_stored_precision(now or datetime.now(UTC)),
    )
    if evaluation.outcome == "approved":
        return CaseApproved(
            **common,
            decision=decision,
            issues_certificate=item.issues_certificate,
            form=item.form_for_certificate(submitted.form),
        )
    return CaseRejected(**common, decision=decision)
