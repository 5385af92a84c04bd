from datetime import UTC, datetime, timedelta
from unittest.mock import MagicMock

import pytest
from nameko.testing.services import worker_factory

from contracts.envelope import Envelope, new_event, parse_event
from contracts.events import CaseApproved, CaseRejected, CaseReviewRequired, CaseSubmitted
from contracts.identity import ApplicantProfile
from services.approval.service import ApprovalService
from services.catalog.seed_data import seed_items
from services.common.consuming import ATTEMPT_HEADER, Delivery, DeliveryAttempt, PoisonMessage
from services.common.errors import NotFound, Unavailable
from services.common.item_versions import ItemVersionCache


def seed_item(code):
    """A seed item by the end of its code (the catalog grows: never by position)."""
    [guide] = [i for i in seed_items() if i["item_code"].endswith(code)]
    return guide


ALLOWANCE = {**seed_item("MZ-GF-0001"), "version": 3}
ID_CARD_RENEWAL = {**seed_item("GA-QR-0001"), "version": 1}  # automatic approval disabled


def applicant(**overrides):
    return {
        "user_id": "u-citizen",
        "account_type": "citizen",
        "name": "张三",
        "age": 85,
        "gender": "male",
        "region_code": "620524",
        "assurance_level": 1,
        "certificates": [],
        **overrides,
    }


def submitted_event(published=ALLOWANCE, profile=None, form=None):
    return new_event(
        CaseSubmitted(
            case_no="620524MZ-20261123-000007",
            item_code=published["item_code"],
            item_version=published["version"],
            item_name=published["name"],
            department_code=published["department_code"],
            applicant_id="u-citizen",
            form=form or {"bank_account": "6222020200112233445", "contact_phone": "13800138000"},
            material_codes=[],
            submitted_at=datetime(2026, 11, 23, 2, 0, tzinfo=UTC),
            applicant=profile,
        ),
        producer="intake",
    )


def rpc_returns(method, value):
    method.call_async.return_value.result.return_value = value


@pytest.fixture
def store():
    store = MagicMock()
    store.has_decided.return_value = False
    store.record.return_value = True
    return store


@pytest.fixture
def catalog():
    catalog = MagicMock()
    rpc_returns(catalog.get_item, ALLOWANCE)
    return catalog


@pytest.fixture
def identity():
    identity = MagicMock()
    rpc_returns(identity.applicant_profile, applicant())
    return identity


@pytest.fixture
def events():
    return MagicMock()


@pytest.fixture
def service(store, catalog, identity, events):
    return worker_factory(
        ApprovalService,
        store=store,
        catalog=catalog,
        identity=identity,
        events=events,
        item_versions=ItemVersionCache(),
        delivery=DeliveryAttempt(1, last=False),
    )


def _recorded(store):
    case_no, source_event_id, outcome, event = store.record.call_args.args
    return case_no, source_event_id, outcome, event


def test_approved_outcome_is_recorded_and_published(service, store, catalog, identity, events):
    incoming = submitted_event()
    service.on_case_submitted(incoming.model_dump(mode="json"))

    # The rules of the version the case was submitted under.
    catalog.get_item.call_async.assert_called_once_with(ALLOWANCE["item_code"], 3)
    identity.applicant_profile.call_async.assert_called_once_with("u-citizen")

    store.record.assert_called_once()
    case_no, source_event_id, outcome, event = _recorded(store)
    assert case_no == "620524MZ-20261123-000007"
    assert source_event_id == incoming.event_id
    assert isinstance(event, Envelope)
    assert event.type == "case.approved.v1"
    assert event.producer == "approval"
    assert event.payload == outcome
    _, payload = parse_event(event.model_dump(mode="json"))
    assert isinstance(payload, CaseApproved)
    assert payload.decision.decided_by == "auto"
    assert payload.decision.rule_set_version == 3
    assert payload.case_no == case_no

    events.publish.assert_called_once_with(store.outbox, case_no, [event])


def test_approval_event_tells_identity_which_certificate_to_issue(service, store, catalog, events):
    reservation = {**seed_item("SC-XK-0001"), "version": 3}
    reservation["auto_approval"] = {
        "enabled": True,
        "rules": [{"id": "ok", "description": "总是", "expression": "true"}],
    }
    rpc_returns(catalog.get_item, reservation)
    # An open schema would let a line of the applicant's own onto the certificate: only declared fields go.
    form = {"proposed_name": "临潭县某某商贸有限公司", "industry": "批发业", "holder_note": "特许经营，免检"}
    service.on_case_submitted(submitted_event(reservation, form=form).model_dump(mode="json"))
    *_, event = _recorded(store)
    _, payload = parse_event(event.model_dump(mode="json"), expected=CaseApproved)
    assert payload.issues_certificate.model_dump() == reservation["issues_certificate"]
    assert payload.form == {"proposed_name": "临潭县某某商贸有限公司", "industry": "批发业"}


def test_rejected_outcome(service, store, identity, events):
    rpc_returns(identity.applicant_profile, applicant(age=72))
    service.on_case_submitted(submitted_event().model_dump(mode="json"))
    *_, event = _recorded(store)
    assert event.type == "case.rejected.v1"
    _, payload = parse_event(event.model_dump(mode="json"))
    assert isinstance(payload, CaseRejected)
    assert payload.decision.outcome == "rejected"
    assert payload.decision.reason == "不符合条件：申请人年满80周岁"
    events.publish.assert_called_once()


def test_review_required_outcome(service, store, identity, events):
    rpc_returns(identity.applicant_profile, applicant(region_code="110105"))
    service.on_case_submitted(submitted_event().model_dump(mode="json"))
    *_, event = _recorded(store)
    assert event.type == "case.review_required.v1"
    _, payload = parse_event(event.model_dump(mode="json"))
    assert isinstance(payload, CaseReviewRequired)
    assert [r.result for r in payload.explanation] == ["passed", "failed"]
    assert payload.rule_set_version == 3
    events.publish.assert_called_once()


def test_item_without_automatic_approval_goes_to_review(service, store, catalog):
    rpc_returns(catalog.get_item, ID_CARD_RENEWAL)
    service.on_case_submitted(submitted_event(ID_CARD_RENEWAL).model_dump(mode="json"))
    _, _, outcome, event = _recorded(store)
    assert event.type == "case.review_required.v1"
    assert outcome["explanation"] == []


def test_the_store_is_not_asked_before_deciding(service, store, events):
    # One read less per case: a redelivery is caught by `record` (the decision's _id is the case).
    service.on_case_submitted(submitted_event().model_dump(mode="json"))
    store.has_decided.assert_not_called()
    store.record.assert_called_once()
    events.publish.assert_called_once()


def test_concurrent_duplicate_is_not_published_twice(service, store, events):
    store.record.return_value = False  # another worker stored the decision first
    service.on_case_submitted(submitted_event().model_dump(mode="json"))
    store.record.assert_called_once()
    events.publish.assert_not_called()


def test_same_event_twice_gives_one_decision(service, store, events):
    decided = []
    # As the real store: the second insert of a case's decision finds it there.
    store.record.side_effect = lambda case_no, *a: case_no not in decided and not decided.append(case_no)
    body = submitted_event().model_dump(mode="json")
    service.on_case_submitted(body)
    service.on_case_submitted(body)
    assert decided == ["620524MZ-20261123-000007"]
    assert events.publish.call_count == 1


@pytest.mark.parametrize("exc", [NotFound("no published item"), Unavailable("catalog did not answer")])
def test_catalog_failure_propagates_for_retry(service, store, catalog, events, exc):
    catalog.get_item.call_async.return_value.result.side_effect = exc
    with pytest.raises(type(exc)):
        service.on_case_submitted(submitted_event().model_dump(mode="json"))
    store.record.assert_not_called()
    events.publish.assert_not_called()


def test_a_case_whose_rules_still_cannot_be_run_on_its_last_tries_goes_to_a_reviewer(
    service, store, catalog, events, monkeypatch
):
    # Dead-lettered instead, it sat `submitted`, on no task board, until an operator replayed it.
    monkeypatch.setenv("YIWANG_RETRY_DELAYS", "1,5,30,120,600")
    catalog.get_item.call_async.return_value.result.side_effect = Unavailable("catalog did not answer")
    incoming = submitted_event().model_dump(mode="json")
    incoming["occurred_at"] = (datetime.now(UTC) - timedelta(minutes=12)).isoformat()  # its sixth try
    service.on_case_submitted(incoming)
    _, _, _, event = _recorded(store)
    _, payload = parse_event(event.model_dump(mode="json"))
    assert isinstance(payload, CaseReviewRequired) and payload.rule_set_version is None
    [why] = payload.explanation
    assert why.rule_id == "rules_not_run" and why.result == "error" and "catalog did not answer" in why.error
    events.publish.assert_called_once_with(store.outbox, payload.case_no, [event])


def test_a_case_on_its_last_try_goes_to_a_reviewer_whatever_the_clocks_say(service, store, catalog, monkeypatch):
    # Retries that all fit in less than the hand-over's minute (or a producer's clock running
    # ahead) left the case to the dead letters, `submitted` for good.
    catalog.get_item.call_async.return_value.result.side_effect = Unavailable("catalog did not answer")
    service.delivery = DeliveryAttempt(4, last=True)
    service.on_case_submitted(submitted_event().model_dump(mode="json"))  # occurred just now
    _, payload = parse_event(_recorded(store)[3].model_dump(mode="json"))
    assert isinstance(payload, CaseReviewRequired)


def test_the_delivery_says_which_try_is_the_last(monkeypatch):
    monkeypatch.setenv("YIWANG_RETRY_DELAYS", "1,5,30")  # tries 1 to 4

    def attempt(headers):
        return Delivery().get_dependency(MagicMock(data=headers))

    assert attempt({}) == DeliveryAttempt(1, last=False)
    assert attempt({ATTEMPT_HEADER: 3}) == DeliveryAttempt(3, last=False)
    assert attempt({ATTEMPT_HEADER: 4}) == DeliveryAttempt(4, last=True)
    assert attempt({ATTEMPT_HEADER: "x"}) == DeliveryAttempt(1, last=False)


def test_the_hand_over_comes_after_most_of_the_retries(monkeypatch):
    from services.approval.deciding import time_to_hand_over

    monkeypatch.setenv("YIWANG_RETRY_DELAYS", "1,5,30,120,600")  # tries at 0, 1, 6, 36, 156, 756 s
    now = datetime.now(UTC)
    assert not time_to_hand_over(now - timedelta(seconds=156), now)  # the fifth try: retried
    assert time_to_hand_over(now - timedelta(seconds=756), now)  # the last
    monkeypatch.setenv("YIWANG_RETRY_DELAYS", "0.2,0.5")  # the tests': never within a minute
    assert not time_to_hand_over(now - timedelta(seconds=30), now)


def test_identity_failure_propagates(service, store, identity, events):
    identity.applicant_profile.call_async.return_value.result.side_effect = NotFound("no such user")
    with pytest.raises(NotFound):
        service.on_case_submitted(submitted_event().model_dump(mode="json"))
    store.record.assert_not_called()


def test_invalid_event_is_poison(service, store, catalog):
    body = submitted_event().model_dump(mode="json")
    del body["payload"]["applicant_id"]
    with pytest.raises(PoisonMessage):
        service.on_case_submitted(body)
    store.has_decided.assert_not_called()
    catalog.get_item.call_async.assert_not_called()


def test_ping_and_relay(service, store, events):
    assert service.ping() == "pong"
    service.relay_outbox()
    events.relay.assert_called_once_with(store.outbox)


def test_a_version_is_asked_of_catalog_once_per_process(service, catalog, store):
    for _ in range(3):
        service.on_case_submitted(submitted_event().model_dump(mode="json"))
    assert store.record.call_count == 3
    catalog.get_item.call_async.assert_called_once_with(ALLOWANCE["item_code"], 3)


def test_the_profile_in_the_event_is_judged_and_identity_is_not_asked(service, store, identity, events):
    # Identity would now say 85 (approved); the event holds the applicant at submission: 72 (rejected).
    rpc_returns(identity.applicant_profile, applicant(age=85))
    service.on_case_submitted(submitted_event(profile=ApplicantProfile(**applicant(age=72))).model_dump(mode="json"))
    identity.applicant_profile.call_async.assert_not_called()
    *_, event = _recorded(store)
    assert event.type == "case.rejected.v1"
