"""Application forms checked against an item's JSON Schema, which an admin wrote: nothing in it may
reach outside the schema or take unbounded time.

jsonschema, left to itself, fetches any `$ref` it cannot resolve inside the schema (`http://…`,
`file://…`: a request into the network, or a local file whose content comes back in the error
message) and runs `pattern` with Python's backtracking `re` (`^(a|a)*$` doubles its time with each
character and stops the whole eventlet process). So here a `$ref` resolves inside the schema only,
and patterns run on RE2, in linear time. Catalog refuses a schema that breaks either rule when a
guide is saved (`schema_problems`); intake validates forms with `form_validator`.
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
from referencing.exceptions import NoSuchResource, Unresolvable

__all__ = ["Unresolvable", "form_validator", "schema_problems"]

_REFERENCES = ("$ref", "$dynamicRef")
_PATTERN_HOLDERS = ("pattern", "patternProperties")


def _refuse(uri: str) -> Any:
    raise NoSuchResource(ref=uri)  # never fetched: a schema is whole in itself


_NO_RETRIEVAL = Registry(retrieve=_refuse)  # type: ignore[call-arg]


# JSON Schema patterns are ECMA-262's, which writes a code point `\u4e00`; RE2 writes `\x{4e00}`.
_ECMA_CODE_POINT = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    return re2.compile(_ECMA_CODE_POINT.sub(r"\1\\x{\2}", pattern))


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _compiled(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


_FormValidator = validators.extend(
    Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties}
)


def form_validator(schema: dict[str, Any]) -> Any:
    """A validator of forms for `schema`. Its `iter_errors` raises `Unresolvable` for a `$ref`
    outside the schema (a schema saved before catalog refused them)."""
    return _FormValidator(schema, registry=_NO_RETRIEVAL)


def schema_problems(schema: dict[str, Any]) -> list[dict[str, str]]:
    """Why `schema` cannot be an item's form schema, as `form_schema.<path>` details."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [{"field": "form_schema", "issue": f"not a valid JSON Schema: {exc.message}"}]
    return list(_walk(schema, ["form_schema"]))


def _walk(node: Any, path: list[str]) -> Iterator[dict[str, str]]:
    if isinstance(node, list):
        for index, child in enumerate(node):
            yield from _walk(child, [*path, str(index)])
        return
    if not isinstance(node, dict):
        return
    for keyword in _REFERENCES:
        reference = node.get(keyword)
        if isinstance(reference, str) and not reference.startswith("#"):
            issue = "may refer only to a part of this schema (#/…); nothing outside it is fetched"
            yield {"field": ".".join([*path, keyword]), "issue": issue}
    patterns = [("pattern", node["pattern"])] if isinstance(node.get("pattern"), str) else []
    if isinstance(node.get("patternProperties"), dict):
        patterns += [("patternProperties", pattern) for pattern in node["patternProperties"]]
    for keyword, pattern in patterns:
        try:
            _compiled(pattern)
        except re2.error as exc:
            issue = f"not a pattern this server runs (RE2: no look-around or back-references): {exc}"
            yield {"field": ".".join([*path, keyword]), "issue": issue}
    for key, child in node.items():
        if key not in ("const", "enum", "default", "examples"):  # values, not schemas
            yield from _walk(child, [*path, key])
