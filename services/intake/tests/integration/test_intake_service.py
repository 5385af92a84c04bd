"""Intake against the real broker and document server; catalog and identity are stand-in services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcClient
from nameko.testing.services import entrypoint_waiter

from contracts.cases import Decision
from contracts.envelope import new_event
from contracts.events import CaseApproved, CaseSubmitted, ItemPublished
from services.common.consuming import dead_letter_queue_name
from services.common.errors import Conflict, NotFound, ValidationFailed
from services.intake.service import IntakeService
from services.intake.storage import IntakeStore
from tests.support import (
    current_vhost,
    dispatch_event,
    event_recorder,
    eventually,
    published_item,
    queue_depth,
    queue_info,
)

ITEM = published_item(0)
BUSINESS = published_item(2)  # 企业设立登记: needs the applicant's own name reservation certificate
PRINCIPAL = {"user_id": "u-1", "account_type": "citizen", "roles": ["applicant"], "department_code": None}
GOOD = {"item_code": ITEM["item_code"], "form": {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}}


class StandInCatalog:
    name = "catalog"
    asked: list[str] = []  # item codes asked for, by every instance (reset by the tests that count)
    latest_version = {ITEM["item_code"]: ITEM["version"]}

    @rpc
    def get_item(self, item_code, version=None):
        StandInCatalog.asked.append(item_code)
        for item in (ITEM, BUSINESS):
            if item["item_code"] == item_code:
                return {**item, "version": version or self.latest_version.get(item_code, item["version"])}
        raise NotFound(f"no published item {item_code}")


CERTIFICATES = {
    "name_reservation:C-0": ("u-1", "name_reservation"),
    "name_reservation:C-9": ("u-2", "name_reservation"),
}


class StandInIdentity:
    name = "identity"

    @rpc
    def check_certificates(self, user_id, certificate_ids):
        checks = []
        for cid in certificate_ids:
            owner, kind = CERTIFICATES.get(cid, (None, None))
            mine = owner == user_id
            checks.append({"certificate_id": cid, "owned": mine, "valid": mine, "type": kind if mine else None})
        return checks

    @rpc
    def applicant_profile(self, user_id):
        return {"user_id": user_id, "name": "张三", "account_type": "citizen", "assurance_level": 1}


@pytest.fixture
def intake(container_factory, rabbit_config, store_config):
    for cls in (StandInCatalog, StandInIdentity):
        container_factory(cls).start()
    container = container_factory(IntakeService, store_config)
    container.start()
    return container


@pytest.fixture
def cases(mongo_client, store_config):
    return mongo_client[f"{store_config['MONGO_DB_PREFIX']}_intake"]["cases"]


def test_submission_is_stored_and_announced_once(intake, container_factory, cases):
    recorder = event_recorder("intake", "case.submitted.v1")
    container_factory(recorder).start()

    with ServiceRpcClient("intake") as client:
        created = client.submit_case(PRINCIPAL, GOOD)

    assert created["status"] == "submitted"
    stored = cases.find_one({"_id": created["case_no"]})
    assert stored["applicant"] == {"user_id": "u-1", "name": "张三"}
    eventually(lambda: recorder.events, what="case.submitted.v1")
    assert recorder.events[0]["payload"]["case_no"] == created["case_no"]
    # Published right after the write, so nothing is left for the relay.
    assert eventually(lambda: cases.find_one({"_id": created["case_no"]})["outbox"] == {})
    # Its marker goes with a batch: at the latest with the relay's next round (every 2 s).
    assert eventually(lambda: cases.database["cases_outbox"].count_documents({}) == 0, timeout=10)


def test_the_latest_version_is_asked_once_until_catalog_announces_a_newer_one(intake, cases, monkeypatch):
    monkeypatch.setattr(StandInCatalog, "latest_version", dict(StandInCatalog.latest_version))  # put back after
    StandInCatalog.asked.clear()
    with ServiceRpcClient("intake") as client:
        first = client.submit_case(PRINCIPAL, GOOD)
        second = client.submit_case(PRINCIPAL, GOOD)
        assert StandInCatalog.asked == [ITEM["item_code"]]  # kept by the intake process

        StandInCatalog.latest_version[ITEM["item_code"]] = ITEM["version"] + 1
        published = ItemPublished(
            item_code=ITEM["item_code"], version=ITEM["version"] + 1, department_code=ITEM["department_code"]
        )
        with entrypoint_waiter(intake, "on_item_published"):
            dispatch_event("catalog", new_event(published, producer="catalog").model_dump(mode="json"))
        third = client.submit_case(PRINCIPAL, GOOD)
    assert StandInCatalog.asked == [ITEM["item_code"]] * 2
    versions = [cases.find_one({"_id": c["case_no"]})["item_version"] for c in (first, second, third)]
    assert versions == [ITEM["version"], ITEM["version"], ITEM["version"] + 1]


def test_invalid_submission_crosses_rpc_as_validation_failed_and_stores_nothing(intake, cases):
    with ServiceRpcClient("intake") as client, pytest.raises(ValidationFailed) as err:
        client.submit_case(PRINCIPAL, {**GOOD, "form": {"bank_account": "x"}})
    assert {d["field"] for d in err.value.details} == {"form.bank_account", "form.contact_phone"}
    with ServiceRpcClient("intake") as client, pytest.raises(NotFound):
        client.submit_case(PRINCIPAL, {**GOOD, "item_code": "62052400MZ-GF-0999"})
    assert cases.count_documents({}) == 0


def test_case_numbers_are_unique_under_concurrent_submissions(intake, cases):
    with ServiceRpcClient("intake") as client:
        replies = [client.submit_case.call_async(PRINCIPAL, GOOD) for _ in range(20)]
        numbers = [r.result()["case_no"] for r in replies]
    assert len(set(numbers)) == 20
    assert sorted(int(n.rsplit("-", 1)[1]) for n in numbers) == list(range(1, 21))


def test_a_redelivered_decision_is_recorded_once(intake, cases):
    with ServiceRpcClient("intake") as client:
        created = client.submit_case(PRINCIPAL, GOOD)
    decision = Decision(outcome="approved", decided_by="auto", reason="ok", decided_at=datetime.now(UTC))
    envelope = new_event(
        CaseApproved(
            case_no=created["case_no"],
            item_code=ITEM["item_code"],
            item_name=ITEM["name"],
            department_code=ITEM["department_code"],
            applicant_id="u-1",
            decision=decision,
        ),
        producer="approval",
    ).model_dump(mode="json")

    for _ in range(2):
        with entrypoint_waiter(intake, "on_case_approved"):
            dispatch_event("approval", envelope)

    case = cases.find_one({"_id": created["case_no"]})
    assert case["status"] == "approved"
    assert [t["status"] for t in case["timeline"]] == ["submitted", "approved"]


def test_an_automatic_decision_after_a_withdrawal_is_neither_taken_nor_announced(intake, container_factory, cases):
    announced = event_recorder("intake", "case.approved.v1")
    container_factory(announced).start()
    with ServiceRpcClient("intake") as client:
        created = client.submit_case(PRINCIPAL, GOOD)
        client.withdraw_case(PRINCIPAL, created["case_no"])
        second = client.submit_case(PRINCIPAL, GOOD)
    decision = Decision(outcome="approved", decided_by="auto", reason="ok", decided_at=datetime.now(UTC))

    def approved(case_no: str) -> dict:
        payload = CaseApproved(
            case_no=case_no,
            item_code=ITEM["item_code"],
            item_name=ITEM["name"],
            department_code=ITEM["department_code"],
            applicant_id="u-1",
            decision=decision,
        )
        return new_event(payload, producer="approval").model_dump(mode="json")

    for case_no in (created["case_no"], second["case_no"]):
        with entrypoint_waiter(intake, "on_case_approved"):
            dispatch_event("approval", approved(case_no))

    assert cases.find_one({"_id": created["case_no"]})["status"] == "withdrawn"
    assert cases.find_one({"_id": second["case_no"]})["status"] == "approved"
    # Only the decision the case took is announced (identity and notification listen to this).
    eventually(lambda: announced.events, what="intake's announcement of the second decision")
    assert [e["payload"]["case_no"] for e in announced.events] == [second["case_no"]]
    assert announced.events[0]["producer"] == "intake"


def test_a_withdrawal_sent_again_under_its_key_is_answered_not_refused(intake, container_factory, cases):
    # The key is kept in the transition's own write (a dotted field the document server must take).
    announced = event_recorder("intake", "case.withdrawn.v1")
    container_factory(announced).start()
    with ServiceRpcClient("intake") as client:
        created = client.submit_case(PRINCIPAL, GOOD)
        first = client.withdraw_case(PRINCIPAL, created["case_no"], "w-1")
        again = client.withdraw_case(PRINCIPAL, created["case_no"], "w-1")
        with pytest.raises(Conflict):
            client.withdraw_case(PRINCIPAL, created["case_no"], "w-2")
    assert first == again and again["status"] == "withdrawn"
    stored = cases.find_one({"_id": created["case_no"]})
    assert list(stored["commands"].values()) and [e["status"] for e in stored["timeline"]].count("withdrawn") == 1
    eventually(lambda: announced.events, what="the withdrawal's announcement")
    assert len(announced.events) == 1


def test_relay_publishes_events_left_behind_by_a_crash(intake, container_factory, cases):
    recorder = event_recorder("intake", "case.submitted.v1")
    container_factory(recorder).start()
    now = datetime.now(UTC)
    event = new_event(
        CaseSubmitted(
            case_no="X-1",
            item_code=ITEM["item_code"],
            item_version=1,
            item_name=ITEM["name"],
            department_code=ITEM["department_code"],
            applicant_id="u-1",
            form={},
            material_codes=[],
            submitted_at=now,
        ),
        producer="intake",
    )
    # As if the process died after the write, before it synced the read models and published.
    store = IntakeStore(cases.database)
    case = {
        "_id": "X-1",
        "case_no": "X-1",
        "item_code": ITEM["item_code"],
        "item_name": ITEM["name"],
        "department_code": ITEM["department_code"],
        "status": "submitted",
        "applicant": {"user_id": "u-1", "name": "张三"},
        "submitted_at": now,
        "version": 1,
    }
    cases.insert_one({**case, **store.outbox.fields("X-1", [event])})
    store.outbox.markers.update_one({"_id": event.event_id}, {"$set": {"at": now - timedelta(minutes=1)}})

    eventually(lambda: recorder.events, timeout=15, what="the relayed event")
    assert recorder.events[0]["event_id"] == event.event_id
    # The relay finished the writer's work first: the applicant's list has the case.
    rows, total = store.list_for_applicant("u-1", None, 0, 10)
    assert total == 1 and rows[0]["case_no"] == "X-1"
    assert eventually(lambda: cases.find_one({"_id": "X-1"})["outbox"] == {})
    assert eventually(lambda: store.outbox.markers.count_documents({}) == 0, timeout=10)


def test_a_poison_event_is_dead_lettered_not_dropped(intake):
    bad = {
        "event_id": "0123456789abcdef",
        "type": "case.approved.v1",
        "occurred_at": "2026-01-01T00:00:00Z",
        "producer": "approval",
        "payload": {"case_no": "nothing else"},
    }
    with entrypoint_waiter(intake, "on_case_approved"):
        dispatch_event("approval", bad)
    source = "evt-approval-case.approved.v1--intake.on_case_approved"
    queue = dead_letter_queue_name(source)
    assert eventually(lambda: queue_depth(current_vhost(), queue) == 1, timeout=15, what="the dead letter")
    declared = queue_info(current_vhost(), source)
    assert declared["durable"] is True
    assert declared["arguments"]["x-dead-letter-exchange"] == "yiwang.dead-letter"


def test_certificates_offered_as_materials_are_checked_with_identity(intake, cases):
    form = {"registered_capital": 10, "business_scope": "软件开发"}

    def submit(certificate_id):
        materials = [{"code": "name_reservation", "certificate_id": certificate_id}]
        with ServiceRpcClient("intake") as client:
            return client.submit_case(
                PRINCIPAL, {"item_code": BUSINESS["item_code"], "form": form, "materials": materials}
            )

    with pytest.raises(ValidationFailed) as stolen:
        submit("name_reservation:C-9")
    assert stolen.value.details == [{"field": "materials.0.certificate_id", "issue": "no such certificate of yours"}]
    assert cases.count_documents({}) == 0
    assert submit("name_reservation:C-0")["status"] == "submitted"


def test_deadline_warning_and_overdue_are_emitted_once_even_with_two_checkers(intake, container_factory, cases):
    from services.intake.cases import local_date, now_utc
    from services.intake.workdays import next_working_day

    warnings = event_recorder("intake", "case.deadline_warning.v1")
    overdue = event_recorder("intake", "case.overdue.v1")
    container_factory(warnings).start()
    container_factory(overdue).start()
    today = local_date(now_utc())
    base = {
        "item_code": ITEM["item_code"],
        "item_name": ITEM["name"],
        "department_code": ITEM["department_code"],
        "applicant": {"user_id": "u-1", "name": "张三"},
        "status": "accepted",
        "submitted_at": datetime(2026, 11, 2, 8, tzinfo=UTC),
        "idempotency_key": None,
    }
    cases.insert_one(
        {
            **base,
            "_id": "W-1",
            "case_no": "W-1",
            "deadline": next_working_day(today).isoformat(),
            "idempotency_key": "none:W-1",
        }
    )
    cases.insert_one({**base, "_id": "O-1", "case_no": "O-1", "deadline": "2020-01-02", "idempotency_key": "none:O-1"})
    cases.insert_one({**base, "_id": "F-1", "case_no": "F-1", "deadline": "2099-01-01", "idempotency_key": "none:F-1"})
    cases.insert_one(
        {
            **base,
            "_id": "S-1",
            "case_no": "S-1",
            "deadline": "2020-01-02",
            "status": "supplement_requested",
            "idempotency_key": "none:S-1",
        }
    )

    store = IntakeStore(cases.database)
    for case_no in ("W-1", "O-1", "F-1", "S-1"):
        store.sync_views(case_no)  # as every write does: running cases enter the deadline index
    assert set(store.watched_days()) == {next_working_day(today).isoformat(), "2020-01-02", "2099-01-01"}

    with ServiceRpcClient("intake") as client:
        replies = [client.check_deadlines.call_async() for _ in range(3)]  # several checkers at once
        results = [r.result() for r in replies]
    assert sum(r["deadline_warned"] for r in results) == 2  # W-1, and O-1 whose deadline is long past
    assert sum(r["overdue"] for r in results) == 1
    eventually(lambda: len(warnings.events) == 2 and len(overdue.events) == 1, what="warning and overdue events")
    assert {e["payload"]["case_no"] for e in warnings.events} == {"W-1", "O-1"}
    assert overdue.events[0]["payload"]["case_no"] == "O-1"
    with ServiceRpcClient("intake") as client:
        assert client.check_deadlines() == {"deadline_warned": 0, "overdue": 0}  # flagged once, for good
    # O-1 is done with; W-1 waits for its overdue flag, F-1 for its day.
    assert set(store.watched_days()) == {next_working_day(today).isoformat(), "2099-01-01"}
    assert store.watched(next_working_day(today).isoformat()) == ["W-1"]
