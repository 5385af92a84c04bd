"""Every public route, called as every kind of caller: refused exactly as gateway/access_rules.py
says (401 without a token, 403 with the wrong role or a password an admin set and its holder has
not changed), and never refused where it says allowed."""

from __future__ import annotations

import re

import requests

import gateway.service  # noqa: F401 (declares every route)
from gateway.access_rules import BEFORE_PASSWORD_CHANGE, RULES, expected
from gateway.routing import ROUTES
from services.identity.first_admin import first_admin_password
from tests.e2e.conftest import RunningSystem, auth, sign_up
from tests.e2e.test_review import reviewer
from tests.support import eventually

PLACEHOLDERS = {
    "item_code": "62052400MZ-GF-0001",
    "int:version": "1",
    "case_no": "620524MZ-20260101-999999",
    "int:year": "2027",
    "notification_id": "0" * 24,
    "username": "no-such-staff",
}


def concrete(url: str) -> str:
    return re.sub(r"<([^>]+)>", lambda m: PLACEHOLDERS[m.group(1)], url)


def staff(yiwang: RunningSystem, boss: dict, role: str, password_change_required: bool = False) -> dict:
    import uuid

    username = f"{role[:3]}{uuid.uuid4().hex[:8]}"
    body = {
        "username": username,
        "name": "职员",
        "password": "staff-pass-12",
        "roles": [role],
        "password_change_required": password_change_required,
    }
    if role == "reviewer":  # a reviewer reviews a department's cases
        body["department_code"] = "620524MZ"
    assert (
        requests.post(yiwang.url("/api/v1/admin/staff"), json=body, headers=auth(boss), timeout=10).status_code == 201
    )
    login = requests.post(yiwang.url("/api/v1/auth/login"), json={"username": username, "password": "staff-pass-12"})
    return {"token": login.json()["access_token"]}


def test_every_route_answers_every_caller_as_its_rule_says(yiwang: RunningSystem):
    # An admin session of this test's own: the logout round revokes it.
    boss = eventually(
        lambda: (
            (
                r := requests.post(
                    yiwang.url("/api/v1/auth/login"),
                    json={"username": "admin", "password": first_admin_password()},
                    timeout=10,
                )
            ).ok
            and {"token": r.json()["access_token"]}
        ),
        what="the seeded admin",
    )
    # An admin whose password an admin set: refused, for that reason, wherever the rules do not open
    # a route to it, though its role would open them all.
    unchanged = "admin, password set by an admin"
    callers: dict[str, tuple[dict | None, frozenset[str] | None]] = {
        "anonymous": (None, None),
        unchanged: (staff(yiwang, boss, "admin", password_change_required=True), frozenset({"admin"})),
        "applicant": (sign_up(yiwang), frozenset({"applicant"})),
        "reviewer": (reviewer(yiwang, boss), frozenset({"reviewer"})),
        "supervisor": (staff(yiwang, boss, "supervisor"), frozenset({"supervisor"})),
        "admin": (boss, frozenset({"admin"})),
    }
    # Logging out revokes the caller's token: that route goes last.
    routes = sorted(ROUTES, key=lambda r: r.url == "/api/v1/auth/logout")
    wrong = []
    for route in routes:
        rule = RULES[(route.method, route.url)]
        for name, (person, roles) in callers.items():
            headers = auth(person) if person else {}
            kwargs = {"json": {}} if route.method in ("POST", "PUT") else {}
            answer = requests.request(
                route.method, yiwang.url(concrete(route.url)), headers=headers, timeout=15, **kwargs
            )
            opened = name != unchanged or (route.method, route.url) in BEFORE_PASSWORD_CHANGE
            want = expected(rule, roles, opens_before_password_change=opened)
            refused = answer.status_code in (401, 403)
            if (want is None and refused) or (want is not None and answer.status_code != want):
                wrong.append(
                    f"{route.method} {route.url} as {name}: {answer.status_code}, expected {want or 'allowed'}"
                )
            assert answer.status_code < 500, f"{route.method} {route.url} as {name}: {answer.status_code}"
            if not opened and want == 403 and answer.status_code == 403:
                details = answer.json()["error"]["details"]
                if details != [{"field": "password", "issue": "change_required"}]:
                    wrong.append(f"{route.method} {route.url} as {name}: refused, but not for the password")
    assert not wrong, "\n".join(wrong)
    # And the tokens really were revoked by the logout round.
    eventually(
        lambda: (
            requests.get(yiwang.url("/api/v1/me"), headers=auth(callers["applicant"][0]), timeout=10).status_code == 401
        ),
        what="the applicant's token revoked",
    )
