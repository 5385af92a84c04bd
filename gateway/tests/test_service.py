import json
from datetime import date
from unittest.mock import MagicMock

import pytest
from nameko.testing.services import worker_factory
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from contracts.common import Principal
from gateway.service import SERVICES, Gateway, as_flag, page_query
from services.common.errors import Conflict, NotFound, Unauthenticated, Unavailable, ValidationFailed
from services.identity.idnumbers import make_id_number

PRINCIPAL = Principal(user_id="u1", account_type="citizen", roles=["applicant"])
ITEM_CODE = "62052400MZ-GF-0001"


def _request(method="GET", path="/", body=None, query=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    builder = EnvironBuilder(method=method, path=path, data=data, query_string=query, content_type=content_type)
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
    return auth


@pytest.fixture
def gateway(auth):
    return worker_factory(Gateway, auth=auth)


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
    assert body["status"] == "unavailable"
    assert body["checks"]["intake"] == "intake.ping did not answer in 3s"
    assert body["checks"]["notification"] == "failing: RuntimeError"
    assert body["checks"]["catalog"] == "ok"
    assert "secret" not in response.get_data(as_text=True)


def test_openapi_route_serves_the_document(gateway):
    response = gateway.openapi(_request())
    assert response.status_code == 200
    assert "/api/v1/cases" in _json(response)["paths"]


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
    [sent] = gateway.identity.register.call_async.call_args.args
    assert sent["name"] == "张三"
    assert sent["email"] is None


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
    gateway.identity.login.call_async.assert_called_once_with({"username": "13800138000", "password": "pw"})


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


def test_item_search_passes_only_known_parameters(gateway):
    returns(gateway.catalog.search_items, {"items": [], "total": 0, "page": 1, "page_size": 20})
    gateway.items(_request(query={"q": "津贴", "department": "620524MZ", "page": "2", "evil": "$where"}))
    gateway.catalog.search_items.call_async.assert_called_once_with(
        {"q": "津贴", "department": "620524MZ", "page": "2"}
    )


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
    principal, sent = gateway.intake.submit_case.call_async.call_args.args
    assert principal == PRINCIPAL.model_dump()
    assert sent == body  # null certificate_id left out


def test_submit_case_refuses_a_bad_body_before_intake(gateway):
    response = gateway.submit_case(_request("POST", body={"item_code": "bad", "form": {"$x": 1}}))
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
