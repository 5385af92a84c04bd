"""Small shared value types."""

import re
from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BeforeValidator, Field, Strict

from contracts.base import Contract

AccountType = Literal["citizen", "enterprise", "staff"]
ApplicantType = Literal["citizen", "enterprise"]
Role = Literal["applicant", "reviewer", "supervisor", "admin"]


def _written_as_a_date(value: Any) -> Any:
    """api-v1: dates are `YYYY-MM-DD`. pydantic would also read `0` as 1970-01-01 (a Unix time)
    and a midnight timestamp as its date."""
    written = isinstance(value, str) and _DATE.fullmatch(value)
    if not (written or (isinstance(value, date) and not isinstance(value, datetime))):
        raise ValueError("a date is written YYYY-MM-DD")
    return value


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
IsoDate = Annotated[date, BeforeValidator(_written_as_a_date)]
# An optional list sent as `null` (what many clients write for "none"): the empty list.
NullIsEmpty = BeforeValidator(lambda value: [] if value is None else value)

# Numbers as a JSON body writes them: pydantic would also read true as 1, "5" as 5 and 4.0 as 4.
# (Not for query strings, whose every value is text.)
WholeNumber = Annotated[int, Strict()]
Number = Annotated[float, Strict()]  # a whole one included

# A name shown on one line (a notice's title, an email's subject, a certificate): some character
# that is not a space, and no control character (a line break cut an email's title in two; a
# carriage return cannot be in a subject, so every email of the item failed).
ONE_LINE = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
OneLine = Annotated[str, Field(pattern=ONE_LINE)]

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


class Listing(Contract, Generic[T]):
    """A list api-v1 answers whole (`{"items"}`); paged as every other list when the client asks
    (`?page=&page_size=`), and then with `total`, `page` and `page_size` too."""

    items: list[T]
    total: int | None = None
    page: int | None = None
    page_size: int | None = None


class Principal(Contract):
    """Who is calling, as the gateway learnt it from a verified access token."""

    user_id: str
    account_type: AccountType
    roles: list[Role]
    department_code: str | None = None
    session_id: str | None = None  # the login session (refresh-token family) the token belongs to
    # An admin set the password: until its holder chooses one, only a few routes answer.
    password_change_required: bool = False


class Alive(Contract):
    """`GET /healthz`: the gateway process lives."""

    status: Literal["ok"]


class Ready(Contract):
    """`GET /readyz` when everything answers: each service's check (else 503, naming what does not)."""

    status: Literal["ready"]
    checks: dict[str, Literal["ok"]]
