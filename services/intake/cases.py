"""Case rules: what a valid submission is, how a case is born, who may see it, how decisions land."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from referencing.exceptions import Unresolvable

from contracts.cases import CaseCreated, CaseSummary, CaseView, Decision, MaterialRef, SubmitCase, Task
from contracts.catalog import PublishedItem
from contracts.common import Principal
from contracts.events import CaseSubmitted
from contracts.identity import ApplicantProfile, CertificateCheck
from services.common.china_time import CHINA  # the calendar where the departments are
from services.common.errors import Conflict, NotFound, ValidationFailed
from services.common.form_schemas import Uncheckable, form_validator
from services.common.stored_time import to_stored_precision
from services.intake.workdays import add_working_days

_REQUIRED = re.compile(r"^'(.+)' is a required property$")


def form_problems(schema: dict[str, Any], form: dict[str, Any]) -> list[dict[str, str]]:
    """Every way the form violates the item's schema, as `form.<path>` details."""
    problems = []
    try:
        errors = sorted(form_validator(schema).iter_errors(form), key=lambda e: list(e.absolute_path))
    except (Unresolvable, Uncheckable):  # a schema saved before catalog refused it: nothing unsafe runs
        return [{"field": "form", "issue": "the item's form schema cannot be checked; the department must correct it"}]
    for error in errors:
        path = [str(p) for p in error.absolute_path]
        missing = _REQUIRED.match(error.message)
        if missing:
            path.append(missing.group(1))
        problems.append({"field": ".".join(["form", *path]), "issue": error.message})
    return problems


def submission_problems(item: PublishedItem, principal: Principal, request: SubmitCase) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    if principal.account_type not in item.applicant_types:
        problems.append(
            {"field": "item_code", "issue": f"this item is not open to {principal.account_type} applicants"}
        )
    problems += form_problems(item.form_schema, request.form)
    known = {m.code: m for m in item.materials}
    supplied = [m.code for m in request.materials]
    for index, code in enumerate(supplied):
        if code not in known:
            problems.append({"field": f"materials.{index}.code", "issue": f"the item does not ask for {code}"})
    if len(supplied) != len(set(supplied)):
        problems.append({"field": "materials", "issue": "a material is given more than once"})
    for material in item.materials:
        if material.required and material.code not in supplied:
            problems.append(
                {"field": "materials", "issue": f"required material missing: {material.code} ({material.name})"}
            )
    return problems


def certificate_problems(
    item: PublishedItem, request: SubmitCase, checks: dict[str, CertificateCheck]
) -> list[dict[str, str]]:
    """Certificates offered as materials must be the applicant's own, valid, and of the asked type;
    a material the government already holds is referenced, never uploaded again."""
    wanted = {m.code: m for m in item.materials}
    problems = []
    for index, ref in enumerate(request.materials):
        material = wanted.get(ref.code)
        if material is None:
            continue  # reported by submission_problems
        field = f"materials.{index}"
        if material.source == "certificate" and ref.certificate_id is None:
            problems.append(
                {
                    "field": f"{field}.certificate_id",
                    "issue": f"{material.name} is held by the government: "
                    f"give the certificate_id of your {material.certificate_type}",
                }
            )
        if ref.certificate_id is None:
            continue
        check = checks.get(ref.certificate_id)
        if check is None or not check.owned:
            problems.append({"field": f"{field}.certificate_id", "issue": "no such certificate of yours"})
        elif not check.valid:
            problems.append({"field": f"{field}.certificate_id", "issue": "the certificate has expired or was revoked"})
        elif material.certificate_type and check.type != material.certificate_type:
            problems.append({"field": f"{field}.certificate_id", "issue": f"not a {material.certificate_type}"})
    return problems


_MATERIAL_FIELD = re.compile(r"^materials\.(\d+)(\..+)?$")


def supplement_problems(
    problems: list[dict[str, str]], joined: list[dict[str, Any]], given: int
) -> list[dict[str, str]]:
    """Problems found in a resubmission's whole materials (the case's kept ones, then the supplement's
    `given` ones), told against what the applicant sent: a supplement's material by its index in the
    request, a kept one by its code (the applicant can only fix it by giving it anew)."""
    kept = len(joined) - given
    told = []
    for problem in problems:
        match = _MATERIAL_FIELD.match(problem["field"])
        if match is None:
            told.append(problem)
        elif (index := int(match[1])) >= kept:
            told.append({**problem, "field": f"materials.{index - kept}{match[2] or ''}"})
        else:
            code = joined[index]["code"]
            issue = f"{code}, given earlier: {problem['issue']}; give it anew in the supplement"
            told.append({"field": "materials", "issue": issue})
    return told


def asked_for(item: PublishedItem, materials: list[MaterialRef]) -> list[MaterialRef]:
    """The materials whose code the item asks for (the others are refused for their code)."""
    codes = {m.code for m in item.materials}
    return [m for m in materials if m.code in codes]


def document_problems(item: PublishedItem, request: SubmitCase, owned: set[str]) -> list[dict[str, str]]:
    """Every uploaded document offered must be a complete upload of this applicant's."""
    codes = {m.code for m in item.materials}  # another code is reported by submission_problems
    return [
        {"field": f"materials.{index}.document_id", "issue": "no such document of yours"}
        for index, ref in enumerate(request.materials)
        if ref.code in codes and ref.document_id is not None and ref.document_id not in owned
    ]


def check_submission(
    item: PublishedItem,
    principal: Principal,
    request: SubmitCase,
    checks: dict[str, CertificateCheck],
    owned_documents: set[str] | None = None,
) -> None:
    problems = submission_problems(item, principal, request) + certificate_problems(item, request, checks)
    if owned_documents is not None:
        problems += document_problems(item, request, owned_documents)
    if problems:
        raise ValidationFailed("the application is not valid", problems)


# No published code is longer: catalog's are at most 22 characters (contracts.catalog.ITEM_CODE_PATTERN);
# 64 is the bound the submission contract had, room for a longer standard.
LONGEST_ITEM_CODE = 64


def require_possible_item_code(item_code: str) -> None:
    """An empty code, or one longer than any item's, names no item: 404 as for any unknown code
    (api-v1), without asking catalog and without repeating the code in the answer."""
    if not item_code or len(item_code) > LONGEST_ITEM_CODE:
        raise NotFound("no published item has this code")


MAX_IDEMPOTENCY_KEY = 200


def idempotency_key(user_id: str, header: str | None) -> str | None:
    """Keys are per applicant: two people may happen to choose the same one."""
    if header is None:
        return None
    header = header.strip()
    if not header or len(header) > MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed(
            "bad Idempotency-Key", [{"field": "Idempotency-Key", "issue": f"1 to {MAX_IDEMPOTENCY_KEY} characters"}]
        )
    return f"{user_id}:{header}"


def request_hash(request: SubmitCase) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(earlier: dict[str, Any], request_hash_now: str) -> dict[str, Any]:
    """The earlier answer for the same key and body; another body under the same key is a conflict."""
    _same_request(earlier.get("request_hash"), request_hash_now)
    # The answer as it was given, not the case as it is now (it may be decided meanwhile).
    first_answer = {**earlier, "status": "submitted"}
    return {**created(first_answer).model_dump(mode="json"), "replayed": True}


@dataclass(frozen=True)
class KeyedCommand:
    """A command on a case (a review decision, a supplement, a withdrawal, an evaluation) under an
    Idempotency-Key, kept on the case in the transition's own write: a retry whose first answer was
    lost finds it there and answers the case as it is, instead of a 409 for a change that happened."""

    field: str  # "commands.<digest>": a field name may hold neither dots nor "$", so a digest
    request_hash: str

    def done_in(self, case: dict[str, Any]) -> bool:
        """Whether this key's command changed the case; Conflict if the key came with another request."""
        then = (case.get("commands") or {}).get(self.field.split(".", 1)[1])
        if then is None:
            return False
        _same_request(then, self.request_hash)
        return True


def answer_if_done(case: dict[str, Any], principal: Principal, keyed: KeyedCommand | None) -> dict[str, Any] | None:
    """The case as it is now, when this keyed command changed it already (sent again); else None."""
    return view(case, principal).model_dump(mode="json") if keyed is not None and keyed.done_in(case) else None


def keyed_command(user_id: str, header: str | None, command: str, body: dict[str, Any]) -> KeyedCommand | None:
    key = idempotency_key(user_id, header)
    if key is None:
        return None
    canonical = json.dumps({"command": command, "body": body}, sort_keys=True, ensure_ascii=False)
    return KeyedCommand(
        field=f"commands.{hashlib.sha256(key.encode()).hexdigest()[:32]}",
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def claimed_number(claim: dict[str, Any], request_hash_now: str) -> str:
    """The case number an idempotency key was claimed for, if it was claimed for this body."""
    _same_request(claim.get("request_hash"), request_hash_now)
    return str(claim["case_no"])


def _same_request(hash_then: str | None, hash_now: str) -> None:
    if hash_then != hash_now:
        raise Conflict("this Idempotency-Key was already used with a different request")


def case_number(department_code: str, day: date, sequence: int) -> str:
    """Readable and sortable: department, date, then a per-department daily sequence."""
    return f"{department_code}-{day:%Y%m%d}-{sequence:06d}"


def new_case(
    case_no: str,
    item: PublishedItem,
    principal: Principal,
    applicant: ApplicantProfile,
    request: SubmitCase,
    now: datetime,
) -> tuple[dict[str, Any], CaseSubmitted]:
    deadline, provisional = add_working_days(local_date(now), item.promised_days)
    doc = {
        "_id": case_no,
        "case_no": case_no,
        "item_code": item.item_code,
        "item_version": item.version,
        "item_name": item.name,
        "department_code": item.department_code,
        "applicant": {"user_id": principal.user_id, "name": applicant.name},
        "status": "submitted",
        "form": request.form,
        "materials": [m.model_dump(exclude_none=True) for m in request.materials],
        "submitted_at": now,
        "deadline": deadline.isoformat(),
        "deadline_provisional": provisional,
        # What the deadline is counted from, so it can be recomputed when a year's calendar is loaded.
        "deadline_start": local_date(now).isoformat(),
        "deadline_days": item.promised_days,
        "timeline": [{"status": "submitted", "at": now, "by": principal.user_id, "comment": None}],
        "decision": None,
        "review_explanation": [],
        "certificate_id": None,
        "evaluation": None,
        "applied_events": [],
        "version": 1,  # bumped by every change: concurrent reviewers cannot both win
        # True once a person must act (task list): at once for an item without automatic rules.
        "awaiting_review": not item.auto_approval.enabled,
        "ever_task": not item.auto_approval.enabled,  # true for good once it is (storage.marked_if_task)
    }
    event = CaseSubmitted(
        case_no=case_no,
        item_code=item.item_code,
        item_version=item.version,
        item_name=item.name,
        department_code=item.department_code,
        applicant_id=principal.user_id,
        form=request.form,
        material_codes=[m.code for m in request.materials],
        submitted_at=now,
        applicant=applicant,
    )
    return doc, event


def created(doc: dict[str, Any]) -> CaseCreated:
    return CaseCreated.model_validate({k: doc[k] for k in CaseCreated.model_fields})


def can_read(principal: Principal, doc: dict[str, Any]) -> bool:
    roles = set(principal.roles)
    if doc["applicant"]["user_id"] == principal.user_id:
        return True
    if roles & {"supervisor", "admin"}:
        return True
    return "reviewer" in roles and principal.department_code == doc["department_code"]


def view(doc: dict[str, Any], principal: Principal) -> CaseView:
    if not can_read(principal, doc):
        raise NotFound(f"no case {doc['case_no']}")  # 404, not 403: existence is not disclosed
    return CaseView.model_validate({k: doc.get(k) for k in CaseView.model_fields})


def task(doc: dict[str, Any], today: date) -> Task:
    deadline = date.fromisoformat(doc["deadline"]) if doc.get("deadline") else None
    fields = {k: doc.get(k) for k in Task.model_fields if k != "overdue"}
    return Task.model_validate({**fields, "overdue": bool(deadline and deadline < today)})


def summary(doc: dict[str, Any]) -> CaseSummary:
    return CaseSummary.model_validate({k: doc.get(k) for k in CaseSummary.model_fields})


def decision_update(decision: Decision, status: str) -> dict[str, Any]:
    """Fields to $set and the timeline entry to $push when a decision is recorded."""
    entry = {"status": status, "at": decision.decided_at, "by": decision.decided_by, "comment": decision.reason}
    return {"set": {"status": status, "decision": decision.model_dump(mode="json")}, "timeline": entry}


def now_utc() -> datetime:
    """Now, at the millisecond precision the store keeps (so a replayed answer equals the first)."""
    return to_stored_precision(datetime.now(UTC))


def local_date(moment: datetime) -> date:
    """The calendar date in China at `moment` (07:30 in Beijing is still the previous day in UTC)."""
    return moment.astimezone(CHINA).date()
