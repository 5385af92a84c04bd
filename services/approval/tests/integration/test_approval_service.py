"""Approval against the real broker and document server; catalog and identity are stand-ins."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_waiter

from contracts.envelope import new_event
from contracts.events import CaseSubmitted
from services.approval.service import ApprovalService
from tests.support import dispatch_event, event_recorder, eventually, published_item

ITEM = published_item(0)
AGES = {"old": 86, "young": 40}


class StandInCatalog:
    name = "catalog"
    calls: list = []

    @rpc
    def get_item(self, item_code, version=None):
        StandInCatalog.calls.append((item_code, version))
        return ITEM


class StandInIdentity:
    name = "identity"

    @rpc
    def applicant_profile(self, user_id):
        return {
            "user_id": user_id,
            "account_type": "citizen",
            "name": "张三",
            "age": AGES[user_id],
            "gender": "male",
            "region_code": "620524",
            "assurance_level": 1,
            "certificates": [],
        }


@pytest.fixture
def approval(container_factory, rabbit_config, store_config):
    for cls in (StandInCatalog, StandInIdentity):
        container_factory(cls).start()
    container = container_factory(ApprovalService, store_config)
    container.start()
    return container


def submitted(case_no: str, applicant: str) -> dict:
    payload = CaseSubmitted(
        case_no=case_no,
        item_code=ITEM["item_code"],
        item_version=1,
        item_name=ITEM["name"],
        department_code=ITEM["department_code"],
        applicant_id=applicant,
        form={"bank_account": "6222020200112233445", "contact_phone": "13800138000"},
        material_codes=[],
        submitted_at=datetime.now(UTC),
    )
    return new_event(payload, producer="intake").model_dump(mode="json")


def test_old_applicant_is_approved_with_explanation(approval, container_factory):
    approved = event_recorder("approval", "case.approved.v1")
    container_factory(approved).start()
    with entrypoint_waiter(approval, "on_case_submitted"):
        dispatch_event("intake", submitted("C-1", "old"))
    event = eventually(lambda: approved.events, what="case.approved.v1")[0]
    decision = event["payload"]["decision"]
    assert decision["decided_by"] == "auto" and decision["rule_set_version"] == 1
    assert [r["result"] for r in decision["explanation"]] == ["passed", "passed"]
    # The rules of the version the case was submitted under were asked for.
    assert (ITEM["item_code"], 1) in StandInCatalog.calls


def test_young_applicant_is_rejected_by_the_reject_rule(approval, container_factory):
    rejected = event_recorder("approval", "case.rejected.v1")
    container_factory(rejected).start()
    with entrypoint_waiter(approval, "on_case_submitted"):
        dispatch_event("intake", submitted("C-2", "young"))
    event = eventually(lambda: rejected.events, what="case.rejected.v1")[0]
    assert event["payload"]["decision"]["reason"] == "不符合条件：申请人年满80周岁"


def test_redelivered_submission_is_decided_once(approval, container_factory, mongo_client, store_config):
    approved = event_recorder("approval", "case.approved.v1")
    container_factory(approved).start()
    envelope = submitted("C-3", "old")
    for _ in range(3):
        with entrypoint_waiter(approval, "on_case_submitted"):
            dispatch_event("intake", envelope)
    eventually(lambda: approved.events, what="the decision")
    decisions = mongo_client[f"{store_config['MONGO_DB_PREFIX']}_approval"]["auto_decisions"]
    assert decisions.count_documents({}) == 1
    assert len({e["event_id"] for e in approved.events}) == 1


def test_a_case_whose_rules_cannot_run_on_its_last_try_goes_to_a_reviewer(approval, container_factory):
    # identity fails for this applicant on every try. The tests' retries (0.2 s, 0.5 s) end within
    # a second, long before the hand-over's minute: only the last try's attempt header, which
    # the worker reads, keeps the case from the dead letters.
    handed_over = event_recorder("approval", "case.review_required.v1")
    container_factory(handed_over).start()
    dispatch_event("intake", submitted("C-4", "unknown to identity"))
    event = eventually(lambda: handed_over.events, timeout=30, what="case.review_required.v1")[0]
    [why] = event["payload"]["explanation"]
    assert why["rule_id"] == "rules_not_run" and why["result"] == "error"
