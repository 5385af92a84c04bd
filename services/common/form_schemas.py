"""Application forms checked against an item's JSON Schema, which an admin wrote: nothing in it may
reach outside the schema or take unbounded time.

jsonschema, left to itself, fetches any `$ref` it cannot resolve inside the schema (`http://…`,
`file://…`: a request into the network, or a local file whose content comes back in the error
message) and runs `pattern` with Python's backtracking `re` (`^(a|a)*$` doubles its time with each
character and stops the whole eventlet process). So here a `$ref` resolves inside the schema only,
and `pattern` runs on RE2, in linear time. `patternProperties` is not supported at all: jsonschema
also matches its patterns with `re` inside `additionalProperties` and `unevaluatedProperties`, and
a form names its fields anyway. Catalog refuses a schema that breaks these rules when a guide is
saved (`schema_problems`); intake validates forms with `form_validator`, which refuses to check a
schema saved before these rules (one holding `patternProperties` anywhere, or a pattern RE2 cannot
run) rather than run it unsafely.
Shared by catalog and intake.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import re2
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import NoSuchResource

__all__ = ["Uncheckable", "form_validator", "schema_problems"]

# Keywords whose value is a schema, a list of schemas, or a map of names to schemas (2020-12).
_ONE_SCHEMA = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "contentSchema",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "dependentSchemas")
_REFERENCES = ("$ref", "$dynamicRef")


class Uncheckable(Exception):
    """The schema cannot be checked safely (saved before catalog refused what it holds)."""


def _refuse(uri: str) -> Any:
    raise NoSuchResource(ref=uri)  # never fetched: a schema is whole in itself


_NO_RETRIEVAL = Registry(retrieve=_refuse)  # type: ignore[call-arg]

# JSON Schema patterns are ECMA-262's, which writes a code point `\u4e00`; RE2 writes `\x{4e00}`.
_ECMA_CODE_POINT = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    return re2.compile(_ECMA_CODE_POINT.sub(r"\1\\x{\2}", pattern))


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        matches = _compiled(pattern).search(instance)
    except re2.error:
        raise Uncheckable(f"the pattern {pattern!r} is not one RE2 runs") from None
    if not matches:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_FormValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def form_validator(schema: dict[str, Any]) -> Any:
    """A validator of forms for `schema`, or `Uncheckable` for one holding `patternProperties`
    (anywhere: `$defs` a `$ref` reaches included). Its `iter_errors` raises `Unresolvable` for a
    `$ref` that does not resolve inside the schema and `Uncheckable` for what RE2 cannot run."""
    if any("patternProperties" in node for node, _ in _schemas(schema, [])):
        raise Uncheckable("patternProperties is not supported")
    return _FormValidator(schema, registry=_NO_RETRIEVAL)


def schema_problems(schema: dict[str, Any]) -> list[dict[str, str]]:
    """Why `schema` cannot be an item's form schema, as `form_schema.<path>` details."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [{"field": "form_schema", "issue": f"not a valid JSON Schema: {exc.message}"}]
    anchors = {a for node in _schemas(schema, []) for a in _anchors(node[0])}
    problems = []
    for node, path in _schemas(schema, ["form_schema"]):
        for keyword in _REFERENCES:
            reference = node.get(keyword)
            if isinstance(reference, str) and not _points_inside(schema, anchors, reference):
                issue = "must point at a part of this schema (#/…); nothing outside it is fetched"
                problems.append({"field": ".".join([*path, keyword]), "issue": issue})
        if isinstance(node.get("pattern"), str):
            try:
                _compiled(node["pattern"])
            except re2.error as exc:
                issue = f"not a pattern this server runs (RE2: no look-around or back-references): {exc}"
                problems.append({"field": ".".join([*path, "pattern"]), "issue": issue})
        if "patternProperties" in node:
            issue = "not supported: name each field under properties"
            problems.append({"field": ".".join([*path, "patternProperties"]), "issue": issue})
    return problems


def _schemas(node: Any, path: list[str]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Every (sub)schema in `node` with its path, by keyword: values (`const`, `enum`, `default`,
    annotations) are not schemas and are not walked; a property's name may be any word."""
    if not isinstance(node, dict):
        return  # a boolean schema
    yield node, path
    for keyword in _ONE_SCHEMA:
        if keyword in node:
            yield from _schemas(node[keyword], [*path, keyword])
    for keyword in _SCHEMA_LISTS:
        if isinstance(node.get(keyword), list):
            for index, child in enumerate(node[keyword]):
                yield from _schemas(child, [*path, keyword, str(index)])
    for keyword in (*_SCHEMA_MAPS, "patternProperties"):
        if isinstance(node.get(keyword), dict):
            for name, child in node[keyword].items():
                yield from _schemas(child, [*path, keyword, name])


def _anchors(node: dict[str, Any]) -> Iterator[str]:
    for keyword in ("$anchor", "$dynamicAnchor"):
        if isinstance(node.get(keyword), str):
            yield node[keyword]


def _points_inside(schema: dict[str, Any], anchors: set[str], reference: str) -> bool:
    """`#`, `#/json/pointer` to something that is there, or `#anchor` of an anchor there."""
    if not reference.startswith("#"):
        return False
    fragment = reference[1:]
    if not fragment.startswith("/"):
        return fragment == "" or fragment in anchors
    target: Any = schema
    for token in fragment[1:].split("/"):
        token = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), token)
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            return False
    return True
