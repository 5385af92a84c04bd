"""Checks a service guide must pass before it is saved: a valid form schema, compilable rules."""

from __future__ import annotations

from typing import Any

from contracts.catalog import READ_ONLY_FIELDS, ItemSummary, PublishedItem, ServiceGuide
from services.common.china_time import CHINA
from services.common.errors import ValidationFailed, validated
from services.common.form_schemas import schema_problems
from services.common.rules import RuleCompileError, compile_rule
from services.common.stored_time import as_utc


def checked_guide(payload: dict[str, Any]) -> ServiceGuide:
    guide = validated(ServiceGuide, {k: v for k, v in payload.items() if k not in READ_ONLY_FIELDS})
    problems = schema_problems(guide.form_schema)
    for index, rule in enumerate(guide.auto_approval.rules):
        try:
            compile_rule(rule.expression)
        except RuleCompileError as exc:
            problems.append({"field": f"auto_approval.rules.{index}.expression", "issue": f"rule {rule.id}: {exc}"})
    problems += _beyond_bounds(guide)
    if guide.issues_certificate is not None and guide.form_schema.get("additionalProperties") is not False:
        # The certificate carries the form: with fields the item does not declare, an applicant
        # could write their own lines onto an official certificate.
        issue = 'an item that issues a certificate declares its form fields: set "additionalProperties": false'
        problems.append({"field": "form_schema.additionalProperties", "issue": issue})
    codes = [m.code for m in guide.materials]
    if len(codes) != len(set(codes)):
        problems.append({"field": "materials", "issue": "material codes must be unique"})
    problems += _inconsistencies(guide)
    if problems:
        raise ValidationFailed("the service guide is not valid", problems)
    return guide


# Working days a time limit may have (statutory limits are weeks, a few reach a year), and days a
# certificate may be valid: bounds that keep a deadline countable and a validity a date (a count
# of 10**15 days would never end). Checked when a guide is saved, not in the contract, so that a
# version stored before stays readable.
MAX_WORKING_DAYS = 1000
MAX_VALID_DAYS = 36500


def _beyond_bounds(guide: ServiceGuide) -> list[dict[str, str]]:
    limits = [
        ("legal_days", guide.legal_days, MAX_WORKING_DAYS),
        ("promised_days", guide.promised_days, MAX_WORKING_DAYS),
    ]
    limits += [(f"process.{i}.days", step.days, MAX_WORKING_DAYS) for i, step in enumerate(guide.process)]
    if guide.issues_certificate and guide.issues_certificate.valid_days is not None:
        limits.append(("issues_certificate.valid_days", guide.issues_certificate.valid_days, MAX_VALID_DAYS))
    return [{"field": field, "issue": f"at most {bound:,} days"} for field, value, bound in limits if value > bound]


# Visits an item's handling mode allows: 零见面 none, 最多跑一次 one at most, 到现场办 one at least.
VISITS_ALLOWED = {"online": range(0, 1), "one_visit": range(0, 2), "onsite": range(1, 1 << 31)}


def _inconsistencies(guide: ServiceGuide) -> list[dict[str, str]]:
    """What the contract's field types let through but a guide cannot mean."""
    problems = []
    rule_ids = [rule.id for rule in guide.auto_approval.rules]
    if len(rule_ids) != len(set(rule_ids)):
        # A decision's explanation names the rules that failed: two of one id are indistinguishable.
        problems.append({"field": "auto_approval.rules", "issue": "rule ids must be unique"})
    if guide.auto_approval.enabled and not guide.auto_approval.rules:
        # Nothing to approve on: every case would wait for a reviewer while the guide promised 秒批.
        issue = "automatic approval needs at least one rule (or set enabled to false)"
        problems.append({"field": "auto_approval.rules", "issue": issue})
    steps = [step.step for step in guide.process]
    if len(steps) != len(set(steps)):
        problems.append({"field": "process", "issue": "step numbers must be unique"})
    if guide.visits_required not in VISITS_ALLOWED[guide.handling_mode]:
        issue = {"online": "0 for online", "one_visit": "at most 1 for one_visit", "onsite": "at least 1 for onsite"}
        problems.append({"field": "visits_required", "issue": f"must be {issue[guide.handling_mode]}"})
    return problems


def summary(item: PublishedItem | dict[str, Any]) -> ItemSummary:
    data = item.model_dump() if isinstance(item, PublishedItem) else item
    return ItemSummary.model_validate({k: data[k] for k in ItemSummary.model_fields})


def published(doc: dict[str, Any]) -> PublishedItem:
    """A stored version document as the published guide (storage fields dropped)."""
    return PublishedItem.model_validate({k: v for k, v in doc.items() if k in PublishedItem.model_fields})


def withdrawn_message(item_code: str, withdrawal: dict[str, Any]) -> str:
    """What an applicant reads about a withdrawn item: since when (the day in China), and why."""
    at = withdrawal["withdrawn_at"]
    day = as_utc(at).astimezone(CHINA).date().isoformat()
    return f"{item_code} takes no applications since {day}: {withdrawal['reason']}"
