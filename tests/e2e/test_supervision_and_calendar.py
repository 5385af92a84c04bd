"""Supervision counts and the working-day calendar over HTTP, including a deadline across the year
boundary that becomes exact once the next year's notice is loaded."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from services.identity.first_admin import first_admin_password
from tests.e2e.conftest import auth, log_in, sign_up
from tests.support import eventually

ALLOWANCE = "62052400MZ-GF-0001"
FORM = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}


@pytest.fixture(scope="module")
def admin(yiwang):
    def login():
        response = requests.post(
            yiwang.url("/api/v1/auth/login"), json={"username": "admin", "password": first_admin_password()}
        )
        return {"token": response.json()["access_token"]} if response.ok else None

    return eventually(login, what="the seeded admin")


def supervisor(yiwang, admin):
    username = f"sup{uuid.uuid4().hex[:8]}"
    body = {"username": username, "name": "监察员", "password": "supervisor-1", "roles": ["supervisor"]}
    assert requests.post(yiwang.url("/api/v1/admin/staff"), json=body, headers=auth(admin)).status_code == 201
    return log_in(yiwang, username, "supervisor-1")


def summary(yiwang, who, **params):
    return requests.get(yiwang.url("/api/v1/supervision/summary"), headers=auth(who), params=params, timeout=10)


def settled(yiwang, watcher) -> dict:
    """The summary once events of earlier tests have stopped arriving (two equal reads a second apart)."""

    def steady():
        first = summary(yiwang, watcher, department="620524MZ").json()
        time.sleep(1)
        return first if summary(yiwang, watcher, department="620524MZ").json() == first else None

    return eventually(steady, what="a settled summary")


def test_supervision_counts_decisions_withdrawals_and_evaluations(yiwang, admin):
    watcher = supervisor(yiwang, admin)
    before = settled(yiwang, watcher)
    person = sign_up(yiwang)
    approved = requests.post(
        yiwang.url("/api/v1/cases"), json={"item_code": ALLOWANCE, "form": FORM}, headers=auth(person)
    ).json()
    eventually(
        lambda: (
            requests.get(yiwang.url(f"/api/v1/cases/{approved['case_no']}"), headers=auth(person)).json()["status"]
            == "approved"
        ),
        what="the automatic approval",
    )
    assert (
        requests.post(
            yiwang.url(f"/api/v1/cases/{approved['case_no']}/evaluation"), json={"score": 1}, headers=auth(person)
        ).status_code
        == 200
    )

    def counted():
        now = summary(yiwang, watcher, department="620524MZ").json()
        done = (
            now["submitted"] - before["submitted"],
            now["approved"] - before["approved"],
            now["bad_evaluations"] - before["bad_evaluations"],
        )
        # The sums are read one after another while facts arrive: wait for a reading that has them all.
        return now if done == (1, 1, 1) and now["evaluation_avg"] is not None else None

    now = eventually(counted, what="the summary to count the case")
    assert 0 < now["auto_decided_ratio"] <= 1 and 0 <= now["on_time_ratio"] <= 1
    assert now["avg_handling_hours"] is not None and now["evaluation_avg"] is not None
    assert set(now) == {
        "submitted",
        "approved",
        "rejected",
        "withdrawn",
        "in_progress",
        "overdue",
        "auto_decided_ratio",
        "on_time_ratio",
        "avg_handling_hours",
        "evaluation_avg",
        "bad_evaluations",
    }
    elsewhere = summary(yiwang, watcher, department="620524SC", **{"from": "2000-01-01", "to": "2000-12-31"}).json()
    assert elsewhere["submitted"] == 0
    assert summary(yiwang, person).status_code == 403
    assert summary(yiwang, watcher, **{"from": "2026-12-01", "to": "2026-01-01"}).status_code == 422


def test_a_deadline_in_an_unloaded_year_is_provisional_until_the_notice_is_loaded(yiwang, admin):
    # An item promising 40 working days: submitted today, its deadline falls in 2027.
    guide = requests.get(yiwang.url(f"/api/v1/catalog/items/{ALLOWANCE}")).json()
    code = "62052400MZ-QT-0096"
    guide.update(
        item_code=code,
        name="跨年测试事项",
        promised_days=40,
        legal_days=60,
        auto_approval={"enabled": False, "rules": []},
    )
    guide.pop("version")
    assert requests.post(yiwang.url("/api/v1/catalog/items"), json=guide, headers=auth(admin)).status_code == 201
    assert requests.post(yiwang.url(f"/api/v1/catalog/items/{code}/publish"), headers=auth(admin)).status_code == 200
    person = sign_up(yiwang)
    case_no = requests.post(
        yiwang.url("/api/v1/cases"), json={"item_code": code, "form": FORM}, headers=auth(person)
    ).json()["case_no"]
    case = requests.get(yiwang.url(f"/api/v1/cases/{case_no}"), headers=auth(person)).json()
    assert case["deadline"] >= "2027-01-01" and case["deadline_provisional"] is True

    assert requests.get(yiwang.url("/api/v1/calendar/2027")).json()["source"] == "weekends_only"
    notice = {
        "holidays": ["2027-01-01", "2027-02-05", "2027-02-08", "2027-02-09", "2027-02-10", "2027-02-11"],
        "workdays": ["2027-02-06"],
    }
    assert requests.put(yiwang.url("/api/v1/admin/calendar/2027"), json=notice, headers=auth(person)).status_code == 403
    bad = requests.put(
        yiwang.url("/api/v1/admin/calendar/2027"), json={"holidays": ["2026-05-01"]}, headers=auth(admin)
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "holidays.0"
    loaded = requests.put(yiwang.url("/api/v1/admin/calendar/2027"), json=notice, headers=auth(admin))
    assert loaded.status_code == 200 and loaded.json()["recomputed"] >= 1
    view = requests.get(yiwang.url("/api/v1/calendar/2027")).json()
    assert view["source"] == "loaded" and view["holidays"][0] == "2027-01-01" and view["workdays"] == ["2027-02-06"]

    after = requests.get(yiwang.url(f"/api/v1/cases/{case_no}"), headers=auth(person)).json()
    assert after["deadline_provisional"] is False
    assert after["deadline"] > case["deadline"]  # New Year's Day no longer counts as a working day
