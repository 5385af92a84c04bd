"""Domain errors that cross RPC intact and map onto the public error shape.

Registered with nameko's `deserialize_to_instance`, so a caller re-raises the same class
(with the same code, message and field details) instead of an opaque RemoteError.
"""

from __future__ import annotations

from typing import Any

from nameko.exceptions import deserialize_to_instance
from pydantic import ValidationError

from contracts.errors import ErrorCode


class DomainError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        # Both go into args: nameko rebuilds the exception from them on the caller's side.
        super().__init__(message, details or [])

    @property
    def message(self) -> str:
        return self.args[0]

    @property
    def details(self) -> list[dict[str, str]]:
        return self.args[1] if len(self.args) > 1 else []

    def __str__(self) -> str:
        return self.message


@deserialize_to_instance
class MalformedRequest(DomainError):
    code = ErrorCode.MALFORMED_REQUEST


@deserialize_to_instance
class Unauthenticated(DomainError):
    code = ErrorCode.UNAUTHENTICATED


@deserialize_to_instance
class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN


@deserialize_to_instance
class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


@deserialize_to_instance
class Conflict(DomainError):
    code = ErrorCode.CONFLICT


@deserialize_to_instance
class PayloadTooLarge(DomainError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


@deserialize_to_instance
class UnsupportedMediaType(DomainError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


@deserialize_to_instance
class ValidationFailed(DomainError):
    code = ErrorCode.VALIDATION_FAILED


@deserialize_to_instance
class RateLimited(DomainError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, details: list[dict[str, str]] | None = None, retry_after: int = 60) -> None:
        Exception.__init__(self, message, details or [], retry_after)

    @property
    def retry_after(self) -> int:
        """Seconds the client should wait (the Retry-After header)."""
        return int(self.args[2]) if len(self.args) > 2 else 60


@deserialize_to_instance
class Unavailable(DomainError):
    code = ErrorCode.UNAVAILABLE


# Expected errors: entrypoints list these so traces do not count them as failures.
EXPECTED_ERRORS: tuple[type[DomainError], ...] = (
    MalformedRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    RateLimited,
)


def details_from_pydantic(exc: ValidationError, prefix: str = "", tagged_by: str | None = None) -> list[dict[str, str]]:
    """One detail per error, each naming the field by its path in the body. `tagged_by`: the
    field that picks the member of a tagged union (`account_type`), whose value pydantic puts
    in front of the path (`citizen.phone`) where the client wrote just `phone`."""
    details = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        if tagged_by and err["type"].startswith("union_tag_"):
            loc = (tagged_by,)  # the tag is missing or not one of the union's
        elif tagged_by:
            loc = loc[1:]  # every other error of the union is under its member's tag
        path = ".".join(str(part) for part in loc)
        field = f"{prefix}.{path}" if prefix and path else (prefix or path or "body")
        details.append({"field": field, "issue": err["msg"]})
    return details


def validated(model: Any, data: Any, prefix: str = "", tagged_by: str | None = None) -> Any:
    """Validate `data` as `model`, turning pydantic's error into a 422 ValidationFailed.
    `tagged_by`: for a tagged union, the field that picks its member (see details_from_pydantic)."""
    validate = getattr(model, "model_validate", None) or model.validate_python  # model or TypeAdapter
    try:
        return validate(data)
    except ValidationError as exc:
        raise ValidationFailed("the request is not valid", details_from_pydantic(exc, prefix, tagged_by)) from None


def password_change_first() -> Forbidden:
    """The refusal for an account whose password an admin set, until its holder chooses one."""
    return Forbidden(
        "an admin set this account's password: choose your own first (PUT /api/v1/me/password), then refresh the token",
        [{"field": "password", "issue": "change_required"}],
    )
