import pytest
from nameko.exceptions import RemoteError, deserialize, serialize
from pydantic import TypeAdapter, ValidationError

from contracts.errors import HTTP_STATUS, ErrorCode
from contracts.identity import LoginRequest
from services.common import errors
from services.common.errors import (
    EXPECTED_ERRORS,
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
    details_from_pydantic,
    validated,
)

CODES = {
    MalformedRequest: ErrorCode.MALFORMED_REQUEST,
    Unauthenticated: ErrorCode.UNAUTHENTICATED,
    Forbidden: ErrorCode.FORBIDDEN,
    NotFound: ErrorCode.NOT_FOUND,
    Conflict: ErrorCode.CONFLICT,
    PayloadTooLarge: ErrorCode.PAYLOAD_TOO_LARGE,
    UnsupportedMediaType: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ValidationFailed: ErrorCode.VALIDATION_FAILED,
    RateLimited: ErrorCode.RATE_LIMITED,
    Unavailable: ErrorCode.UNAVAILABLE,
}


@pytest.mark.parametrize(("cls", "code"), list(CODES.items()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_error_carries_its_public_code(cls, code):
    exc = cls("boom")
    assert isinstance(exc, DomainError)
    assert exc.code == code
    assert code in HTTP_STATUS


def test_base_domain_error_is_an_internal_error():
    assert DomainError("x").code == ErrorCode.INTERNAL_ERROR


def test_message_and_details_are_kept():
    details = [{"field": "form.age", "issue": "too young"}]
    exc = ValidationFailed("the application is not valid", details)
    assert exc.message == "the application is not valid"
    assert exc.details == details
    assert str(exc) == "the application is not valid"


def test_details_default_to_empty_list():
    exc = NotFound("no case X")
    assert exc.details == []
    assert exc.args == ("no case X", [])


def test_details_tolerate_args_with_message_only():
    exc = NotFound.__new__(NotFound)
    Exception.__init__(exc, "only a message")
    assert exc.message == "only a message"
    assert exc.details == []


@pytest.mark.parametrize("cls", list(CODES), ids=lambda c: c.__name__)
def test_errors_cross_rpc_as_the_same_class_with_details(cls):
    original = cls("it went wrong", [{"field": "phone", "issue": "already registered"}])
    rebuilt = deserialize(serialize(original))
    assert type(rebuilt) is cls
    assert rebuilt.message == "it went wrong"
    assert rebuilt.details == [{"field": "phone", "issue": "already registered"}]
    assert rebuilt.code == original.code


def test_unregistered_exceptions_become_remote_errors():
    rebuilt = deserialize(serialize(KeyError("secret internals")))
    assert isinstance(rebuilt, RemoteError)


def test_expected_errors_are_client_errors_only():
    assert Unavailable not in EXPECTED_ERRORS
    assert DomainError not in EXPECTED_ERRORS
    assert set(EXPECTED_ERRORS) == set(CODES) - {Unavailable}
    for cls in EXPECTED_ERRORS:
        assert 400 <= HTTP_STATUS[cls.code] < 500


def _pydantic_error(model, data):
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    with pytest.raises(ValidationError) as info:
        adapter.validate_python(data)
    return info.value


def test_details_from_pydantic_joins_the_location_with_dots():
    exc = _pydantic_error(LoginRequest, {"username": "", "password": "x"})
    details = details_from_pydantic(exc)
    assert [d["field"] for d in details] == ["username"]
    assert details[0]["issue"]


def test_details_from_pydantic_prefixes_fields():
    exc = _pydantic_error(LoginRequest, {"password": "x"})
    assert details_from_pydantic(exc, "query") == [{"field": "query.username", "issue": "Field required"}]


def test_details_from_pydantic_for_the_whole_body():
    exc = _pydantic_error(TypeAdapter(int), "not a number")
    assert [d["field"] for d in details_from_pydantic(exc)] == ["body"]
    assert [d["field"] for d in details_from_pydantic(exc, "query")] == ["query"]


def test_validated_returns_the_model():
    request = validated(LoginRequest, {"username": " alice ", "password": "pw"})
    assert isinstance(request, LoginRequest)
    assert request.username == "alice"


def test_validated_accepts_a_type_adapter():
    assert validated(TypeAdapter(list[int]), ["1", 2]) == [1, 2]


def test_validated_turns_pydantic_errors_into_validation_failed():
    with pytest.raises(ValidationFailed) as info:
        validated(LoginRequest, {"username": "a", "password": "b", "extra": 1})
    assert info.value.code == ErrorCode.VALIDATION_FAILED
    assert info.value.details == [{"field": "extra", "issue": "Extra inputs are not permitted"}]
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_validated_lists_every_problem_with_prefix():
    with pytest.raises(ValidationFailed) as info:
        validated(LoginRequest, {}, "body")
    assert sorted(d["field"] for d in info.value.details) == ["body.password", "body.username"]


def test_module_exports_every_error_used_by_the_contract():
    # Every public error code except internal_error has a DomainError subclass.
    classes = {
        obj.code
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, DomainError) and obj is not DomainError
    }
    assert classes == set(ErrorCode) - {ErrorCode.INTERNAL_ERROR}


# A tagged union (registration, by account_type): fields named as the client wrote them.


def _registration_details(body):
    from pydantic import TypeAdapter

    from contracts.identity import Registration
    from services.common.errors import ValidationFailed, validated

    with pytest.raises(ValidationFailed) as refused:
        validated(TypeAdapter(Registration), body, tagged_by="account_type")
    return {detail["field"] for detail in refused.value.details}


def test_a_union_members_fields_are_named_without_its_tag():
    body = {"account_type": "citizen", "name": "张三", "id_number": "1" * 18, "phone": "123", "password": "short"}
    assert _registration_details(body) == {"phone", "password"}
    assert _registration_details({"account_type": "enterprise", "name": "某公司"}) >= {"credit_code", "phone"}


@pytest.mark.parametrize("body", [{}, {"account_type": "alien", "name": "x"}])
def test_a_missing_or_unknown_tag_is_named_as_its_field(body):
    assert _registration_details(body) == {"account_type"}
