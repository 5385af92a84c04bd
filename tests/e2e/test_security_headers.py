"""Security headers on every response the gateway gives: success, error, unknown path, health."""

from __future__ import annotations

import pytest
import requests

from gateway.tests.test_http import PROMISED_SECURITY_HEADERS
from tests.e2e.conftest import RunningSystem, auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("GET", "/api/v1/catalog/items/62052400MZ-GF-0001"),
        ("GET", "/api/v1/cases"),  # 401
        ("POST", "/api/v1/auth/login"),  # 400/422
        ("GET", "/no/such/path"),  # 404 from the router
        ("DELETE", "/api/v1/catalog/departments"),  # 405
    ],
)
def test_security_headers_on_every_response(yiwang: RunningSystem, method, path):
    response = requests.request(method, yiwang.url(path), timeout=10)
    for name, value in PROMISED_SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert response.headers.get("X-Trace-Id")


def test_personal_answers_are_not_cached(yiwang: RunningSystem, applicant):
    response = requests.get(yiwang.url("/api/v1/me"), headers=auth(applicant), timeout=10)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
