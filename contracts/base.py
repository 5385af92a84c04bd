"""Base model settings shared by every contract."""

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """Strict by default: unknown fields are refused so typos surface as 422s."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OpenContract(BaseModel):
    """For data we only pass along (e.g. an applicant's form): unknown fields kept."""

    model_config = ConfigDict(extra="allow")
