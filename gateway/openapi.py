"""The OpenAPI 3.1 document, built from the routes the gateway declares (so it cannot drift)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from contracts.errors import ErrorResponse


def _schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON Schema; nested definitions move to components so every $ref resolves."""
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


def openapi_document() -> dict[str, Any]:
    from gateway.routing import ROUTES

    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    error = {"description": "An error", "content": {"application/json": {"schema": _schema(ErrorResponse, components)}}}
    for route in ROUTES:
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", route.url)
        operation: dict[str, Any] = {"summary": route.summary, "responses": {"default": error}}
        ok: dict[str, Any] = {"description": "Success"}
        if route.response_model is not None:
            ok["content"] = {"application/json": {"schema": _schema(route.response_model, components)}}
        operation["responses"][str(route.status)] = ok
        if route.request_model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(route.request_model, components)}},
            }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{([a-z_]+)}", path)
        ]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in route.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.auth:
            operation["security"] = [{"bearer": []}]
            operation["x-roles"] = list(route.roles) or ["any signed-in account"]
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
