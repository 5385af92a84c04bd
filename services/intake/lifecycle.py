"""The case lifecycle after submission: who may do what, from which status, and what it records.

    submitted → accepted (受理) → approved | rejected
    submitted → rejected (不予受理, with a reason)
    submitted | accepted | resubmitted → supplement_requested (补正, one notice listing everything)
    supplement_requested → resubmitted → decided like accepted
    any undecided status → withdrawn (by the applicant)
    approved | rejected → evaluated once (好差评)

Each change is one conditional update on the case's status and version (two reviewers acting at
once cannot both win), appends to the timeline and carries its event in the same write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from contracts.cases import MAX_MATERIALS, RULES_NOT_RUN, Decision, Evaluation, ReviewDecision, Supplement
from contracts.catalog import PublishedItem
from contracts.common import Principal
from contracts.envelope import EventPayload
from contracts.events import (
    CaseAccepted,
    CaseApproved,
    CaseEvaluated,
    CaseRejected,
    CaseResubmitted,
    CaseSupplementRequested,
    CaseWithdrawn,
)
from services.common.errors import Conflict, Forbidden, NotFound, ValidationFailed
from services.intake.workdays import add_working_days, working_days_between

UNDECIDED = ("submitted", "accepted", "supplement_requested", "resubmitted")
REVIEW_FROM: dict[str, tuple[str, ...]] = {
    "accept": ("submitted",),
    "request_supplement": ("submitted", "accepted", "resubmitted"),
    "approve": ("accepted", "resubmitted"),
    "reject": ("submitted", "accepted", "resubmitted"),
}
REVIEW_TO = {
    "accept": "accepted",
    "request_supplement": "supplement_requested",
    "approve": "approved",
    "reject": "rejected",
}
# What a reviewer's task list holds: cases waiting for a person.
TASK_STATUSES = ("submitted", "accepted", "resubmitted")


@dataclass
class Change:
    """One transition, ready to be applied atomically."""

    from_status: str
    version: int
    set_fields: dict[str, Any]
    timeline: dict[str, Any] | None
    event: EventPayload
    extra_filter: dict[str, Any] = field(default_factory=dict)


def _common(case: dict[str, Any], by: str, at: datetime, comment: str | None) -> dict[str, Any]:
    return {
        "case_no": case["case_no"],
        "item_code": case["item_code"],
        "item_name": case["item_name"],
        "department_code": case["department_code"],
        "applicant_id": case["applicant"]["user_id"],
        "by": by,
        "at": at,
        "comment": comment,
    }


def _require(case: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    if case["status"] not in allowed:
        raise Conflict(f"cannot {what} a case that is {case['status']}")


def check_reviewer(principal: Principal, case: dict[str, Any]) -> None:
    """Reviewers act on their own department's cases; others get 404 (or 403 if they may read it)."""
    if "reviewer" in principal.roles and principal.department_code == case["department_code"]:
        return
    if set(principal.roles) & {"supervisor", "admin"}:
        raise Forbidden("only reviewers of the item's department decide its cases")
    raise NotFound(f"no case {case['case_no']}")


def check_applicant(principal: Principal, case: dict[str, Any]) -> None:
    if case["applicant"]["user_id"] != principal.user_id:
        raise NotFound(f"no case {case['case_no']}")


def rules_pending(case: dict[str, Any]) -> bool:
    """The automatic rules have not yet decided or handed the case over: an automatic decision may
    still land, and a person must not race it."""
    return case["status"] == "submitted" and not case.get("awaiting_review")


def review(
    case: dict[str, Any],
    item: PublishedItem,
    principal: Principal,
    decision: ReviewDecision,
    now: datetime,
    today: date,
) -> Change:
    check_reviewer(principal, case)
    _require(case, REVIEW_FROM[decision.action], decision.action.replace("_", " "))
    if rules_pending(case):
        raise Conflict("the automatic rules have not finished with this case yet")
    to = REVIEW_TO[decision.action]
    entry = {"status": to, "at": now, "by": principal.user_id, "comment": decision.comment}
    common = _common(case, principal.user_id, now, decision.comment)
    fields: dict[str, Any] = {"status": to, "awaiting_review": to in TASK_STATUSES}

    if decision.action == "accept":
        # The promised time limit runs from acceptance (受理).
        deadline, provisional = add_working_days(today, item.promised_days)
        fields.update(
            **moved_deadline(None, deadline, today),  # the promise counted from now: warned anew
            deadline_provisional=provisional,
            deadline_start=today.isoformat(),
            deadline_days=item.promised_days,
            pauses=[],  # the time limit starts over: earlier pauses are no longer in it
            accepted_at=now,
        )
        return Change(case["status"], case["version"], fields, entry, CaseAccepted(**common, deadline=deadline))

    if decision.action == "request_supplement":
        names = {m.code: m.name for m in item.materials}
        unknown = [code for code in decision.missing_materials if code not in names]
        if unknown:
            raise ValidationFailed(
                "unknown materials",
                [{"field": "missing_materials", "issue": f"the item does not ask for {', '.join(unknown)}"}],
            )
        missing = [{"code": code, "name": names[code]} for code in decision.missing_materials]
        fields.update(missing_materials=missing, clock_stopped_on=today.isoformat())
        event = CaseSupplementRequested(**common, missing_materials=missing)
        return Change(case["status"], case["version"], fields, entry, event)

    outcome = "approved" if decision.action == "approve" else "rejected"
    # The rules that handed the case over stay part of the decision (api-v1: "either way the
    # decision keeps an explanation"); they judged the version the case was submitted under.
    explained = case.get("review_explanation") or []
    verdict = Decision(
        outcome=outcome,
        decided_by=principal.user_id,
        reason=decision.comment,
        explanation=explained,
        rule_set_version=case["item_version"] if _rules_ran(explained) else None,
        decided_at=now,
    )
    fields["decision"] = verdict.model_dump(mode="json")
    decided = {k: common[k] for k in ("case_no", "item_code", "item_name", "department_code", "applicant_id")}
    if outcome == "approved":
        event: EventPayload = CaseApproved(
            **decided,
            decision=verdict,
            issues_certificate=item.issues_certificate,
            form=item.form_for_certificate(case["form"]),
        )
    else:
        event = CaseRejected(**decided, decision=verdict)
    return Change(case["status"], case["version"], fields, entry, event)


def resubmit(case: dict[str, Any], principal: Principal, supplement: Supplement, now: datetime, today: date) -> Change:
    check_applicant(principal, case)
    _require(case, ("supplement_requested",), "resubmit")
    given = {m.code for m in supplement.materials}
    still_missing = [m["code"] for m in case.get("missing_materials", []) if m["code"] not in given]
    if still_missing:
        raise ValidationFailed(
            "the supplement is incomplete",
            [{"field": "materials", "issue": f"still missing: {code}"} for code in still_missing],
        )
    # The clock stood still while the supplement was awaited: push the deadline by that many working days.
    fields: dict[str, Any] = {"status": "resubmitted", "awaiting_review": True, "missing_materials": []}
    deadline = None
    if case.get("deadline") and case.get("clock_stopped_on"):
        paused, guessed = working_days_between(date.fromisoformat(case["clock_stopped_on"]), today)
        deadline, provisional = add_working_days(date.fromisoformat(case["deadline"]), paused)
        fields.update(moved_deadline(case["deadline"], deadline, today))  # a pause of no working day: not moved
        fields["deadline_provisional"] = provisional or guessed or case["deadline_provisional"]
        if "deadline_days" in case:
            fields["deadline_days"] = case["deadline_days"] + paused
            # Kept with the count it was given, so that a calendar loaded later counts it again
            # (a pause over a holiday counted by weekends would push the deadline too far).
            pause = {"from": case["clock_stopped_on"], "to": today.isoformat(), "days": paused}
            fields["pauses"] = [*case.get("pauses", []), pause]
    # The case's materials stay unless the supplement gives one anew; the supplement's come last
    # (supplement_problems relies on that order to point at what the applicant sent).
    fields["materials"] = [m for m in case["materials"] if m["code"] not in given] + [
        m.model_dump(exclude_none=True) for m in supplement.materials
    ]
    if len(fields["materials"]) > MAX_MATERIALS:
        raise ValidationFailed(
            "too many materials",
            [{"field": "materials", "issue": f"at most {MAX_MATERIALS} in all, counting those the case already has"}],
        )
    if supplement.form is not None:
        fields["form"] = {**case["form"], **supplement.form}
    entry = {"status": "resubmitted", "at": now, "by": principal.user_id, "comment": None}
    event = CaseResubmitted(**_common(case, principal.user_id, now, None), deadline=deadline)
    return Change(case["status"], case["version"], fields, entry, event)


def days_to_deadline(case: dict[str, Any]) -> tuple[int, bool]:
    """Working days from `deadline_start` to the deadline as the calendar counts now: the promised
    days and every supplement pause counted again; and whether a pause's count is still a guess."""
    days, guessed = case["deadline_days"], False
    for pause in case.get("pauses") or []:
        now_counted, guess = working_days_between(date.fromisoformat(pause["from"]), date.fromisoformat(pause["to"]))
        days += now_counted - pause["days"]
        guessed |= guess
    return days, guessed


def moved_deadline(old: str | None, deadline: date, today: date) -> dict[str, Any]:
    """The fields a case takes when its deadline is set anew (acceptance, a supplement's pause, a
    loaded calendar): if it moved from `old`, flags raised for the old deadline no longer hold, so
    reviewers are warned again before the new one, and a case whose new deadline has not passed is
    no longer overdue. (`old` None: none to keep, as at acceptance.)"""
    fields: dict[str, Any] = {"deadline": deadline.isoformat()}
    moved = old is None or fields["deadline"] != old
    if moved and deadline >= today:  # overdue means the deadline is before today (see deadlines.due)
        fields.update(deadline_warned=False, overdue=False)
    return fields


def withdraw(case: dict[str, Any], principal: Principal, now: datetime) -> Change:
    check_applicant(principal, case)
    _require(case, UNDECIDED, "withdraw")
    entry = {"status": "withdrawn", "at": now, "by": principal.user_id, "comment": None}
    event = CaseWithdrawn(**_common(case, principal.user_id, now, None))
    return Change(case["status"], case["version"], {"status": "withdrawn", "awaiting_review": False}, entry, event)


def evaluate(case: dict[str, Any], principal: Principal, evaluation: Evaluation, now: datetime) -> Change:
    check_applicant(principal, case)
    _require(case, ("approved", "rejected"), "evaluate")
    if case.get("evaluation"):
        raise Conflict("this case has already been evaluated")
    bad = evaluation.score <= 2
    at = now.isoformat().replace("+00:00", "Z")  # written as every other time of the API's (UTC)
    record = {"score": evaluation.score, "comment": evaluation.comment, "at": at, "bad": bad}
    event = CaseEvaluated(**_common(case, principal.user_id, now, evaluation.comment), score=evaluation.score, bad=bad)
    # Not a status change: no timeline entry; `evaluation: None` in the filter makes it once only.
    return Change(case["status"], case["version"], {"evaluation": record}, None, event, {"evaluation": None})


def _rules_ran(explanation: list[dict[str, Any]]) -> bool:
    """Whether an item's rules judged the case (not when they could not be run at all)."""
    return any(entry.get("rule_id") != RULES_NOT_RUN for entry in explanation)
