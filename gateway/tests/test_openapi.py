import re

import pytest
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

import gateway.service  # noqa: F401  (declares the routes)
from gateway.openapi import openapi_document
from gateway.routing import ROUTES, ApiRoute
from gateway.service import Gateway


def _declared_routes():
    """(METHOD, /openapi/{path}) of every HTTP entrypoint the Gateway class has."""
    routes = []
    for name in dir(Gateway):
        for entrypoint in getattr(getattr(Gateway, name), ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(entrypoint, ApiRoute):
                path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", entrypoint.url)
                routes.append((entrypoint.method.upper(), path))
    return routes


@pytest.fixture(scope="module")
def document():
    return openapi_document()


def test_the_gateway_declares_routes():
    routes = _declared_routes()
    assert len(routes) >= 10
    assert len(routes) == len(set(routes))
    assert ("POST", "/api/v1/cases") in routes


@pytest.mark.parametrize(("method", "path"), _declared_routes(), ids=lambda v: v)
def test_every_declared_route_is_documented(document, method, path):
    assert path in document["paths"], f"{path} missing from openapi.json"
    assert method.lower() in document["paths"][path], f"{method} {path} missing from openapi.json"


def test_nothing_undeclared_is_documented(document):
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == set(_declared_routes())


def test_route_registry_matches_the_entrypoints():
    assert {(r.method, re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", r.url)) for r in ROUTES} == set(_declared_routes())


def test_document_header(document):
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_contract_routes_are_documented(document):
    # The parts of ../shared/api-v1.md the gateway serves today.
    expected = {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("POST", "/api/v1/auth/register"),
        ("POST", "/api/v1/auth/login"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/catalog/departments"),
        ("GET", "/api/v1/catalog/items"),
        ("GET", "/api/v1/catalog/items/{item_code}"),
        ("POST", "/api/v1/cases"),
        ("GET", "/api/v1/cases"),
        ("GET", "/api/v1/cases/{case_no}"),
        ("GET", "/api/v1/notifications"),
        ("POST", "/api/v1/notifications/{notification_id}/read"),
    }
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert expected <= documented


def test_path_parameters_are_declared(document):
    for path, operations in document["paths"].items():
        names = re.findall(r"{([a-z_]+)}", path)
        for operation in operations.values():
            declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert declared == names, path
            assert "<" not in path


def test_authenticated_routes_need_the_bearer_scheme(document):
    assert document["paths"]["/api/v1/me"]["get"]["security"] == [{"bearer": []}]
    assert document["paths"]["/api/v1/cases"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]
    assert "security" not in document["paths"]["/api/v1/auth/login"]["post"]


def test_success_status_and_bodies(document):
    submit = document["paths"]["/api/v1/cases"]["post"]
    # 201 for a new case, 200 for a replay of the same Idempotency-Key and body: the same body.
    assert set(submit["responses"]) == {"default", "201", "200"}
    assert submit["responses"]["200"]["content"] == submit["responses"]["201"]["content"]
    assert "requestBody" in submit
    assert submit["requestBody"]["required"] is True
    assert "204" in document["paths"]["/api/v1/notifications/{notification_id}/read"]["post"]["responses"]
    register = document["paths"]["/api/v1/auth/register"]["post"]
    assert "201" in register["responses"]


def test_every_answer_declares_its_trace_id_header(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                assert response["headers"]["X-Trace-Id"]["schema"]["pattern"] == "^[0-9a-f]{32}$", (
                    path,
                    method,
                    status,
                )


def test_every_list_declares_its_body(document):
    lists = [
        "/api/v1/cases",
        "/api/v1/review/tasks",
        "/api/v1/notifications",
        "/api/v1/catalog/items",
        "/api/v1/catalog/departments",
        "/api/v1/me/certificates",
        "/api/v1/admin/audit",
    ]
    for path in lists:
        body = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        if "$ref" in body:
            body = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        properties = body["properties"]
        assert {"items", "total", "page", "page_size"} <= set(properties), path


def test_query_parameters_are_listed(document):
    params = document["paths"]["/api/v1/cases"]["get"]["parameters"]
    assert {p["name"] for p in params if p["in"] == "query"} == {"status", "page", "page_size"}


def test_every_reference_resolves(document):
    schemas = document["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = list(refs(document))
    assert found, "expected some $refs (nested models)"
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert "$defs" not in str(document["paths"])


def test_errors_use_the_contract_shape(document):
    for operations in document["paths"].values():
        for operation in operations.values():
            schema = operation["responses"]["default"]["content"]["application/json"]["schema"]
            assert "error" in schema["properties"]


def test_document_is_stable():
    assert openapi_document() == openapi_document()


def test_who_may_call_each_signed_in_route_is_documented(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "security" in operation:
                assert operation["x-roles"], f"{method} {path}"
            else:
                assert "x-roles" not in operation, f"{method} {path}"
    assert document["paths"]["/api/v1/admin/staff"]["post"]["x-roles"] == ["admin"]
    assert document["paths"]["/api/v1/cases"]["post"]["x-roles"] == ["applicant"]
    assert document["paths"]["/api/v1/me"]["get"]["x-roles"] == ["any signed-in account"]


def test_the_routes_a_token_opens_before_its_password_change_are_exactly_three(document):
    opened = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("x-before-password-change")
    }
    assert opened == {("GET", "/api/v1/me"), ("PUT", "/api/v1/me/password"), ("POST", "/api/v1/auth/logout")}


def test_identity_routes_of_the_contract_are_documented(document):
    expected = {
        ("POST", "/api/v1/auth/refresh"),
        ("POST", "/api/v1/auth/logout"),
        ("GET", "/api/v1/me/certificates"),
        ("POST", "/api/v1/admin/staff"),
    }
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert expected <= documented


def test_a_required_string_the_contract_strips_must_hold_more_than_whitespace(document):
    """The contracts strip whitespace before checking lengths: "\r" is no name, and the schema says so."""
    body = document["paths"]["/api/v1/admin/staff"]["post"]["requestBody"]["content"]["application/json"]
    staff = body["schema"]["properties"]
    # A name has a pattern of its own (no control characters, something that shows), which says so too.
    assert re.search(staff["name"]["pattern"], "\r") is None and re.search(staff["name"]["pattern"], " 张三 ")
    login = document["paths"]["/api/v1/auth/login"]["post"]["requestBody"]["content"]["application/json"]
    assert login["schema"]["properties"]["username"]["pattern"] == r"\S"  # one without: \S added
    assert "pattern" not in staff["password"]  # passwords are taken exactly as typed
    assert staff["username"]["pattern"].startswith("^[a-z]")  # a field's own pattern is kept


@pytest.mark.parametrize("path", ["/api/v1/catalog/items", "/api/v1/catalog/items/{item_code}"])
def test_a_guide_or_draft_read_back_fits_the_documented_edit_body(document, path):
    # api-v1 lets an admin send a guide or draft back as read; the schema must not forbid what
    # reading it answered (version, updated_at, updated_by), which the catalog accepts and ignores.
    from datetime import UTC, datetime

    from jsonschema import Draft202012Validator

    from contracts.catalog import Draft, PublishedItem
    from services.catalog.seed_data import seed_items

    operation = document["paths"][path]["post" if path.endswith("items") else "put"]
    schema = {**operation["requestBody"]["content"]["application/json"]["schema"], **document}
    validator = Draft202012Validator(schema)
    guide = seed_items()[0]
    read_back = [
        PublishedItem.model_validate({**guide, "version": 3}).model_dump(mode="json"),
        Draft.model_validate({**guide, "updated_at": datetime.now(UTC), "updated_by": "admin-1"}).model_dump(
            mode="json"
        ),
    ]
    for body in read_back:
        assert not list(validator.iter_errors(body)), body
    assert list(validator.iter_errors({**read_back[0], "colour": "blue"}))  # still closed to the unknown


def test_the_upload_and_the_headers_the_gateway_reads_are_documented(document):
    # A client generated from the document could not upload (no body) nor send these headers.
    upload = document["paths"]["/api/v1/documents"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["file"]
    headers = {
        (path, method, p["name"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for p in operation.get("parameters", [])
        if p["in"] == "header"
    }
    assert headers == {
        ("/api/v1/cases", "post", "Idempotency-Key"),
        ("/api/v1/cases/{case_no}/supplements", "post", "Idempotency-Key"),
        ("/api/v1/cases/{case_no}/withdrawal", "post", "Idempotency-Key"),
        ("/api/v1/cases/{case_no}/evaluation", "post", "Idempotency-Key"),
        ("/api/v1/review/cases/{case_no}/decisions", "post", "Idempotency-Key"),
        ("/api/v1/admin/staff/{username}", "put", "If-Match"),
    }


@pytest.mark.parametrize(("value", "read"), [('"3"', True), ('W/"12"', True), ("*", True), ("9" * 19, False)])
def test_the_documented_if_match_is_what_the_gateway_reads(document, value, read):
    from jsonschema import Draft202012Validator
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from gateway.service import if_match_version
    from services.common.errors import ValidationFailed

    [header] = [
        p for p in document["paths"]["/api/v1/admin/staff/{username}"]["put"]["parameters"] if p["in"] == "header"
    ]
    assert Draft202012Validator(header["schema"]).is_valid(value) is read
    try:
        if_match_version(Request(EnvironBuilder(headers={"If-Match": value}).get_environ()))
        accepted = True
    except ValidationFailed:
        accepted = False
    assert accepted is read


def test_every_answer_with_a_body_documents_it(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status not in ("default", "204") and path != "/openapi.json":
                    assert "content" in response, (path, method, status)
