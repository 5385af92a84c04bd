"""Passwords over HTTP: a holder changes theirs (the other sessions end, the holder is told), and
someone who forgot theirs resets it with a code texted to the account's phone (every session
ends, a locked-out account is let in again), without anyone learning who is registered."""

from __future__ import annotations

import re
import uuid
from unittest.mock import ANY

import requests

from tests.e2e.conftest import RunningSystem, auth, log_in, sign_up
from tests.e2e.test_access_matrix import staff
from tests.e2e.test_catalog import admin_token
from tests.support import eventually, sms_received

NEW_PASSWORD = "Another-pass-2027"


def post(yiwang: RunningSystem, path: str, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(yiwang.url(path), json=body, headers=headers or {}, timeout=10)


def change_password(yiwang: RunningSystem, person: dict, current: str, new: str) -> requests.Response:
    body = {"current_password": current, "new_password": new}
    return requests.put(yiwang.url("/api/v1/me/password"), json=body, headers=auth(person), timeout=10)


def login_status(yiwang: RunningSystem, username: str, password: str, address: str | None = None) -> int:
    body = {"username": username, "password": password}
    return post(
        yiwang, "/api/v1/auth/login", body, {"X-Forwarded-For": address} if address else somewhere()
    ).status_code


def me_status(yiwang: RunningSystem, person: dict) -> int:
    return requests.get(yiwang.url("/api/v1/me"), headers=auth(person), timeout=10).status_code


def somewhere() -> dict:
    """A client address of the test's own (the gateway trusts the local proxy): the limits per
    address of one test do not meet another's."""
    return {"X-Forwarded-For": f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"}


def texts_to(yiwang: RunningSystem, phone: str, words: str) -> list[str]:
    return [m["text"] for m in sms_received(yiwang.sms_url) if m["to"] == phone and words in m["text"]]


def test_a_new_password_ends_the_other_sessions_and_the_holder_is_told(yiwang: RunningSystem):
    person = sign_up(yiwang)
    other = log_in(yiwang, person["id_number"], person["password"])  # another device

    wrong = change_password(yiwang, person, "not-my-password", NEW_PASSWORD)
    assert wrong.status_code == 422
    assert [d["field"] for d in wrong.json()["error"]["details"]] == ["current_password"]
    same = change_password(yiwang, person, person["password"], person["password"])
    assert same.status_code == 422 and same.json()["error"]["details"][0]["field"] == "new_password"
    assert change_password(yiwang, person, person["password"], "password1").status_code == 422  # too common

    assert change_password(yiwang, person, person["password"], NEW_PASSWORD).status_code == 204
    assert me_status(yiwang, person) == 200  # this session goes on
    eventually(lambda: me_status(yiwang, other) == 401, timeout=10, what="the other session's token refused")
    refreshed = post(yiwang, "/api/v1/auth/refresh", {"refresh_token": other["refresh_token"]})
    assert refreshed.status_code == 401
    assert login_status(yiwang, person["id_number"], person["password"]) == 401
    assert login_status(yiwang, person["id_number"], NEW_PASSWORD) == 200

    def notice() -> list[dict] | None:
        inbox = requests.get(yiwang.url("/api/v1/notifications"), headers=auth(person), timeout=10).json()["items"]
        found = [n for n in inbox if n["type"] == "identity.password_changed.v1"]
        return found or None

    (told,) = eventually(notice, timeout=15, what="the security notice in the inbox")
    assert "密码已修改" in told["title"] and told["case_no"] is None
    eventually(lambda: texts_to(yiwang, person["phone"], "密码已于"), timeout=15, what="the notice by SMS")


def test_staff_change_their_own_password(yiwang: RunningSystem):
    boss = admin_token(yiwang)
    clerk = staff(yiwang, boss, "reviewer")
    assert change_password(yiwang, clerk, "staff-pass-12", NEW_PASSWORD).status_code == 204
    assert requests.put(yiwang.url("/api/v1/me/password"), json={}, timeout=10).status_code == 401


def test_a_forgotten_password_is_reset_with_a_code_texted_to_the_accounts_phone(yiwang: RunningSystem):
    person = sign_up(yiwang)
    client = somewhere()
    address = client["X-Forwarded-For"]
    for _ in range(3):  # the e2e account limit: the holder is locked out
        assert login_status(yiwang, person["id_number"], "a-wrong-guess", address) == 401
    assert login_status(yiwang, person["id_number"], person["password"], address) == 429

    asked = post(yiwang, "/api/v1/auth/password-reset/code", {"username": person["id_number"]}, client)
    assert asked.status_code == 202 and asked.json() == {"valid_minutes": 5, "resend_after": 60}
    texts = eventually(lambda: texts_to(yiwang, person["phone"], "重置登录密码"), timeout=10, what="the reset code")
    code = re.search(r"验证码(\d{6})", texts[-1]).group(1)  # type: ignore[union-attr]

    reset = "/api/v1/auth/password-reset"
    body = {"username": person["id_number"], "code": code, "new_password": NEW_PASSWORD}
    wrong = post(yiwang, reset, {**body, "code": "000000" if code != "000000" else "111111"}, client)
    assert wrong.status_code == 422 and wrong.json()["error"]["details"][0]["field"] == "code"
    assert post(yiwang, reset, {**body, "username": person["phone"]}, client).status_code == 204  # any login name
    again = post(yiwang, reset, body, client)  # a code works once, and says no more than a wrong one
    assert again.status_code == 422 and again.json()["error"] == {**wrong.json()["error"], "trace_id": ANY}

    eventually(lambda: me_status(yiwang, person) == 401, timeout=10, what="every session ended")
    elsewhere = somewhere()["X-Forwarded-For"]  # the guesses above count against their address still
    assert login_status(yiwang, person["id_number"], person["password"], elsewhere) == 401
    assert login_status(yiwang, person["id_number"], NEW_PASSWORD, elsewhere) == 200  # the account is let in again


def test_a_reset_code_request_tells_nobody_who_is_registered(yiwang: RunningSystem):
    client = somewhere()
    before = len(sms_received(yiwang.sms_url))
    for username in ("110101199003077777", "13700000001", "no-such-staff"):
        asked = post(yiwang, "/api/v1/auth/password-reset/code", {"username": username}, client)
        assert asked.status_code == 202 and asked.json() == {"valid_minutes": 5, "resend_after": 60}
    person = sign_up(yiwang)
    for _ in range(2):  # asking again at once: the same answer, and one text only
        asked = post(yiwang, "/api/v1/auth/password-reset/code", {"username": person["phone"]}, client)
        assert asked.status_code == 202 and asked.json() == {"valid_minutes": 5, "resend_after": 60}
    eventually(lambda: texts_to(yiwang, person["phone"], "重置登录密码"), timeout=10, what="the reset code")
    assert len(texts_to(yiwang, person["phone"], "重置登录密码")) == 1
    assert [m for m in sms_received(yiwang.sms_url)[before:] if m["to"] == "13700000001"] == []
    unknown = {"username": "13700000001", "code": "123456", "new_password": NEW_PASSWORD}
    bad = post(yiwang, "/api/v1/auth/password-reset", unknown, client)
    wrong = post(yiwang, "/api/v1/auth/password-reset", {**unknown, "username": person["phone"]}, client)
    assert bad.status_code == wrong.status_code == 422
    assert bad.json()["error"]["details"] == wrong.json()["error"]["details"]  # unknown reads as wrong

    # One address asks so often (6 in this system's settings), then 429: five asked above.
    assert post(yiwang, "/api/v1/auth/password-reset/code", {"username": "x"}, client).status_code == 202
    assert post(yiwang, "/api/v1/auth/password-reset/code", {"username": "x"}, client).status_code == 429


def test_an_admin_sets_a_forgotten_staff_password(yiwang: RunningSystem):
    boss = admin_token(yiwang)
    username = f"rev{uuid.uuid4().hex[:8]}"
    body = {
        "username": username,
        "name": "审核员",
        "password": "staff-pass-12",
        "roles": ["reviewer"],
        "department_code": "620524GA",
    }
    assert post(yiwang, "/api/v1/admin/staff", body, auth(boss)).status_code == 201
    clerk = log_in(yiwang, username, "staff-pass-12")

    path = f"/api/v1/admin/staff/{username}/password"
    assert post(yiwang, path, {"new_password": NEW_PASSWORD}, auth(clerk)).status_code == 403  # admins only
    assert (
        post(
            yiwang, "/api/v1/admin/staff/no-such-staff/password", {"new_password": NEW_PASSWORD}, auth(boss)
        ).status_code
        == 404
    )
    assert post(yiwang, path, {"new_password": NEW_PASSWORD}, auth(boss)).status_code == 204

    eventually(lambda: me_status(yiwang, clerk) == 401, timeout=10, what="the staff member's session ended")
    assert login_status(yiwang, username, "staff-pass-12") == 401
    login = post(yiwang, "/api/v1/auth/login", {"username": username, "password": NEW_PASSWORD}, somewhere())
    assert login.json()["password_change_required"] is True
    again = {"token": login.json()["access_token"], "refresh_token": login.json()["refresh_token"]}

    # The admin knows that password: until its holder chooses one, it opens only /me, the change, logout.
    tasks = requests.get(yiwang.url("/api/v1/review/tasks"), headers=auth(again), timeout=10)
    assert tasks.status_code == 403
    assert tasks.json()["error"]["details"] == [{"field": "password", "issue": "change_required"}]
    me = requests.get(yiwang.url("/api/v1/me"), headers=auth(again), timeout=10).json()
    assert me["password_change_required"] is True
    assert change_password(yiwang, again, NEW_PASSWORD, "my-own-choice-2027").status_code == 204
    refreshed = post(yiwang, "/api/v1/auth/refresh", {"refresh_token": again["refresh_token"]}).json()
    assert refreshed["password_change_required"] is False
    again = {"token": refreshed["access_token"]}
    assert requests.get(yiwang.url("/api/v1/notifications"), headers=auth(again), timeout=10).status_code == 200
    assert (
        requests.get(yiwang.url("/api/v1/me"), headers=auth(again), timeout=10).json()["password_change_required"]
        is False
    )

    def notice() -> dict | None:
        inbox = requests.get(yiwang.url("/api/v1/notifications"), headers=auth(again), timeout=10).json()["items"]
        changes = [n for n in inbox if n["type"] == "identity.password_changed.v1"]
        return next((n for n in changes if "由管理员重置" in n["title"]), None)

    eventually(notice, timeout=15, what="the notice of the admin's reset in the inbox")
    trail = requests.get(yiwang.url("/api/v1/admin/audit?page_size=100"), headers=auth(boss), timeout=10).json()
    assert any(
        e["action"] == "POST /api/v1/admin/staff/<username>/password" and e["target"] == {"username": username}
        for e in trail["items"]
    )
