"""HTTP plumbing of the public API: JSON in and out, the contract's error shape, X-Trace-Id."""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from nameko.exceptions import RemoteError
from opentelemetry import trace
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from contracts.errors import HTTP_STATUS, ErrorBody, ErrorCode, ErrorResponse
from services.common.errors import (
    DomainError,
    MalformedRequest,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    ValidationFailed,
    details_from_pydantic,
)
from services.common.telemetry import current_trace_id

log = logging.getLogger(__name__)

TRACE_HEADER = "X-Trace-Id"
MAX_JSON_BODY = 1024 * 1024
MAX_JSON_DEPTH = 32  # forms are flat; anything deeper is an attack on parsers downstream
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what BSON (and so the document store) holds
_NOT_UNICODE = re.compile("[\ud800-\udfff]")  # surrogates: never characters on their own
UNAVAILABLE_RETRY_AFTER = 5  # seconds: RPC calls give up fast, and the system recovers in seconds

# On every response: an API of JSON answers is never to be sniffed, framed, cached or referred.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    # Browsers heed it only over HTTPS, which the load balancer in front terminates.
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
)


def with_security_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The response's headers plus every security header it does not set itself."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *((name, value) for name, value in SECURITY_HEADERS if name.lower() not in present)]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json")
    payload = "" if body is None else json.dumps(body, ensure_ascii=False)
    response = Response(payload, status=status, mimetype="application/json" if body is not None else None)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.headers[TRACE_HEADER] = current_trace_id()
    return response


def error_body(code: ErrorCode, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The contract's error shape, in the current request's trace."""
    error = ErrorBody(code=code, message=message, details=details or [], trace_id=current_trace_id() or None)
    return ErrorResponse(error=error).model_dump(mode="json")


def error_response(
    code: ErrorCode, message: str, details: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None
) -> Response:
    return json_response(error_body(code, message, details), HTTP_STATUS[code], headers)


def response_for_exception(exc: BaseException) -> Response:
    """Map anything a handler raised onto the contract; unexpected errors are 500 without internals."""
    if isinstance(exc, DomainError):
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, Unavailable):
            headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}  # a service or the broker is away
        return error_response(exc.code, exc.message, exc.details, headers)
    if isinstance(exc, ValidationError):
        return error_response(ErrorCode.VALIDATION_FAILED, "the request is not valid", details_from_pydantic(exc))
    if isinstance(exc, HTTPException):
        return error_for_http_exception(exc)
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
    if isinstance(exc, RemoteError):
        log.error("remote error %s", exc.exc_type)
    else:
        log.exception("unexpected error in the gateway")
    return error_response(ErrorCode.INTERNAL_ERROR, "something went wrong on our side; quote the trace id")


def error_for_http_exception(exc: HTTPException) -> Response:
    if exc.code == 404:
        return error_response(ErrorCode.NOT_FOUND, "no such resource")
    if exc.code == 405:
        allowed = sorted(getattr(exc, "valid_methods", None) or [])
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        message = f"this resource answers {', '.join(allowed)} only" if allowed else "method not allowed here"
        # Status 405 with api-v1's code for a request that is wrong as sent (it lists no code of its own).
        response = error_response(ErrorCode.MALFORMED_REQUEST, message, headers=headers)
        response.status_code = 405
        return response
    if exc.code == 413:
        return error_response(ErrorCode.PAYLOAD_TOO_LARGE, "the request body is too large")
    return error_response(ErrorCode.MALFORMED_REQUEST, exc.description or "bad request")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def read_json(request: Request) -> dict[str, Any]:
    """The JSON object in the body, or 400 malformed_request."""
    if request.mimetype != "application/json":
        raise MalformedRequest("send the body as application/json")
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise PayloadTooLarge("the JSON body is larger than 1 MiB")
    try:
        body = json.loads(request.get_data(cache=False).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedRequest(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the JSON body must be an object")
    _check_storable(body)
    return body


# A value's place in the body, as (its parent's place, its key or index): written out as text only
# for a problem reported. Built as text for every value, a long key over a long list cost key
# length x list length bytes (a 1 MiB body asked for gigabytes).
_Place = tuple[Any, str | int] | None
MAX_PROBLEMS = 20  # reported for one body: a body of 170,000 bad numbers answered 10 MB


def _written(place: _Place) -> str:
    keys: list[str] = []
    while place is not None:
        place, key = place
        keys.append(str(key))
    return ".".join(reversed(keys))


def _check_storable(body: dict[str, Any]) -> None:
    """Refuse, as the client's error, what JSON can say but no document store can keep, and which
    would otherwise fail deep inside a service as a 500: text that is not Unicode (an unpaired
    surrogate such as "\\ud800": 400), and numbers past the store's (an integer beyond 64 bits, a
    number too large for a double, which parses as infinity) or a field name holding NUL (422,
    with the field; the first MAX_PROBLEMS). Also bounds the nesting, iteratively: no recursion
    to exhaust."""
    problems: list[dict[str, str]] = []
    stack: list[tuple[Any, _Place, int]] = [(body, None, 1)]
    while stack:  # the whole body, so that a 400 found past the listed problems is still a 400
        value, place, level = stack.pop()
        full = len(problems) >= MAX_PROBLEMS
        if isinstance(value, dict | list) and level > MAX_JSON_DEPTH:
            raise MalformedRequest(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            for key, child in value.items():
                if _NOT_UNICODE.search(key):
                    raise MalformedRequest(
                        f"a field name is not Unicode text (an unpaired surrogate) at {_written(place) or 'the top'}"
                    )
                if "\x00" in key and len(problems) < MAX_PROBLEMS:
                    issue = "a field name may not contain NUL (\\u0000)"
                    problems.append({"field": _written(place) or "body", "issue": issue})
                stack.append((child, (place, key), level + 1))
        elif isinstance(value, list):
            stack.extend((child, (place, index), level + 1) for index, child in enumerate(value))
        elif isinstance(value, str):
            if _NOT_UNICODE.search(value):
                raise MalformedRequest(
                    f"{_written(place)}: the text is not Unicode (an unpaired surrogate such as \\ud800)"
                )
        elif isinstance(value, bool) or full:  # a bool is an int to Python; past the listed problems
            pass
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                problems.append({"field": _written(place), "issue": "the number is beyond the 64-bit integer range"})
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append({"field": _written(place), "issue": "the number is too large"})
    if problems:
        raise ValidationFailed("the request is not valid", problems)
