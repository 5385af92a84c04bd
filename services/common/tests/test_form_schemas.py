import http.server
import threading

import pytest

from services.common.form_schemas import form_validator, schema_problems
from services.intake.cases import form_problems

UNCHECKABLE = {"field": "form", "issue": "the item's form schema cannot be checked; the department must correct it"}


@pytest.fixture
def listener():
    """A local HTTP server that records every request: a `$ref` must never reach it."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            body = b'{"const": "from-outside"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_a_reference_outside_the_schema_is_never_fetched(listener, tmp_path):
    url, seen = listener
    secret = tmp_path / "secret.json"
    secret.write_text('{"const": "top-secret"}')
    for ref in (f"{url}/x.json", secret.as_uri()):
        problems = form_problems({"properties": {"a": {"$ref": ref}}}, {"a": 1})
        assert problems == [UNCHECKABLE]
        assert "top-secret" not in str(problems)
    assert seen == []


def test_a_reference_inside_the_schema_resolves():
    schema = {
        "$defs": {"phone": {"type": "string", "pattern": "^1\\d{10}$"}},
        "properties": {"p": {"$ref": "#/$defs/phone"}},
    }
    assert form_problems(schema, {"p": "13800138000"}) == []
    assert [p["field"] for p in form_problems(schema, {"p": "12"})] == ["form.p"]


def test_patterns_run_in_linear_time_and_keep_their_meaning():
    # ^(a|a)*$ on 5,000 a's and a '!' would take longer than the universe's age with backtracking.
    validator = form_validator({"properties": {"s": {"pattern": "^(a|a)*$"}}})
    assert [e.message for e in validator.iter_errors({"s": "a" * 5000 + "!"})] == [
        f"{'a' * 5000 + '!'!r} does not match '^(a|a)*$'"
    ]
    assert list(validator.iter_errors({"s": "aaa"})) == []


def test_an_ecma_code_point_escape_means_the_code_point():
    validator = form_validator({"properties": {"name": {"pattern": "^[\\u4e00-\\u9fa5]{2,4}$"}}})
    assert list(validator.iter_errors({"name": "张三"})) == []
    assert len(list(validator.iter_errors({"name": "Zhang"}))) == 1


@pytest.mark.parametrize(
    "schema",
    [
        {"patternProperties": {"^x_(a|a)*$": {"type": "integer"}}},
        # jsonschema matches patternProperties with `re` inside these two as well
        {"properties": {}, "patternProperties": {"^(a|a)*$": {}}, "additionalProperties": False},
        {"allOf": [{"patternProperties": {"^(a|a)*$": {}}}], "unevaluatedProperties": False},
        # ... and where a $ref leads to it
        {"$defs": {"p": {"patternProperties": {"^(a|a)*$": {}}}}, "$ref": "#/$defs/p", "unevaluatedProperties": False},
    ],
)
def test_a_schema_saved_with_pattern_properties_is_not_run(schema):
    # Refused when saved; one saved before is not checked at all rather than backtrack.
    assert form_problems(schema, {"a" * 30 + "!": 1}) == [UNCHECKABLE]


def test_a_stored_pattern_re2_cannot_run_is_not_checked_rather_than_an_error():
    schema = {"properties": {"p": {"pattern": "^(?=.*[0-9]).{8,}$"}}}
    assert form_problems(schema, {"p": "abc12345"}) == [UNCHECKABLE]


def test_a_schema_that_refers_outside_itself_or_at_nothing_is_refused_where_it_says_so():
    schema = {
        "properties": {
            "a": {"$ref": "https://example.org/s.json"},
            "b": {"prefixItems": [{"$dynamicRef": "file:///x"}]},
            "c": {"$ref": "#/$defs/missing"},
            "d": {"$ref": "#nowhere"},
        },
        "$defs": {"ok": {"$ref": "#/properties/a"}, "anchored": {"$anchor": "here"}, "to": {"$ref": "#here"}},
    }
    fields = [p["field"] for p in schema_problems(schema)]
    assert fields == [
        "form_schema.properties.a.$ref",
        "form_schema.properties.b.prefixItems.0.$dynamicRef",
        "form_schema.properties.c.$ref",
        "form_schema.properties.d.$ref",
    ]


def test_a_pattern_re2_cannot_run_and_pattern_properties_are_refused():
    schema = {"properties": {"a": {"pattern": "(a)\\1"}}, "patternProperties": {"^x": {}}}
    problems = schema_problems(schema)
    assert [p["field"] for p in problems] == ["form_schema.patternProperties", "form_schema.properties.a.pattern"]
    assert "RE2" in problems[1]["issue"]


def test_a_field_may_be_named_like_a_keyword_and_is_still_checked():
    # Properties named enum or default are schemas; const and x-ui values are not.
    schema = {
        "properties": {"enum": {"pattern": "(?=a)a"}, "default": {"$ref": "http://x"}},
        "x-ui": {"$ref": "http://not-a-schema"},
        "const": {"$ref": "http://a-value"},
    }
    fields = [p["field"] for p in schema_problems(schema)]
    assert fields == ["form_schema.properties.enum.pattern", "form_schema.properties.default.$ref"]


def test_values_are_not_read_as_schemas():
    schema = {"properties": {"a": {"const": {"$ref": "http://x"}, "enum": [{"pattern": "(a)\\1"}]}}}
    assert schema_problems(schema) == []


def test_an_invalid_schema_says_so():
    [problem] = schema_problems({"type": "nothing"})
    assert problem["field"] == "form_schema" and problem["issue"].startswith("not a valid JSON Schema")
