from datetime import UTC, date, datetime, timedelta
from unittest.mock import MagicMock

import pytest
from nameko.testing.services import worker_factory

from contracts.cases import Decision
from contracts.envelope import new_event
from contracts.events import (
    CaseAccepted,
    CaseApproved,
    CaseEvaluated,
    CaseRejected,
    CaseResubmitted,
    CaseSubmitted,
    CaseSupplementRequested,
    CaseWithdrawn,
    ContactChanged,
)
from contracts.identity import ApplicantProfile
from contracts.notifications import NotificationView
from services.common.consuming import PoisonMessage
from services.common.errors import NotFound, ValidationFailed
from services.notification import messages
from services.notification.service import NotificationService

CITIZEN = {"user_id": "u-citizen", "account_type": "citizen", "roles": ["applicant"]}
SUBMITTED_AT = datetime(2026, 11, 23, 2, 5, tzinfo=UTC)  # 10:05 in Beijing
COMMON = {
    "case_no": "620524MZ-20261123-000007",
    "item_code": "62052400MZ-GF-0001",
    "item_name": "高龄津贴申领",
    "department_code": "620524MZ",
    "applicant_id": "u-citizen",
}


def submitted():
    payload = CaseSubmitted(**COMMON, item_version=1, form={}, material_codes=[], submitted_at=SUBMITTED_AT)
    return new_event(payload, producer="intake")


def decided(model=CaseApproved, outcome="approved", decided_by="auto", reason=None):
    """A decision as intake announces it (automatic ones included)."""
    decision = Decision(
        outcome=outcome, decided_by=decided_by, reason=reason, decided_at=SUBMITTED_AT + timedelta(seconds=3)
    )
    return new_event(model(**COMMON, decision=decision), producer="intake")


@pytest.fixture
def store():
    store = MagicMock()
    store.create.return_value = []  # nothing queued to send from the handler
    store.channels_chosen.return_value = None  # nobody chose: the defaults
    store.channels_to_notify.return_value = None
    store.list_for.return_value = ([], 0)
    return store


@pytest.fixture
def service(store):
    return worker_factory(NotificationService, store=store)


def _inserted(store):
    store.create.assert_called_once()
    return store.create.call_args.args[0]


def test_a_notice_is_listed_when_its_event_happened_and_dated_when_it_was_made(service, store):
    # A "received" that waited in a retry queue was listed above the "approved" that followed it;
    # and `created_at` stays when the notice was made, which is how late a notice is told from it.
    late = submitted()
    late = late.model_copy(update={"occurred_at": datetime.now(UTC) - timedelta(minutes=2)})
    before = datetime.now(UTC)
    service.on_case_submitted(late.model_dump(mode="json"))
    made = _inserted(store)
    assert made["listed_at"] == late.occurred_at and made["created_at"] >= before
    store.create.reset_mock()
    ahead = submitted()  # a producer whose clock runs ahead: never later than now
    ahead = ahead.model_copy(update={"occurred_at": datetime.now(UTC) + timedelta(minutes=5)})
    service.on_case_submitted(ahead.model_dump(mode="json"))
    assert _inserted(store)["listed_at"] <= datetime.now(UTC)


def test_submission_notifies_the_applicant_in_chinese(service, store):
    event = submitted()
    before = datetime.now(UTC)
    service.on_case_submitted(event.model_dump(mode="json"))
    doc = _inserted(store)
    expected_id = messages.notification_id(event.event_id, "u-citizen")
    assert doc["_id"] == doc["notification_id"] == expected_id
    assert doc["event_id"] == event.event_id
    assert doc["recipient"] == "u-citizen"
    assert doc["case_no"] == "620524MZ-20261123-000007"
    assert doc["type"] == "case.submitted.v1"
    assert doc["title"] == "您的“高龄津贴申领”申请已提交"
    assert "2026年11月23日 10:05" in doc["body"]
    assert "620524MZ-20261123-000007" in doc["body"]
    assert doc["read_at"] is None
    assert [(d["channel"], d["status"]) for d in messages.view(doc)["deliveries"]] == [
        ("inbox", "delivered"),
        ("sms", "pending"),
    ]
    assert doc["listed_at"] == event.occurred_at <= before <= doc["created_at"]  # listed by event, made now
    NotificationView.model_validate(messages.view(doc))
    # An applicant who chose nothing is told by SMS too; the text is rendered now, once.
    assert store.create.call_args.args[1] == ["sms"]
    assert doc["content"]["sms"]["body"].startswith("【一网通办】您的“高龄津贴申领”申请已收件")
    assert doc["channels"]["sms"]["template"].startswith("sms/case.submitted.v1@")


def test_approval_notice_says_instant_approval(service, store):
    event = decided()
    service.on_case_approved(event.model_dump(mode="json"))
    doc = _inserted(store)
    assert doc["title"] == "您的“高龄津贴申领”申请已办结：准予"
    assert "（秒批）" in doc["body"]
    assert "2026年11月23日 10:05" in doc["body"]
    assert doc["type"] == "case.approved.v1"
    assert doc["_id"] == messages.notification_id(event.event_id, "u-citizen")


def test_resubmission_notice_gives_the_deadline_pushed_out(service, store):
    event = new_event(CaseResubmitted(**TRANSITION, deadline=date(2026, 12, 2)), producer="intake")
    service.on_case_resubmitted(event.model_dump(mode="json"))
    doc = _inserted(store)
    assert "办理时限恢复计算，承诺于2026年12月02日前办结" in doc["body"]


def test_rejection_notice_gives_the_reason(service, store):
    event = decided(CaseRejected, "rejected", reason="申请人年满80周岁")
    service.on_case_rejected(event.model_dump(mode="json"))
    doc = _inserted(store)
    assert doc["title"] == "您的“高龄津贴申领”申请未获批准"
    assert "原因：申请人年满80周岁" in doc["body"]
    assert doc["type"] == "case.rejected.v1"


def test_redelivered_event_maps_to_the_same_notification(service, store):
    body = submitted().model_dump(mode="json")
    service.on_case_submitted(body)
    store.create.return_value = None  # the store refuses the duplicate id
    service.on_case_submitted(body)
    first, second = (c.args[0] for c in store.create.call_args_list)
    assert first["_id"] == second["_id"]


def test_different_events_get_different_notifications(service, store):
    service.on_case_submitted(submitted().model_dump(mode="json"))
    service.on_case_submitted(submitted().model_dump(mode="json"))
    first, second = (c.args[0] for c in store.create.call_args_list)
    assert first["_id"] != second["_id"]


@pytest.mark.parametrize(
    ("handler", "event"),
    [("on_case_submitted", decided()), ("on_case_approved", submitted()), ("on_case_rejected", decided())],
)
def test_wrong_or_invalid_events_are_poison(service, store, handler, event):
    with pytest.raises(PoisonMessage):
        getattr(service, handler)(event.model_dump(mode="json"))
    with pytest.raises(PoisonMessage):
        getattr(service, handler)({"nothing": "here"})
    store.create.assert_not_called()


# --- events of the case lifecycle (produced by intake) --------------------------------------------

TRANSITION = {**COMMON, "by": "r-1", "at": SUBMITTED_AT, "comment": None}


def test_acceptance_notice(service, store):
    event = new_event(CaseAccepted(**TRANSITION, deadline=date(2026, 11, 30)), producer="intake")
    service.on_case_accepted(event.model_dump(mode="json"))
    doc = _inserted(store)
    assert doc["type"] == "case.accepted.v1"
    assert doc["recipient"] == "u-citizen"
    assert doc["title"] == "您的“高龄津贴申领”申请已受理"
    assert "已于2026年11月23日 10:05受理" in doc["body"]  # China time
    assert "承诺于2026年11月30日前办结" in doc["body"]
    assert doc["_id"] == messages.notification_id(event.event_id, "u-citizen")


def test_supplement_notice_lists_every_missing_material(service, store):
    missing = [{"code": "id_card", "name": "居民身份证"}, {"code": "photo", "name": "数码照片回执"}]
    payload = CaseSupplementRequested(**{**TRANSITION, "comment": "照片模糊"}, missing_materials=missing)
    service.on_supplement_requested(new_event(payload, producer="intake").model_dump(mode="json"))
    doc = _inserted(store)
    assert doc["type"] == "case.supplement_requested.v1"
    assert doc["title"] == "您的“高龄津贴申领”申请需要补正材料"
    assert "1. 居民身份证；2. 数码照片回执" in doc["body"]
    assert "照片模糊" in doc["body"]


def test_withdrawal_notice(service, store):
    event = new_event(CaseWithdrawn(**{**TRANSITION, "by": "u-citizen"}), producer="intake")
    service.on_case_withdrawn(event.model_dump(mode="json"))
    doc = _inserted(store)
    assert doc["type"] == "case.withdrawn.v1"
    assert doc["title"] == "您的“高龄津贴申领”申请已撤回"
    assert "2026年11月23日 10:05" in doc["body"]


def test_a_reviewers_approval_is_not_called_instant(service, store):
    event = decided(decided_by="r-1")
    service.on_case_approved(event.model_dump(mode="json"))
    doc = _inserted(store)
    assert doc["type"] == "case.approved.v1"
    assert "秒批" not in doc["body"]


def test_a_reviewers_rejection_gives_the_reason(service, store):
    event = decided(CaseRejected, "rejected", decided_by="r-1", reason="材料不全")
    service.on_case_rejected(event.model_dump(mode="json"))
    assert "原因：材料不全" in _inserted(store)["body"]


@pytest.mark.parametrize(
    ("handler", "wrong"),
    [
        ("on_case_accepted", new_event(CaseWithdrawn(**TRANSITION), producer="intake")),
        ("on_supplement_requested", new_event(CaseAccepted(**TRANSITION), producer="intake")),
        ("on_case_withdrawn", new_event(CaseEvaluated(**TRANSITION, score=1, bad=True), producer="intake")),
        ("on_case_approved", decided(CaseRejected, "rejected", reason="x")),
    ],
)
def test_lifecycle_handlers_refuse_other_events(service, store, handler, wrong):
    with pytest.raises(PoisonMessage):
        getattr(service, handler)(wrong.model_dump(mode="json"))
    store.create.assert_not_called()


def test_list_notifications(service, store):
    row = {
        "_id": "n1",
        "notification_id": "n1",
        "recipient": "u-citizen",
        "event_id": "e" * 32,
        "case_no": "620524MZ-20261123-000007",
        "type": "case.submitted.v1",
        "title": "t",
        "body": "b",
        "created_at": SUBMITTED_AT,
        "read_at": None,
        "channels": {"inbox": {"status": "delivered"}, "email": {"status": "failed"}},
    }
    store.list_for.return_value = ([row], 41)
    result = service.list_notifications(CITIZEN, True, {"page": 3, "page_size": 20})
    store.list_for.assert_called_once_with("u-citizen", True, 40, 20)
    assert result["total"] == 41
    assert result["page"] == 3
    [item] = result["items"]
    assert item["notification_id"] == "n1"
    assert "recipient" not in item and "_id" not in item and "event_id" not in item
    assert item["created_at"] == "2026-11-23T02:05:00Z"
    assert item["deliveries"] == [{"channel": "inbox", "status": "delivered"}, {"channel": "email", "status": "failed"}]


def test_list_notifications_refuses_bad_paging(service, store):
    with pytest.raises(ValidationFailed):
        service.list_notifications(CITIZEN, False, {"page_size": 1000})
    store.list_for.assert_not_called()


def test_mark_read(service, store):
    store.mark_read.return_value = True
    assert service.mark_read(CITIZEN, "n1") is None
    store.mark_read.assert_called_once_with("u-citizen", "n1")


def test_mark_read_of_someone_elses_notification_is_404(service, store):
    store.mark_read.return_value = False
    with pytest.raises(NotFound):
        service.mark_read(CITIZEN, "n1")


def test_ping(service, store):
    assert service.ping() == "pong"
    store.count.assert_called_once()


def test_the_applicants_profile_in_a_submission_never_reaches_the_templates(service, store, monkeypatch):
    profile = ApplicantProfile(user_id="u-citizen", account_type="citizen", name="张三", age=81, assurance_level=2)
    payload = CaseSubmitted(
        **COMMON, item_version=1, form={}, material_codes=[], submitted_at=SUBMITTED_AT, applicant=profile
    )
    seen = []
    real_compose = messages.compose
    monkeypatch.setattr(
        messages,
        "compose",
        lambda kind, context, channels: seen.append(context) or real_compose(kind, context, channels),
    )
    service.on_case_submitted(new_event(payload, producer="intake").model_dump(mode="json"))
    assert seen and "applicant" not in seen[0]
    assert _inserted(store)["title"] == "您的“高龄津贴申领”申请已提交"


# --- a person's contact changed ---------------------------------------------------------------------


def contact_changed(*changed):
    return new_event(ContactChanged(user_id="u-citizen", changed=list(changed)), producer="identity")


def identity_answers(service, phone="13911112222", email=None):
    answer = {"user_id": "u-citizen", "phone": phone, "email": email}
    service.identity.contact.call_async.return_value.result.return_value = answer


def test_a_removed_email_switches_the_email_channel_off(service, store):
    store.channels_chosen.return_value = ["inbox", "sms", "email"]
    identity_answers(service, email=None)
    service.on_contact_changed(contact_changed("email").model_dump(mode="json"))
    service.identity.contact.call_async.assert_called_once_with("u-citizen")
    assert store.drop_channels.call_args.args[:2] == ("u-citizen", ["email"])


def test_a_change_that_still_reaches_every_chosen_channel_writes_nothing(service, store):
    store.channels_chosen.return_value = ["inbox", "sms", "email"]
    identity_answers(service, email="li@example.cn")
    service.on_contact_changed(contact_changed("phone", "email").model_dump(mode="json"))
    store.drop_channels.assert_not_called()


def test_nobody_chose_anything_so_nobody_is_asked(service, store):
    service.on_contact_changed(contact_changed("email").model_dump(mode="json"))
    service.identity.contact.call_async.assert_not_called()
    store.choose_channels.assert_not_called()


def test_every_process_forgets_the_contact_it_kept(service):
    service.forget_kept_contact(contact_changed("phone").model_dump(mode="json"))
    service.contacts.changed.assert_called_once_with("u-citizen")


@pytest.mark.parametrize(
    ("account_type", "how", "channels", "words"),
    [
        ("citizen", "changed", [("inbox", "delivered"), ("sms", "pending")], "修改"),
        ("enterprise", "reset", [("inbox", "delivered"), ("sms", "pending")], "重置"),
        ("staff", "changed", [("inbox", "delivered")], "修改"),  # staff have no phone
        ("staff", "reset_by_admin", [("inbox", "delivered")], "由管理员重置"),
    ],
)
def test_a_password_change_is_a_security_notice_to_the_holder(service, store, account_type, how, channels, words):
    from contracts.events import PasswordChanged

    changed_at = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)  # 10:30 in China
    event = new_event(
        PasswordChanged(user_id="u-1", account_type=account_type, how=how, changed_at=changed_at), producer="identity"
    )
    service.on_password_changed(event.model_dump(mode="json"))
    doc = _inserted(store)
    assert doc["recipient"] == "u-1" and doc["case_no"] is None and doc["type"] == "identity.password_changed.v1"
    assert words in doc["title"] and "2026年11月27日 10:30" in doc["body"] and "如非本人操作" in doc["body"]
    assert [(d["channel"], d["status"]) for d in messages.view(doc)["deliveries"]] == channels
    if account_type != "staff":
        assert "如非本人操作" in doc["content"]["sms"]["body"]
    NotificationView.model_validate(messages.view(doc))
