"""The staff directory over HTTP: admins list staff accounts and deactivate one that left (its
sessions end at once, it cannot log in, the directory says so) or let it in again; nobody
deactivates their own account."""

from __future__ import annotations

import uuid

import requests

from tests.e2e.conftest import RunningSystem, auth, log_in
from tests.e2e.test_catalog import admin_token
from tests.e2e.test_passwords import somewhere
from tests.support import eventually


def directory(yiwang: RunningSystem, boss: dict, query: str) -> dict:
    answer = requests.get(yiwang.url(f"/api/v1/admin/staff?{query}"), headers=auth(boss), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def set_active(yiwang: RunningSystem, boss: dict, username: str, active: object) -> requests.Response:
    path = f"/api/v1/admin/staff/{username}/status"
    return requests.put(yiwang.url(path), json={"active": active}, headers=auth(boss), timeout=10)


def test_an_admin_deactivates_a_reviewer_who_left_and_lets_them_in_again(yiwang: RunningSystem):
    boss = admin_token(yiwang)
    username, department = f"rev{uuid.uuid4().hex[:8]}", "620524GA"
    body = {
        "username": username,
        "name": "离职审核员",
        "password": "reviewer-pass-1",
        "roles": ["reviewer"],
        "department_code": department,
    }
    assert requests.post(yiwang.url("/api/v1/admin/staff"), json=body, headers=auth(boss), timeout=10).ok
    clerk = log_in(yiwang, username, "reviewer-pass-1")

    listed = directory(yiwang, boss, f"department_code={department}&role=reviewer&page_size=100")
    [entry] = [e for e in listed["items"] if e["username"] == username]
    assert entry["active"] is True and entry["name"] == "离职审核员" and entry["deactivated_at"] is None
    assert all(e["department_code"] == department and "reviewer" in e["roles"] for e in listed["items"])

    assert set_active(yiwang, boss, username, "maybe").status_code == 422
    assert set_active(yiwang, boss, "no-such-staff", False).status_code == 404
    deactivated = set_active(yiwang, boss, username, False)
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    assert deactivated.json()["deactivated_at"]

    def tasks_status() -> int:
        return requests.get(yiwang.url("/api/v1/review/tasks"), headers=auth(clerk), timeout=10).status_code

    eventually(lambda: tasks_status() == 401, timeout=10, what="the reviewer's session ended")
    refreshed = requests.post(yiwang.url("/api/v1/auth/refresh"), json={"refresh_token": clerk["refresh_token"]})
    assert refreshed.status_code == 401
    login = requests.post(
        yiwang.url("/api/v1/auth/login"),
        json={"username": username, "password": "reviewer-pass-1"},
        headers=somewhere(),
        timeout=10,
    )
    assert login.status_code == 401 and "deactivated" in login.json()["error"]["message"]
    inactive = directory(yiwang, boss, "active=false&page_size=100")["items"]
    assert username in [e["username"] for e in inactive]

    assert set_active(yiwang, boss, username, True).json()["active"] is True
    again = log_in(yiwang, username, "reviewer-pass-1")
    assert requests.get(yiwang.url("/api/v1/review/tasks"), headers=auth(again), timeout=10).status_code == 200

    trail = requests.get(yiwang.url("/api/v1/admin/audit?page_size=100"), headers=auth(boss), timeout=10).json()
    assert [e["status"] for e in trail["items"] if e["target"] == {"username": username}][:2] == [200, 200]


def test_nobody_deactivates_their_own_account(yiwang: RunningSystem):
    boss = admin_token(yiwang)
    assert set_active(yiwang, boss, "admin", False).status_code == 409
    assert requests.get(yiwang.url("/api/v1/me"), headers=auth(boss), timeout=10).status_code == 200


def test_an_admin_moves_a_reviewer_to_another_department(yiwang: RunningSystem):
    boss = admin_token(yiwang)
    username = f"rev{uuid.uuid4().hex[:8]}"
    body = {"username": username, "name": "审核员", "password": "reviewer-pass-1", "roles": ["reviewer"]}
    body["department_code"] = "620524GA"
    assert requests.post(yiwang.url("/api/v1/admin/staff"), json=body, headers=auth(boss), timeout=10).ok
    clerk = log_in(yiwang, username, "reviewer-pass-1")

    path = f"/api/v1/admin/staff/{username}"
    change = {"name": "调岗审核员", "roles": ["reviewer"], "department_code": "620524MZ"}
    read_at = {**auth(boss), "If-Match": '"0"'}  # the version the admin's form was read at
    moved = requests.put(yiwang.url(path), json=change, headers=read_at, timeout=10)
    assert moved.status_code == 200 and moved.json()["department_code"] == "620524MZ"
    assert moved.json()["version"] == 1
    # A second form read before the move would undo it: refused.
    stale = requests.put(yiwang.url(path), json={**change, "name": "旧表单"}, headers=read_at, timeout=10)
    assert stale.status_code == 409
    # Its tokens carried the old department: the session ends, and a new login carries the new one.
    eventually(
        lambda: requests.get(yiwang.url("/api/v1/me"), headers=auth(clerk), timeout=10).status_code == 401,
        timeout=10,
        what="the reviewer's old session ended",
    )
    again = log_in(yiwang, username, "reviewer-pass-1")
    me = requests.get(yiwang.url("/api/v1/me"), headers=auth(again), timeout=10).json()
    assert (me["department_code"], me["name"]) == ("620524MZ", "调岗审核员")

    def listed() -> dict | None:
        found = directory(yiwang, boss, "department_code=620524MZ&page_size=100")["items"]
        return next((e for e in found if e["username"] == username), None)

    assert eventually(listed, what="the directory following the move")["name"] == "调岗审核员"
    own = {"name": "系统管理员", "roles": ["supervisor"], "department_code": None}
    assert requests.put(yiwang.url("/api/v1/admin/staff/admin"), json=own, headers=auth(boss)).status_code == 409
