"""Automatic approval of one case: gather the facts, run the item's rules, explain the outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.cases import RULES_NOT_RUN, Decision, RuleResult
from contracts.catalog import PublishedItem
from contracts.events import CaseApproved, CaseRejected, CaseReviewRequired, CaseSubmitted
from contracts.identity import ApplicantProfile
from services.common import rules
from services.common.consuming import retry_delays
from services.common.stored_time import to_stored_precision

# Share of the retries' whole span (YIWANG_RETRY_DELAYS: about 13 minutes) after which a case
# whose rules cannot be run goes to a reviewer rather than on to the dead letters, where it would
# sit `submitted`, on no task board, until an operator replayed it: its last attempt, by default.
HAND_OVER_SHARE = 0.6
# Never sooner: with the tests' short delays (under a second) a case queued a moment behind others
# would be handed over on its first failure. (An event already this old when it first arrives, a
# backlog's, goes to a person on its first failure: slower, never lost.)
HAND_OVER_MIN_SECONDS = 60.0
NOT_RUN_DESCRIPTION = "自动审批规则未能运行，由审核人员办理"

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
    """The form with each number as the type its field declares, nested fields included: a whole
    number sent as 1.0 in an `integer` field reads as 1, and one sent as 2500 in a `number` field
    as 2500.0. JSON Schema takes either spelling, and CEL's division of two ints truncates
    (`form.income / form.members` was 833 for 2500 and 833.33 for 2500.0): the type a rule sees
    must follow from the item's schema, not from how the applicant wrote the number. (An int beside
    a double compares and computes in doubles: `services/common/rule_typing.py`.)"""
    declared = _as_declared(form, form_schema)
    return declared if isinstance(declared, dict) else form


def _as_declared(value: Any, schema: Any) -> Any:
    if not isinstance(schema, dict) or isinstance(value, bool):
        return value
    if _integer(schema):
        return _whole(value)
    if _decimal_field(schema):
        return _decimal(value)
    properties, items = schema.get("properties"), schema.get("items")
    if isinstance(value, dict) and isinstance(properties, dict):
        return {name: _as_declared(field, properties.get(name)) for name, field in value.items()}
    if isinstance(value, list) and isinstance(items, dict):
        return [_as_declared(item, items) for item in value]
    return value


def _whole(value: Any) -> Any:
    # Beyond CEL's 64-bit int a value stays a double (1e19 as an int could not be given to the rules).
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
        return int(value)
    return value


def _decimal(value: Any) -> Any:
    # Only where the double holds it exactly: past 2**53 an int stays one (compared by value still).
    if isinstance(value, int) and not isinstance(value, bool) and -(2**53) <= value <= 2**53:
        return float(value)
    return value


def _integer(field_schema: dict[str, Any]) -> bool:
    return _declared(field_schema, "integer")


def _decimal_field(field_schema: dict[str, Any]) -> bool:
    return _declared(field_schema, "number")


def _declared(field_schema: dict[str, Any], kind: str) -> bool:
    """The field is of this kind of number alone (`integer`, or `number` without `integer`)."""
    other = "number" if kind == "integer" else "integer"
    declared = field_schema.get("type")
    return declared == kind or (isinstance(declared, list) and kind in declared and other not in declared)


Outcome = CaseApproved | CaseRejected | CaseReviewRequired


def decide(
    item: PublishedItem, profile: ApplicantProfile, submitted: CaseSubmitted, now: datetime | None = None
) -> Outcome:
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


def time_to_hand_over(occurred_at: datetime, now: datetime | None = None) -> bool:
    """Whether a case announced at `occurred_at`, whose rules still cannot be run, goes to a person."""
    span = max(sum(retry_delays()) * HAND_OVER_SHARE, HAND_OVER_MIN_SECONDS)
    return (now or datetime.now(UTC)) - occurred_at >= timedelta(seconds=span)


def rules_not_run(submitted: CaseSubmitted, error: BaseException) -> CaseReviewRequired:
    """The case for a reviewer, with why its rules did not run (the item or the applicant could
    not be read, say): a person decides, as for any rule that errors."""
    why = RuleResult(
        rule_id=RULES_NOT_RUN,
        description=NOT_RUN_DESCRIPTION,
        expression="",
        result="error",
        on_fail="manual_review",
        error=f"{type(error).__name__}: {error}"[:300],
    )
    return CaseReviewRequired(
        case_no=submitted.case_no,
        item_code=submitted.item_code,
        item_name=submitted.item_name,
        department_code=submitted.department_code,
        applicant_id=submitted.applicant_id,
        explanation=[why],
        rule_set_version=None,
    )
