"""An applicant changes their phone and email over HTTP: the next texts go to the new phone at once
(not after the minute notification keeps a contact), the new phone logs in and the old one no
longer, and a wrong password changes nothing."""

from __future__ import annotations

import requests

from tests.e2e.conftest import RunningSystem, auth, sign_up
from tests.e2e.test_case_flow import ALLOWANCE, GOOD_FORM, submit
from tests.e2e.test_catalog import admin_token
from tests.support import citizen, eventually, sms_received

CONTACT = "/api/v1/me/contact"


def texts_about(yiwang: RunningSystem, case_no: str) -> list[dict]:
    return [m for m in sms_received(yiwang.sms_url) if case_no in m["text"]]


def change(yiwang: RunningSystem, person: dict, body: dict) -> requests.Response:
    return requests.put(yiwang.url(CONTACT), json=body, headers=auth(person), timeout=10)


def login(yiwang: RunningSystem, username: str, password: str) -> int:
    body = {"username": username, "password": password}
    return requests.post(yiwang.url("/api/v1/auth/login"), json=body, timeout=10).status_code


def test_a_new_phone_gets_the_next_texts_at_once_and_logs_in(yiwang: RunningSystem):
    person = sign_up(yiwang)
    old_phone, new_phone = person["phone"], citizen()["phone"]
    assert requests.get(yiwang.url(CONTACT), headers=auth(person), timeout=10).json() == {
        "phone": old_phone,
        "email": None,
    }
    # A first case: notification now keeps the person's contact (for a minute, unless told).
    first = submit(yiwang, person, {"item_code": ALLOWANCE, "form": GOOD_FORM}).json()["case_no"]
    eventually(lambda: len(texts_about(yiwang, first)) == 2, timeout=30, what="the first case's two texts")

    wrong = change(yiwang, person, {"password": "not-my-password", "phone": new_phone})
    assert wrong.status_code == 422
    assert [d["field"] for d in wrong.json()["error"]["details"]] == ["password"]
    assert change(yiwang, person, {"password": person["password"]}).status_code == 422  # nothing to change
    changed = change(yiwang, person, {"password": person["password"], "phone": new_phone, "email": "li@example.cn"})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"phone": new_phone, "email": "li@example.cn"}
    assert requests.get(yiwang.url(CONTACT), headers=auth(person), timeout=10).json() == changed.json()

    assert login(yiwang, new_phone, person["password"]) == 200
    assert login(yiwang, old_phone, person["password"]) == 401
    assert login(yiwang, person["id_number"], person["password"]) == 200

    # Told at once: the next case's texts go to the new phone, well within the minute.
    second = submit(yiwang, person, {"item_code": ALLOWANCE, "form": GOOD_FORM}).json()["case_no"]
    eventually(lambda: len(texts_about(yiwang, second)) == 2, timeout=30, what="the second case's two texts")
    assert [m["to"] for m in texts_about(yiwang, second)] == [new_phone, new_phone]
    assert {m["to"] for m in texts_about(yiwang, first)} == {old_phone}

    # The email can now be chosen as a channel; removing the address switches that channel off.
    prefs = "/api/v1/me/notification-preferences"
    chosen = requests.put(yiwang.url(prefs), json={"channels": ["sms", "email"]}, headers=auth(person), timeout=10)
    assert chosen.json() == {"channels": ["inbox", "sms", "email"]}
    removed = change(yiwang, person, {"password": person["password"], "email": None})
    assert removed.json() == {"phone": new_phone, "email": None}

    def channels() -> list[str] | None:
        now = requests.get(yiwang.url(prefs), headers=auth(person), timeout=10).json()["channels"]
        return now if "email" not in now else None

    assert eventually(channels, timeout=10, what="the email channel switched off") == ["inbox", "sms"]


def test_a_phone_another_account_holds_is_a_conflict_and_a_released_one_is_free(yiwang: RunningSystem):
    first, second = sign_up(yiwang), sign_up(yiwang)
    taken = change(yiwang, first, {"password": first["password"], "phone": second["phone"]})
    assert taken.status_code == 409
    assert taken.json()["error"]["details"] == [{"field": "phone", "issue": "already registered"}]
    assert login(yiwang, second["phone"], second["password"]) == 200

    released = first["phone"]
    assert change(yiwang, first, {"password": first["password"], "phone": citizen()["phone"]}).status_code == 200
    newcomer = requests.post(yiwang.url("/api/v1/auth/register"), json={**citizen(), "phone": released}, timeout=10)
    assert newcomer.status_code == 201


def test_staff_and_strangers_cannot_change_contacts(yiwang: RunningSystem):
    staff = admin_token(yiwang)  # staff contacts are not the account holder's to change here
    assert change(yiwang, staff, {"password": "x", "email": None}).status_code == 403
    assert requests.put(yiwang.url(CONTACT), json={"password": "x", "email": None}, timeout=10).status_code == 401
    assert requests.get(yiwang.url(CONTACT), timeout=10).status_code == 401
