"""The OpenAPI 3.1 document, built from the routes the gateway declares (so it cannot drift)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from contracts.base import PublishedSchema
from contracts.errors import ErrorResponse

TRACE_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}


def _schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON Schema; nested definitions move to components so every $ref resolves."""
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}", schema_generator=PublishedSchema)
    components.update(schema.pop("$defs", {}))
    return schema


# Path parameters whose range the services enforce; the rest are strings (or integers by route type).
PATH_SCHEMAS = {
    "year": {"type": "integer", "minimum": 2000, "maximum": 2100},
    "version": {"type": "integer", "minimum": 1},
}


def _path_schema(name: str, kind: str) -> dict[str, Any]:
    return PATH_SCHEMAS.get(name) or {"type": "integer" if kind == "int" else "string"}


def _query_parameters(route: Any, components: dict[str, Any]) -> list[dict[str, Any]]:
    """From the route's query model when it has one (types, ranges, enums, what is required)."""
    if route.query_model is None:
        return [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in route.query]
    schema = _schema(route.query_model, components)
    required = set(schema.get("required", []))
    # An optional parameter given empty (`?status=`, as a portal's blank search field sends it) is
    # one not given (gateway.routing.drop_empty_query), so an empty value is allowed.
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _nullable_dropped(prop)}
        | ({} if name in required else {"allowEmptyValue": True})
        for name, prop in schema["properties"].items()
    ]


def _nullable_dropped(prop: dict[str, Any]) -> dict[str, Any]:
    """`X | None = None` means 'may be left out'; a query string cannot carry a null."""
    options = [o for o in prop.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
        return {**rest, **options[0]}
    return prop


def _upload(route: Any) -> dict[str, Any]:
    """A multipart body of one file (OpenAPI 3.1 writes binary content as contentMediaType)."""
    file = {"type": "string", "contentMediaType": "application/octet-stream"}
    return {"type": "object", "properties": {route.upload: file}, "required": [route.upload]}


def openapi_document() -> dict[str, Any]:
    from gateway.routing import ROUTES

    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    # Every answer carries the request's trace id (api-v1), errors included.
    traced = {"X-Trace-Id": {"description": "The request's OpenTelemetry trace id", "schema": TRACE_ID}}
    error = {
        "description": "An error",
        "headers": traced,
        "content": {"application/json": {"schema": _schema(ErrorResponse, components)}},
    }
    for route in ROUTES:
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", route.url)
        operation: dict[str, Any] = {"summary": route.summary, "responses": {"default": error}}
        ok: dict[str, Any] = {"description": "Success", "headers": traced}
        if route.response_model is not None:
            ok["content"] = {"application/json": {"schema": _schema(route.response_model, components)}}
        for status in (route.status, *route.also_status):
            operation["responses"][str(status)] = ok
        if route.request_model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(route.request_model, components)}},
            }
        if route.upload is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"multipart/form-data": {"schema": _upload(route)}},
            }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(name, kind)}
            for kind, name in re.findall(r"<(?:([a-z]+):)?([a-z_]+)>", route.url)
        ]
        parameters += _query_parameters(route, components)
        parameters += [
            {"name": h.name, "in": "header", "required": False, "description": h.description, "schema": h.schema}
            for h in route.headers
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.auth:
            operation["security"] = [{"bearer": []}]
            operation["x-roles"] = list(route.roles) or ["any signed-in account"]
            # A token whose password an admin set (password_change_required) opens only these.
            operation["x-before-password-change"] = route.before_password_change
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Yiwang public API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "paths": paths,
    }
