import json

import pytest
from nameko.exceptions import RemoteError
from opentelemetry import trace
from pydantic import ValidationError
from werkzeug.exceptions import BadRequest, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.exceptions import NotFound as HttpNotFound
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

import gateway.http as gateway_http
from contracts.cases import SubmitCase
from contracts.errors import ErrorCode, ErrorResponse
from gateway.http import (
    MAX_JSON_BODY,
    TRACE_HEADER,
    error_for_http_exception,
    error_response,
    json_response,
    read_json,
    response_for_exception,
)
from services.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)


def _body(response):
    return json.loads(response.get_data(as_text=True))


def _error(response):
    body = _body(response)
    ErrorResponse.model_validate(body)  # always the contract's shape
    assert set(body) == {"error"}
    return body["error"]


# --- response_for_exception ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (MalformedRequest("bad json"), 400, "malformed_request"),
        (Unauthenticated("who are you"), 401, "unauthenticated"),
        (Forbidden("needs admin"), 403, "forbidden"),
        (NotFound("no case X"), 404, "not_found"),
        (Conflict("already registered"), 409, "conflict"),
        (PayloadTooLarge("too big"), 413, "payload_too_large"),
        (UnsupportedMediaType("pdf only"), 415, "unsupported_media_type"),
        (ValidationFailed("not valid"), 422, "validation_failed"),
        (RateLimited("slow down"), 429, "rate_limited"),
        (Unavailable("catalog did not answer"), 503, "unavailable"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_domain_errors_map_to_their_status_and_code(exc, status, code):
    response = response_for_exception(exc)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = _error(response)
    assert error["code"] == code
    assert error["message"] == exc.message
    assert error["details"] == []
    assert TRACE_HEADER in response.headers


def test_domain_error_details_are_passed_on():
    details = [{"field": "form.bank_account", "issue": "does not match"}, {"field": "materials", "issue": "missing"}]
    error = _error(response_for_exception(ValidationFailed("the application is not valid", details)))
    assert error["details"] == details


def test_rate_limited_says_when_to_retry():
    response = response_for_exception(RateLimited("too many attempts"))
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0


def test_other_errors_have_no_retry_after():
    assert "Retry-After" not in response_for_exception(NotFound("x")).headers
    assert "Retry-After" not in response_for_exception(Conflict("x")).headers


def test_pydantic_validation_error_is_422_with_details():
    with pytest.raises(ValidationError) as info:
        SubmitCase.model_validate({"item_code": 5, "surprise": 1})
    response = response_for_exception(info.value)
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "validation_failed"
    assert sorted(d["field"] for d in error["details"]) == ["item_code", "surprise"]


@pytest.mark.parametrize(
    "exc",
    [
        KeyError("password_hash"),
        RuntimeError("mongodb://admin:hunter2@db:27017 refused"),
        ZeroDivisionError("division by zero"),
        RemoteError("ValueError", "invalid literal for int() with base 10: 'secret'"),
        DomainError("base class carries an internal message"),
    ],
    ids=["KeyError", "RuntimeError", "ZeroDivisionError", "RemoteError", "DomainError"],
)
def test_unexpected_errors_are_500_without_internals(exc):
    response = response_for_exception(exc)
    assert response.status_code == 500
    error = _error(response)
    assert error["code"] == "internal_error"
    assert error["details"] == []
    text = response.get_data(as_text=True)
    if not isinstance(exc, DomainError):
        for secret in ("password_hash", "hunter2", "division", "secret", "Traceback", type(exc).__name__):
            assert secret not in text


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (HttpNotFound(), 404, "not_found"),
        (MethodNotAllowed(valid_methods=["GET"]), 405, "malformed_request"),
        (RequestEntityTooLarge(), 413, "payload_too_large"),
        (BadRequest("the form was broken"), 400, "malformed_request"),
    ],
)
def test_werkzeug_http_errors_keep_the_contract_shape(exc, status, code):
    for response in (response_for_exception(exc), error_for_http_exception(exc)):
        assert response.status_code == status
        assert _error(response)["code"] == code


def test_bad_request_keeps_its_description():
    assert _error(error_for_http_exception(BadRequest("the form was broken")))["message"] == "the form was broken"


def test_error_response_without_trace_has_null_trace_id():
    # Explicitly outside any span: earlier in-process containers may leave one current.
    with trace.use_span(trace.INVALID_SPAN):
        error = _error(error_response(ErrorCode.CONFLICT, "dup"))
    assert error["code"] == "conflict"
    assert error["trace_id"] is None


# --- json_response ------------------------------------------------------------------------------


def test_json_response_keeps_chinese_readable():
    response = json_response({"name": "高龄津贴申领"}, 201, {"Location": "/x"})
    assert response.status_code == 201
    assert "高龄津贴申领" in response.get_data(as_text=True)
    assert response.headers["Location"] == "/x"
    assert TRACE_HEADER in response.headers


def test_json_response_dumps_models_in_json_mode():
    model = SubmitCase(item_code="62052400MZ-GF-0001", form={"a": 1})
    assert _body(json_response(model)) == {"item_code": "62052400MZ-GF-0001", "form": {"a": 1}, "materials": []}


def test_json_response_without_body_is_empty():
    response = json_response(None, 204)
    assert response.status_code == 204
    assert response.get_data() == b""


# --- read_json ----------------------------------------------------------------------------------


def _post(data, content_type="application/json", **kwargs):
    return Request(
        EnvironBuilder(method="POST", path="/", data=data, content_type=content_type, **kwargs).get_environ()
    )


def test_read_json_returns_the_object():
    assert read_json(_post(json.dumps({"name": "张三", "n": 1}).encode())) == {"name": "张三", "n": 1}


def test_read_json_accepts_a_charset_parameter():
    assert read_json(_post(b'{"a": 1}', "application/json; charset=utf-8")) == {"a": 1}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_read_json_wants_application_json(content_type):
    with pytest.raises(MalformedRequest, match="application/json"):
        read_json(_post(b'{"a": 1}', content_type))


def test_read_json_without_content_type():
    request = Request(EnvironBuilder(method="POST", path="/", data=b'{"a": 1}').get_environ())
    with pytest.raises(MalformedRequest):
        read_json(request)


@pytest.mark.parametrize("data", [b"{", b"", b"{'a': 1}", b"not json", b'{"a": }'])
def test_read_json_refuses_invalid_json(data):
    with pytest.raises(MalformedRequest, match="not valid JSON"):
        read_json(_post(data))


def test_read_json_refuses_bytes_that_are_not_utf8():
    with pytest.raises(MalformedRequest):
        read_json(_post('{"name": "张三"}'.encode("gbk")))


@pytest.mark.parametrize("data", [b"[]", b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_read_json_wants_an_object(data):
    with pytest.raises(MalformedRequest, match="object"):
        read_json(_post(data))


def test_read_json_refuses_bodies_over_one_mib():
    data = b'{"a": "' + b"x" * MAX_JSON_BODY + b'"}'
    with pytest.raises(PayloadTooLarge):
        read_json(_post(data))


def test_read_json_accepts_a_body_just_under_the_limit():
    prefix, suffix = b'{"a": "', b'"}'
    data = prefix + b"x" * (MAX_JSON_BODY - len(prefix) - len(suffix)) + suffix
    assert len(data) == MAX_JSON_BODY
    assert len(read_json(_post(data))["a"]) == MAX_JSON_BODY - len(prefix) - len(suffix)


def test_read_json_errors_map_to_400_and_413():
    with pytest.raises(MalformedRequest) as bad:
        read_json(_post(b"{"))
    assert response_for_exception(bad.value).status_code == 400
    with pytest.raises(PayloadTooLarge) as big:
        read_json(_post(b" " * (MAX_JSON_BODY + 1)))
    assert response_for_exception(big.value).status_code == 413


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_refused(constant):
    with pytest.raises(MalformedRequest):
        read_json(_post('{"amount": ' + constant + "}"))


# What the README promises, written out here: a test reading the code's own list could not fail.
PROMISED_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
}


def test_every_security_header_is_added_unless_the_response_sets_its_own():
    from gateway.http import with_security_headers

    assert dict(with_security_headers([])) == PROMISED_SECURITY_HEADERS
    headers = with_security_headers([("Content-Type", "application/json"), ("cache-control", "max-age=60")])
    names = [name.lower() for name, _ in headers]
    assert names.count("cache-control") == 1 and ("cache-control", "max-age=60") in headers
    for name, value in PROMISED_SECURITY_HEADERS.items():
        if name != "Cache-Control":
            assert (name, value) in headers


def test_unavailable_is_503_with_a_retry_after():
    from gateway.http import UNAVAILABLE_RETRY_AFTER, response_for_exception
    from services.common.errors import Unavailable

    response = response_for_exception(Unavailable("intake.submit_case did not answer in 10s"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER)
    assert response.get_json()["error"]["code"] == "unavailable"


def test_json_nested_too_deeply_is_malformed():
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from gateway.http import MAX_JSON_DEPTH, read_json
    from services.common.errors import MalformedRequest

    def request(body: str) -> Request:
        return Request(EnvironBuilder(method="POST", data=body, content_type="application/json").get_environ())

    fine = '{"a": ' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}"
    assert read_json(request(fine))
    for depth in (MAX_JSON_DEPTH + 1, 5000):
        with pytest.raises(MalformedRequest, match="nested deeper"):
            read_json(request('{"a": ' + "[" * depth + "]" * depth + "}"))


# What JSON can say but no document store keeps: the client's error, never a 500 from deep inside.


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"form": {"n": 9223372036854775808}}', "form.n"),  # 2**63
        ('{"form": {"n": -9223372036854775809}}', "form.n"),
        ('{"form": {"list": [1, 100000000000000000000000000000]}}', "form.list.1"),
        ('{"legal_days": 1e400}', "legal_days"),  # parses as infinity
        ('{"form": {"a\\u0000b": 1}}', "form"),
    ],
)
def test_what_no_store_can_keep_is_422_with_its_field(body, field):
    with pytest.raises(ValidationFailed) as refused:
        read_json(_post(body.encode()))
    assert [detail["field"] for detail in refused.value.details] == [field]
    assert response_for_exception(refused.value).status_code == 422


def test_a_places_name_is_written_out_only_for_a_problem(monkeypatch):
    # Written for every value, a long key over a long list (`{"k"*500000: [0]*260000}`, 1 MiB)
    # asked for about 125 GB before any check of the caller: the gateway died.
    written = []
    monkeypatch.setattr(gateway_http, "_written", lambda place: written.append(place) or "x")
    body = json.dumps({"k" * 10_000: [0] * 10_000, "form": {"n": [1, {"m": 2**63}]}})
    with pytest.raises(ValidationFailed):
        read_json(_post(body.encode()))
    assert len(written) == 1


@pytest.mark.parametrize(
    "body",
    [
        '{"a": [' + ", ".join(["1e999"] * 5000) + "]}",
        "{" + ", ".join(f'"k\\u0000{n}": 1' for n in range(5000)) + "}",  # one dict, many NUL keys
    ],
)
def test_the_problems_reported_for_one_body_are_bounded(body):
    # 170,000 numbers too large answered a 10 MB list of them, from a 1 MiB request.
    with pytest.raises(ValidationFailed) as refused:
        read_json(_post(body.encode()))
    assert len(refused.value.details) == gateway_http.MAX_PROBLEMS


def test_text_that_is_not_unicode_past_the_listed_problems_is_still_malformed():
    body = '{"b": "\\ud800", "a": [' + ", ".join(["1e999"] * 25) + "]}"
    with pytest.raises(MalformedRequest, match="not Unicode"):
        read_json(_post(body.encode()))


def test_the_64_bit_range_itself_is_kept():
    body = '{"form": {"max": 9223372036854775807, "min": -9223372036854775808, "big": 1e300, "flag": true}}'
    assert read_json(_post(body.encode()))["form"]["max"] == 2**63 - 1


@pytest.mark.parametrize("body", ['{"form": {"name": "\\ud800"}}', '{"form": {"\\udfff": 1}}', '{"a": ["x\\udc00y"]}'])
def test_text_that_is_not_unicode_is_malformed(body):
    with pytest.raises(MalformedRequest, match="not Unicode") as refused:
        read_json(_post(body.encode()))
    response = response_for_exception(refused.value)
    assert response.status_code == 400
    json.loads(response.get_data())  # the answer itself is valid JSON (no surrogate copied into it)


def test_characters_beyond_the_basic_plane_are_text():
    # A surrogate pair in JSON is one character (here 😀): not an unpaired surrogate.
    assert read_json(_post(b'{"name": "\\ud83d\\ude00"}'))["name"] == "\U0001f600"
