from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from contracts.notifications import Contact
from services.notification.deliveries import (
    Outcome,
    Policy,
    Step,
    after_receipt,
    after_send,
    channels_for,
    unreachable,
    view,
)

NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
POLICY = Policy(retry_base=2, retry_cap=60, max_attempts=4, receipt_poll=5)


def test_backoff_doubles_up_to_its_cap():
    assert [POLICY.backoff(n).total_seconds() for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


def test_a_temporary_failure_waits_longer_each_time_then_gives_up_visibly():
    state: dict = {"status": "pending", "attempts": 0}
    waits = []
    for _ in range(POLICY.max_attempts):
        step = after_send(state, Outcome("temporary", error="SMS provider answered 503"), NOW, POLICY)
        state = {**state, **step.changes}
        waits.append(None if step.next_at is None else (step.next_at - NOW).total_seconds())
    assert waits == [2, 4, 8, None]
    assert state["status"] == "failed" and state["attempts"] == 4
    assert state["error"] == "SMS provider answered 503"


def test_an_accepted_sms_is_sent_and_its_receipt_awaited():
    step = after_send({"attempts": 2}, Outcome("accepted", reference="m-1"), NOW, POLICY)
    assert step.changes == {
        "attempts": 3,
        "updated_at": NOW,
        "status": "sent",
        "sent_at": NOW,
        "reference": "m-1",
        "error": None,
    }
    assert step.next_at == NOW + timedelta(seconds=5)


def test_an_email_taken_by_the_server_is_delivered_and_finished():
    step = after_send({}, Outcome("delivered", reference="<id@yiwang.local>"), NOW, POLICY)
    assert step.changes["status"] == "delivered" and step.next_at is None


def test_a_permanent_failure_is_not_retried():
    step = after_send({}, Outcome("permanent", error="the account has no phone number"), NOW, POLICY)
    assert step.changes["status"] == "failed" and step.next_at is None
    assert step.changes["error"] == "the account has no phone number"


@pytest.mark.parametrize(
    ("outcome", "status", "again"),
    [
        (Outcome("delivered"), "delivered", False),
        (Outcome("permanent", error="number unreachable"), "failed", False),
        (Outcome("accepted"), None, True),  # not there yet: ask again
        (Outcome("temporary"), None, True),  # the provider is down: ask again
    ],
)
def test_receipts(outcome, status, again):
    step = after_receipt({"status": "sent", "sent_at": NOW}, outcome, NOW + timedelta(seconds=5), POLICY)
    assert step.changes.get("status") == status
    assert (step.next_at is not None) is again


def test_receipts_are_asked_for_ever_further_apart():
    # A provider that never reports must not be asked every 5 s for an hour (720 asks per SMS).
    asked, at = [], NOW + timedelta(seconds=5)
    while (step := after_receipt({"status": "sent", "sent_at": NOW}, Outcome("accepted"), at, POLICY)).next_at:
        asked.append((at - NOW).total_seconds())
        at = step.next_at
    assert asked[:6] == [5, 10, 20, 40, 80, 160]
    assert all(later - earlier <= 300 for earlier, later in pairwise(asked))
    assert len(asked) <= 20 and asked[-1] > 3300  # asked until the patience ran out, never further than 5 min apart


def test_no_receipt_forever_leaves_the_message_sent():
    later = NOW + POLICY.receipt_patience + timedelta(seconds=1)
    assert after_receipt({"status": "sent", "sent_at": NOW}, Outcome("accepted"), later, POLICY) == Step()


def test_channels_default_by_audience_and_follow_a_choice():
    assert channels_for("applicant", None) == ["inbox", "sms"]
    assert channels_for("reviewer", None) == ["inbox"]
    assert channels_for("applicant", ["email"]) == ["inbox", "email"]
    assert channels_for("applicant", ["email", "sms", "inbox"]) == ["inbox", "sms", "email"]
    assert channels_for("applicant", []) == ["inbox"]


def test_unreachable_channels():
    phone_only = Contact(user_id="u", phone="13800138000")
    assert unreachable("sms", phone_only) is None
    assert unreachable("email", phone_only) == "the account has no email address"
    assert unreachable("sms", Contact(user_id="staff")) == "the account has no phone number"
    assert unreachable("inbox", Contact(user_id="staff")) is None


def test_view_lists_inbox_first():
    channels = {"email": {"status": "failed"}, "inbox": {"status": "delivered"}, "sms": {"status": "sent"}}
    assert view(channels) == [
        {"channel": "inbox", "status": "delivered"},
        {"channel": "sms", "status": "sent"},
        {"channel": "email", "status": "failed"},
    ]
