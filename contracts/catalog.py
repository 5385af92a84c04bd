"""The standardized service guide (办事指南) of a government service item."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from contracts.base import Contract
from contracts.common import ONE_LINE, ApplicantType, Number, OneLine, PageNumber, PageSize, WholeNumber

ItemType = Literal["licensing", "benefit", "confirmation", "levy", "other"]
HandlingMode = Literal["online", "one_visit", "onsite"]
# Implementing body code, type code, serial — e.g. 62052400MZ-XK-0001.
ITEM_CODE_PATTERN = r"^[0-9A-Z]{8,12}[A-Z]{2}-[A-Z]{2}-[0-9]{4}$"
ItemCode = Annotated[str, Field(pattern=ITEM_CODE_PATTERN)]
DepartmentCode = Annotated[str, Field(pattern=r"^[0-9A-Z]{4,16}$")]


class Department(Contract):
    code: DepartmentCode
    name: OneLine
    region_code: str


class Material(Contract):
    code: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]
    name: OneLine
    required: bool = True
    source: Literal["applicant_upload", "certificate"] = "applicant_upload"
    certificate_type: str | None = None

    @model_validator(mode="after")
    def _certificate_needs_type(self) -> "Material":
        if self.source == "certificate" and not self.certificate_type:
            raise ValueError("a material with source 'certificate' needs a certificate_type")
        return self


class ProcessStep(Contract):
    step: WholeNumber = Field(ge=1)
    name: OneLine
    days: WholeNumber = Field(ge=0)


class Fee(Contract):
    name: OneLine
    amount: Number = Field(ge=0)
    basis: str = ""


class Rule(Contract):
    id: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]
    description: str
    expression: Annotated[str, Field(min_length=1, max_length=2000)]
    on_fail: Literal["manual_review", "reject"] = "manual_review"


class AutoApproval(Contract):
    enabled: bool = False
    rules: list[Rule] = []


class IssuedCertificate(Contract):
    type: str
    name: OneLine
    valid_days: WholeNumber | None = Field(default=None, ge=1)


class ServiceGuide(Contract):
    """Every element an item's guide carries; what admins write and applicants read."""

    item_code: ItemCode
    name: Annotated[str, Field(min_length=2, max_length=200, pattern=ONE_LINE)]
    department_code: DepartmentCode
    item_type: ItemType
    summary: str = ""  # what the item is for, in a sentence or two
    keywords: list[Annotated[str, Field(min_length=1, max_length=20)]] = []  # words applicants use for it
    legal_basis: list[str] = []
    applicant_types: list[ApplicantType] = Field(min_length=1)
    acceptance_conditions: list[str] = []
    materials: list[Material] = []
    process: list[ProcessStep] = []
    legal_days: WholeNumber = Field(ge=0)
    promised_days: WholeNumber = Field(ge=0)
    fees: list[Fee] = []
    handling_mode: HandlingMode
    visits_required: WholeNumber = Field(ge=0, default=0)
    consultation_phone: str = ""
    complaint_phone: str = ""
    form_schema: dict[str, Any] = {"type": "object"}
    auto_approval: AutoApproval = AutoApproval()
    issues_certificate: IssuedCertificate | None = None

    def form_for_certificate(self, form: dict[str, Any]) -> dict[str, Any]:
        """What of a submitted form travels with an approval (`case.approved.v1`) for identity to
        put on the item's certificate: the fields its form schema declares (`properties`), never
        others an open schema let in (an applicant's own lines on an official certificate); and
        nothing when the item issues no certificate (the form stays with the case)."""
        declared = self.form_schema.get("properties")
        if self.issues_certificate is None or not isinstance(declared, dict):
            return {}
        return {key: value for key, value in form.items() if key in declared}

    @model_validator(mode="after")
    def _promise_within_law(self) -> "ServiceGuide":
        if self.promised_days > self.legal_days:
            raise ValueError("promised_days cannot exceed legal_days")
        return self


class PublishedItem(ServiceGuide):
    version: int = Field(ge=1)


class ItemSummary(Contract):
    item_code: str
    name: str
    department_code: str
    item_type: ItemType
    handling_mode: HandlingMode
    promised_days: int


class VersionSummary(Contract):
    item_code: str
    version: int
    name: str
    published_at: datetime


class ItemWithdrawalRequest(Contract):
    """Why an item stops taking applications (it is abolished, merged into another, moved...)."""

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class ItemWithdrawal(Contract):
    """An item no longer taking applications: its guide is unpublished, its versions stay readable."""

    item_code: str
    version: int  # the version that was current when the item was withdrawn
    reason: str
    withdrawn_at: datetime
    withdrawn_by: str


class Draft(ServiceGuide):
    updated_at: datetime
    updated_by: str


class GuideEdit(ServiceGuide):
    """A guide as admins send it to be a draft (POST, PUT). A guide or draft read back may be sent
    as it is (api-v1's "same fields"): what reading one answers besides the guide is let in, and
    ignored."""

    version: int | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


# What reading a guide or a draft answers besides the guide: ignored in an edit, not refused.
READ_ONLY_FIELDS = frozenset(GuideEdit.model_fields) - frozenset(ServiceGuide.model_fields)


AnswerSection = Literal[
    "materials", "time_limit", "fees", "conditions", "process", "handling", "legal_basis", "contact", "overview"
]


class Answer(Contract):
    item_code: str
    name: str
    section: AnswerSection
    text: str
    score: float


class Answers(Contract):
    """`GET /api/v1/catalog/answers`: the guide passages that answer a question, best first."""

    answers: list[Answer]


class AnswerQuery(Contract):
    q: Annotated[str, Field(min_length=1, max_length=200)]
    limit: int = Field(default=5, ge=1, le=20)


class ItemQuery(Contract):
    # Bounded like a question to `answers`: ranking scores every word against every item.
    q: Annotated[str, Field(max_length=200)] | None = None
    department: str | None = None
    item_type: ItemType | None = None
    handling_mode: HandlingMode | None = None
    page: PageNumber = 1
    page_size: PageSize = 20
