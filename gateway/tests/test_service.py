import json
from datetime import UTC, date, datetime
from types import SimpleNamespace
from unittest.mock import MagicMock

import eventlet
import pytest
from nameko.testing.services import worker_factory
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from contracts.common import Principal
from contracts.envelope import new_event
from contracts.errors import ErrorResponse
from contracts.events import SessionRevoked
from gateway.service import SERVICES, Gateway, as_flag, page_query
from gateway.shared_result import PublicAnswers, SharedResult
from services.common.errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from services.identity.idnumbers import make_id_number
from services.identity.tokens import ACCESS_TOKEN_TTL

PRINCIPAL = Principal(user_id="u1", account_type="citizen", roles=["applicant"], session_id="s-1")
ADMIN = Principal(user_id="a1", account_type="staff", roles=["admin"], session_id="s-admin")
REVIEWER = Principal(user_id="r1", account_type="staff", roles=["reviewer"], department_code="620524MZ")
CALLER = "203.0.113.7"
PROXY = "10.0.0.5"
ITEM_CODE = "62052400MZ-GF-0001"


def _request(method="GET", path="/", body=None, query=None, content_type="application/json", headers=None, remote=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    builder = EnvironBuilder(
        method=method,
        path=path,
        data=data,
        query_string=query,
        content_type=content_type,
        headers=headers,
        environ_base={"REMOTE_ADDR": remote or CALLER},
    )
    return Request(builder.get_environ())


def _json(response):
    return json.loads(response.get_data(as_text=True))


def returns(method, value):
    method.call_async.return_value.result.return_value = value


def raises(method, exc):
    method.call_async.return_value.result.side_effect = exc


@pytest.fixture
def auth():
    auth = MagicMock()
    auth.principal.return_value = PRINCIPAL
    auth.trusted_proxies = frozenset({PROXY})
    return auth


@pytest.fixture
def gateway(auth):
    return worker_factory(Gateway, auth=auth, readiness=SharedResult(), public=PublicAnswers())


# --- helpers ------------------------------------------------------------------------------------


def test_page_query_defaults_and_parses():
    assert page_query(_request()) == {"page": 1, "page_size": 20}
    assert page_query(_request(query={"page": "3", "page_size": "50", "other": "x"})) == {"page": 3, "page_size": 50}


@pytest.mark.parametrize(("query", "field"), [({"page_size": "101"}, "query.page_size"), ({"page": "0"}, "query.page")])
def test_page_query_refuses_out_of_range(query, field):
    with pytest.raises(ValidationFailed) as info:
        page_query(_request(query=query))
    assert [d["field"] for d in info.value.details] == [field]


@pytest.mark.parametrize(
    ("value", "flag"), [(None, False), ("true", True), ("1", True), ("FALSE", False), ("0", False)]
)
def test_as_flag(value, flag):
    assert as_flag(_request(query={} if value is None else {"unread": value}), "unread") is flag


def test_as_flag_refuses_other_words():
    with pytest.raises(ValidationFailed) as info:
        as_flag(_request(query={"unread": "yes"}), "unread")
    assert info.value.details == [{"field": "query.unread", "issue": "use true or false"}]


# --- health -------------------------------------------------------------------------------------


def test_healthz(gateway, auth):
    response = gateway.healthz(_request())
    assert response.status_code == 200
    assert _json(response) == {"status": "ok"}
    auth.principal.assert_not_called()


def test_readyz_all_ok(gateway):
    for name in SERVICES:
        returns(getattr(gateway, name).ping, "pong")
    response = gateway.readyz(_request())
    assert response.status_code == 200
    assert _json(response) == {"status": "ready", "checks": dict.fromkeys(SERVICES, "ok")}


def test_readyz_names_what_is_down(gateway):
    for name in SERVICES:
        returns(getattr(gateway, name).ping, "pong")
    raises(gateway.intake.ping, Unavailable("intake.ping did not answer in 3s"))
    raises(gateway.notification.ping, RuntimeError("mongodb://user:secret@db refused"))
    response = gateway.readyz(_request())
    assert response.status_code == 503
    body = _json(response)
    assert "secret" not in response.get_data(as_text=True)
    # In the contract's error shape and nothing else (its OpenAPI schema allows no more), like
    # every error, naming what does not answer.
    ErrorResponse.model_validate(body)
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["details"] == [
        {"field": "intake", "issue": "intake.ping did not answer in 3s"},
        {"field": "notification", "issue": "failing: RuntimeError"},
    ]
    assert "intake" in body["error"]["message"] and "notification" in body["error"]["message"]


def test_readyz_asks_every_service_at_once(gateway):
    # Each answer waits until every service has been asked: asked one after another, the first
    # would wait for ever (here: give up and fail the check), so readyz would say "not ready".
    asked = []

    def answer_once_all_asked():
        for _ in range(100):
            if len(asked) == len(SERVICES):
                return "pong"
            eventlet.sleep(0)
        raise Unavailable("the others were not asked meanwhile")

    def asking(name):
        def call_async():
            asked.append(name)
            return MagicMock(result=MagicMock(side_effect=answer_once_all_asked))

        return call_async

    for name in SERVICES:
        getattr(gateway, name).ping.call_async.side_effect = asking(name)
    response = gateway.readyz(_request())
    assert sorted(asked) == sorted(SERVICES)
    assert response.status_code == 200, _json(response)


def test_openapi_route_serves_the_document(gateway):
    response = gateway.openapi(_request())
    assert response.status_code == 200
    assert "/api/v1/cases" in _json(response)["paths"]


def test_the_openapi_document_is_built_once_per_process(gateway, monkeypatch):
    # An anonymous route: building the document cost about 58 ms of CPU per request.
    import gateway.service as gateway_service

    gateway_service._openapi.cache_clear()
    built = []
    monkeypatch.setattr(gateway_service, "openapi_document", lambda: built.append(1) or {"paths": {}})
    try:
        for _ in range(3):
            assert gateway.openapi(_request()).status_code == 200
        assert len(built) == 1
    finally:
        gateway_service._openapi.cache_clear()


# --- identity -----------------------------------------------------------------------------------


def _registration(**overrides):
    return {
        "account_type": "citizen",
        "name": "张三",
        "id_number": make_id_number("620524", date(1940, 5, 6), 13),
        "phone": "13800138000",
        "password": "correct-horse-42",
        **overrides,
    }


def test_register_passes_the_validated_body_on(gateway):
    result = {"user_id": "u1", "account_type": "citizen", "name": "张三", "assurance_level": 1}
    returns(gateway.identity.register, result)
    response = gateway.register(_request("POST", body=_registration(name="  张三 ")))
    assert response.status_code == 201
    assert _json(response) == result
    sent, address, key = gateway.identity.register.call_async.call_args.args
    assert sent["name"] == "张三"
    assert sent["email"] is None
    assert address == CALLER  # identity counts registrations by client address
    gateway.register(_request("POST", body=_registration()))
    again = gateway.identity.register.call_async.call_args.args[2]
    assert key.startswith("gateway:") and again != key  # one per request: a redelivery is told apart


def test_register_passes_the_forwarded_client_address_from_a_trusted_proxy(gateway):
    returns(gateway.identity.register, {})
    request = _request("POST", body=_registration(), headers={"X-Forwarded-For": "198.51.100.1"}, remote=PROXY)
    gateway.register(request)
    assert gateway.identity.register.call_async.call_args.args[1] == "198.51.100.1"


def test_register_over_the_address_limit_is_429_with_retry_after(gateway):
    raises(gateway.identity.register, RateLimited("too many registrations from this address", retry_after=120))
    response = gateway.register(_request("POST", body=_registration()))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "120"
    assert _json(response)["error"]["code"] == "rate_limited"


def test_register_refuses_invalid_fields_before_calling_identity(gateway):
    response = gateway.register(_request("POST", body=_registration(phone="123", extra=1)))
    assert response.status_code == 422
    error = _json(response)["error"]
    assert error["code"] == "validation_failed"
    fields = {d["field"] for d in error["details"]}
    assert any(f.endswith("phone") for f in fields)
    assert any(f.endswith("extra") for f in fields)
    gateway.identity.register.call_async.assert_not_called()


def test_register_conflict_is_409(gateway):
    raises(
        gateway.identity.register, Conflict("id_number is already registered", [{"field": "id_number", "issue": "x"}])
    )
    response = gateway.register(_request("POST", body=_registration()))
    assert response.status_code == 409
    assert _json(response)["error"]["details"] == [{"field": "id_number", "issue": "x"}]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"[]", "application/json", 400),
        (b"a=b", "application/x-www-form-urlencoded", 400),
    ],
)
def test_register_refuses_malformed_bodies(gateway, body, content_type, status):
    response = gateway.register(_request("POST", body=body, content_type=content_type))
    assert response.status_code == status
    assert _json(response)["error"]["code"] == "malformed_request"


def test_login(gateway):
    pair = {"access_token": "a", "refresh_token": "r", "token_type": "Bearer", "expires_in": 900}
    returns(gateway.identity.login, pair)
    response = gateway.login(_request("POST", body={"username": "13800138000", "password": "pw"}))
    assert response.status_code == 200
    assert _json(response) == pair
    gateway.identity.login.call_async.assert_called_once_with(
        {"credentials": {"username": "13800138000", "password": "pw"}, "client_address": CALLER}
    )


def test_login_passes_the_forwarded_client_address_from_a_trusted_proxy(gateway):
    returns(gateway.identity.login, {})
    request = _request(
        "POST",
        body={"username": "u", "password": "pw"},
        headers={"X-Forwarded-For": "1.2.3.4, 198.51.100.1"},
        remote=PROXY,
    )
    gateway.login(request)
    [sent] = gateway.identity.login.call_async.call_args.args
    assert sent["client_address"] == "198.51.100.1"


def test_login_ignores_forwarded_for_from_anyone_else(gateway):
    returns(gateway.identity.login, {})
    gateway.login(_request("POST", body={"username": "u", "password": "pw"}, headers={"X-Forwarded-For": "1.2.3.4"}))
    [sent] = gateway.identity.login.call_async.call_args.args
    assert sent["client_address"] == CALLER


def test_login_refuses_a_bad_body_before_identity(gateway):
    response = gateway.login(_request("POST", body={"username": "u", "password": "pw", "client_address": "1.1.1.1"}))
    assert response.status_code == 422
    gateway.identity.login.call_async.assert_not_called()


def test_throttled_login_is_429_with_retry_after(gateway):
    raises(gateway.identity.login, RateLimited("too many failed logins; try again later", retry_after=321))
    response = gateway.login(_request("POST", body={"username": "x", "password": "y"}))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "321"
    assert _json(response)["error"]["code"] == "rate_limited"


def test_refresh(gateway, auth):
    pair = {"access_token": "a2", "refresh_token": "r2", "token_type": "Bearer", "expires_in": 900}
    returns(gateway.identity.refresh, pair)
    response = gateway.refresh(_request("POST", body={"refresh_token": "r" * 43}))
    assert response.status_code == 200
    assert _json(response) == pair
    gateway.identity.refresh.call_async.assert_called_once_with({"refresh_token": "r" * 43})
    auth.principal.assert_not_called()  # the access token may have expired: that is why one refreshes


def test_refresh_refuses_a_bad_body_before_identity(gateway):
    assert gateway.refresh(_request("POST", body={"refresh_token": ""})).status_code == 422
    assert gateway.refresh(_request("POST", body={"token": "r" * 43})).status_code == 422
    gateway.identity.refresh.call_async.assert_not_called()


def test_reused_refresh_token_is_401(gateway):
    raises(gateway.identity.refresh, Unauthenticated("this refresh token was already used"))
    assert gateway.refresh(_request("POST", body={"refresh_token": "r" * 43})).status_code == 401


def test_logout_ends_the_session_here_at_once(gateway, auth):
    returns(gateway.identity.logout, None)
    before = datetime.now(UTC)
    response = gateway.logout(_request("POST"))
    assert response.status_code == 204
    assert response.get_data() == b""
    gateway.identity.logout.call_async.assert_called_once_with(PRINCIPAL.model_dump())
    auth.revocations.add.assert_called_once()
    session_id, until = auth.revocations.add.call_args.args
    assert session_id == "s-1"
    # At least as long as the session's last access token can live.
    assert until >= before + ACCESS_TOKEN_TTL


def test_logout_without_a_session_revokes_nothing_locally(gateway, auth):
    auth.principal.return_value = REVIEWER
    returns(gateway.identity.logout, None)
    assert gateway.logout(_request("POST")).status_code == 204
    auth.revocations.add.assert_not_called()


def test_logout_needs_a_token(gateway, auth):
    auth.principal.side_effect = Unauthenticated("send a token")
    assert gateway.logout(_request("POST")).status_code == 401
    gateway.identity.logout.call_async.assert_not_called()
    auth.revocations.add.assert_not_called()


def test_the_revocation_list_is_caught_up_with_now_and_then_whatever_identity_says(gateway, auth):
    gateway.catch_up_on_revocations()
    auth.revocations.reload.assert_called_once_with()
    auth.revocations.reload.side_effect = ConnectionError("identity is away")
    gateway.catch_up_on_revocations()  # logged; the events and the next round will do


def test_session_revoked_event_reaches_the_revocation_list(gateway, auth):
    expires_at = datetime(2026, 11, 26, 8, 15, tzinfo=UTC)
    event = new_event(
        SessionRevoked(session_id="s-9", user_id="u9", reason="refresh token reused", expires_at=expires_at),
        producer="identity",
    )
    gateway.on_session_revoked(event.model_dump(mode="json"))
    auth.revocations.add.assert_called_once_with("s-9", expires_at)


def test_failed_login_is_401(gateway):
    raises(gateway.identity.login, Unauthenticated("wrong username or password"))
    response = gateway.login(_request("POST", body={"username": "x", "password": "y"}))
    assert response.status_code == 401
    assert _json(response)["error"]["message"] == "wrong username or password"


def test_me_uses_the_tokens_user(gateway, auth):
    returns(gateway.identity.get_user, {"user_id": "u1"})
    response = gateway.me(_request())
    assert response.status_code == 200
    gateway.identity.get_user.call_async.assert_called_once_with("u1")


FLAGGED = Principal(
    user_id="r2", account_type="staff", roles=["reviewer"], department_code="620524MZ", password_change_required=True
)


def test_a_token_whose_password_an_admin_set_opens_only_me_password_change_and_logout(gateway, auth):
    auth.principal.return_value = FLAGGED
    refused = gateway.review_tasks(_request())
    assert refused.status_code == 403
    error = _json(refused)["error"]
    assert error["code"] == "forbidden" and "PUT /api/v1/me/password" in error["message"]
    assert error["details"] == [{"field": "password", "issue": "change_required"}]
    gateway.intake.review_tasks.call_async.assert_not_called()

    returns(gateway.identity.get_user, {"user_id": "r2"})
    assert gateway.me(_request()).status_code == 200
    body = {"current_password": "set-by-admin-1", "new_password": "my-own-choice-2"}
    assert gateway.change_my_password(_request("PUT", body=body)).status_code == 204
    assert gateway.identity.change_password.call_async.call_args.args[:2] == (FLAGGED.model_dump(), body)
    assert gateway.logout(_request("POST")).status_code == 204


def test_me_without_token_is_401(gateway, auth):
    auth.principal.side_effect = Unauthenticated("send Authorization: Bearer <access_token>")
    response = gateway.me(_request())
    assert response.status_code == 401
    gateway.identity.get_user.call_async.assert_not_called()


# --- catalog ------------------------------------------------------------------------------------


def test_departments_are_wrapped_in_items(gateway):
    returns(gateway.catalog.list_departments, [{"code": "620524MZ", "name": "民政局", "region_code": "620524"}])
    assert _json(gateway.departments(_request())) == {
        "items": [{"code": "620524MZ", "name": "民政局", "region_code": "620524"}]
    }


def test_item_search_passes_its_parameters(gateway):
    returns(gateway.catalog.search_items, {"items": [], "total": 0, "page": 1, "page_size": 20})
    gateway.items(_request(query={"q": "津贴", "department": "620524MZ", "page": "2"}))
    gateway.catalog.search_items.call_async.assert_called_once_with(
        {"q": "津贴", "department": "620524MZ", "page": "2"}
    )


def test_a_parameter_the_operation_does_not_have_is_refused(gateway):
    response = gateway.items(_request(query={"q": "津贴", "evil": "$where", "page-size": "5"}))
    assert response.status_code == 422
    body = _json(response)["error"]
    assert body["code"] == "validation_failed"
    assert [d["field"] for d in body["details"]] == ["query.evil", "query.page-size"]
    gateway.catalog.search_items.call_async.assert_not_called()


def test_unknown_item_is_404(gateway):
    raises(gateway.catalog.get_item, NotFound(f"no published item {ITEM_CODE}"))
    response = gateway.item(_request(), item_code=ITEM_CODE)
    assert response.status_code == 404
    gateway.catalog.get_item.call_async.assert_called_once_with(ITEM_CODE)


# --- cases --------------------------------------------------------------------------------------


def test_submit_case(gateway):
    created = {
        "case_no": "620524MZ-20261123-000001",
        "status": "submitted",
        "item_code": ITEM_CODE,
        "item_version": 1,
        "submitted_at": "2026-11-23T02:00:00Z",
    }
    returns(gateway.intake.submit_case, created)
    body = {"item_code": ITEM_CODE, "form": {"a": 1}, "materials": [{"code": "photo", "document_id": "d1"}]}
    response = gateway.submit_case(_request("POST", body=body))
    assert response.status_code == 201
    assert _json(response) == created
    principal, sent, key = gateway.intake.submit_case.call_async.call_args.args
    assert principal == PRINCIPAL.model_dump()
    assert sent == body  # null certificate_id left out
    # No Idempotency-Key header: one of the gateway's own, so a redelivered request makes no second case.
    assert key.startswith("gateway:") and len(key) > len("gateway:") + 16


CREATED = {
    "case_no": "620524MZ-20261123-000001",
    "status": "submitted",
    "item_code": ITEM_CODE,
    "item_version": 1,
    "submitted_at": "2026-11-23T02:00:00Z",
}
SUBMISSION = {"item_code": ITEM_CODE, "form": {"a": 1}}


def test_a_new_submission_with_an_idempotency_key_is_201(gateway):
    returns(gateway.intake.submit_case, {**CREATED, "replayed": False})
    response = gateway.submit_case(_request("POST", body=SUBMISSION, headers={"Idempotency-Key": "k-1"}))
    assert response.status_code == 201
    assert _json(response) == CREATED  # the flag is not part of the contract
    _, _, key = gateway.intake.submit_case.call_async.call_args.args
    assert key == "k-1"


def test_a_replayed_submission_is_200_with_the_same_case(gateway):
    returns(gateway.intake.submit_case, {**CREATED, "replayed": True})
    response = gateway.submit_case(_request("POST", body=SUBMISSION, headers={"Idempotency-Key": "k-1"}))
    assert response.status_code == 200
    assert _json(response) == CREATED


def test_the_same_key_with_another_body_is_409(gateway):
    raises(gateway.intake.submit_case, Conflict("this Idempotency-Key was already used with a different request"))
    response = gateway.submit_case(_request("POST", body=SUBMISSION, headers={"Idempotency-Key": "k-1"}))
    assert response.status_code == 409
    assert _json(response)["error"]["code"] == "conflict"


def test_a_bad_idempotency_key_is_422_naming_the_header(gateway):
    details = [{"field": "Idempotency-Key", "issue": "1 to 200 characters"}]
    raises(gateway.intake.submit_case, ValidationFailed("bad Idempotency-Key", details))
    response = gateway.submit_case(_request("POST", body=SUBMISSION, headers={"Idempotency-Key": "k" * 300}))
    assert response.status_code == 422
    assert _json(response)["error"]["details"] == details


def test_submit_case_refuses_a_bad_body_before_intake(gateway):
    response = gateway.submit_case(_request("POST", body={"item_code": 5, "form": {"$x": 1}}))
    assert response.status_code == 422
    fields = {d["field"] for d in _json(response)["error"]["details"]}
    assert {"item_code", "form"} <= fields
    gateway.intake.submit_case.call_async.assert_not_called()


def test_submit_case_validation_details_from_intake(gateway):
    details = [{"field": "form.bank_account", "issue": "'bank_account' is a required property"}]
    raises(gateway.intake.submit_case, ValidationFailed("the application is not valid", details))
    response = gateway.submit_case(_request("POST", body={"item_code": ITEM_CODE}))
    assert response.status_code == 422
    assert _json(response)["error"]["details"] == details


def test_submit_case_needs_a_token(gateway, auth):
    auth.principal.side_effect = Unauthenticated("send a token")
    response = gateway.submit_case(_request("POST", body={"item_code": ITEM_CODE}))
    assert response.status_code == 401
    gateway.intake.submit_case.call_async.assert_not_called()


def test_list_cases(gateway):
    returns(gateway.intake.list_cases, {"items": [], "total": 0, "page": 2, "page_size": 5})
    gateway.list_cases(_request(query={"status": "approved", "page": "2", "page_size": "5"}))
    gateway.intake.list_cases.call_async.assert_called_once_with(
        PRINCIPAL.model_dump(), "approved", {"page": 2, "page_size": 5}
    )


def test_get_case_hidden_is_404(gateway):
    raises(gateway.intake.get_case, NotFound("no case X"))
    response = gateway.get_case(_request(), case_no="X")
    assert response.status_code == 404
    gateway.intake.get_case.call_async.assert_called_once_with(PRINCIPAL.model_dump(), "X")


def test_intake_unavailable_is_503(gateway):
    raises(gateway.intake.get_case, Unavailable("intake.get_case did not answer in 10s"))
    assert gateway.get_case(_request(), case_no="X").status_code == 503


# --- notifications ------------------------------------------------------------------------------


def test_notifications(gateway):
    returns(gateway.notification.list_notifications, {"items": [], "total": 0, "page": 1, "page_size": 20})
    response = gateway.notifications(_request(query={"unread": "true"}))
    assert response.status_code == 200
    gateway.notification.list_notifications.call_async.assert_called_once_with(
        PRINCIPAL.model_dump(), True, {"page": 1, "page_size": 20}
    )


def test_notifications_bad_flag_is_422(gateway):
    response = gateway.notifications(_request(query={"unread": "maybe"}))
    assert response.status_code == 422
    gateway.notification.list_notifications.call_async.assert_not_called()


def test_read_notification_is_204(gateway):
    returns(gateway.notification.mark_read, None)
    response = gateway.read_notification(_request("POST"), notification_id="n1")
    assert response.status_code == 204
    assert response.get_data() == b""
    gateway.notification.mark_read.call_async.assert_called_once_with(PRINCIPAL.model_dump(), "n1")


def test_read_someone_elses_notification_is_404(gateway):
    raises(gateway.notification.mark_read, NotFound("no such notification"))
    assert gateway.read_notification(_request("POST"), notification_id="n1").status_code == 404


# --- who may call what --------------------------------------------------------------------------


def test_an_applicant_may_not_create_staff(gateway, auth):
    response = gateway.create_staff(_request("POST", body={"username": "x"}))
    assert response.status_code == 403
    assert _json(response)["error"]["code"] == "forbidden"
    gateway.identity.create_staff.call_async.assert_not_called()


def test_an_applicant_may_not_rotate_the_signing_key(gateway):
    assert gateway.rotate_signing_key(_request("POST")).status_code == 403
    gateway.identity.rotate_signing_key.call_async.assert_not_called()


def test_admin_creates_staff(gateway, auth):
    auth.principal.return_value = ADMIN
    returns(gateway.catalog.list_departments, [{"code": "620524GA", "name": "公安局", "region_code": "620524"}])
    body = {
        "username": "wang.reviewer",
        "name": "王审核",
        "password": "Reviewer-pass-2026",
        "roles": ["reviewer"],
        "department_code": "620524GA",
    }
    created = {**body, "user_id": "u2"}
    del created["password"]
    returns(gateway.identity.create_staff, created)
    response = gateway.create_staff(_request("POST", body=body))
    assert response.status_code == 201
    assert _json(response) == created
    principal, sent, key = gateway.identity.create_staff.call_async.call_args.args
    assert key.startswith("gateway:")  # a key of the request's: the same request again is not a 409
    assert principal == ADMIN.model_dump()
    assert sent == {**body, "password_change_required": False}


@pytest.mark.parametrize(
    "change, field",
    [({"department_code": "620524ZZ"}, "department_code"), ({"department_code": None}, None)],
)
def test_staff_of_no_department_or_an_unknown_one_is_refused(gateway, auth, change, field):
    auth.principal.return_value = ADMIN
    returns(gateway.catalog.list_departments, [{"code": "620524GA", "name": "公安局", "region_code": "620524"}])
    body = {"username": "wang.reviewer", "name": "王审核", "password": "Reviewer-pass-2026", "roles": ["reviewer"]}
    for response in (
        gateway.create_staff(_request("POST", body={**body, **change})),
        gateway.update_staff(
            _request("PUT", body={"name": "王审核", "roles": ["reviewer"], **change}), username="wang.reviewer"
        ),
    ):
        assert response.status_code == 422
        details = _json(response)["error"]["details"]
        if field:  # a department the catalog does not have
            assert details == [
                {"field": field, "issue": "no department 620524ZZ (GET /api/v1/catalog/departments lists them)"}
            ]
        else:  # a reviewer of no department
            assert "department_code" in details[0]["issue"]
    gateway.identity.create_staff.call_async.assert_not_called()
    gateway.identity.update_staff.call_async.assert_not_called()


def test_a_supervisor_or_admin_may_have_no_department(gateway, auth):
    auth.principal.return_value = ADMIN
    body = {"username": "zhao.sup", "name": "赵督查", "password": "Supervisor-pass-1", "roles": ["supervisor"]}
    returns(gateway.identity.create_staff, {**body, "user_id": "u3", "department_code": None})
    assert gateway.create_staff(_request("POST", body=body)).status_code == 201
    gateway.catalog.list_departments.call_async.assert_not_called()


def test_admins_list_the_staff_directory(gateway, auth):
    auth.principal.return_value = ADMIN
    returns(gateway.identity.list_staff, {"items": [], "total": 0, "page": 2, "page_size": 5})
    response = gateway.list_staff(_request(query="page=2&page_size=5&role=reviewer&active=false"))
    assert response.status_code == 200
    principal, query = gateway.identity.list_staff.call_async.call_args.args
    assert principal == ADMIN.model_dump()
    assert query == {"page": 2, "page_size": 5, "department_code": None, "role": "reviewer", "active": False}
    assert gateway.list_staff(_request(query="role=citizen")).status_code == 422


def test_admins_deactivate_a_staff_account(gateway, auth):
    auth.principal.return_value = ADMIN
    view = {"user_id": "u2", "username": "li", "name": "李", "roles": ["reviewer"], "active": False}
    returns(gateway.identity.set_staff_status, view)
    response = gateway.set_staff_status(_request("PUT", body={"active": False}), username="li")
    assert response.status_code == 200 and _json(response) == view
    gateway.identity.set_staff_status.call_async.assert_called_once_with(ADMIN.model_dump(), "li", {"active": False})
    refused = gateway.set_staff_status(_request("PUT", body={"active": "maybe"}), username="li")
    assert refused.status_code == 422
    auth.principal.return_value = REVIEWER
    assert gateway.set_staff_status(_request("PUT", body={"active": False}), username="li").status_code == 403


def test_admins_change_a_staff_accounts_name_roles_and_department(gateway, auth):
    auth.principal.return_value = ADMIN
    body = {"name": "李", "roles": ["supervisor"], "department_code": None}
    returns(gateway.identity.update_staff, {"username": "li", **body})
    response = gateway.update_staff(_request("PUT", body=body), username="li")
    assert response.status_code == 200
    gateway.identity.update_staff.call_async.assert_called_once_with(ADMIN.model_dump(), "li", body, None)
    # Made from the copy read at version 3: identity refuses it if the account changed since.
    gateway.update_staff(_request("PUT", body=body, headers={"If-Match": '"3"'}), username="li")
    assert gateway.identity.update_staff.call_async.call_args.args[3] == 3
    for bad in ("yesterday", '"²"', "9" * 5000):  # a digit to str.isdigit, not to int(); past int()'s 4300 digits
        stale = gateway.update_staff(_request("PUT", body=body, headers={"If-Match": bad}), username="li")
        assert stale.status_code == 422 and _json(stale)["error"]["details"][0]["field"] == "header.If-Match"
    gateway.update_staff(_request("PUT", body=body, headers={"If-Match": "*"}), username="li")
    assert gateway.identity.update_staff.call_async.call_args.args[3] is None  # any version
    partial = gateway.update_staff(_request("PUT", body={"name": "李"}), username="li")
    assert partial.status_code == 422  # all three, as they are to be
    assert {d["field"] for d in _json(partial)["error"]["details"]} == {"roles", "department_code"}


def test_admin_rotates_the_signing_key(gateway, auth):
    auth.principal.return_value = ADMIN
    returns(gateway.identity.rotate_signing_key, {"kid": "k2"})
    response = gateway.rotate_signing_key(_request("POST"))
    assert response.status_code == 201
    assert _json(response) == {"kid": "k2"}
    auth.keys.refresh.assert_called_once_with()  # its next tokens work here at once


def test_the_key_set_is_asked_once_for_many_anonymous_reads_and_again_after_a_rotation(gateway, auth):
    returns(gateway.identity.jwks, {"keys": [{"kid": "k1"}]})
    assert [_json(gateway.jwks(_request())) for _ in range(20)] == [{"keys": [{"kid": "k1"}]}] * 20
    assert gateway.identity.jwks.call_async.call_count == 1  # a flood costs identity one call a second

    auth.principal.return_value = ADMIN
    returns(gateway.identity.rotate_signing_key, {"kid": "k2"})
    gateway.rotate_signing_key(_request("POST"))
    returns(gateway.identity.jwks, {"keys": [{"kid": "k1"}, {"kid": "k2"}]})
    assert _json(gateway.jwks(_request()))["keys"][-1] == {"kid": "k2"}  # not the set from before


def test_the_departments_are_asked_once_for_many_anonymous_reads(gateway):
    departments = [{"code": "620524MZ", "name": "民政局", "region_code": "620524"}]
    returns(gateway.catalog.list_departments, departments)
    for _ in range(20):
        assert _json(gateway.departments(_request())) == {"items": departments}
    assert _json(gateway.departments(_request(query={"page_size": "1"})))["total"] == 1
    assert gateway.catalog.list_departments.call_async.call_count == 1


@pytest.mark.parametrize(
    "route",
    [
        "submit_case",
        "list_cases",
        "my_certificates",
        "verify_real_name",
        "verify_face",
        "my_contact",
        "change_my_contact",
    ],
)
def test_staff_may_not_use_applicant_routes(gateway, auth, route):
    auth.principal.return_value = REVIEWER
    response = getattr(gateway, route)(_request("POST", body={}))
    assert response.status_code == 403
    assert not any(getattr(gateway, name).method_calls for name in SERVICES)


def test_a_whole_list_is_paged_when_the_client_pages_it(gateway):
    departments = [{"code": f"6205{n:02d}MZ", "name": f"局{n}", "region_code": "620524"} for n in range(5)]
    returns(gateway.catalog.list_departments, departments)
    assert _json(gateway.departments(_request(query={"page": "2", "page_size": "2"}))) == {
        "items": departments[2:4],
        "total": 5,
        "page": 2,
        "page_size": 2,
    }
    assert _json(gateway.departments(_request(query={"page_size": "101"})))["error"]["code"] == "validation_failed"


def test_my_certificates(gateway):
    returns(gateway.identity.list_certificates, {"items": []})
    assert _json(gateway.my_certificates(_request())) == {"items": []}
    gateway.identity.list_certificates.call_async.assert_called_once_with("u1")


def test_verify_real_name(gateway):
    returns(gateway.identity.verify_real_name, {"user_id": "u1", "assurance_level": 2})
    assert _json(gateway.verify_real_name(_request("POST"))) == {"user_id": "u1", "assurance_level": 2}
    gateway.identity.verify_real_name.call_async.assert_called_once_with(PRINCIPAL.model_dump())


def test_verify_face(gateway):
    returns(gateway.identity.verify_face, {"user_id": "u1", "assurance_level": 3})
    response = gateway.verify_face(_request("POST", body={"liveness_token": "local-live:x"}))
    assert response.status_code == 200
    gateway.identity.verify_face.call_async.assert_called_once_with(
        PRINCIPAL.model_dump(), {"liveness_token": "local-live:x"}
    )


def test_verify_face_refuses_a_bad_body_before_identity(gateway):
    assert gateway.verify_face(_request("POST", body={"liveness_token": ""})).status_code == 422
    gateway.identity.verify_face.call_async.assert_not_called()


def test_my_contact(gateway):
    returns(gateway.identity.get_contact, {"phone": "13800138000", "email": None})
    assert _json(gateway.my_contact(_request())) == {"phone": "13800138000", "email": None}
    gateway.identity.get_contact.call_async.assert_called_once_with(PRINCIPAL.model_dump())


@pytest.mark.parametrize(
    "body",
    [
        {"password": "secret-1", "phone": "13911112222"},  # the email left out stays as it is
        {"password": "secret-1", "email": None},  # null removes it
        {"password": "secret-1", "phone": "13911112222", "email": "li@example.cn"},
        {"password": "secret-1", "phone": "13911112222", "phone_code": "480213"},
    ],
)
def test_a_contact_change_reaches_identity_as_given(gateway, body):
    returns(gateway.identity.change_contact, {"phone": "13911112222", "email": None})
    assert gateway.change_my_contact(_request("PUT", body=body)).status_code == 200
    gateway.identity.change_contact.call_async.assert_called_once_with(PRINCIPAL.model_dump(), body)


@pytest.mark.parametrize(
    "body",
    [
        {"password": "secret-1"},
        {"phone": "13911112222"},
        {"password": "secret-1", "phone": "1391111"},
        {"password": "secret-1", "phone": "13911112222", "phone_code": "48021"},
    ],
)
def test_a_bad_contact_change_is_refused_before_identity(gateway, body):
    assert gateway.change_my_contact(_request("PUT", body=body)).status_code == 422
    gateway.identity.change_contact.call_async.assert_not_called()


def test_a_password_change_reaches_identity_and_answers_204(gateway):
    returns(gateway.identity.change_password, None)
    body = {"current_password": "secret-1", "new_password": "Another-pass-2027"}
    assert gateway.change_my_password(_request("PUT", body=body)).status_code == 204
    principal, sent, key = gateway.identity.change_password.call_async.call_args.args
    assert (principal, sent) == (PRINCIPAL.model_dump(), body) and key.startswith("gateway:")


@pytest.mark.parametrize(
    "body", [{"current_password": "secret-1"}, {"current_password": "secret-1", "new_password": "short"}]
)
def test_a_bad_password_change_is_refused_before_identity(gateway, body):
    assert gateway.change_my_password(_request("PUT", body=body)).status_code == 422
    gateway.identity.change_password.call_async.assert_not_called()


def test_a_password_reset_takes_a_code_request_then_the_code(gateway):
    returns(gateway.identity.send_password_reset_code, {"valid_minutes": 5, "resend_after": 60})
    asked = gateway.send_password_reset_code(_request("POST", body={"username": "13800138000"}))
    assert asked.status_code == 202 and _json(asked) == {"valid_minutes": 5, "resend_after": 60}
    gateway.identity.send_password_reset_code.call_async.assert_called_once_with({"username": "13800138000"}, CALLER)
    returns(gateway.identity.reset_password, None)
    body = {"username": "13800138000", "code": "480213", "new_password": "Another-pass-2027"}
    assert gateway.reset_password(_request("POST", body=body)).status_code == 204
    gateway.identity.reset_password.call_async.assert_called_once_with(body, CALLER)
    bad = {**body, "code": "4802"}
    assert gateway.reset_password(_request("POST", body=bad)).status_code == 422


def test_an_admin_sets_a_staff_password(gateway, auth):
    auth.principal.return_value = ADMIN
    returns(gateway.identity.reset_staff_password, None)
    body = {"new_password": "Another-pass-2027"}
    assert gateway.reset_staff_password(_request("POST", body=body), username="li").status_code == 204
    gateway.identity.reset_staff_password.call_async.assert_called_once_with(ADMIN.model_dump(), "li", body)
    assert gateway.reset_staff_password(_request("POST", body={"new_password": "x"}), username="li").status_code == 422


def test_a_phone_code_request_reaches_identity_and_answers_202(gateway):
    sent = {"phone": "13911112222", "expires_at": "2027-03-01T02:05:00Z", "resend_after": 60}
    returns(gateway.identity.send_phone_code, sent)
    answer = gateway.send_phone_code(_request("POST", body={"phone": "13911112222"}))
    assert answer.status_code == 202 and _json(answer) == sent
    gateway.identity.send_phone_code.call_async.assert_called_once_with(
        PRINCIPAL.model_dump(), {"phone": "13911112222"}
    )


@pytest.mark.parametrize("body", [{}, {"phone": "1391111"}, {"phone": "13911112222", "code": "1"}])
def test_a_bad_phone_code_request_is_refused_before_identity(gateway, body):
    assert gateway.send_phone_code(_request("POST", body=body)).status_code == 422
    gateway.identity.send_phone_code.call_async.assert_not_called()


# --- catalog: versions, answers, drafts -----------------------------------------------------------

GUIDE_BODY = {"item_code": ITEM_CODE, "name": "高龄津贴申领"}  # the catalog checks the guide itself


def test_item_versions(gateway):
    returns(gateway.catalog.list_versions, {"items": []})
    response = gateway.item_versions(_request(), item_code=ITEM_CODE)
    assert response.status_code == 200
    assert _json(response) == {"items": []}
    gateway.catalog.list_versions.call_async.assert_called_once_with(ITEM_CODE)


def test_one_item_version(gateway, auth):
    returns(gateway.catalog.get_item, {"item_code": ITEM_CODE, "version": 1})
    response = gateway.item_version(_request(), item_code=ITEM_CODE, version=1)
    assert response.status_code == 200
    gateway.catalog.get_item.call_async.assert_called_once_with(ITEM_CODE, 1)
    auth.principal.assert_not_called()  # public


def test_unknown_item_version_is_404(gateway):
    raises(gateway.catalog.get_item, NotFound(f"no published item {ITEM_CODE} version 9"))
    assert gateway.item_version(_request(), item_code=ITEM_CODE, version=9).status_code == 404


def test_answers_pass_only_the_question_and_limit(gateway, auth):
    returns(gateway.catalog.answer, {"answers": []})
    response = gateway.answers(_request(query={"q": "高龄津贴多久", "limit": "3"}))
    assert response.status_code == 200
    gateway.catalog.answer.call_async.assert_called_once_with({"q": "高龄津贴多久", "limit": "3"})
    auth.principal.assert_not_called()


def test_a_question_the_catalog_refuses_is_422(gateway):
    raises(gateway.catalog.answer, ValidationFailed("bad query", [{"field": "query.q", "issue": "required"}]))
    assert gateway.answers(_request()).status_code == 422


def test_admin_creates_an_item_draft(gateway, auth):
    auth.principal.return_value = ADMIN
    returns(gateway.catalog.create_draft, {**GUIDE_BODY, "updated_by": "a1"})
    response = gateway.create_item_draft(_request("POST", body=GUIDE_BODY))
    assert response.status_code == 201
    assert _json(response)["updated_by"] == "a1"
    principal, body, key = gateway.catalog.create_draft.call_async.call_args.args
    assert (principal, body) == (ADMIN.model_dump(), GUIDE_BODY) and key.startswith("gateway:")


def test_admin_updates_reads_and_publishes_a_draft(gateway, auth):
    auth.principal.return_value = ADMIN
    returns(gateway.catalog.update_draft, GUIDE_BODY)
    returns(gateway.catalog.get_draft, GUIDE_BODY)
    returns(gateway.catalog.publish_draft, {**GUIDE_BODY, "version": 2})
    assert gateway.update_item_draft(_request("PUT", body=GUIDE_BODY), item_code=ITEM_CODE).status_code == 200
    gateway.catalog.update_draft.call_async.assert_called_once_with(ADMIN.model_dump(), ITEM_CODE, GUIDE_BODY)
    assert gateway.item_draft(_request(), item_code=ITEM_CODE).status_code == 200
    gateway.catalog.get_draft.call_async.assert_called_once_with(ADMIN.model_dump(), ITEM_CODE)
    response = gateway.publish_item(_request("POST"), item_code=ITEM_CODE)
    assert response.status_code == 200
    assert _json(response)["version"] == 2
    gateway.catalog.publish_draft.call_async.assert_called_once_with(ADMIN.model_dump(), ITEM_CODE)


def test_admin_withdraws_an_item(gateway, auth):
    auth.principal.return_value = ADMIN
    withdrawal = {
        "item_code": ITEM_CODE,
        "version": 2,
        "reason": "事项已取消",
        "withdrawn_at": "2026-11-27T05:00:00Z",
        "withdrawn_by": "a1",
    }
    returns(gateway.catalog.withdraw_item, withdrawal)
    response = gateway.withdraw_item(_request("POST", body={"reason": "事项已取消"}), item_code=ITEM_CODE)
    assert response.status_code == 200
    assert _json(response) == withdrawal
    principal, code, body, key = gateway.catalog.withdraw_item.call_async.call_args.args
    assert (principal, code, body) == (ADMIN.model_dump(), ITEM_CODE, {"reason": "事项已取消"})
    assert key.startswith("gateway:")  # the same request delivered again answers its withdrawal


@pytest.mark.parametrize("who", [PRINCIPAL, REVIEWER], ids=["applicant", "reviewer"])
@pytest.mark.parametrize(
    ("route", "kwargs"),
    [
        ("create_item_draft", {}),
        ("update_item_draft", {"item_code": ITEM_CODE}),
        ("item_draft", {"item_code": ITEM_CODE}),
        ("publish_item", {"item_code": ITEM_CODE}),
        ("withdraw_item", {"item_code": ITEM_CODE}),
    ],
)
def test_only_admins_edit_the_catalog(gateway, auth, who, route, kwargs):
    auth.principal.return_value = who
    response = getattr(gateway, route)(_request("POST", body=GUIDE_BODY), **kwargs)
    assert response.status_code == 403
    assert not gateway.catalog.method_calls


@pytest.mark.parametrize(("body", "status"), [(b"{", 400), (b"[]", 400)])
def test_a_malformed_draft_body_never_reaches_the_catalog(gateway, auth, body, status):
    auth.principal.return_value = ADMIN
    assert gateway.create_item_draft(_request("POST", body=body)).status_code == status
    assert gateway.update_item_draft(_request("PUT", body=body), item_code=ITEM_CODE).status_code == status
    assert not gateway.catalog.method_calls


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ValidationFailed("the item code cannot change", [{"field": "item_code", "issue": "x"}]), 422),
        (Conflict("a draft already exists"), 409),
        (NotFound("no draft"), 404),
    ],
)
def test_draft_errors_from_the_catalog(gateway, auth, error, status):
    auth.principal.return_value = ADMIN
    raises(gateway.catalog.update_draft, error)
    assert gateway.update_item_draft(_request("PUT", body=GUIDE_BODY), item_code=ITEM_CODE).status_code == status


# --- case lifecycle (applicants) ------------------------------------------------------------------

CASE_NO = "620524MZ-20261123-000001"
VIEW = {"case_no": CASE_NO, "status": "resubmitted"}


def test_resubmit_passes_the_validated_supplement(gateway):
    returns(gateway.intake.resubmit_case, VIEW)
    body = {"materials": [{"code": "photo", "document_id": "d2"}], "form": {"reason": "lost"}}
    response = gateway.resubmit_case(_request("POST", body=body, headers={"Idempotency-Key": "s-1"}), case_no=CASE_NO)
    assert response.status_code == 200
    assert _json(response) == VIEW
    gateway.intake.resubmit_case.call_async.assert_called_once_with(PRINCIPAL.model_dump(), CASE_NO, body, "s-1")


def test_resubmit_without_a_form_leaves_it_out(gateway):
    returns(gateway.intake.resubmit_case, VIEW)
    gateway.resubmit_case(_request("POST", body={"materials": [{"code": "photo", "document_id": "d2"}]}), case_no="X")
    _, _, sent, _ = gateway.intake.resubmit_case.call_async.call_args.args
    assert sent == {"materials": [{"code": "photo", "document_id": "d2"}]}


@pytest.mark.parametrize(
    "body",
    [{"materials": [{"code": "photo"}]}, {"form": {"$x": 1}}, {"materials": [], "extra": 1}],
    ids=["no-source", "dollar-key", "extra-field"],
)
def test_a_bad_supplement_never_reaches_intake(gateway, body):
    response = gateway.resubmit_case(_request("POST", body=body), case_no=CASE_NO)
    assert response.status_code == 422
    gateway.intake.resubmit_case.call_async.assert_not_called()


def test_withdrawal(gateway):
    returns(gateway.intake.withdraw_case, {"case_no": CASE_NO, "status": "withdrawn"})
    response = gateway.withdraw_case(_request("POST"), case_no=CASE_NO)
    assert response.status_code == 200
    assert _json(response)["status"] == "withdrawn"
    _, _, key = gateway.intake.withdraw_case.call_async.call_args.args
    assert key.startswith("gateway:")  # none given: one of its own, so a redelivered command is not a 409


@pytest.mark.parametrize("route", ["withdraw_case", "evaluate_case", "review_case", "resubmit_case"])
def test_a_commands_idempotency_key_goes_to_intake_and_each_request_without_one_gets_its_own(gateway, auth, route):
    auth.principal.return_value = REVIEWER if route == "review_case" else PRINCIPAL
    body = {
        "withdraw_case": None,
        "evaluate_case": {"score": 5},
        "review_case": {"action": "accept"},
        "resubmit_case": {"materials": [{"code": "photo", "document_id": "d2"}]},
    }[route]
    returns(getattr(gateway.intake, route), VIEW)
    getattr(gateway, route)(_request("POST", body=body, headers={"Idempotency-Key": "c-1"}), case_no=CASE_NO)
    getattr(gateway, route)(_request("POST", body=body), case_no=CASE_NO)
    getattr(gateway, route)(_request("POST", body=body), case_no=CASE_NO)
    keys = [c.args[-1] for c in getattr(gateway.intake, route).call_async.call_args_list]
    assert keys[0] == "c-1" and keys[1] != keys[2] and keys[1].startswith("gateway:")


def test_evaluation(gateway):
    returns(gateway.intake.evaluate_case, {"case_no": CASE_NO, "evaluation": {"score": 5}})
    response = gateway.evaluate_case(_request("POST", body={"score": 5, "comment": "很快"}), case_no=CASE_NO)
    assert response.status_code == 200
    assert gateway.intake.evaluate_case.call_async.call_args.args[:3] == (
        PRINCIPAL.model_dump(),
        CASE_NO,
        {"score": 5, "comment": "很快"},
    )


@pytest.mark.parametrize("body", [{"score": 0}, {"score": 6}, {}, {"score": "five"}])
def test_a_bad_evaluation_never_reaches_intake(gateway, body):
    assert gateway.evaluate_case(_request("POST", body=body), case_no=CASE_NO).status_code == 422
    gateway.intake.evaluate_case.call_async.assert_not_called()


@pytest.mark.parametrize(
    ("route", "method", "error", "status"),
    [
        ("withdraw_case", "withdraw_case", Conflict("cannot withdraw a case that is approved"), 409),
        ("evaluate_case", "evaluate_case", Conflict("this case has already been evaluated"), 409),
        ("resubmit_case", "resubmit_case", NotFound("no case X"), 404),
        ("withdraw_case", "withdraw_case", NotFound("no case X"), 404),
    ],
)
def test_lifecycle_errors_from_intake(gateway, route, method, error, status):
    raises(getattr(gateway.intake, method), error)
    body = {"score": 3} if route == "evaluate_case" else {"materials": []}
    assert getattr(gateway, route)(_request("POST", body=body), case_no=CASE_NO).status_code == status


@pytest.mark.parametrize("route", ["resubmit_case", "withdraw_case", "evaluate_case"])
@pytest.mark.parametrize("who", [REVIEWER, ADMIN], ids=["reviewer", "admin"])
def test_staff_may_not_act_as_applicants(gateway, auth, route, who):
    auth.principal.return_value = who
    response = getattr(gateway, route)(_request("POST", body={"score": 5}), case_no=CASE_NO)
    assert response.status_code == 403
    assert not gateway.intake.method_calls


@pytest.mark.parametrize("route", ["resubmit_case", "withdraw_case", "evaluate_case", "review_case"])
def test_lifecycle_routes_need_a_token(gateway, auth, route):
    auth.principal.side_effect = Unauthenticated("send a token")
    assert getattr(gateway, route)(_request("POST", body={}), case_no=CASE_NO).status_code == 401
    assert not gateway.intake.method_calls


# --- review (reviewers) ---------------------------------------------------------------------------


def test_review_tasks(gateway, auth):
    auth.principal.return_value = REVIEWER
    page = {"items": [], "total": 0, "page": 2, "page_size": 10}
    returns(gateway.intake.review_tasks, page)
    response = gateway.review_tasks(_request(query={"status": "accepted", "page": "2", "page_size": "10"}))
    assert response.status_code == 200
    assert _json(response) == page
    gateway.intake.review_tasks.call_async.assert_called_once_with(
        REVIEWER.model_dump(), "accepted", {"page": 2, "page_size": 10}
    )


def test_review_tasks_defaults(gateway, auth):
    auth.principal.return_value = REVIEWER
    returns(gateway.intake.review_tasks, {"items": [], "total": 0, "page": 1, "page_size": 20})
    gateway.review_tasks(_request())
    gateway.intake.review_tasks.call_async.assert_called_once_with(
        REVIEWER.model_dump(), None, {"page": 1, "page_size": 20}
    )


def test_review_tasks_refuse_bad_paging_before_intake(gateway, auth):
    auth.principal.return_value = REVIEWER
    assert gateway.review_tasks(_request(query={"page_size": "500"})).status_code == 422
    gateway.intake.review_tasks.call_async.assert_not_called()


def test_review_decision(gateway, auth):
    auth.principal.return_value = REVIEWER
    returns(gateway.intake.review_case, {"case_no": CASE_NO, "status": "accepted"})
    response = gateway.review_case(_request("POST", body={"action": "accept"}), case_no=CASE_NO)
    assert response.status_code == 200
    assert _json(response)["status"] == "accepted"
    assert gateway.intake.review_case.call_async.call_args.args[:3] == (
        REVIEWER.model_dump(),
        CASE_NO,
        {"action": "accept", "comment": None, "missing_materials": []},
    )


def test_supplement_request_passes_the_missing_materials(gateway, auth):
    auth.principal.return_value = REVIEWER
    returns(gateway.intake.review_case, {"case_no": CASE_NO, "status": "supplement_requested"})
    body = {"action": "request_supplement", "missing_materials": ["photo", "id_card"], "comment": "照片不清晰"}
    assert gateway.review_case(_request("POST", body=body), case_no=CASE_NO).status_code == 200
    _, _, sent, _ = gateway.intake.review_case.call_async.call_args.args
    assert sent == body


@pytest.mark.parametrize(
    "body",
    [
        {"action": "reject"},
        {"action": "reject", "comment": "   "},
        {"action": "request_supplement"},
        {"action": "approve", "extra": 1},
        {"action": "sign"},
        {"action": "request_supplement", "missing_materials": ["Not A Code"]},
    ],
    ids=["reject-without-reason", "reject-blank-reason", "supplement-of-nothing", "extra", "unknown", "bad-code"],
)
def test_a_bad_decision_never_reaches_intake(gateway, auth, body):
    auth.principal.return_value = REVIEWER
    response = gateway.review_case(_request("POST", body=body), case_no=CASE_NO)
    assert response.status_code == 422
    assert _json(response)["error"]["code"] == "validation_failed"
    gateway.intake.review_case.call_async.assert_not_called()


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Conflict("the case changed meanwhile"), 409),
        (NotFound("no case X"), 404),
        (Forbidden("only reviewers of the item's department decide its cases"), 403),
        (ValidationFailed("unknown materials", [{"field": "missing_materials", "issue": "x"}]), 422),
    ],
)
def test_review_errors_from_intake(gateway, auth, error, status):
    auth.principal.return_value = REVIEWER
    raises(gateway.intake.review_case, error)
    assert gateway.review_case(_request("POST", body={"action": "accept"}), case_no=CASE_NO).status_code == status


SUPERVISOR = Principal(user_id="s1", account_type="staff", roles=["supervisor"])


@pytest.mark.parametrize("who", [PRINCIPAL, SUPERVISOR, ADMIN], ids=["applicant", "supervisor", "admin"])
def test_only_reviewers_review(gateway, auth, who):
    auth.principal.return_value = who
    assert gateway.review_tasks(_request()).status_code == 403
    assert gateway.review_case(_request("POST", body={"action": "accept"}), case_no=CASE_NO).status_code == 403
    assert not gateway.intake.method_calls


def test_new_routes_declare_their_roles():
    from gateway.routing import ROUTES

    roles = {(r.method, r.url): r.roles for r in ROUTES}
    assert roles[("POST", "/api/v1/catalog/items")] == ("admin",)
    assert roles[("PUT", "/api/v1/catalog/items/<item_code>")] == ("admin",)
    assert roles[("GET", "/api/v1/catalog/items/<item_code>/draft")] == ("admin",)
    assert roles[("POST", "/api/v1/catalog/items/<item_code>/publish")] == ("admin",)
    assert roles[("POST", "/api/v1/catalog/items/<item_code>/withdrawal")] == ("admin",)
    assert roles[("POST", "/api/v1/cases/<case_no>/supplements")] == ("applicant",)
    assert roles[("GET", "/api/v1/me/contact")] == ("applicant",)
    assert roles[("PUT", "/api/v1/me/contact")] == ("applicant",)
    assert roles[("POST", "/api/v1/me/contact/phone-code")] == ("applicant",)
    assert roles[("PUT", "/api/v1/me/password")] == ()  # any signed-in account
    assert roles[("POST", "/api/v1/admin/staff/<username>/password")] == ("admin",)
    assert roles[("POST", "/api/v1/cases/<case_no>/withdrawal")] == ("applicant",)
    assert roles[("POST", "/api/v1/cases/<case_no>/evaluation")] == ("applicant",)
    assert roles[("GET", "/api/v1/review/tasks")] == ("reviewer",)
    assert roles[("POST", "/api/v1/review/cases/<case_no>/decisions")] == ("reviewer",)
    public = {(r.method, r.url) for r in ROUTES if not r.auth}
    assert {
        ("GET", "/api/v1/catalog/items/<item_code>/versions"),
        ("GET", "/api/v1/catalog/items/<item_code>/versions/<int:version>"),
        ("GET", "/api/v1/catalog/answers"),
    } <= public


@pytest.mark.parametrize(("action", "waits"), [("GET /api/v1/cases/C-1", 2.0), ("POST /api/v1/admin/staff", 10.0)])
def test_a_staff_reads_audit_entry_waits_two_seconds_at_most_and_a_change_the_usual_ten(
    gateway, monkeypatch, action, waits
):
    from gateway import service as gateway_service

    timeouts, entries = [], []

    def recorded(method, entry, timeout):
        timeouts.append(timeout)
        entries.append(entry)

    monkeypatch.setattr(gateway_service, "call", recorded)
    gateway.audit(REVIEWER, _request(), action, {"case_no": "C-1"}, 200)
    gateway.audit(REVIEWER, _request(), action, {"case_no": "C-1"}, 200)
    assert timeouts == [waits, waits]  # a read must not wait long for identity (README: 2 s)
    # Each entry has an id of its own, so identity stores one delivered twice once.
    assert len({entry["entry_id"] for entry in entries}) == 2 and all(len(e["entry_id"]) == 32 for e in entries)


def test_readyz_probes_in_the_same_second_share_one_check(gateway):
    for name in SERVICES:
        returns(getattr(gateway, name).ping, "pong")
    assert [gateway.readyz(_request()).status_code for _ in range(5)] == [200] * 5
    assert gateway.intake.ping.call_async.call_count == 1


# --- documents ----------------------------------------------------------------------------------

PDF_PART = (
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
)


def _upload(body: bytes):
    request = _request("POST", "/api/v1/documents", body=body, content_type="multipart/form-data; boundary=B")
    connection = SimpleNamespace(close_connection=0)  # eventlet's protocol (routing.ApiProtocol)
    request.environ["yiwang.connection"] = connection
    return request, connection


def test_an_upload_whose_body_cannot_be_read_closes_its_connection(gateway):
    request, connection = _upload(PDF_PART + b"%PDF-1.4 cut short")  # no closing boundary
    response = gateway.upload_document(request)
    assert response.status_code == 400 and connection.close_connection == 1
    gateway.intake.begin_document.call_async.assert_not_called()


def test_a_failed_clean_up_does_not_hide_why_the_upload_failed(gateway):
    returns(gateway.intake.begin_document, "d-1")
    raises(gateway.intake.abort_document, Unavailable("intake.abort_document did not answer in 5s"))
    request, connection = _upload(PDF_PART + b"MZ an executable\r\n--B--\r\n")
    response = gateway.upload_document(request)
    assert response.status_code == 415 and _json(response)["error"]["code"] == "unsupported_media_type"
    assert connection.close_connection == 0  # read whole: the connection may serve the next request
