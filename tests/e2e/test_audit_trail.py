"""Staff actions and administrative changes land in an append-only trail that admins read."""

from __future__ import annotations

import requests

from tests.e2e.conftest import RunningSystem, auth, sign_up
from tests.e2e.test_review import admin, decide, reviewer, submit_for_review  # noqa: F401 (admin: fixture)
from tests.support import eventually


def trail(yiwang: RunningSystem, who: dict) -> requests.Response:
    return requests.get(yiwang.url("/api/v1/admin/audit?page_size=100"), headers=auth(who), timeout=10)


def test_a_reviewers_decision_is_in_the_trail_with_who_what_and_from_where(yiwang: RunningSystem, admin):  # noqa: F811
    person = sign_up(yiwang)
    staff = reviewer(yiwang, admin)
    case_no = submit_for_review(yiwang, person)
    headers = {**auth(staff), "X-Forwarded-For": "10.20.30.40"}
    accepted = requests.post(
        yiwang.url(f"/api/v1/review/cases/{case_no}/decisions"), json={"action": "accept"}, headers=headers, timeout=10
    )
    assert accepted.status_code == 200

    def entry() -> dict | None:
        items = trail(yiwang, admin).json()["items"]
        return next((e for e in items if e["target"].get("case_no") == case_no), None)

    found = eventually(entry, what="the decision in the audit trail")
    assert found["action"] == "POST /api/v1/review/cases/<case_no>/decisions"
    assert found["actor_roles"] == ["reviewer"] and found["status"] == 200
    assert found["address"] == "10.20.30.40"  # the gateway trusts the e2e proxy address
    assert found["trace_id"] == accepted.headers["X-Trace-Id"]
    me = requests.get(yiwang.url("/api/v1/me"), headers=auth(staff), timeout=10).json()
    assert found["actor_id"] == me["user_id"]
    # Creating that reviewer was an administrative change: it is there too.
    assert any(e["action"] == "POST /api/v1/admin/staff" for e in trail(yiwang, admin).json()["items"])
    # The applicant's own actions are not staff actions.
    assert not any(e["actor_id"] == person["user_id"] for e in trail(yiwang, admin).json()["items"])


def test_only_admins_read_the_trail(yiwang: RunningSystem, admin):  # noqa: F811
    assert trail(yiwang, sign_up(yiwang)).status_code == 403
    assert trail(yiwang, reviewer(yiwang, admin)).status_code == 403
    assert requests.get(yiwang.url("/api/v1/admin/audit"), timeout=10).status_code == 401


def test_a_staff_read_of_a_case_is_on_record(yiwang: RunningSystem, admin):  # noqa: F811
    # A case shows its applicant's form (bank account, phone): who looked at it is kept (查询留痕).
    person = sign_up(yiwang)
    case_no = submit_for_review(yiwang, person)
    assert requests.get(yiwang.url(f"/api/v1/cases/{case_no}"), headers=auth(person), timeout=10).ok
    read = requests.get(yiwang.url(f"/api/v1/cases/{case_no}"), headers=auth(admin), timeout=10)
    assert read.status_code == 200

    def reads() -> list[dict] | None:
        items = trail(yiwang, admin).json()["items"]
        found = [e for e in items if e["target"].get("case_no") == case_no and e["action"].startswith("GET ")]
        return found or None

    [entry] = eventually(reads, what="the read in the audit trail")  # the applicant's own read is not there
    assert entry["action"] == "GET /api/v1/cases/<case_no>" and entry["actor_roles"] == ["admin"]
    assert entry["trace_id"] == read.headers["X-Trace-Id"]
