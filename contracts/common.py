"""Small shared value types."""

from typing import Annotated, Generic, Literal, TypeVar

from pydantic import Field

from contracts.base import Contract

AccountType = Literal["citizen", "enterprise", "staff"]
ApplicantType = Literal["citizen", "enterprise"]
Role = Literal["applicant", "reviewer", "supervisor", "admin"]

# A page beyond 100,000 (10 million rows at the largest page size) is a probe, not a reader.
PageNumber = Annotated[int, Field(ge=1, le=100_000)]
PageSize = Annotated[int, Field(ge=1, le=100)]

T = TypeVar("T")


class PageQuery(Contract):
    page: PageNumber = 1
    page_size: PageSize = 20


class Page(Contract, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class Principal(Contract):
    """Who is calling, as the gateway learnt it from a verified access token."""

    user_id: str
    account_type: AccountType
    roles: list[Role]
    department_code: str | None = None
    session_id: str | None = None  # the login session (refresh-token family) the token belongs to
    # An admin set the password: until its holder chooses one, only a few routes answer.
    password_change_required: bool = False
