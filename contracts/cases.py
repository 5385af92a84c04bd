"""Case (办件) payloads: submission, the case view, decisions and their explanation."""

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from contracts.base import Contract
from contracts.common import IsoDate, NullIsEmpty, PageQuery, WholeNumber
from contracts.storable import unstorable_part

CaseStatus = Literal[
    "submitted", "accepted", "supplement_requested", "resubmitted", "approved", "rejected", "withdrawn"
]
Outcome = Literal["approved", "rejected"]
# Cases waiting for a reviewer (a department's task list).
TaskStatus = Literal["submitted", "accepted", "resubmitted"]


class CaseListQuery(PageQuery):
    """GET /api/v1/cases: the caller's cases, optionally of one status."""

    status: CaseStatus | None = None


class TaskListQuery(PageQuery):
    """GET /api/v1/review/tasks: the department's waiting cases, optionally of one status."""

    status: TaskStatus | None = None


class MaterialRef(Contract):
    code: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]
    document_id: str | None = None
    certificate_id: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "MaterialRef":
        if (self.document_id is None) == (self.certificate_id is None):
            raise ValueError("give exactly one of document_id or certificate_id")
        return self


# Materials one application may give: each is looked up (a document, a certificate), so the list
# is bounded; a real service guide asks for a few dozen at most.
MAX_MATERIALS = 100
Materials = Annotated[list[MaterialRef], Field(max_length=MAX_MATERIALS), NullIsEmpty]


def _check_storable(form: dict[str, Any]) -> None:
    # Refused on MongoDB too, so that a form behaves the same on both stores.
    if why := unstorable_part(form, "form"):
        raise ValueError(why)


class SubmitCase(Contract):
    # Any code: one that names no published item is 404 (api-v1), whatever its shape (empty, or
    # too long for any item, included: intake answers those without asking catalog).
    item_code: str
    form: dict[str, Any] = {}
    materials: Materials = []

    @field_validator("form")
    @classmethod
    def _storable_field_names(cls, form: dict[str, Any]) -> dict[str, Any]:
        _check_storable(form)
        return form


class CaseCreated(Contract):
    case_no: str
    status: CaseStatus
    item_code: str
    item_version: int
    submitted_at: datetime


class RuleInput(Contract):
    name: str  # e.g. "applicant.age"
    value: Any = None


# The rule id of an explanation's only entry when the rules could not be run at all (the item or
# the applicant could not be read): a person decides, and no rule set judged the case.
RULES_NOT_RUN = "rules_not_run"


class RuleResult(Contract):
    rule_id: str
    description: str
    expression: str
    result: Literal["passed", "failed", "error"]
    on_fail: Literal["manual_review", "reject"]
    inputs: list[RuleInput] = []
    error: str | None = None


class Decision(Contract):
    outcome: Outcome
    decided_by: str  # "auto" or a staff user_id
    reason: str | None = None
    explanation: list[RuleResult] = []
    rule_set_version: int | None = None
    decided_at: datetime


class TimelineEntry(Contract):
    status: CaseStatus
    at: datetime
    by: str  # a user_id, or "auto"/"system"
    comment: str | None = None


class Applicant(Contract):
    user_id: str
    name: str


class EvaluationRecord(Contract):
    """The applicant's evaluation (好差评) as the case keeps it; 1 or 2 is a bad one."""

    score: int
    comment: str | None = None
    at: datetime  # read from what is stored (older ones `+00:00`), written as every time is (`Z`)
    bad: bool


class CaseView(Contract):
    case_no: str
    item_code: str
    item_version: int
    item_name: str
    department_code: str
    status: CaseStatus
    applicant: Applicant
    form: dict[str, Any]
    materials: list[MaterialRef]
    submitted_at: datetime
    deadline: date | None
    deadline_provisional: bool
    timeline: list[TimelineEntry]
    decision: Decision | None = None
    review_explanation: list[RuleResult] = []
    certificate_id: str | None = None
    evaluation: EvaluationRecord | None = None


class CaseSummary(Contract):
    case_no: str
    item_code: str
    item_name: str
    status: CaseStatus
    submitted_at: datetime
    deadline: date | None


class ReviewDecision(Contract):
    """`POST /api/v1/review/cases/{case_no}/decisions`."""

    action: Literal["accept", "request_supplement", "approve", "reject"]
    comment: Annotated[str, Field(max_length=2000)] | None = None
    missing_materials: Annotated[
        list[Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]], Field(max_length=MAX_MATERIALS), NullIsEmpty
    ] = []

    @model_validator(mode="after")
    def _what_each_action_needs(self) -> "ReviewDecision":
        if self.action == "reject" and not (self.comment and self.comment.strip()):
            raise ValueError("a rejection needs a comment: it becomes the reason the applicant reads")
        if self.action == "request_supplement" and not self.missing_materials and not self.comment:
            raise ValueError("say what is missing: missing_materials and/or a comment")
        return self


class Supplement(Contract):
    """`POST /api/v1/cases/{case_no}/supplements`: what was asked for (补正)."""

    materials: Materials = []
    form: dict[str, Any] | None = None

    @field_validator("form")
    @classmethod
    def _storable_field_names(cls, form: dict[str, Any] | None) -> dict[str, Any] | None:
        if form is not None:
            _check_storable(form)
        return form


class Evaluation(Contract):
    """`POST /api/v1/cases/{case_no}/evaluation` (好差评)."""

    score: WholeNumber = Field(ge=1, le=5)
    comment: Annotated[str, Field(max_length=1000)] | None = None


class Task(Contract):
    """A case on a reviewer's task list."""

    case_no: str
    item_code: str
    item_name: str
    status: CaseStatus
    applicant: Applicant
    submitted_at: datetime
    deadline: date | None
    deadline_provisional: bool
    overdue: bool


class DocumentStored(Contract):
    """`POST /api/v1/documents` → 201."""

    document_id: str
    sha256: str
    size: int
    content_type: Literal["application/pdf", "image/png", "image/jpeg"]


class DocumentFinish(Contract):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: int = Field(ge=1)
    content_type: Literal["application/pdf", "image/png", "image/jpeg"]
    chunks: int = Field(ge=1)
    filename: Annotated[str, Field(max_length=255)] | None = None


class CalendarView(Contract):
    """`GET /api/v1/calendar/{year}` (and the answer to loading one, with how many deadlines moved)."""

    year: int
    source: Literal["package", "loaded", "weekends_only"]
    holidays: list[date]
    workdays: list[date]
    recomputed: int | None = None  # after a load: provisional deadlines recomputed


class CalendarYear(Contract):
    """`PUT /api/v1/admin/calendar/{year}`: the State Council's notice for one year."""

    holidays: list[IsoDate]
    workdays: list[IsoDate] = []  # adjusted working days on weekends (调休上班)


class SupervisionQuery(Contract):
    department: str | None = None
    from_: IsoDate | None = Field(default=None, alias="from")
    to: IsoDate | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "SupervisionQuery":
        if self.from_ and self.to and self.from_ > self.to:
            raise ValueError("from must not be after to")
        return self


class SupervisionSummary(Contract):
    submitted: int
    approved: int
    rejected: int
    withdrawn: int
    in_progress: int
    overdue: int
    auto_decided_ratio: float | None
    on_time_ratio: float | None
    avg_handling_hours: float | None
    evaluation_avg: float | None
    bad_evaluations: int
