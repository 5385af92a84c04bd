"""An applicant changes their phone and email over HTTP: a new phone needs the code texted to it;
the next texts go to the new phone at once (not after the minute notification keeps a contact), the
new phone logs in and the old one no longer, and a wrong password or code changes nothing."""

from __future__ import annotations

import re

import pytest
import requests

from tests.e2e.conftest import RunningSystem, auth, sign_up
from tests.e2e.test_case_flow import ALLOWANCE, GOOD_FORM, spans_of, submit
from tests.e2e.test_catalog import admin_token
from tests.support import citizen, eventually, sms_received

CONTACT = "/api/v1/me/contact"
PHONE_CODE = "/api/v1/me/contact/phone-code"


def texts_about(yiwang: RunningSystem, case_no: str) -> list[dict]:
    return [m for m in sms_received(yiwang.sms_url) if case_no in m["text"]]


def change(yiwang: RunningSystem, person: dict, body: dict) -> requests.Response:
    return requests.put(yiwang.url(CONTACT), json=body, headers=auth(person), timeout=10)


def ask_code(yiwang: RunningSystem, person: dict, phone: str) -> requests.Response:
    return requests.post(yiwang.url(PHONE_CODE), json={"phone": phone}, headers=auth(person), timeout=10)


def code_texted(yiwang: RunningSystem, phone: str) -> str:
    """The newest one-time code the SMS provider took for this phone."""

    def code() -> str | None:
        texts = [m for m in sms_received(yiwang.sms_url) if m["to"] == phone and "验证码" in m["text"]]
        return re.search(r"验证码(\d{6})", texts[-1]["text"]).group(1) if texts else None  # type: ignore[union-attr]

    return eventually(code, timeout=10, what=f"a code texted to {phone}")


def new_phone_for(yiwang: RunningSystem, person: dict) -> tuple[str, str]:
    """A fresh phone and the code texted to it for this person."""
    phone = citizen()["phone"]
    asked = ask_code(yiwang, person, phone)
    assert asked.status_code == 202, asked.text
    return phone, code_texted(yiwang, phone)


def login(yiwang: RunningSystem, username: str, password: str) -> int:
    body = {"username": username, "password": password}
    return requests.post(yiwang.url("/api/v1/auth/login"), json=body, timeout=10).status_code


def test_a_new_phone_gets_the_next_texts_at_once_and_logs_in(yiwang: RunningSystem):
    person = sign_up(yiwang)
    old_phone, (new_phone, code) = person["phone"], new_phone_for(yiwang, person)
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
    body = {"password": person["password"], "phone": new_phone, "phone_code": code, "email": "li@example.cn"}
    changed = change(yiwang, person, body)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"phone": new_phone, "email": "li@example.cn"}
    assert requests.get(yiwang.url(CONTACT), headers=auth(person), timeout=10).json() == changed.json()

    assert login(yiwang, new_phone, person["password"]) == 200
    assert login(yiwang, old_phone, person["password"]) == 401
    # The number the account left is told (it gets no notification of the account any more).
    told = eventually(
        lambda: [m for m in sms_received(yiwang.sms_url) if m["to"] == old_phone and "更换为" in m["text"]],
        timeout=10,
        what="the notice to the old phone",
    )
    assert f"{new_phone[:3]}****{new_phone[-4:]}" in told[0]["text"] and new_phone not in told[0]["text"]
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
    # The code goes out (asking reveals no one's registration); the change itself is refused.
    assert ask_code(yiwang, first, second["phone"]).status_code == 202
    body = {"password": first["password"], "phone": second["phone"], "phone_code": code_texted(yiwang, second["phone"])}
    taken = change(yiwang, first, body)
    assert taken.status_code == 409
    assert taken.json()["error"]["details"] == [{"field": "phone", "issue": "already registered"}]
    assert login(yiwang, second["phone"], second["password"]) == 200

    released = second["phone"]
    phone, code = new_phone_for(yiwang, second)
    assert (
        change(yiwang, second, {"password": second["password"], "phone": phone, "phone_code": code}).status_code == 200
    )
    newcomer = requests.post(yiwang.url("/api/v1/auth/register"), json={**citizen(), "phone": released}, timeout=10)
    assert newcomer.status_code == 201


def test_a_new_phone_needs_the_code_texted_to_it(yiwang: RunningSystem):
    person = sign_up(yiwang)
    wanted, elsewhere = citizen()["phone"], citizen()["phone"]

    def refused_on_code(body: dict) -> str:
        answer = change(yiwang, person, {"password": person["password"], **body})
        assert answer.status_code == 422, answer.text
        (detail,) = answer.json()["error"]["details"]
        assert detail["field"] == "phone_code"
        return detail["issue"]

    assert "needs the code" in refused_on_code({"phone": wanted})
    assert "no code was sent" in refused_on_code({"phone": wanted, "phone_code": "123456"})

    sent = ask_code(yiwang, person, wanted)
    assert sent.status_code == 202 and sent.json()["phone"] == wanted and sent.json()["resend_after"] == 60
    code = code_texted(yiwang, wanted)
    again = ask_code(yiwang, person, elsewhere)  # no second text within the minute
    assert again.status_code == 429 and 0 < int(again.headers["Retry-After"]) <= 60
    assert ask_code(yiwang, person, person["phone"]).status_code == 422  # the phone it has

    wrong = "000000" if code != "000000" else "111111"
    assert "4 tries left" in refused_on_code({"phone": wanted, "phone_code": wrong})
    assert "no code was sent" in refused_on_code({"phone": elsewhere, "phone_code": code})  # for another phone
    assert login(yiwang, wanted, person["password"]) == 401  # nothing changed
    changed = change(yiwang, person, {"password": person["password"], "phone": wanted, "phone_code": code})
    assert changed.status_code == 200, changed.text
    assert "no code was sent" in refused_on_code({"phone": elsewhere, "phone_code": code})  # spent
    assert login(yiwang, wanted, person["password"]) == 200


@pytest.mark.local_only("reads the processes' log and span files")
def test_a_code_reaches_no_log_and_no_span(yiwang: RunningSystem):
    files = lambda: [*yiwang.log_dir.glob("*.log"), *yiwang.span_dir.glob("*.jsonl")]  # noqa: E731
    written_before = {path: path.stat().st_size for path in files()}
    person = sign_up(yiwang)
    phone = citizen()["phone"]
    asked = ask_code(yiwang, person, phone)
    code = code_texted(yiwang, phone)
    changed = change(yiwang, person, {"password": person["password"], "phone": phone, "phone_code": code})
    assert changed.status_code == 200
    # Both requests' traces are written (spans are exported in batches), then nothing holds the code.
    for answer in (asked, changed):
        trace_id = answer.headers["X-Trace-Id"]
        eventually(lambda t=trace_id: len(spans_of(yiwang, t)) > 2, timeout=15, what="the request's spans")
    assert any(s["name"].endswith("send_verification_code") for s in spans_of(yiwang, asked.headers["X-Trace-Id"]))
    # Only what was written meanwhile, and not inside hex ids (a trace id may hold any six digits).
    standalone = re.compile(rf"(?<![0-9a-fA-F]){code}(?![0-9a-fA-F])")
    for path in files():
        with path.open("rb") as file:
            file.seek(written_before.get(path, 0))
            assert not standalone.search(file.read().decode("utf-8", errors="replace")), path.name


def test_staff_and_strangers_cannot_change_contacts(yiwang: RunningSystem):
    staff = admin_token(yiwang)  # staff contacts are not the account holder's to change here
    assert change(yiwang, staff, {"password": "x", "email": None}).status_code == 403
    assert requests.put(yiwang.url(CONTACT), json={"password": "x", "email": None}, timeout=10).status_code == 401
    assert requests.get(yiwang.url(CONTACT), timeout=10).status_code == 401
    assert ask_code(yiwang, staff, "13911112222").status_code == 403
    assert requests.post(yiwang.url(PHONE_CODE), json={"phone": "13911112222"}, timeout=10).status_code == 401
