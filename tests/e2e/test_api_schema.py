"""schemathesis against the gateway's own /openapi.json: every operation, with generated valid and
invalid input, called as a caller its access rule admits. No answer may be a 5xx, and every answer
must match the spec (status code, content type, headers, body schema).

It runs against a system of its own: generated calls change the holiday calendar, rotate signing
keys and create staff, which the other end-to-end tests must not see."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gateway.access_rules import ADMIN, ANYONE, APPLICANT, REVIEWER, RULES, SIGNED_IN, SUPERVISOR
from loadtests.own_system import OwnSystem, own_system
from services.identity.first_admin import first_admin_password
from tests import support

pytestmark = [
    pytest.mark.local_only("needs a system of its own: generated calls change the calendar and signing keys"),
    pytest.mark.timeout(900),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "schemathesis"
EXAMPLES = 25  # per operation, valid and invalid input together; CI time is the limit
# The same examples on every run, so that main stays green or red for a reason; set
# YIWANG_FUZZ_RANDOM=1 to explore new ones (what that finds belongs in the spec or the code).
DERANDOMIZE = os.environ.get("YIWANG_FUZZ_RANDOM") != "1"
PREFERRED = (APPLICANT, REVIEWER, SUPERVISOR, ADMIN)  # whom to call as when several roles may

# Operations whose input has rules JSON Schema cannot state: for them a schema-valid request may be
# refused (422), and schemathesis's "valid data must be accepted" check does not apply.
SEMANTIC_RULES = {
    ("POST", "/api/v1/auth/register"): "id numbers and credit codes carry check digits and a real birth date",
    ("POST", "/api/v1/catalog/items"): "the department must exist; rules must compile",
    ("PUT", "/api/v1/catalog/items/<item_code>"): "the department must exist; rules must compile",
    ("POST", "/api/v1/review/cases/<case_no>/decisions"): "a supplement request names what is missing",
    ("GET", "/api/v1/supervision/summary"): "from must not be after to",
    ("PUT", "/api/v1/admin/calendar/<int:year>"): "the dates must lie in the year",
    ("POST", "/api/v1/auth/password-reset"): "the code must be the one texted to the account's phone",
    ("PUT", "/api/v1/me/password"): "the current password must be right; the new one differ and not be common",
    ("PUT", "/api/v1/me/contact"): "the password must be right; a new phone needs the code texted to it",
    ("PUT", "/api/v1/admin/staff/<username>/status"): "the username must be another staff account",
    ("PUT", "/api/v1/admin/staff/<username>"): "the username must be a staff account; the department must exist",
    ("POST", "/api/v1/admin/staff"): "the department must exist",
    ("POST", "/api/v1/documents"): "the file must be a PDF, JPEG or PNG, judged from its bytes",
}


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[OwnSystem]:
    with own_system(
        "schemathesis", ARTIFACTS / "logs", YIWANG_TRUSTED_PROXIES="127.0.0.1", YIWANG_METRICS_BASE_PORT="0"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(fuzzed: OwnSystem) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed.base_url}/openapi.json")


@pytest.fixture(scope="module")
def tokens(fuzzed: OwnSystem) -> dict[str, str]:
    def log_in(username: str, password: str) -> str:
        return support.log_in(fuzzed.base_url, username, password, timeout=15)["token"]

    admin = log_in("admin", first_admin_password())
    found = {ADMIN: admin}
    for role in (REVIEWER, SUPERVISOR):
        body = {"username": f"fuzz-{role}", "name": "职员", "password": "staff-pass-12", "roles": [role]}
        body["department_code"] = "620524MZ"  # a department of the catalog's
        created = requests.post(
            f"{fuzzed.base_url}/api/v1/admin/staff", json=body, headers={"Authorization": f"Bearer {admin}"}, timeout=15
        )
        assert created.status_code == 201, created.text
        found[role] = log_in(body["username"], body["password"])
    found[APPLICANT] = support.sign_up(fuzzed.base_url, timeout=15)["token"]
    return found


def openapi_path(route: str) -> str:
    """The route table's /items/<item_code>/versions/<int:version> as OpenAPI writes it."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def headers_for(rule: str | frozenset[str], tokens: dict[str, str]) -> dict[str, str]:
    # Each call from an address of its own, as behind a proxy: login throttling is per address.
    headers = {"X-Forwarded-For": f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"}
    if rule == SIGNED_IN:
        headers["Authorization"] = f"Bearer {tokens[APPLICANT]}"
    elif rule != ANYONE:
        role = next(r for r in PREFERRED if r in rule)
        headers["Authorization"] = f"Bearer {tokens[role]}"
    return headers


# One test per route of the gateway's table (the access-matrix unit test holds the table and the
# rules together, and the spec is generated from the same table).
@pytest.mark.parametrize(("method", "route"), sorted(RULES))
def test_every_operation_answers_as_its_spec_says(
    method: str, route: str, api_schema: schemathesis.BaseSchema, tokens: dict[str, str]
) -> None:
    operation = api_schema[openapi_path(route)][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def answers_as_specified(case: schemathesis.Case) -> None:
        excluded = [positive_data_acceptance] if (method, route) in SEMANTIC_RULES else []
        headers = headers_for(RULES[(method, route)], tokens)
        # A negative header: the bearer token missing or broken (Idempotency-Key and If-Match, the
        # others the spec has, are optional and read leniently: a token refused says it as well).
        if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
            headers.pop("Authorization", None)
        # Given explicitly, so schemathesis also retries without it and with a forged one (401 expected).
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    answers_as_specified()
