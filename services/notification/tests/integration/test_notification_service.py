"""Notification against the real broker and document server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nameko.standalone.rpc import ServiceRpcClient
from nameko.testing.services import entrypoint_waiter

from contracts.cases import Decision
from contracts.envelope import new_event
from contracts.events import CaseApproved
from services.common.errors import NotFound
from services.notification.service import NotificationService
from tests.support import dispatch_event

APPLICANT = {"user_id": "u-9", "account_type": "citizen", "roles": ["applicant"], "department_code": None}
OTHER = {**APPLICANT, "user_id": "u-10"}
PAGE = {"page": 1, "page_size": 20}


@pytest.fixture
def notification(container_factory, rabbit_config, store_config):
    container = container_factory(NotificationService, store_config)
    container.start()
    return container


def approved_event() -> dict:
    decision = Decision(outcome="approved", decided_by="auto", reason="ok", decided_at=datetime.now(UTC))
    payload = CaseApproved(
        case_no="C-9",
        item_code="62052400MZ-GF-0001",
        item_name="高龄津贴申领",
        department_code="620524MZ",
        applicant_id="u-9",
        decision=decision,
    )
    return new_event(payload, producer="intake").model_dump(mode="json")


def test_one_notification_per_event_however_often_it_arrives(notification):
    envelope = approved_event()
    for _ in range(3):
        with entrypoint_waiter(notification, "on_case_approved"):
            dispatch_event("intake", envelope)

    with ServiceRpcClient("notification") as client:
        inbox = client.list_notifications(APPLICANT, False, PAGE)
        assert inbox["total"] == 1
        message = inbox["items"][0]
        assert message["title"] == "您的“高龄津贴申领”申请已办结：准予"
        assert "（秒批）" in message["body"]

        assert client.list_notifications(OTHER, False, PAGE)["total"] == 0
        with pytest.raises(NotFound):
            client.mark_read(OTHER, message["notification_id"])
        client.mark_read(APPLICANT, message["notification_id"])
        assert client.list_notifications(APPLICANT, True, PAGE)["total"] == 0
