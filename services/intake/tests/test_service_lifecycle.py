"""Intake's lifecycle entrypoints (review, supplement, withdrawal, evaluation, task list) via worker_factory."""

import copy
from datetime import UTC, datetime, timedelta
from unittest.mock import MagicMock

import pytest
from nameko.testing.services import worker_factory

from contracts.cases import CaseView
from contracts.envelope import Envelope
from services.catalog.seed_data import seed_items
from services.common.errors import Conflict, Forbidden, NotFound, ValidationFailed
from services.intake import cases, lifecycle
from services.intake.service import IntakeService

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Beijing
DEPARTMENT = "620524GA"
CASE_NO = "620524GA-20261120-000001"

APPLICANT = {"user_id": "u-citizen", "account_type": "citizen", "roles": ["applicant"]}
STRANGER = {"user_id": "u-other", "account_type": "citizen", "roles": ["applicant"]}
REVIEWER = {"user_id": "r-ga", "account_type": "staff", "roles": ["reviewer"], "department_code": DEPARTMENT}
OTHER_REVIEWER = {"user_id": "r-mz", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524MZ"}
SUPERVISOR = {"user_id": "s1", "account_type": "staff", "roles": ["supervisor"]}

[_GUIDE] = [i for i in seed_items() if i["item_code"].endswith("GA-QR-0001")]
ITEM = {
    **_GUIDE,
    "version": 2,
    "promised_days": 5,
    "materials": [
        {"code": "id_card", "name": "居民身份证", "required": True},
        {"code": "photo", "name": "数码照片回执", "required": False},
        {
            "code": "household_register",
            "name": "居民户口簿",
            "required": False,
            "source": "certificate",
            "certificate_type": "household_register",
        },
    ],
}


def stored_case(status="submitted", **overrides):
    return {
        "_id": CASE_NO,
        "case_no": CASE_NO,
        "item_code": ITEM["item_code"],
        "item_version": 2,
        "item_name": ITEM["name"],
        "department_code": DEPARTMENT,
        "applicant": {"user_id": "u-citizen", "name": "张三"},
        "status": status,
        "form": {"reason": "expired"},
        "materials": [{"code": "id_card", "document_id": "d-id"}],
        "submitted_at": datetime(2026, 11, 20, 2, 0, tzinfo=UTC),
        "deadline": "2026-11-27",
        "deadline_provisional": False,
        "timeline": [{"status": "submitted", "at": datetime(2026, 11, 20, 2, 0, tzinfo=UTC), "by": "u-citizen"}],
        "decision": None,
        "review_explanation": [],
        "certificate_id": None,
        "evaluation": None,
        "applied_events": [],
        "version": 3,
        "awaiting_review": True,
        **overrides,
    }


def rpc_returns(method, value):
    method.call_async.return_value.result.return_value = value


class Cases:
    """Holds one case; `transition` applies a change the way the store's conditional update would."""

    def __init__(self, doc):
        self.doc = doc
        self.order = []

    def get(self, case_no):
        return copy.deepcopy(self.doc) if self.doc and case_no == self.doc["case_no"] else None

    def transition(self, case_no, change, event):
        self.order.append("transition")
        current = self.doc
        if (
            current["status"] != change.from_status
            or current["version"] != change.version
            or any(current.get(k) != v for k, v in change.extra_filter.items())
        ):
            return False
        for name, value in change.set_fields.items():  # "a.b" sets b inside a, as the store does
            *parents, last = name.split(".")
            target = current
            for parent in parents:
                target = target.setdefault(parent, {})
            target[last] = value
        current["version"] += 1
        if change.timeline is not None:
            current["timeline"].append(change.timeline)
        return True


@pytest.fixture
def held():
    return Cases(stored_case())


@pytest.fixture
def store(held):
    store = MagicMock()
    store.get.side_effect = held.get
    store.transition.side_effect = held.transition
    store.tasks.return_value = ([], 0)
    store.owned_documents.side_effect = lambda owner, ids: set(ids)
    return store


@pytest.fixture
def catalog():
    catalog = MagicMock()
    rpc_returns(catalog.get_item, ITEM)
    return catalog


@pytest.fixture
def identity():
    return MagicMock()


@pytest.fixture
def events(held):
    events = MagicMock()
    events.publish.side_effect = lambda *a: held.order.append("publish")
    return events


@pytest.fixture
def service(store, catalog, identity, events, monkeypatch):
    monkeypatch.setattr(cases, "now_utc", lambda: NOW)
    return worker_factory(IntakeService, store=store, catalog=catalog, identity=identity, events=events)


def applied(store):
    """The change and event handed to the store, with the event checked to be the one published."""
    store.transition.assert_called_once()
    case_no, change, event = store.transition.call_args.args
    assert case_no == CASE_NO
    assert isinstance(event, Envelope)
    assert event.producer == "intake"
    return change, event


def assert_published(events, store, event):
    events.publish.assert_called_once_with(store.outbox, CASE_NO, [event])


def assert_nothing_applied(store, events):
    store.transition.assert_not_called()
    events.publish.assert_not_called()


# --- review_case ----------------------------------------------------------------------------------


def test_accepting_applies_the_change_conditionally_and_announces_it(service, store, catalog, events, held):
    result = service.review_case(REVIEWER, CASE_NO, {"action": "accept", "comment": "受理"})

    catalog.get_item.call_async.assert_called_once_with(ITEM["item_code"], 2)  # the version submitted under
    change, event = applied(store)
    assert (change.from_status, change.version) == ("submitted", 3)
    assert event.type == "case.accepted.v1"
    assert event.payload["deadline"] == "2026-11-30"
    assert event.payload["by"] == "r-ga"
    assert_published(events, store, event)
    assert held.order == ["transition", "publish"]

    view = CaseView.model_validate(result)
    assert view.status == "accepted"
    assert str(view.deadline) == "2026-11-30"
    assert view.timeline[-1].status == "accepted"
    assert view.timeline[-1].comment == "受理"


@pytest.fixture
def sleeps(monkeypatch):
    """The seconds a reviewer's action slept waiting for the rules (it sleeps no real time)."""
    slept = []
    monkeypatch.setattr("services.intake.service.eventlet.sleep", slept.append)
    return slept


def test_a_reviewer_acting_at_once_waits_for_the_rules_to_hand_the_case_over(service, store, held, monkeypatch):
    held.doc = stored_case(awaiting_review=False, submitted_at=NOW - timedelta(seconds=1))  # rules running
    sleeps = []

    def rules_finish(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            held.doc["awaiting_review"] = True  # case.review_required.v1 has landed

    monkeypatch.setattr("services.intake.service.eventlet.sleep", rules_finish)
    result = service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    assert result["status"] == "accepted" and len(sleeps) == 3
    change, _ = applied(store)
    assert change.version == 3  # the case as the hand-over left it, read again


def test_a_reviewer_gets_409_when_the_rules_never_finish(service, store, events, held, sleeps):
    held.doc = stored_case(awaiting_review=False, submitted_at=NOW - timedelta(seconds=1))
    with pytest.raises(Conflict, match="automatic rules have not finished"):
        service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    assert sum(sleeps) == pytest.approx(3.0)  # RULES_WAIT_SECONDS, then the answer
    assert_nothing_applied(store, events)


def test_a_case_whose_rules_never_answered_is_not_waited_for(service, store, events, held, sleeps):
    # Submitted a minute ago and still not handed over (its event dead-lettered, say): 409 at once.
    held.doc = stored_case(awaiting_review=False, submitted_at=NOW - timedelta(seconds=60))
    with pytest.raises(Conflict, match="automatic rules have not finished"):
        service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    assert sleeps == []


def test_only_a_few_reviewers_wait_at_once(service, store, events, held, sleeps):
    # A waiting worker is one the hand-over may need: past three waiters, the answer is 409 at once.
    from services.intake import service as intake_service

    held.doc = stored_case(awaiting_review=False, submitted_at=NOW - timedelta(seconds=1))
    for _ in range(3):
        assert intake_service._RULE_WAITERS.acquire(blocking=False)
    try:
        with pytest.raises(Conflict):
            service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    finally:
        for _ in range(3):
            intake_service._RULE_WAITERS.release()
    assert sleeps == []


def test_a_reviewer_of_another_department_does_not_wait_for_the_rules(service, store, held, sleeps):
    held.doc = stored_case(awaiting_review=False)
    with pytest.raises(NotFound):
        service.review_case(OTHER_REVIEWER, CASE_NO, {"action": "accept"})
    assert sleeps == []


def test_accepting_a_late_case_keeps_it_counted_overdue(service, store, held):
    # Overdue under the deadline counted from submission: acceptance gives it a new deadline (and
    # new warnings), but supervision still counts the lateness it had.
    held.doc = stored_case(overdue=True, deadline="2026-11-20")
    service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    assert held.doc["overdue"] is False and held.doc["deadline"] > "2026-11-20"
    store.forget_overdue.assert_not_called()


def test_a_supplement_request_publishes_every_missing_material(service, store, events, held):
    held.doc = stored_case("accepted")
    service.review_case(REVIEWER, CASE_NO, {"action": "request_supplement", "missing_materials": ["photo", "id_card"]})
    _, event = applied(store)
    assert event.type == "case.supplement_requested.v1"
    assert event.payload["missing_materials"] == [
        {"code": "photo", "name": "数码照片回执"},
        {"code": "id_card", "name": "居民身份证"},
    ]
    assert held.doc["awaiting_review"] is False
    assert held.doc["clock_stopped_on"] == "2026-11-23"


def test_a_supplement_request_for_an_unknown_material_changes_nothing(service, store, events):
    with pytest.raises(ValidationFailed) as info:
        service.review_case(REVIEWER, CASE_NO, {"action": "request_supplement", "missing_materials": ["passport"]})
    assert [d["field"] for d in info.value.details] == ["missing_materials"]
    assert_nothing_applied(store, events)


@pytest.mark.parametrize(("action", "event_type"), [("approve", "case.approved.v1"), ("reject", "case.rejected.v1")])
def test_a_reviewers_decision_is_announced_by_intake(service, store, events, held, action, event_type):
    held.doc = stored_case("accepted")
    result = service.review_case(REVIEWER, CASE_NO, {"action": action, "comment": "审核意见"})
    _, event = applied(store)
    assert event.type == event_type
    assert event.payload["decision"]["decided_by"] == "r-ga"
    assert event.payload["decision"]["reason"] == "审核意见"
    assert_published(events, store, event)
    assert result["status"] == {"approve": "approved", "reject": "rejected"}[action]
    assert result["decision"]["outcome"] == result["status"]


CERTIFIED = [{"code": "id_card", "document_id": "d-id"}, {"code": "household_register", "certificate_id": "c9"}]


@pytest.mark.parametrize("still_valid", [True, False])
def test_an_approval_checks_the_certificates_among_the_materials_again(
    service, store, identity, events, held, still_valid
):
    # Checked at submission; it may have expired or been revoked while the case waited.
    held.doc = stored_case("accepted", materials=CERTIFIED)
    check = {"certificate_id": "c9", "owned": True, "valid": still_valid, "type": "household_register"}
    rpc_returns(identity.check_certificates, [check])
    approve = {"action": "approve", "comment": "准予"}
    if still_valid:
        assert service.review_case(REVIEWER, CASE_NO, approve)["status"] == "approved"
    else:
        with pytest.raises(Conflict) as info:
            service.review_case(REVIEWER, CASE_NO, approve)
        assert info.value.details == [
            {"field": "materials.1.certificate_id", "issue": "the certificate has expired or was revoked"}
        ]
        assert_nothing_applied(store, events)
    identity.check_certificates.call_async.assert_called_once_with("u-citizen", ["c9"])


def test_a_rejection_or_a_case_without_certificates_asks_identity_nothing(service, store, identity, events, held):
    held.doc = stored_case("accepted", materials=CERTIFIED)
    service.review_case(REVIEWER, CASE_NO, {"action": "reject", "comment": "不符合条件"})
    held.doc = stored_case("accepted")
    service.review_case(REVIEWER, CASE_NO, {"action": "approve", "comment": "准予"})
    identity.check_certificates.call_async.assert_not_called()


def meanwhile(held, **fields):
    """A transition that finds the case written by someone else between the read and the write."""

    def transition(case_no, change, event):
        if fields:
            held.doc.update(fields)
            held.doc["version"] += 1
            fields.clear()
        return held.transition(case_no, change, event)

    return transition


def test_losing_the_conditional_update_is_a_conflict_and_announces_nothing(service, store, events, held):
    store.transition.side_effect = meanwhile(held, status="rejected")  # another reviewer acted in between
    with pytest.raises(Conflict, match="changed meanwhile"):
        service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    store.transition.assert_called_once()
    events.publish.assert_not_called()


def test_a_write_that_is_no_ones_action_meanwhile_does_not_make_a_conflict(service, store, events, held):
    # The deadline check flagged the case between the reviewer's read and write: nothing the
    # acceptance is judged on changed, so it is judged again on the case as it is now.
    store.transition.side_effect = meanwhile(held, deadline_warned=True)
    result = service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    assert result["status"] == "accepted"
    assert [c.args[1].version for c in store.transition.call_args_list] == [3, 4]
    events.publish.assert_called_once()


def test_a_case_whose_version_keeps_moving_is_a_conflict_after_a_few_judgements(service, store, events, held):
    from services.intake.service import JUDGE_ATTEMPTS

    def always_moved(case_no, change, event):
        held.doc["version"] += 1
        return held.transition(case_no, change, event)

    store.transition.side_effect = always_moved
    with pytest.raises(Conflict, match="changed meanwhile"):
        service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    assert store.transition.call_count == JUDGE_ATTEMPTS
    events.publish.assert_not_called()


@pytest.mark.parametrize("status", ["supplement_requested", "approved", "rejected", "withdrawn"])
def test_accepting_from_a_later_status_is_a_conflict(service, store, events, held, status):
    held.doc = stored_case(status)
    with pytest.raises(Conflict):
        service.review_case(REVIEWER, CASE_NO, {"action": "accept"})
    assert_nothing_applied(store, events)


def test_unknown_case_is_not_found_before_anything_else(service, store, catalog, events):
    with pytest.raises(NotFound):
        service.review_case(REVIEWER, "620524GA-20261120-000099", {"action": "accept"})
    catalog.get_item.call_async.assert_not_called()
    assert_nothing_applied(store, events)


def test_a_reviewer_of_another_department_gets_404(service, store, catalog, events):
    with pytest.raises(NotFound):
        service.review_case(OTHER_REVIEWER, CASE_NO, {"action": "accept"})
    catalog.get_item.call_async.assert_not_called()
    assert_nothing_applied(store, events)


def test_a_supervisor_may_read_but_not_decide(service, store, events):
    with pytest.raises(Forbidden):
        service.review_case(SUPERVISOR, CASE_NO, {"action": "accept"})
    assert_nothing_applied(store, events)


@pytest.mark.parametrize(
    "payload",
    [{"action": "reject"}, {"action": "request_supplement"}, {"action": "approve", "extra": 1}, {"action": "pass"}],
    ids=["reject-without-reason", "supplement-without-what", "extra-field", "unknown-action"],
)
def test_an_invalid_decision_is_refused_before_any_call(service, store, catalog, events, payload):
    with pytest.raises(ValidationFailed):
        service.review_case(REVIEWER, CASE_NO, payload)
    catalog.get_item.call_async.assert_not_called()
    assert_nothing_applied(store, events)


# --- resubmit_case --------------------------------------------------------------------------------


def waiting(**overrides):
    fields = {
        "missing_materials": [{"code": "photo", "name": "数码照片回执"}],
        "clock_stopped_on": "2026-11-23",
        "deadline": "2026-11-30",
        "awaiting_review": False,
        **overrides,
    }
    return stored_case("supplement_requested", **fields)


def test_resubmission_checks_the_whole_application_and_announces_it(service, store, catalog, events, held):
    held.doc = waiting()
    result = service.resubmit_case(APPLICANT, CASE_NO, {"materials": [{"code": "photo", "document_id": "d-new"}]})
    catalog.get_item.call_async.assert_called_once_with(ITEM["item_code"], 2)
    change, event = applied(store)
    assert change.from_status == "supplement_requested"
    assert event.type == "case.resubmitted.v1"
    assert_published(events, store, event)
    assert result["status"] == "resubmitted"
    assert result["materials"] == [
        {"code": "id_card", "document_id": "d-id", "certificate_id": None},
        {"code": "photo", "document_id": "d-new", "certificate_id": None},
    ]
    assert held.doc["awaiting_review"] is True


def test_resubmission_still_missing_something_changes_nothing(service, store, events, held):
    held.doc = waiting()
    with pytest.raises(ValidationFailed) as info:
        service.resubmit_case(APPLICANT, CASE_NO, {"materials": []})
    assert info.value.details == [{"field": "materials", "issue": "still missing: photo"}]
    assert_nothing_applied(store, events)


def test_a_resubmitted_form_must_fit_the_item(service, store, events, held):
    held.doc = waiting()
    payload = {"materials": [{"code": "photo", "document_id": "d-new"}], "form": {"reason": "stolen"}}
    with pytest.raises(ValidationFailed) as info:
        service.resubmit_case(APPLICANT, CASE_NO, payload)
    assert [d["field"] for d in info.value.details] == ["form.reason"]
    assert_nothing_applied(store, events)


def test_certificates_offered_in_a_supplement_are_checked_with_identity(service, store, identity, events, held):
    held.doc = waiting(missing_materials=[{"code": "household_register", "name": "居民户口簿"}])
    rpc_returns(
        identity.check_certificates,
        [{"certificate_id": "c9", "owned": False, "valid": False, "type": None}],
    )
    payload = {"materials": [{"code": "household_register", "certificate_id": "c9"}]}
    with pytest.raises(ValidationFailed) as info:
        service.resubmit_case(APPLICANT, CASE_NO, payload)
    identity.check_certificates.call_async.assert_called_once_with("u-citizen", ["c9"])
    # Pointing into the request the applicant sent, not into the case's whole materials.
    assert [d["field"] for d in info.value.details] == ["materials.0.certificate_id"]
    assert_nothing_applied(store, events)


def test_a_kept_material_no_longer_valid_is_named_by_its_code(service, store, identity, events, held):
    held.doc = waiting(
        materials=[{"code": "id_card", "document_id": "d-id"}, {"code": "household_register", "certificate_id": "c1"}]
    )
    rpc_returns(identity.check_certificates, [{"certificate_id": "c1", "owned": True, "valid": False, "type": None}])
    store.owned_documents.side_effect = lambda owner, ids: set(ids) - {"d-gone"}
    payload = {"materials": [{"code": "photo", "document_id": "d-gone"}]}
    with pytest.raises(ValidationFailed) as info:
        service.resubmit_case(APPLICANT, CASE_NO, payload)
    assert info.value.details == [
        {
            "field": "materials",
            "issue": "household_register, given earlier: the certificate has expired or was revoked; "
            "give it anew in the supplement",
        },
        {"field": "materials.0.document_id", "issue": "no such document of yours"},
    ]
    assert_nothing_applied(store, events)


def test_a_supplement_past_the_materials_limit_in_all_is_refused(service, store, events, held):
    kept = [{"code": f"kept_{n}", "document_id": f"d{n}"} for n in range(60)]
    held.doc = waiting(materials=kept)
    payload = {
        "materials": [{"code": "photo", "document_id": "d-new"}]
        + [{"code": f"new_{n}", "document_id": "d"} for n in range(40)]
    }
    with pytest.raises(ValidationFailed) as info:
        service.resubmit_case(APPLICANT, CASE_NO, payload)
    assert [d["field"] for d in info.value.details] == ["materials"]
    assert "at most 100" in info.value.details[0]["issue"]
    assert_nothing_applied(store, events)


def test_someone_elses_case_cannot_be_resubmitted(service, store, events, held):
    held.doc = waiting()
    with pytest.raises(NotFound):
        service.resubmit_case(STRANGER, CASE_NO, {"materials": [{"code": "photo", "document_id": "d"}]})
    assert_nothing_applied(store, events)


# --- withdraw_case --------------------------------------------------------------------------------


def test_withdrawal(service, store, catalog, events, held):
    result = service.withdraw_case(APPLICANT, CASE_NO)
    change, event = applied(store)
    assert change.from_status == "submitted" and change.version == 3
    assert event.type == "case.withdrawn.v1"
    assert_published(events, store, event)
    assert result["status"] == "withdrawn"
    assert held.doc["awaiting_review"] is False
    catalog.get_item.call_async.assert_not_called()


def test_a_decided_case_cannot_be_withdrawn(service, store, events, held):
    held.doc = stored_case("approved")
    with pytest.raises(Conflict):
        service.withdraw_case(APPLICANT, CASE_NO)
    assert_nothing_applied(store, events)


@pytest.mark.parametrize("who", [STRANGER, REVIEWER, SUPERVISOR], ids=["stranger", "reviewer", "supervisor"])
def test_only_the_applicant_withdraws(service, store, events, who):
    with pytest.raises(NotFound):
        service.withdraw_case(who, CASE_NO)
    assert_nothing_applied(store, events)


def test_a_withdrawal_racing_a_decision_is_a_conflict(service, store, events):
    store.transition.side_effect = None
    store.transition.return_value = False
    with pytest.raises(Conflict):
        service.withdraw_case(APPLICANT, CASE_NO)
    events.publish.assert_not_called()


# --- a command sent again under its Idempotency-Key ------------------------------------------------
COMMANDS = {
    "withdrawal": ("submitted", APPLICANT, lambda service, key: service.withdraw_case(APPLICANT, CASE_NO, key)),
    "evaluation": (
        "approved",
        APPLICANT,
        lambda service, key: service.evaluate_case(APPLICANT, CASE_NO, {"score": 5}, key),
    ),
    "review": (
        "submitted",
        REVIEWER,
        lambda service, key: service.review_case(REVIEWER, CASE_NO, {"action": "accept"}, key),
    ),
    "supplement": (
        "supplement_requested",
        APPLICANT,
        lambda service, key: service.resubmit_case(
            APPLICANT, CASE_NO, {"materials": [{"code": "photo", "document_id": "d-photo"}]}, key
        ),
    ),
}


@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_a_command_sent_again_under_its_key_answers_the_case_instead_of_a_conflict(
    service, store, events, held, command
):
    # Its first answer was lost (a timeout, a dropped connection): the retry must not read as 409.
    status, _, send = COMMANDS[command]
    held.doc = stored_case(status, supplement_request={"missing_materials": ["photo"]})
    first = send(service, "k-1")
    assert store.transition.call_count == 1 and events.publish.call_count == 1
    again = send(service, "k-1")
    assert again == first  # the case as it is now, which nothing changed since
    assert store.transition.call_count == 1 and events.publish.call_count == 1  # applied once
    with pytest.raises(Conflict):
        send(service, "k-2")  # another key is another command: refused as before
    with pytest.raises(Conflict):
        send(service, None)


def test_a_key_sent_again_with_another_request_is_a_conflict(service, store, events, held):
    held.doc = stored_case("approved")
    service.evaluate_case(APPLICANT, CASE_NO, {"score": 5}, "k-1")
    with pytest.raises(Conflict, match="different request"):
        service.evaluate_case(APPLICANT, CASE_NO, {"score": 1}, "k-1")
    assert store.transition.call_count == 1


def test_a_key_is_the_persons_own(service, store, events, held):
    # A reviewer who happens to send the applicant's key acts for themself: refused as a 409, not
    # answered as the applicant's withdrawal.
    service.withdraw_case(APPLICANT, CASE_NO, "k-1")
    with pytest.raises(Conflict, match="a case that is withdrawn"):
        service.review_case(REVIEWER, CASE_NO, {"action": "accept"}, "k-1")


def test_the_same_command_twice_at_once_is_applied_once_and_both_answered(service, store, events, held):
    # Both read the case before either wrote: the second's write fails on the version, and it finds
    # its own key in the case as it is now.
    first_read = held.get(CASE_NO)
    service.withdraw_case(APPLICANT, CASE_NO, "k-1")
    store.get.side_effect = [first_read, held.get(CASE_NO), held.get(CASE_NO)]
    assert service.withdraw_case(APPLICANT, CASE_NO, "k-1")["status"] == "withdrawn"
    assert events.publish.call_count == 1


def test_a_bad_key_is_refused_before_anything(service, store, events, held):
    with pytest.raises(ValidationFailed):
        service.withdraw_case(APPLICANT, CASE_NO, "k" * 201)
    assert_nothing_applied(store, events)


# --- evaluate_case --------------------------------------------------------------------------------


def test_evaluation(service, store, events, held):
    from services.intake.service import CASES_ENTERING

    held.doc = stored_case("approved")
    approvals = CASES_ENTERING.labels("approved")._value.get()
    result = service.evaluate_case(APPLICANT, CASE_NO, {"score": 2, "comment": "等太久"})
    assert CASES_ENTERING.labels("approved")._value.get() == approvals  # evaluated: no status entered
    change, event = applied(store)
    assert change.extra_filter == {"evaluation": None}
    assert event.type == "case.evaluated.v1"
    assert (event.payload["score"], event.payload["bad"]) == (2, True)
    assert_published(events, store, event)
    assert result["evaluation"]["score"] == 2
    assert result["evaluation"]["bad"] is True
    assert result["status"] == "approved"


def test_a_second_evaluation_is_a_conflict(service, store, events, held):
    held.doc = stored_case("approved")
    service.evaluate_case(APPLICANT, CASE_NO, {"score": 5})
    events.reset_mock()
    store.transition.reset_mock()
    with pytest.raises(Conflict):
        service.evaluate_case(APPLICANT, CASE_NO, {"score": 1})
    assert_nothing_applied(store, events)


def test_an_evaluation_that_lost_the_race_is_a_conflict(service, store, events, held):
    held.doc = stored_case("approved")
    earlier = {"score": 5, "comment": None, "at": "2026-11-23T02:00:00Z", "bad": False}
    store.transition.side_effect = meanwhile(held, evaluation=earlier)  # another evaluation landed first
    with pytest.raises(Conflict):
        service.evaluate_case(APPLICANT, CASE_NO, {"score": 4})
    assert held.doc["evaluation"] == earlier
    events.publish.assert_not_called()


def test_a_certificate_recorded_meanwhile_does_not_refuse_an_evaluation(service, store, events, held):
    # identity's certificate.issued lands on an approved case as its applicant evaluates it.
    held.doc = stored_case("approved")
    store.transition.side_effect = meanwhile(held, certificate_id="cert-1")
    result = service.evaluate_case(APPLICANT, CASE_NO, {"score": 4})
    assert (result["evaluation"]["score"], result["certificate_id"]) == (4, "cert-1")
    events.publish.assert_called_once()


@pytest.mark.parametrize("payload", [{"score": 0}, {"score": 6}, {}, {"score": 3, "comment": "x" * 1001}])
def test_an_invalid_evaluation_is_refused(service, store, events, held, payload):
    held.doc = stored_case("approved")
    with pytest.raises(ValidationFailed):
        service.evaluate_case(APPLICANT, CASE_NO, payload)
    assert_nothing_applied(store, events)


# --- review_tasks ---------------------------------------------------------------------------------


def task_row(deadline):
    row = stored_case("accepted", deadline=deadline)
    for hidden in ("form", "timeline"):
        row.pop(hidden)
    return row


def test_the_task_list_is_the_reviewers_departments(service, store):
    store.tasks.return_value = ([task_row("2026-11-20"), task_row("2026-11-23"), task_row(None)], 43)
    result = service.review_tasks(REVIEWER, None, {"page": 3, "page_size": 20})
    store.tasks.assert_called_once_with(DEPARTMENT, list(lifecycle.TASK_STATUSES), 40, 20)
    assert (result["total"], result["page"], result["page_size"]) == (43, 3, 20)
    # Today is 23 November in China: a deadline of the 20th has passed, one of today has not.
    assert [t["overdue"] for t in result["items"]] == [True, False, False]
    assert result["items"][0]["applicant"] == {"user_id": "u-citizen", "name": "张三"}
    assert "form" not in result["items"][0]


def test_overdue_follows_the_date_in_china(service, store, monkeypatch):
    monkeypatch.setattr(cases, "now_utc", lambda: datetime(2026, 11, 23, 17, 0, tzinfo=UTC))  # 24th, 01:00
    store.tasks.return_value = ([task_row("2026-11-23")], 1)
    assert service.review_tasks(REVIEWER, None, {})["items"][0]["overdue"] is True


@pytest.mark.parametrize("status", ["submitted", "accepted", "resubmitted"])
def test_the_task_list_by_status(service, store, status):
    service.review_tasks(REVIEWER, status, {})
    store.tasks.assert_called_once_with(DEPARTMENT, [status], 0, 20)


@pytest.mark.parametrize("status", ["approved", "supplement_requested", "withdrawn", "anything"])
def test_the_task_list_refuses_other_statuses(service, store, status):
    with pytest.raises(ValidationFailed) as info:
        service.review_tasks(REVIEWER, status, {})
    assert [d["field"] for d in info.value.details] == ["query.status"]
    store.tasks.assert_not_called()


@pytest.mark.parametrize(
    "who",
    [
        APPLICANT,
        SUPERVISOR,
        {"user_id": "a1", "account_type": "staff", "roles": ["admin"]},
        {"user_id": "r0", "account_type": "staff", "roles": ["reviewer"]},
    ],
    ids=["applicant", "supervisor", "admin", "reviewer-without-department"],
)
def test_the_task_list_is_for_reviewers_of_a_department(service, store, who):
    with pytest.raises(Forbidden):
        service.review_tasks(who, None, {})
    store.tasks.assert_not_called()


@pytest.mark.parametrize("page", [{"page": 0}, {"page_size": 101}])
def test_the_task_list_refuses_bad_paging(service, store, page):
    with pytest.raises(ValidationFailed):
        service.review_tasks(REVIEWER, None, page)
    store.tasks.assert_not_called()
