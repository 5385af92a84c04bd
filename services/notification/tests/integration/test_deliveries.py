"""Outbound delivery against the real broker, document server, an SMTP server (aiosmtpd) and the
local SMS provider, each a real process; identity is a stand-in service."""

from __future__ import annotations

import http.client
from datetime import UTC, datetime

import pytest
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcClient

from contracts.cases import Decision
from contracts.envelope import new_event
from contracts.events import CaseApproved
from services.common.errors import NotFound
from services.common.metrics import STORE_COMMANDS
from services.notification.channels import SmsProvider
from services.notification.service import NotificationService
from tests.support import dispatch_event, eventually, mail_received, mail_server, sms_provider, sms_received

PEOPLE = {
    "u-1": {"user_id": "u-1", "phone": "13800138001", "email": "zhang@example.cn"},
    "u-2": {"user_id": "u-2", "phone": "13800138002", "email": None},
}
PAGE = {"page": 1, "page_size": 50}


def applicant(user_id: str) -> dict:
    return {"user_id": user_id, "account_type": "citizen", "roles": ["applicant"], "department_code": None}


class StandInIdentity:
    name = "identity"

    @rpc
    def contact(self, user_id):
        if user_id not in PEOPLE:
            raise NotFound("no such user")
        return PEOPLE[user_id]

    @rpc
    def reviewers_of(self, department_code):
        return ["r-1", "r-2"] if department_code == "620524GA" else []


@pytest.fixture
def sms(tmp_path):
    provider = sms_provider(tmp_path / "sms.jsonl").start()
    yield provider
    provider.stop()


@pytest.fixture
def mail(tmp_path):
    server = mail_server(tmp_path / "mail").start()
    server.maildir = tmp_path / "mail"
    yield server
    server.stop()


@pytest.fixture
def notification(container_factory, rabbit_config, store_config, sms, mail):
    container_factory(StandInIdentity).start()
    notify = {
        "SMS_PROVIDER_URL": f"http://127.0.0.1:{sms.port}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": mail.port,
        "RETRY_BASE_SECONDS": 0.5,
        "RETRY_CAP_SECONDS": 2,
    }
    container = container_factory(NotificationService, {**store_config, "NOTIFY": notify})
    container.start()
    return container


def approved(case_no: str, user_id: str = "u-1") -> dict:
    decision = Decision(outcome="approved", decided_by="auto", decided_at=datetime.now(UTC))
    payload = CaseApproved(
        case_no=case_no,
        item_code="62052400MZ-GF-0001",
        item_name="高龄津贴申领",
        department_code="620524MZ",
        applicant_id=user_id,
        decision=decision,
    )
    return new_event(payload, producer="intake").model_dump(mode="json")


def queue_claims() -> float:
    """`findAndModify` commands on the delivery queue this process sent: the timer's claims."""
    return STORE_COMMANDS.labels("findandmodify", "delivery_queue")._value.get()


def deliveries(user_id: str) -> dict[str, dict[str, str]]:
    with ServiceRpcClient("notification") as client:
        items = client.list_notifications(applicant(user_id), False, PAGE)["items"]
    return {item["case_no"]: {d["channel"]: d["status"] for d in item["deliveries"]} for item in items}


def test_an_event_reaches_inbox_sms_and_email_once(notification, sms, mail):
    with ServiceRpcClient("notification") as client:
        chosen = client.set_preferences(applicant("u-1"), {"channels": ["sms", "email"]})
    assert chosen == {"channels": ["inbox", "sms", "email"]}

    envelope = approved("C-1")
    dispatch_event("intake", envelope)
    dispatch_event("intake", envelope)  # redelivered: still one of each

    done = {"inbox": "delivered", "sms": "delivered", "email": "delivered"}
    eventually(lambda: deliveries("u-1").get("C-1") == done, timeout=30, what="delivered on every channel")
    [text] = sms_received(f"http://127.0.0.1:{sms.port}")
    assert text["to"] == "13800138001"
    assert text["text"].startswith("【一网通办】您的“高龄津贴申领”申请（C-1）已审批通过（秒批）")
    [letter] = mail_received(mail.maildir)
    assert letter["To"] == "zhang@example.cn"
    assert letter["Subject"] == "您的“高龄津贴申领”申请已办结：准予"
    assert "办件编号 C-1" in letter.get_content()


def test_a_new_sms_is_sent_by_its_event_handler_without_a_claim_by_the_timer(notification, sms):
    # The handler queues the entry already claimed and sends it: one store command less per SMS
    # than the timer's claim (the receipt step that follows is not claimed either).
    claims = queue_claims()
    dispatch_event("intake", approved("C-5", "u-2"))
    eventually(lambda: deliveries("u-2").get("C-5", {}).get("sms") == "delivered", timeout=30, what="the SMS")
    assert len(sms_received(f"http://127.0.0.1:{sms.port}")) == 1
    assert queue_claims() == claims


def test_email_cannot_be_chosen_without_an_address(notification):
    from services.common.errors import ValidationFailed

    with ServiceRpcClient("notification") as client, pytest.raises(ValidationFailed):
        client.set_preferences(applicant("u-2"), {"channels": ["email"]})


def test_an_sms_provider_outage_loses_nothing_and_duplicates_nothing(notification, sms):
    sms.stop()
    claims = queue_claims()
    cases = [f"C-{n}" for n in range(10, 16)]
    events = [approved(case_no, "u-2") for case_no in cases]
    for envelope in events:
        dispatch_event("intake", envelope)

    # The inbox has them at once; every SMS is retried while the provider is away.
    eventually(lambda: set(deliveries("u-2")) == set(cases), what="the inbox messages")
    assert all(status["sms"] == "pending" for status in deliveries("u-2").values())

    # Each retry is the timer's: it claims the entry first (what the test above finds none of).
    eventually(lambda: queue_claims() > claims, what="the timer claiming a retry")
    sms.start()
    for envelope in events[:2]:
        dispatch_event("intake", envelope)  # and some events arrive again meanwhile

    eventually(
        lambda: all(status["sms"] == "delivered" for status in deliveries("u-2").values()),
        timeout=45,
        what="every SMS delivered after the provider came back",
    )
    received = sms_received(f"http://127.0.0.1:{sms.port}")
    assert sorted(m["text"].split("（")[1].split("）")[0] for m in received) == cases  # each case once
    assert len({m["reference"] for m in received}) == len(received)


def test_a_number_the_provider_cannot_reach_fails_visibly(notification, sms):
    import requests

    requests.post(f"http://127.0.0.1:{sms.port}/control", json={"unreachable": ["13800138002"]}, timeout=5)
    dispatch_event("intake", approved("C-20", "u-2"))
    eventually(lambda: deliveries("u-2").get("C-20", {}).get("sms") == "failed", timeout=30, what="a failed SMS")


def test_the_local_provider_keeps_a_connection_open_for_the_next_request(sms):
    # A new TCP connection per message and receipt cost sender and provider alike under load;
    # real providers keep connections alive, and the stand-in measured in benchmarks must too.
    client = SmsProvider(f"http://127.0.0.1:{sms.port}")
    sent = client.send("13800138001", "您的申请已受理", "n-1:sms")
    connection = http.client.HTTPConnection("127.0.0.1", sms.port, timeout=5)
    for path in ("/healthz", f"/v1/messages/{sent.reference}"):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert not response.will_close
    connection.close()


def test_a_days_deadline_events_reach_each_reviewer_as_one_digest(notification):
    from datetime import date

    from contracts.events import CaseOverdue

    def overdue(case_no: str) -> dict:
        payload = CaseOverdue(
            case_no=case_no,
            item_code="62052400GA-QR-0001",
            item_name="居民身份证换领",
            department_code="620524GA",
            applicant_id="u-1",
            deadline=date(2026, 11, 20),
        )
        return new_event(payload, producer="intake").model_dump(mode="json")

    first = overdue("GA-1")
    for envelope in (first, overdue("GA-2"), first):  # the first redelivered
        dispatch_event("intake", envelope)
    reviewer = {"user_id": "r-2", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524GA"}

    def inbox() -> list[dict]:
        with ServiceRpcClient("notification") as client:
            return client.list_notifications(reviewer, False, PAGE)["items"]

    eventually(lambda: len(inbox()) == 1 and "2 件办件已超期" in inbox()[0]["title"], what="one digest of both")
    [digest] = inbox()
    assert digest["type"] == "case.overdue.v1" and digest["case_no"] is None
    assert "GA-1" in digest["body"] and "GA-2" in digest["body"]
