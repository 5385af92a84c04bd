"""Idempotency-Key helpers of intake (services/intake/cases.py) and the task-list row."""

from datetime import UTC, date, datetime

import pytest

from contracts.cases import CaseCreated, SubmitCase, Task
from services.common.errors import Conflict, ValidationFailed
from services.intake import cases

NOW = datetime(2026, 11, 23, 2, 0, 0, 123000, tzinfo=UTC)
ITEM_CODE = "62052400MZ-GF-0001"


def request(**overrides):
    return SubmitCase.model_validate(
        {
            "item_code": ITEM_CODE,
            "form": {"bank_account": "6222020200112233445", "contact_phone": "13800138000"},
            "materials": [{"code": "photo", "document_id": "d1"}],
            **overrides,
        }
    )


def stored(request_hash):
    return {
        "_id": "620524MZ-20261123-000007",
        "case_no": "620524MZ-20261123-000007",
        "status": "submitted",
        "item_code": ITEM_CODE,
        "item_version": 2,
        "submitted_at": NOW,
        "request_hash": request_hash,
        "form": {"anything": "else"},
    }


# --- idempotency_key ------------------------------------------------------------------------------


def test_no_header_means_no_key():
    assert cases.idempotency_key("u1", None) is None


def test_the_key_is_scoped_to_the_applicant():
    assert cases.idempotency_key("u1", "abc") == "u1:abc"
    assert cases.idempotency_key("u2", "abc") == "u2:abc"
    assert cases.idempotency_key("u1", "abc") != cases.idempotency_key("u2", "abc")


def test_surrounding_blanks_do_not_make_another_key():
    assert cases.idempotency_key("u1", "  abc \t") == cases.idempotency_key("u1", "abc")


def test_the_longest_allowed_key():
    header = "k" * cases.MAX_IDEMPOTENCY_KEY
    assert cases.MAX_IDEMPOTENCY_KEY == 200
    assert cases.idempotency_key("u1", header) == f"u1:{header}"
    assert cases.idempotency_key("u1", "x") == "u1:x"


@pytest.mark.parametrize("header", ["", "   ", "k" * 201, "k" * 5000], ids=["empty", "blank", "201", "5000"])
def test_a_key_of_bad_length_is_refused_naming_the_header(header):
    with pytest.raises(ValidationFailed) as info:
        cases.idempotency_key("u1", header)
    assert len(info.value.details) == 1
    assert info.value.details[0]["field"] == "Idempotency-Key"
    assert "200" in info.value.details[0]["issue"]


# --- request_hash ---------------------------------------------------------------------------------


def test_the_hash_is_stable_and_ignores_key_order():
    reordered = SubmitCase.model_validate(
        {
            "materials": [{"document_id": "d1", "code": "photo"}],
            "form": {"contact_phone": "13800138000", "bank_account": "6222020200112233445"},
            "item_code": ITEM_CODE,
        }
    )
    assert cases.request_hash(request()) == cases.request_hash(reordered)
    assert len(cases.request_hash(request())) == 64
    int(cases.request_hash(request()), 16)


@pytest.mark.parametrize(
    "change",
    [
        {"form": {"bank_account": "6222020200112233446", "contact_phone": "13800138000"}},
        {"materials": []},
        {"materials": [{"code": "photo", "document_id": "d2"}]},
        {"item_code": "62052400MZ-GF-0002"},
    ],
    ids=["form", "no-materials", "other-document", "other-item"],
)
def test_any_change_of_the_body_changes_the_hash(change):
    assert cases.request_hash(request(**change)) != cases.request_hash(request())


# --- replay ---------------------------------------------------------------------------------------


def test_the_same_body_replays_the_earlier_answer():
    earlier = stored(cases.request_hash(request()))
    answer = cases.replay(earlier, cases.request_hash(request()))
    assert answer["replayed"] is True
    assert {k: v for k, v in answer.items() if k != "replayed"} == cases.created(earlier).model_dump(mode="json")
    assert CaseCreated.model_validate({k: v for k, v in answer.items() if k != "replayed"}).case_no == (
        "620524MZ-20261123-000007"
    )
    assert "form" not in answer and "request_hash" not in answer


def test_another_body_under_the_same_key_is_a_conflict():
    earlier = stored(cases.request_hash(request()))
    with pytest.raises(Conflict):
        cases.replay(earlier, cases.request_hash(request(materials=[])))


def test_an_earlier_case_without_a_hash_is_never_replayed():
    earlier = stored(None)
    with pytest.raises(Conflict):
        cases.replay(earlier, cases.request_hash(request()))


# --- time precision -------------------------------------------------------------------------------


def test_now_is_kept_at_millisecond_precision(monkeypatch):
    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 23, 2, 0, 0, 123456, tzinfo=tz)

    monkeypatch.setattr(cases, "datetime", Clock)
    now = cases.now_utc()
    assert now == datetime(2026, 11, 23, 2, 0, 0, 123000, tzinfo=UTC)
    assert now.tzinfo is not None


def test_real_now_has_whole_milliseconds():
    assert cases.now_utc().microsecond % 1000 == 0


# --- task rows ------------------------------------------------------------------------------------


def _task_doc(deadline):
    return {
        "case_no": "620524MZ-20261123-000007",
        "item_code": ITEM_CODE,
        "item_name": "高龄津贴申领",
        "status": "accepted",
        "applicant": {"user_id": "u1", "name": "张三"},
        "submitted_at": NOW,
        "deadline": deadline,
        "deadline_provisional": False,
        "department_code": "620524MZ",
    }


@pytest.mark.parametrize(
    ("deadline", "overdue"),
    [("2026-11-27", True), ("2026-11-30", False), ("2026-12-01", False), (None, False)],
    ids=["past", "due-today", "future", "no-deadline"],
)
def test_a_task_is_overdue_only_after_its_deadline_day(deadline, overdue):
    task = cases.task(_task_doc(deadline), date(2026, 11, 30))
    assert isinstance(task, Task)
    assert task.overdue is overdue
    assert task.deadline == (date.fromisoformat(deadline) if deadline else None)
    assert task.applicant.name == "张三"


def test_a_replay_gives_the_first_answer_even_after_the_case_moved_on():
    earlier = {**stored(cases.request_hash(request())), "status": "approved"}  # decided in the meantime
    answer = cases.replay(earlier, cases.request_hash(request()))
    assert answer["status"] == "submitted"  # as the first answer said
