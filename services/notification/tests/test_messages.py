import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from jinja2 import TemplateNotFound, UndefinedError

import contracts.events  # noqa: F401 (registers the event types; the test must not depend on test order)
from contracts.envelope import registered_events
from services.notification import messages

CASE = {"case_no": "620524MZ-20261123-000007", "item_name": "高龄津贴申领"}


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 23, 2, 5, tzinfo=UTC), "2026年11月23日 10:05"),
        (datetime(2026, 11, 22, 23, 30, tzinfo=UTC), "2026年11月23日 07:30"),  # the next day in China
        ("2026-11-23T02:05:00+00:00", "2026年11月23日 10:05"),
        ("2026-11-23T10:05:00+08:00", "2026年11月23日 10:05"),
        (datetime(2026, 11, 23, 9, 5, tzinfo=timezone(timedelta(hours=7))), "2026年11月23日 10:05"),
        # Without a zone (as pymongo reads a time back): UTC, whatever the host's zone.
        (datetime(2026, 11, 23, 2, 5), "2026年11月23日 10:05"),
        ("2026-11-23T02:05:00", "2026年11月23日 10:05"),
    ],
)
def test_local_time_is_china_time(moment, expected, monkeypatch):
    # On a host whose zone is China's, a time without one was taken as China time already.
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert messages.local_time(moment) == expected
    finally:
        monkeypatch.undo()
        time.tzset()


def test_submitted_message():
    title, body = messages.render("inbox", "case.submitted.v1", {**CASE, "submitted_at": "2026年11月23日 10:05"})
    assert title == "您的“高龄津贴申领”申请已提交"
    assert body == (
        "您于2026年11月23日 10:05提交的“高龄津贴申领”申请（办件编号 620524MZ-20261123-000007）已收件，我们将尽快办理。"
    )


def test_approved_message_mentions_instant_approval():
    context = {**CASE, "decided_at": "2026年11月23日 10:05", "decided_by": "auto", "reason": ""}
    title, body = messages.render("inbox", "case.approved.v1", context)
    assert title == "您的“高龄津贴申领”申请已办结：准予"
    assert "620524MZ-20261123-000007" in body
    assert "2026年11月23日 10:05" in body
    assert body.endswith("审批通过（秒批）。")


def test_approved_by_a_reviewer_is_not_instant():
    context = {**CASE, "decided_at": "2026年11月23日 10:05", "decided_by": "staff-1", "reason": ""}
    _, body = messages.render("inbox", "case.approved.v1", context)
    assert "秒批" not in body
    assert body.endswith("审批通过。")


def test_rejected_message_gives_the_reason_and_remedies():
    context = {**CASE, "decided_at": "2026年11月23日 10:05", "decided_by": "auto", "reason": "申请人年满80周岁"}
    title, body = messages.render("inbox", "case.rejected.v1", context)
    assert title == "您的“高龄津贴申领”申请未获批准"
    assert "原因：申请人年满80周岁。" in body
    assert "行政复议" in body


def test_a_text_longer_than_providers_take_is_cut_and_points_to_the_rest():
    # A reviewer's reason may be 2,000 characters: providers refuse such a text (a permanent
    # failure, the text lost); the inbox and the email carry it whole.
    context = {**CASE, "decided_at": "2026年11月23日 10:05", "decided_by": "r-1", "reason": "材料不全" * 500}
    text = messages.render_sms("case.rejected.v1", context)
    assert len(text) == messages.MAX_SMS_CHARS and text.endswith("（详情请登录查看）")
    assert text.startswith("【一网通办】您的“高龄津贴申领”申请")
    short = messages.render_sms("case.rejected.v1", {**context, "reason": "不符合条件"})
    assert short.endswith("原因：不符合条件。")
    _, body = messages.render("inbox", "case.rejected.v1", context)
    assert "材料不全" * 500 in body


def test_title_and_body_are_trimmed():
    title, body = messages.render("inbox", "case.submitted.v1", {**CASE, "submitted_at": "x"})
    assert title == title.strip() and "\n" not in title
    assert body == body.strip()


def test_missing_field_is_an_error_not_a_blank():
    with pytest.raises(UndefinedError):
        messages.render("inbox", "case.submitted.v1", {"item_name": "高龄津贴申领"})


def test_no_html_escaping_in_plain_text():
    title, _ = messages.render("inbox", "case.submitted.v1", {**CASE, "item_name": "A&B <C>", "submitted_at": "x"})
    assert "A&B <C>" in title


def test_unknown_template():
    with pytest.raises(TemplateNotFound):
        messages.render("inbox", "case.exploded.v1", CASE)


def test_every_case_event_the_service_consumes_has_an_inbox_template():
    for event_type in (
        "case.submitted.v1",
        "case.approved.v1",
        "case.rejected.v1",
        "case.accepted.v1",
        "case.supplement_requested.v1",
        "case.withdrawn.v1",
    ):
        assert event_type in registered_events()
        assert (messages.TEMPLATE_DIR / "inbox" / f"{event_type}.j2").is_file()


def test_notification_id_is_stable_per_event_and_recipient():
    first = messages.notification_id("e" * 32, "u1")
    assert first == messages.notification_id("e" * 32, "u1")
    assert len(first) == 24
    int(first, 16)
    assert first != messages.notification_id("e" * 32, "u2")
    assert first != messages.notification_id("f" * 32, "u1")


def test_notification_id_does_not_collide_on_concatenation():
    assert messages.notification_id("ab", "c") != messages.notification_id("a", "bc")


# --- lifecycle notices ------------------------------------------------------------------------------

TRANSITION = {**CASE, "at": "2026年11月23日 10:05", "by": "r-1", "comment": None}


def test_accepted_message_gives_the_promised_deadline():
    title, body = messages.render("inbox", "case.accepted.v1", {**TRANSITION, "deadline": "2026-11-30"})
    assert title == "您的“高龄津贴申领”申请已受理"
    assert body == (
        "您的“高龄津贴申领”申请（办件编号 620524MZ-20261123-000007）已于2026年11月23日 10:05受理，"
        "承诺于2026-11-30前办结。"
    )


def test_accepted_message_without_a_deadline():
    _, body = messages.render("inbox", "case.accepted.v1", {**TRANSITION, "deadline": None})
    assert "承诺" not in body
    assert body.endswith("受理。")


def test_supplement_message_lists_every_missing_material_by_name():
    missing = [
        {"code": "id_card", "name": "居民身份证"},
        {"code": "photo", "name": "数码照片回执"},
        {"code": "proof", "name": "户籍证明"},
    ]
    title, body = messages.render(
        "inbox", "case.supplement_requested.v1", {**TRANSITION, "missing_materials": missing, "comment": "照片不清晰"}
    )
    assert title == "您的“高龄津贴申领”申请需要补正材料"
    assert "620524MZ-20261123-000007" in body
    assert "请一次性补齐以下材料：1. 居民身份证；2. 数码照片回执；3. 户籍证明。" in body
    assert "审核意见：照片不清晰。" in body
    assert "id_card" not in body  # names, not codes
    assert body.endswith("补正期间办理时限暂停计算。")


def test_supplement_message_without_a_comment():
    _, body = messages.render(
        "inbox", "case.supplement_requested.v1", {**TRANSITION, "missing_materials": [{"code": "p", "name": "照片"}]}
    )
    assert "1. 照片。" in body
    assert "审核意见" not in body


def test_supplement_message_asking_only_in_words_lists_no_empty_materials():
    _, body = messages.render(
        "inbox", "case.supplement_requested.v1", {**TRANSITION, "missing_materials": [], "comment": "请说明换领原因"}
    )
    assert "审核意见：请说明换领原因。" in body
    assert "：。" not in body


def test_withdrawn_message():
    title, body = messages.render("inbox", "case.withdrawn.v1", TRANSITION)
    assert title == "您的“高龄津贴申领”申请已撤回"
    assert body == "您已于2026年11月23日 10:05撤回“高龄津贴申领”申请（办件编号 620524MZ-20261123-000007）。"


@pytest.mark.parametrize("event_type", ["case.accepted.v1", "case.supplement_requested.v1", "case.withdrawn.v1"])
def test_lifecycle_notices_need_their_fields(event_type):
    with pytest.raises(UndefinedError):
        messages.render("inbox", event_type, {"item_name": "高龄津贴申领", "deadline": None, "comment": None})
