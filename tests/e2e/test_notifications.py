"""Notifications over HTTP: channel preferences, and every case event reaching the inbox, the SMS
provider and the mail server exactly once (the local providers that `make run` starts)."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.conftest import RunningSystem, auth, sign_up
from tests.e2e.test_case_flow import ALLOWANCE, GOOD_FORM, submit, wait_for_status
from tests.support import citizen, eventually, mail_received, sms_received

PREFERENCES = "/api/v1/me/notification-preferences"


def preferences(yiwang: RunningSystem, person: dict, channels: list | None = None) -> requests.Response:
    if channels is None:
        return requests.get(yiwang.url(PREFERENCES), headers=auth(person), timeout=10)
    return requests.put(yiwang.url(PREFERENCES), json={"channels": channels}, headers=auth(person), timeout=10)


def test_preferences_default_and_refuse_a_channel_the_account_cannot_receive(yiwang, applicant):
    assert preferences(yiwang, applicant).json() == {"channels": ["inbox", "sms"]}

    refused = preferences(yiwang, applicant, ["sms", "email"])  # registered without an email address
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "validation_failed"
    # Named by its place in the list as sent (the inbox, always on, is not in it).
    assert error["details"] == [{"field": "channels.1", "issue": "the account has no email address"}]

    assert preferences(yiwang, applicant, ["fax"]).status_code == 422
    assert preferences(yiwang, applicant, []).json() == {"channels": ["inbox"]}  # the inbox stays on
    assert preferences(yiwang, applicant).json() == {"channels": ["inbox"]}
    assert requests.get(yiwang.url(PREFERENCES), timeout=10).status_code == 401


@pytest.mark.local_only("reads the local mail server's Maildir")
def test_a_case_is_told_on_every_chosen_channel_once(yiwang: RunningSystem):
    person = sign_up(yiwang, {**citizen(), "email": "applicant@example.cn"})
    assert preferences(yiwang, person, ["sms", "email"]).json() == {"channels": ["inbox", "sms", "email"]}

    created = submit(yiwang, person, {"item_code": ALLOWANCE, "form": GOOD_FORM}).json()
    case_no = created["case_no"]
    wait_for_status(yiwang, person, case_no, "approved")

    def all_delivered() -> list | None:
        items = requests.get(yiwang.url("/api/v1/notifications"), headers=auth(person), timeout=10).json()["items"]
        mine = [n for n in items if n["case_no"] == case_no]
        statuses = {(n["type"], d["channel"], d["status"]) for n in mine for d in n["deliveries"]}
        wanted = {
            (kind, channel, "delivered")
            for kind in ("case.submitted.v1", "case.approved.v1")
            for channel in ("inbox", "sms", "email")
        }
        return mine if statuses == wanted else None

    eventually(all_delivered, timeout=30, what="submitted and approved, delivered on three channels")

    texts = [m for m in sms_received(yiwang.sms_url) if case_no in m["text"]]
    assert sorted(m["to"] for m in texts) == [person["phone"]] * 2
    assert any("已审批通过（秒批）" in m["text"] for m in texts)
    letters = [m for m in mail_received(yiwang.mail_dir) if m["To"] == "applicant@example.cn"]
    assert sorted(m["Subject"] for m in letters) == sorted(
        ["您的“高龄津贴申领”申请已提交", "您的“高龄津贴申领”申请已办结：准予"]
    )
    assert all(case_no in m.get_content() for m in letters)


def test_applicants_are_told_by_sms_unless_they_choose_otherwise(yiwang, applicant):
    created = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": GOOD_FORM}).json()
    eventually(
        lambda: len([m for m in sms_received(yiwang.sms_url) if created["case_no"] in m["text"]]) == 2,
        timeout=30,
        what="two texts (submitted, approved)",
    )
