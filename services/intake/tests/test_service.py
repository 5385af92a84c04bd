from datetime import UTC, date, datetime, timedelta
from unittest.mock import MagicMock

import pytest
from nameko.testing.services import worker_factory

from contracts.cases import CaseCreated, CaseView, Decision, RuleResult, SubmitCase
from contracts.common import Principal
from contracts.envelope import Envelope, new_event, parse_event
from contracts.events import CaseApproved, CaseRejected, CaseReviewRequired, CaseWithdrawn, CertificateIssued
from services.catalog.seed_data import seed_items
from services.common.consuming import PoisonMessage
from services.common.errors import Conflict, NotFound, Unavailable, ValidationFailed
from services.intake import cases, lifecycle
from services.intake.latest_items import LatestItemCache
from services.intake.service import AUTO_DECIDABLE, IntakeService

CITIZEN = {"user_id": "u-citizen", "account_type": "citizen", "roles": ["applicant"], "department_code": None}
ENTERPRISE = {"user_id": "u-ent", "account_type": "enterprise", "roles": ["applicant"]}
GOOD_FORM = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Beijing


def item(code, **overrides):
    """A seed item by the end of its code (the catalog grows: never by position)."""
    [guide] = [i for i in seed_items() if i["item_code"].endswith(code)]
    return {**guide, "version": 2, **overrides}


ALLOWANCE = item("MZ-GF-0001")
WITH_MATERIALS = item(
    "GA-QR-0001",
    materials=[
        {"code": "id_card", "name": "居民身份证", "required": True},
        {"code": "photo", "name": "数码照片回执", "required": False},
    ],
)


def profile(user_id, name):
    return {
        "user_id": user_id,
        "account_type": "citizen",
        "name": name,
        "age": 85,
        "gender": "male",
        "region_code": "620524",
        "assurance_level": 1,
        "certificates": [],
    }


def rpc_returns(method, value):
    method.call_async.return_value.result.return_value = value


def rpc_raises(method, exc):
    method.call_async.return_value.result.side_effect = exc


@pytest.fixture
def store():
    store = MagicMock()
    store.next_sequence.return_value = 7
    store.insert_case.return_value = True
    store.by_idempotency_key.return_value = None
    store.claim_key.side_effect = lambda key, case_no, request_hash: {"case_no": case_no, "request_hash": request_hash}
    store.get.return_value = None
    store.list_for_applicant.return_value = ([], 0)
    # Every document offered in these tests is the applicant's own complete upload.
    store.owned_documents.side_effect = lambda owner, ids: set(ids)
    return store


@pytest.fixture
def catalog():
    catalog = MagicMock()
    rpc_returns(catalog.get_item, ALLOWANCE)
    return catalog


@pytest.fixture
def identity():
    identity = MagicMock()
    rpc_returns(identity.applicant_profile, profile("u-citizen", "张三"))
    return identity


@pytest.fixture
def events():
    return MagicMock()


@pytest.fixture
def service(store, catalog, identity, events, monkeypatch):
    monkeypatch.setattr(cases, "now_utc", lambda: NOW)
    return worker_factory(
        IntakeService,
        store=store,
        catalog=catalog,
        identity=identity,
        events=events,
        latest_items=LatestItemCache(),  # the real cache: it asks the catalog stand-in
    )


def submission(**overrides):
    return {"item_code": ALLOWANCE["item_code"], "form": GOOD_FORM, "materials": [], **overrides}


def assert_nothing_stored(store, events):
    store.next_sequence.assert_not_called()
    store.insert_case.assert_not_called()
    events.publish.assert_not_called()


# --- submit_case --------------------------------------------------------------------------------


def test_valid_submission_stores_the_case_with_its_event_and_publishes(service, store, catalog, events):
    result = service.submit_case(CITIZEN, submission())

    created = CaseCreated.model_validate(result)
    assert created.case_no == "620524MZ-20261123-000007"
    assert created.status == "submitted"
    assert created.item_code == ALLOWANCE["item_code"]
    assert created.item_version == 2
    assert created.submitted_at == NOW

    catalog.get_item.call_async.assert_called_once_with(ALLOWANCE["item_code"])
    store.next_sequence.assert_called_once_with("620524MZ-20261123")

    store.insert_case.assert_called_once()
    doc, stored_events = store.insert_case.call_args.args
    assert doc["_id"] == created.case_no
    assert doc["applicant"] == {"user_id": "u-citizen", "name": "张三"}
    assert doc["form"] == GOOD_FORM
    assert doc["status"] == "submitted"
    assert doc["version"] == 1
    assert doc["awaiting_review"] is False
    # Without a header every case still gets a unique key (the server has no partial indexes).
    assert doc["idempotency_key"] == f"none:{created.case_no}"
    assert doc["request_hash"] == cases.request_hash(SubmitCase.model_validate(submission()))
    assert "replayed" not in result
    store.by_idempotency_key.assert_not_called()
    [event] = stored_events
    assert isinstance(event, Envelope)
    assert event.type == "case.submitted.v1"
    assert event.producer == "intake"
    assert event.payload["case_no"] == created.case_no
    assert event.payload["applicant_id"] == "u-citizen"
    assert event.payload["item_version"] == 2

    events.publish.assert_called_once_with(store.outbox, created.case_no, [event])


def test_the_case_is_stored_before_it_is_announced(service, store, events):
    order = []
    store.insert_case.side_effect = lambda *a: order.append("insert") or True
    events.publish.side_effect = lambda *a: order.append("publish")
    service.submit_case(CITIZEN, submission())
    assert order == ["insert", "publish"]


def test_the_applicant_as_identity_knows_them_is_stored_and_announced(service, identity, store):
    service.submit_case(CITIZEN, submission())
    identity.applicant_profile.call_async.assert_called_once_with("u-citizen")
    doc, events = store.insert_case.call_args.args
    assert doc["applicant"] == {"user_id": "u-citizen", "name": "张三"}
    _, payload = parse_event(events[0].model_dump(mode="json"))
    assert payload.applicant.model_dump() == profile("u-citizen", "张三")


def test_invalid_form_lists_every_violation(service, store, events):
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, submission(form={"bank_account": "12", "nickname": "x"}))
    fields = sorted(d["field"] for d in info.value.details)
    assert fields == ["form", "form.bank_account", "form.contact_phone"]
    assert all(d["issue"] for d in info.value.details)
    assert_nothing_stored(store, events)


def test_wrong_applicant_type(service, store, events):
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(ENTERPRISE, submission())
    assert [d["field"] for d in info.value.details] == ["item_code"]
    assert_nothing_stored(store, events)


def test_unknown_material(service, catalog, store, events):
    rpc_returns(catalog.get_item, WITH_MATERIALS)
    materials = [{"code": "id_card", "document_id": "d1"}, {"code": "passport", "document_id": "d2"}]
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, submission(item_code=WITH_MATERIALS["item_code"], form={}, materials=materials))
    assert [d["field"] for d in info.value.details] == ["materials.1.code"]
    assert_nothing_stored(store, events)


def test_missing_required_material(service, catalog, store, events):
    rpc_returns(catalog.get_item, WITH_MATERIALS)
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(
            CITIZEN,
            submission(
                item_code=WITH_MATERIALS["item_code"], form={}, materials=[{"code": "photo", "document_id": "d"}]
            ),
        )
    assert [d["field"] for d in info.value.details] == ["materials"]
    assert "id_card" in info.value.details[0]["issue"]
    assert_nothing_stored(store, events)


def test_duplicate_material(service, catalog, store, events):
    rpc_returns(catalog.get_item, WITH_MATERIALS)
    materials = [{"code": "id_card", "document_id": "d1"}, {"code": "id_card", "document_id": "d2"}]
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, submission(item_code=WITH_MATERIALS["item_code"], form={}, materials=materials))
    assert [d["field"] for d in info.value.details] == ["materials"]
    assert_nothing_stored(store, events)


WITH_CERTIFICATE = item(
    "GA-QR-0001",
    materials=[
        {"code": "id_card", "name": "居民身份证", "required": True},
        {
            "code": "household_register",
            "name": "居民户口簿",
            "required": True,
            "source": "certificate",
            "certificate_type": "household_register",
        },
    ],
)
CERTIFICATE_MATERIALS = [
    {"code": "id_card", "document_id": "d1"},
    {"code": "household_register", "certificate_id": "c1"},
]


def _certificate_submission():
    return submission(item_code=WITH_CERTIFICATE["item_code"], form={}, materials=CERTIFICATE_MATERIALS)


def test_offered_certificates_are_checked_with_identity(service, catalog, identity, store):
    rpc_returns(catalog.get_item, WITH_CERTIFICATE)
    rpc_returns(
        identity.check_certificates,
        [{"certificate_id": "c1", "owned": True, "valid": True, "type": "household_register"}],
    )
    service.submit_case(CITIZEN, _certificate_submission())
    identity.check_certificates.call_async.assert_called_once_with("u-citizen", ["c1"])
    doc, _ = store.insert_case.call_args.args
    assert doc["materials"] == CERTIFICATE_MATERIALS


def test_identity_is_not_asked_when_no_certificate_is_offered(service, identity):
    service.submit_case(CITIZEN, submission())
    identity.check_certificates.call_async.assert_not_called()


@pytest.mark.parametrize(
    "answer",
    [
        {"certificate_id": "c1", "owned": False, "valid": False, "type": None},
        {"certificate_id": "c1", "owned": True, "valid": False, "type": "household_register"},
        {"certificate_id": "c1", "owned": True, "valid": True, "type": "business_licence"},
    ],
    ids=["not-theirs", "expired", "wrong-type"],
)
def test_a_certificate_identity_does_not_vouch_for_is_refused(service, catalog, identity, store, events, answer):
    rpc_returns(catalog.get_item, WITH_CERTIFICATE)
    rpc_returns(identity.check_certificates, [answer])
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, _certificate_submission())
    assert [d["field"] for d in info.value.details] == ["materials.1.certificate_id"]
    assert_nothing_stored(store, events)


def test_material_needs_exactly_one_source(service, catalog, store, events):
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, submission(materials=[{"code": "household_register"}]))
    assert info.value.details[0]["field"].startswith("materials.0")
    catalog.get_item.call_async.assert_not_called()
    assert_nothing_stored(store, events)


def test_unknown_item_is_not_found(service, catalog, store, events):
    rpc_raises(catalog.get_item, NotFound("no published item 62052400MZ-GF-9999"))
    with pytest.raises(NotFound):
        service.submit_case(CITIZEN, submission(item_code="62052400MZ-GF-9999"))
    assert_nothing_stored(store, events)


@pytest.mark.parametrize("code", ["", "   ", "X" * 65])
def test_a_code_no_item_can_have_is_not_found_without_asking_catalog(service, catalog, store, events, code):
    with pytest.raises(NotFound):
        service.submit_case(CITIZEN, submission(item_code=code))
    catalog.get_item.call_async.assert_not_called()
    assert_nothing_stored(store, events)


def test_catalog_unavailable(service, catalog, store, events):
    rpc_raises(catalog.get_item, Unavailable("catalog.get_item did not answer in 10s"))
    with pytest.raises(Unavailable):
        service.submit_case(CITIZEN, submission())
    assert_nothing_stored(store, events)


@pytest.mark.parametrize(
    "payload",
    [
        {"form": GOOD_FORM},
        {"item_code": 62052400, "form": GOOD_FORM},
        {"item_code": ALLOWANCE["item_code"], "form": {"$where": "1"}},
        {"item_code": ALLOWANCE["item_code"], "form": {"a.b": 1}},
        {"item_code": ALLOWANCE["item_code"], "form": GOOD_FORM, "unexpected": True},
    ],
    ids=["no-item", "item-code-not-a-string", "dollar-key", "dotted-key", "extra-field"],
)
def test_malformed_request_is_refused_before_any_call(service, catalog, store, events, payload):
    with pytest.raises(ValidationFailed):
        service.submit_case(CITIZEN, payload)
    catalog.get_item.call_async.assert_not_called()
    assert_nothing_stored(store, events)


def test_invalid_principal_is_refused(service, catalog, store, events):
    with pytest.raises(ValidationFailed):
        service.submit_case({"user_id": "u"}, submission())
    catalog.get_item.call_async.assert_not_called()
    assert_nothing_stored(store, events)


def test_publish_failure_still_answers(service, store, events):
    # Publisher.publish logs and leaves the event for the relay; it does not raise.
    events.publish.return_value = 0
    assert service.submit_case(CITIZEN, submission())["case_no"] == "620524MZ-20261123-000007"


def test_case_number_uses_the_date_in_china(service, store, monkeypatch):
    monkeypatch.setattr(cases, "now_utc", lambda: datetime(2026, 11, 22, 23, 30, tzinfo=UTC))
    result = service.submit_case(CITIZEN, submission())
    assert result["case_no"] == "620524MZ-20261123-000007"
    store.next_sequence.assert_called_once_with("620524MZ-20261123")


# --- submit_case with an Idempotency-Key ---------------------------------------------------------


def test_first_submission_with_a_key_stores_the_key_per_applicant(service, store, catalog, events):
    result = service.submit_case(CITIZEN, submission(), "retry-1")
    store.by_idempotency_key.assert_called_once_with("u-citizen:retry-1")
    doc, _ = store.insert_case.call_args.args
    assert doc["idempotency_key"] == "u-citizen:retry-1"
    assert doc["request_hash"] == cases.request_hash(SubmitCase.model_validate(submission()))
    assert result["replayed"] is False
    assert CaseCreated.model_validate({k: v for k, v in result.items() if k != "replayed"}).case_no == doc["_id"]
    catalog.get_item.call_async.assert_called_once()
    events.publish.assert_called_once()


def test_a_retry_with_the_same_key_and_body_replays_without_calling_anyone(service, store, catalog, identity, events):
    first = service.submit_case(CITIZEN, submission(), "retry-1")
    stored = store.insert_case.call_args.args[0]
    store.reset_mock()
    catalog.reset_mock()
    identity.reset_mock()
    events.reset_mock()
    store.by_idempotency_key.return_value = stored

    again = service.submit_case(CITIZEN, submission(), "retry-1")

    assert again == {**first, "replayed": True}
    store.by_idempotency_key.assert_called_once_with("u-citizen:retry-1")
    catalog.get_item.call_async.assert_not_called()
    identity.applicant_profile.call_async.assert_not_called()
    identity.check_certificates.call_async.assert_not_called()
    assert_nothing_stored(store, events)


def test_the_same_key_with_another_body_is_a_conflict(service, store, catalog, events):
    service.submit_case(CITIZEN, submission(), "retry-1")
    stored = store.insert_case.call_args.args[0]
    store.reset_mock()
    events.reset_mock()
    catalog.reset_mock()
    store.by_idempotency_key.return_value = stored
    other = submission(form={**GOOD_FORM, "contact_phone": "13900139000"})
    with pytest.raises(Conflict):
        service.submit_case(CITIZEN, other, "retry-1")
    catalog.get_item.call_async.assert_not_called()
    assert_nothing_stored(store, events)


def test_losing_a_concurrent_insert_replays_the_winner(service, store, events):
    # Both requests found no earlier case; the other one won the unique index.
    winner = {
        "_id": "620524MZ-20261123-000006",
        "case_no": "620524MZ-20261123-000006",
        "status": "submitted",
        "item_code": ALLOWANCE["item_code"],
        "item_version": 2,
        "submitted_at": NOW,
        "request_hash": cases.request_hash(SubmitCase.model_validate(submission())),
    }
    store.by_idempotency_key.side_effect = [None, winner]
    store.insert_case.return_value = False
    result = service.submit_case(CITIZEN, submission(), "retry-1")
    assert result["case_no"] == "620524MZ-20261123-000006"
    assert result["replayed"] is True
    assert store.by_idempotency_key.call_args_list[-1].args == ("u-citizen:retry-1",)
    events.publish.assert_not_called()  # the winner announces its own case


def test_losing_a_concurrent_insert_with_another_body_is_a_conflict(service, store, events):
    winner = {
        "case_no": "620524MZ-20261123-000006",
        "status": "submitted",
        "item_code": ALLOWANCE["item_code"],
        "item_version": 2,
        "submitted_at": NOW,
        "request_hash": "0" * 64,
    }
    store.by_idempotency_key.side_effect = [None, winner]
    store.insert_case.return_value = False
    with pytest.raises(Conflict):
        service.submit_case(CITIZEN, submission(), "retry-1")
    events.publish.assert_not_called()


def test_a_key_claimed_by_a_request_that_died_gets_that_requests_case_number(service, store, events):
    # The earlier request claimed the key and died before storing its case: the retry stores it.
    body_hash = cases.request_hash(SubmitCase.model_validate(submission()))
    store.claim_key.side_effect = None
    store.claim_key.return_value = {"case_no": "620524MZ-20261122-000003", "request_hash": body_hash}
    result = service.submit_case(CITIZEN, submission(), "retry-1")
    assert store.claim_key.call_args.args == ("u-citizen:retry-1", "620524MZ-20261123-000007", body_hash)
    doc, _ = store.insert_case.call_args.args
    assert doc["_id"] == doc["case_no"] == result["case_no"] == "620524MZ-20261122-000003"
    assert result["replayed"] is False


def test_a_key_claimed_for_another_body_is_a_conflict_before_anything_is_stored(service, store, events):
    store.claim_key.side_effect = None
    store.claim_key.return_value = {"case_no": "620524MZ-20261122-000003", "request_hash": "0" * 64}
    with pytest.raises(Conflict):
        service.submit_case(CITIZEN, submission(), "retry-1")
    store.insert_case.assert_not_called()
    events.publish.assert_not_called()


def test_a_submission_without_a_key_claims_nothing(service, store):
    service.submit_case(CITIZEN, submission())
    store.claim_key.assert_not_called()


@pytest.mark.parametrize("header", ["", "   ", "k" * 201])
def test_a_bad_idempotency_key_is_refused_before_any_call(service, catalog, store, events, header):
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, submission(), header)
    assert [d["field"] for d in info.value.details] == ["Idempotency-Key"]
    catalog.get_item.call_async.assert_not_called()
    store.by_idempotency_key.assert_not_called()
    assert_nothing_stored(store, events)


def test_two_applicants_may_choose_the_same_key(service, store, identity):
    service.submit_case(CITIZEN, submission(), "same")
    rpc_returns(identity.applicant_profile, profile("u-other", "李四"))
    other = {**CITIZEN, "user_id": "u-other"}
    service.submit_case(other, submission(), "same")
    keys = [c.args[0]["idempotency_key"] for c in store.insert_case.call_args_list]
    assert keys == ["u-citizen:same", "u-other:same"]


# --- get_case / list_cases ----------------------------------------------------------------------


@pytest.fixture
def stored_case(service, store):
    service.submit_case(CITIZEN, submission())
    doc = store.insert_case.call_args.args[0]
    store.get.return_value = doc
    return doc


def test_unknown_case_is_not_found(service, store):
    with pytest.raises(NotFound):
        service.get_case(CITIZEN, "620524MZ-20261123-000099")


def test_stranger_gets_the_same_404_as_for_a_missing_case(service, store, stored_case):
    stranger = {"user_id": "someone", "account_type": "citizen", "roles": ["applicant"]}
    with pytest.raises(NotFound) as hidden:
        service.get_case(stranger, stored_case["case_no"])
    store.get.return_value = None
    with pytest.raises(NotFound) as missing:
        service.get_case(stranger, stored_case["case_no"])
    assert hidden.value.message == missing.value.message


@pytest.mark.parametrize(
    "reader",
    [
        CITIZEN,
        {"user_id": "r1", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524MZ"},
        {"user_id": "s1", "account_type": "staff", "roles": ["supervisor"]},
        {"user_id": "a1", "account_type": "staff", "roles": ["admin"]},
    ],
    ids=["applicant", "reviewer-of-department", "supervisor", "admin"],
)
def test_allowed_readers_see_the_case(service, stored_case, reader):
    view = CaseView.model_validate(service.get_case(reader, stored_case["case_no"]))
    assert view.case_no == stored_case["case_no"]
    assert view.applicant.user_id == "u-citizen"
    assert view.status == "submitted"
    assert view.decision is None


def test_reviewer_of_another_department_gets_404(service, stored_case):
    reviewer = {"user_id": "r2", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524GA"}
    with pytest.raises(NotFound):
        service.get_case(reviewer, stored_case["case_no"])


def test_case_view_is_json(service, stored_case):
    view = service.get_case(CITIZEN, stored_case["case_no"])
    assert view["submitted_at"] == "2026-11-23T02:00:00Z"
    assert view["deadline"] == "2026-11-30"
    assert "applied_events" not in view


def test_list_cases_pages_the_callers_cases(service, store, stored_case):
    store.list_for_applicant.return_value = ([stored_case], 21)
    result = service.list_cases(CITIZEN, "submitted", {"page": 3, "page_size": 10})
    store.list_for_applicant.assert_called_once_with("u-citizen", "submitted", 20, 10)
    assert result["total"] == 21
    assert result["page"] == 3
    assert result["page_size"] == 10
    assert [r["case_no"] for r in result["items"]] == [stored_case["case_no"]]
    assert set(result["items"][0]) == {"case_no", "item_code", "item_name", "status", "submitted_at", "deadline"}


def test_list_cases_defaults(service, store):
    result = service.list_cases(CITIZEN, None, {})
    store.list_for_applicant.assert_called_once_with("u-citizen", None, 0, 20)
    assert result == {"items": [], "total": 0, "page": 1, "page_size": 20}


@pytest.mark.parametrize("page", [{"page": 0}, {"page_size": 101}, {"page_size": 0}, {"page": "x"}])
def test_list_cases_refuses_bad_paging(service, store, page):
    with pytest.raises(ValidationFailed):
        service.list_cases(CITIZEN, None, page)
    store.list_for_applicant.assert_not_called()


def test_ping(service, store):
    assert service.ping() == "pong"


# --- decisions from approval --------------------------------------------------------------------


def _decision(outcome="approved", reason="all automatic approval rules passed"):
    return Decision(outcome=outcome, decided_by="auto", reason=reason, rule_set_version=2, decided_at=NOW)


def _common():
    return {
        "case_no": "620524MZ-20261123-000007",
        "item_code": ALLOWANCE["item_code"],
        "item_name": "高龄津贴申领",
        "department_code": "620524MZ",
        "applicant_id": "u-citizen",
    }


@pytest.mark.parametrize(
    ("handler", "model", "status"),
    [("on_case_approved", CaseApproved, "approved"), ("on_case_rejected", CaseRejected, "rejected")],
)
def test_decision_is_applied_once_by_event_id(service, store, handler, model, status):
    decision = _decision(status, "理由")
    event = new_event(model(**_common(), decision=decision), producer="approval")
    getattr(service, handler)(event.model_dump(mode="json"))
    store.apply_event.assert_called_once()
    case_no, event_id, allowed_from, set_fields, entry, [taken] = store.apply_event.call_args.args
    assert case_no == "620524MZ-20261123-000007"
    assert event_id == event.event_id
    # Once a person has acted on the case (accepted, asked for more), automatic decisions no longer land.
    assert allowed_from == AUTO_DECIDABLE
    assert set(allowed_from) == {"submitted"}
    assert set_fields == {"status": status, "decision": decision.model_dump(mode="json")}
    assert entry == {"status": status, "at": NOW, "by": "auto", "comment": "理由"}
    # The decision the case took is announced by intake itself, queued with the change and published.
    assert (taken.type, taken.producer, taken.payload) == (event.type, "intake", event.payload)
    assert taken.event_id != event.event_id
    service.events.publish.assert_called_once_with(store.outbox, case_no, [taken])


def test_a_decision_that_comes_too_late_is_not_announced(service, store):
    store.apply_event.return_value = None  # withdrawn (or decided) meanwhile
    event = new_event(CaseApproved(**_common(), decision=_decision()), producer="approval")
    service.on_case_approved(event.model_dump(mode="json"))
    service.events.publish.assert_not_called()


def test_review_required_keeps_the_case_open_and_explains(service, store):
    explanation = [
        RuleResult(
            rule_id="local_resident",
            description="申请人为本县户籍",
            expression='applicant.region_code == "620524"',
            result="failed",
            on_fail="manual_review",
            inputs=[{"name": "applicant.region_code", "value": "110105"}],
        )
    ]
    event = new_event(CaseReviewRequired(**_common(), explanation=explanation, rule_set_version=2), "approval")
    service.on_review_required(event.model_dump(mode="json"))
    case_no, event_id, allowed_from, set_fields, entry = store.apply_event.call_args.args
    assert (case_no, event_id, allowed_from) == ("620524MZ-20261123-000007", event.event_id, AUTO_DECIDABLE)
    assert set(allowed_from) == {"submitted"}
    # The case lands on the department's task list.
    assert set_fields == {
        "review_explanation": [r.model_dump(mode="json") for r in explanation],
        "awaiting_review": True,
    }
    assert "status" not in set_fields
    assert entry["status"] == "submitted"
    assert entry["by"] == "auto"
    assert entry["at"] == event.occurred_at
    assert entry["comment"]
    store.sync_views.assert_called_once_with(case_no, store.apply_event.return_value)


@pytest.mark.parametrize("handler", ["on_case_approved", "on_case_rejected", "on_review_required"])
def test_invalid_events_are_poison(service, store, handler):
    with pytest.raises(PoisonMessage):
        getattr(service, handler)({"event_id": "x", "payload": {}})
    store.apply_event.assert_not_called()


def test_approved_handler_refuses_a_rejection(service, store):
    event = new_event(CaseRejected(**_common(), decision=_decision("rejected")), producer="approval")
    with pytest.raises(PoisonMessage):
        service.on_case_approved(event.model_dump(mode="json"))
    store.apply_event.assert_not_called()


def test_issued_certificate_is_recorded_on_the_case(service, store):
    issued = CertificateIssued(
        certificate_id="name_reservation:620524MZ-20261123-000007",
        certificate_type="name_reservation",
        case_no="620524MZ-20261123-000007",
        user_id="u-citizen",
    )
    event = new_event(issued, producer="identity")
    service.on_certificate_issued(event.model_dump(mode="json"))
    store.apply_event.assert_called_once()
    case_no, event_id, allowed_from, set_fields, *timeline = store.apply_event.call_args.args
    assert (case_no, event_id) == ("620524MZ-20261123-000007", event.event_id)
    # Events of two producers are not ordered: the certificate may arrive before the decision.
    assert set(allowed_from) == {*lifecycle.UNDECIDED, "approved"}
    assert set(allowed_from) == {"submitted", "accepted", "supplement_requested", "resubmitted", "approved"}
    assert set_fields == {"certificate_id": "name_reservation:620524MZ-20261123-000007"}
    assert timeline in ([], [None])


STORED = {"department_code": "620524MZ", "status": "submitted", "deadline": "2026-11-30", "submitted_at": NOW}


def test_a_submission_is_synced_and_counted_before_it_is_announced(service, store, events):
    order = []
    store.sync_views.side_effect = lambda case_no, written: order.append("sync") or STORED
    store.add_fact.side_effect = lambda fact: order.append(("fact", fact["kind"], fact["_id"]))
    events.publish.side_effect = lambda outbox, case_no, sent: order.append(("publish", sent[0].event_id))
    service.submit_case(CITIZEN, submission())
    doc, [event] = store.insert_case.call_args.args
    assert order == ["sync", ("fact", "submitted", event.event_id), ("publish", event.event_id)]
    store.sync_views.assert_called_once_with(doc["case_no"], doc)  # as inserted: not read back
    assert store.add_fact.call_args.args[0] == {
        "_id": event.event_id,
        "kind": "submitted",
        "department_code": "620524MZ",
        "day": cases.local_date(event.occurred_at).isoformat(),  # when the event says it happened
    }


def test_a_decision_the_case_took_is_counted_once_with_its_figures(service, store):
    decision = _decision()
    store.sync_views.return_value = {**STORED, "status": "approved", "decision": decision.model_dump()}
    service.on_case_approved(new_event(CaseApproved(**_common(), decision=decision), producer="approval").model_dump())
    [fact] = [c.args[0] for c in store.add_fact.call_args_list]
    [taken] = store.apply_event.call_args.args[5]
    assert fact["_id"] == taken.event_id and (fact["kind"], fact["auto"], fact["on_time"]) == ("approved", 1, 1)
    # The read models are synced from the case as the decision's write returned it: not read back.
    store.sync_views.assert_called_once_with("620524MZ-20261123-000007", store.apply_event.return_value)

    store.add_fact.reset_mock()
    store.apply_event.return_value = None  # a redelivery: nothing new to count (the relay has it)
    service.on_case_approved(new_event(CaseApproved(**_common(), decision=decision), producer="approval").model_dump())
    store.add_fact.assert_not_called()


def test_the_relay_syncs_and_counts_an_event_its_writer_left_behind(service, store, events):
    service.relay_outbox()
    [outbox], options = events.relay.call_args
    assert outbox is store.outbox
    store.sync_views.return_value = STORED
    left = new_event(CaseWithdrawn(**_common(), by="u-citizen", at=NOW), producer="intake")
    options["before_publish"]("620524MZ-20261123-000007", left.model_dump(mode="json"))
    store.sync_views.assert_called_once_with("620524MZ-20261123-000007", None)  # read: the relay has no case
    assert store.add_fact.call_args.args[0]["_id"] == left.event_id
    assert store.add_fact.call_args.args[0]["kind"] == "withdrawn"
    store.add_fact.reset_mock()
    options["before_publish"]("620524MZ-20261123-000007", {"type": "not an event"})  # skipped, not raised
    store.add_fact.assert_not_called()


def test_principal_model_round_trips():
    # The gateway sends principal.model_dump(); intake validates it back.
    assert Principal.model_validate(Principal.model_validate(CITIZEN).model_dump()).user_id == "u-citizen"


def test_documents_that_are_not_the_applicants_own_are_refused(service, store, catalog):
    rpc_returns(catalog.get_item, WITH_MATERIALS)
    store.owned_documents.side_effect = lambda owner, ids: set()
    body = submission(item_code=WITH_MATERIALS["item_code"], form={}, materials=[{"code": "photo", "document_id": "d"}])
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, body)
    assert {"field": "materials.0.document_id", "issue": "no such document of yours"} in info.value.details
    store.owned_documents.assert_called_once_with(CITIZEN["user_id"], ["d"])
    store.insert_case.assert_not_called()


def test_a_loaded_calendar_moves_provisional_deadlines_and_their_flags_then_syncs(service, store, monkeypatch):
    from services.intake import workdays

    monkeypatch.setattr(workdays, "add_working_days", lambda start, days: (date(2027, 1, 8), False))
    case = {"_id": "C-1", "deadline_start": "2026-11-20", "deadline_days": 30, "deadline": "2027-01-07", "version": 5}
    store.provisional_cases.side_effect = [[case], []]
    assert service._recompute_provisional() == 1
    store.set_deadline.assert_called_once_with(
        "C-1",
        5,
        {"deadline_provisional": False, "deadline": "2027-01-08", "deadline_warned": False, "overdue": False},
        "2027-01-07",  # kept with the mark until synced: see the next test
    )
    store.forget_overdue.assert_called_once_with("C-1", "2027-01-07")  # the guess's, its new one not passed
    store.sync_views.assert_called_once_with("C-1")
    store.deadline_synced.assert_called_once_with("C-1")  # after the sync: a load that died is found again


def test_a_load_that_died_before_forgetting_a_false_overdue_forgets_it_the_next_time(service, store, monkeypatch):
    # The first load moved the deadline to 2027-01-08 and died: now the deadline no longer moves,
    # but the overdue counted against the guess it replaced must still be forgotten.
    from services.intake import workdays

    monkeypatch.setattr(workdays, "add_working_days", lambda start, days: (date(2027, 1, 8), False))
    case = {
        "_id": "C-1",
        "deadline_start": "2026-11-20",
        "deadline_days": 30,
        "deadline": "2027-01-08",
        "version": 6,
        "overdue_guesses": ["2027-01-07"],
    }
    store.provisional_cases.side_effect = [[case], []]
    assert service._recompute_provisional() == 1
    assert store.set_deadline.call_args.args[3] is None  # nothing new to forget
    store.forget_overdue.assert_called_once_with("C-1", "2027-01-07")
    store.deadline_synced.assert_called_once_with("C-1")


def test_a_loaded_calendar_leaves_a_case_whose_deadline_is_no_longer_provisional_alone(service, store, monkeypatch):
    # A reviewer accepted it between the read and the write: its deadline is the acceptance's now.
    from services.intake import workdays

    monkeypatch.setattr(workdays, "add_working_days", lambda start, days: (date(2027, 1, 8), False))
    case = {"_id": "C-1", "deadline_start": "2026-11-20", "deadline_days": 30, "deadline": "2027-01-07", "version": 5}
    store.provisional_cases.side_effect = [[case], []]
    store.set_deadline.return_value = False
    store.provisional_case.return_value = None  # read again: not provisional any more
    assert service._recompute_provisional() == 0
    store.provisional_case.assert_called_once_with("C-1")
    store.sync_views.assert_not_called()
    store.forget_overdue.assert_not_called()


def test_a_loaded_calendar_recomputes_a_case_that_changed_meanwhile_from_what_it_is_now(service, store, monkeypatch):
    # A flag, a hand-over or a supplement request changed its version but not its guessed deadline:
    # skipping it would leave the guess until the next load, a year later.
    from services.intake import workdays

    monkeypatch.setattr(workdays, "add_working_days", lambda start, days: (date(2027, 1, 8), False))
    case = {"_id": "C-1", "deadline_start": "2026-11-20", "deadline_days": 30, "deadline": "2027-01-07", "version": 5}
    store.provisional_cases.side_effect = [[case], []]
    store.set_deadline.side_effect = [False, True]
    store.provisional_case.return_value = {**case, "version": 6}
    assert service._recompute_provisional() == 1
    assert [c.args[1] for c in store.set_deadline.call_args_list] == [5, 6]
    store.sync_views.assert_called_once_with("C-1")


def test_a_loaded_calendar_counts_a_supplement_pause_again(service, store, monkeypatch):
    # Paused over a holiday week counted by weekends: the deadline was pushed 5 working days too far.
    from services.intake import workdays

    holiday = frozenset(date(2031, 1, 22) + timedelta(days=n) for n in range(7))
    monkeypatch.setattr(workdays, "_loaded", {2031: workdays.YearTable(holiday, frozenset())})
    pause = {"from": "2031-01-20", "to": "2031-02-03", "days": 10}
    case = {
        "_id": "C-1",
        "deadline_start": "2031-01-20",
        "deadline_days": 15,
        "pauses": [pause],
        "deadline": "2031-02-10",
        "version": 5,
    }
    store.provisional_cases.side_effect = [[case], []]
    store.set_deadline.return_value = True
    assert service._recompute_provisional() == 1
    fields = store.set_deadline.call_args.args[2]
    # 10 working days after the 20th, the holiday week skipped: 21, 29, 30, 31 Jan, 3–7 and 10 Feb.
    assert (fields["deadline"], fields["deadline_provisional"]) == ("2031-02-10", False)
    weekends_only = workdays.add_working_days(date(2031, 1, 20), 15)[0].isoformat()
    assert weekends_only != fields["deadline"]  # what the stored count alone would have given


def test_a_case_that_keeps_changing_is_given_up_on_after_a_few_reads(service, store, monkeypatch, caplog):
    from services.intake import workdays
    from services.intake.service import RECOMPUTE_ATTEMPTS

    monkeypatch.setattr(workdays, "add_working_days", lambda start, days: (date(2027, 1, 8), False))
    case = {"_id": "C-1", "deadline_start": "2026-11-20", "deadline_days": 30, "deadline": "2027-01-07", "version": 5}
    store.provisional_cases.side_effect = [[case], []]
    store.set_deadline.return_value = False
    store.provisional_case.return_value = case
    assert service._recompute_provisional() == 0
    assert store.set_deadline.call_count == RECOMPUTE_ATTEMPTS
    assert "the case kept changing" in caplog.text


def test_a_process_recomputes_provisional_deadlines_when_it_learns_of_a_newly_loaded_year(service, store, monkeypatch):
    # It set deadlines without the year until its refresh: the loader's recompute may have passed them.
    from services.intake import workdays

    monkeypatch.setattr(workdays, "_refreshed", False)
    monkeypatch.setattr(workdays, "_guessed_before_refresh", False)
    monkeypatch.setattr(workdays, "_loaded", {})
    year = {"_id": 2027, "holidays": ["2027-01-01"], "workdays": []}
    store.calendars_loaded.return_value = []
    store.provisional_cases.return_value = []
    assert service.refresh_calendar() == 0  # the first: nothing computed before it
    store.calendars_loaded.return_value = [year]
    store.provisional_cases.side_effect = [[], []]
    service.refresh_calendar()
    assert store.provisional_cases.call_count == 1  # recomputed once
    service.refresh_calendar()  # the same tables again: nothing to do
    assert store.provisional_cases.call_count == 1


def test_deadlines_guessed_before_a_processs_first_calendar_refresh_are_recomputed_by_it(service, store, monkeypatch):
    # Requests served before the first refresh (the eager timer runs beside them, or its first read
    # of the store failed) counted a loaded year by weekends: the first refresh must recompute.
    from datetime import date

    from services.intake import workdays

    monkeypatch.setattr(workdays, "_refreshed", False)
    monkeypatch.setattr(workdays, "_guessed_before_refresh", False)
    monkeypatch.setattr(workdays, "_loaded", {})
    assert workdays.add_working_days(date(2026, 12, 30), 5)[1]  # into 2027: guessed
    store.calendars_loaded.return_value = [{"_id": 2027, "holidays": ["2027-01-01"], "workdays": []}]
    store.provisional_cases.side_effect = [[], []]
    service.refresh_calendar()
    assert store.provisional_cases.call_count == 1


def test_only_materials_the_item_asks_for_are_looked_up(service, store, catalog, identity):
    # Thousands of made-up materials must not become thousands of lookups: unknown codes are refused
    # for their code, and nothing is asked about them.
    rpc_returns(catalog.get_item, WITH_MATERIALS)
    materials = [{"code": f"made_up_{i}", "certificate_id": f"c{i}"} for i in range(50)]
    materials += [{"code": f"other_{i}", "document_id": f"d{i}"} for i in range(49)]
    materials.append({"code": "photo", "document_id": "mine"})
    body = submission(item_code=WITH_MATERIALS["item_code"], form={}, materials=materials)
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, body)
    store.owned_documents.assert_called_once_with(CITIZEN["user_id"], ["mine"])
    identity.check_certificates.call_async.assert_not_called()
    fields = [d["field"] for d in info.value.details]
    assert "materials.0.code" in fields and "materials.99.document_id" not in fields
    assert not [f for f in fields if f.endswith("certificate_id") or f.endswith("document_id")]


def test_more_materials_than_any_guide_asks_for_are_refused_before_anything_is_read(service, store, catalog):
    materials = [{"code": "photo", "document_id": f"d{i}"} for i in range(101)]
    with pytest.raises(ValidationFailed) as info:
        service.submit_case(CITIZEN, submission(materials=materials))
    assert [d["field"] for d in info.value.details] == ["materials"]
    store.owned_documents.assert_not_called()
    catalog.get_item.call_async.assert_not_called()
