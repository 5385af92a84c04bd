"""Validation of the case lifecycle payloads: ReviewDecision, Supplement, Evaluation."""

import pytest
from pydantic import ValidationError

from contracts.cases import MAX_MATERIALS, Evaluation, ReviewDecision, SubmitCase, Supplement
from contracts.catalog import ItemQuery


def decision(**fields):
    return ReviewDecision.model_validate(fields)


@pytest.mark.parametrize("comment", [None, "", "   "], ids=["none", "empty", "blank"])
def test_a_rejection_needs_a_comment(comment):
    with pytest.raises(ValidationError) as info:
        decision(action="reject", comment=comment)
    assert "comment" in str(info.value)


def test_a_rejection_with_a_reason():
    assert decision(action="reject", comment="不符合条件").comment == "不符合条件"


def test_a_supplement_request_needs_materials_or_a_comment():
    with pytest.raises(ValidationError):
        decision(action="request_supplement")
    with pytest.raises(ValidationError):
        decision(action="request_supplement", missing_materials=[], comment=None)
    assert decision(action="request_supplement", missing_materials=["photo"]).missing_materials == ["photo"]
    assert decision(action="request_supplement", comment="请补充说明").comment == "请补充说明"
    both = decision(action="request_supplement", missing_materials=["photo", "id_card"], comment="照片不清晰")
    assert both.missing_materials == ["photo", "id_card"]


def test_a_blank_comment_does_not_say_what_is_missing():
    # Strings are stripped by every contract, so blanks are no comment.
    with pytest.raises(ValidationError):
        decision(action="request_supplement", missing_materials=[], comment="   ")


@pytest.mark.parametrize("action", ["accept", "approve"])
def test_accept_and_approve_need_nothing_more(action):
    assert decision(action=action).comment is None
    assert decision(action=action, comment="好").comment == "好"


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "pass"},
        {},
        {"action": "accept", "extra": 1},
        {"action": "accept", "comment": "x" * 2001},
        {"action": "request_supplement", "missing_materials": ["Photo"]},
        {"action": "request_supplement", "missing_materials": ["a.b"]},
        {"action": "request_supplement", "missing_materials": ["x" * 41]},
    ],
    ids=["unknown-action", "no-action", "extra-field", "long-comment", "upper-case", "dotted", "long-code"],
)
def test_malformed_decisions(fields):
    with pytest.raises(ValidationError):
        ReviewDecision.model_validate(fields)


def test_an_optional_list_sent_as_null_is_empty():
    # What many clients write for "none".
    assert decision(action="approve", comment=None, missing_materials=None).missing_materials == []
    assert SubmitCase.model_validate({"item_code": "x", "materials": None}).materials == []
    assert Supplement.model_validate({"materials": None}).materials == []
    with pytest.raises(ValidationError):
        decision(action="request_supplement", missing_materials=None)  # still needs something


def test_the_longest_comment():
    assert len(decision(action="reject", comment="x" * 2000).comment) == 2000


def test_a_supplement_is_a_material_list_and_optionally_a_form():
    supplement = Supplement.model_validate({"materials": [{"code": "photo", "document_id": "d1"}]})
    assert supplement.form is None
    assert Supplement.model_validate({}).materials == []
    assert Supplement.model_validate({"form": {"reason": "lost"}}).form == {"reason": "lost"}


@pytest.mark.parametrize(
    "payload",
    [
        {"form": {"$where": "1"}},
        {"form": {"a.b": 1}},
        {"form": {"nested": {"$x": 1}}},
        {"materials": [{"code": "photo"}]},
        {"materials": [{"code": "photo", "document_id": "d", "certificate_id": "c"}]},
        {"other": 1},
    ],
    ids=["dollar-key", "dotted-key", "nested-dollar", "no-source", "two-sources", "extra-field"],
)
def test_malformed_supplements(payload):
    with pytest.raises(ValidationError):
        Supplement.model_validate(payload)


@pytest.mark.parametrize("score", [1, 5])
def test_evaluation_scores_one_to_five(score):
    assert Evaluation(score=score).score == score


@pytest.mark.parametrize("payload", [{"score": 0}, {"score": 6}, {}, {"score": 3, "comment": "x" * 1001}])
def test_malformed_evaluations(payload):
    with pytest.raises(ValidationError):
        Evaluation.model_validate(payload)


@pytest.mark.parametrize("score", [True, "5", 4.0])
def test_an_evaluation_score_is_a_whole_number_as_json_writes_it(score):
    # Not true (read as 1), text or a fraction-less float: a client sending those has a bug to see.
    with pytest.raises(ValidationError, match="valid integer"):
        Evaluation.model_validate({"score": score})


@pytest.mark.parametrize("form", [{"m": [[1]]}, {"rows": [{"cells": [[1]]}]}])
def test_a_list_inside_a_list_is_refused_in_a_form(form):
    with pytest.raises(ValidationError, match="a list inside a list"):
        SubmitCase.model_validate({"item_code": "62052400MZ-GF-0001", "form": form})


def test_a_catalog_search_is_at_most_200_characters():
    assert ItemQuery(q="申" * 200).q == "申" * 200
    with pytest.raises(ValidationError):
        ItemQuery(q="申" * 201)


def test_an_application_gives_at_most_100_materials():
    many = [{"code": "photo", "document_id": f"d{i}"} for i in range(MAX_MATERIALS + 1)]
    for model, body in (
        (SubmitCase, {"item_code": "X", "materials": many}),
        (Supplement, {"materials": many}),
        (ReviewDecision, {"action": "request_supplement", "missing_materials": ["photo"] * (MAX_MATERIALS + 1)}),
    ):
        with pytest.raises(ValidationError):
            model.model_validate(body)
        model.model_validate({**body, **{k: v[:MAX_MATERIALS] for k, v in body.items() if isinstance(v, list)}})


@pytest.mark.parametrize("written", ["0", "1700000000", "2026-01-01T00:00:00", "20260101", "2026-1-1"])
def test_a_date_is_written_yyyy_mm_dd_and_nothing_else_reads_as_one(written):
    from contracts.cases import CalendarYear, SupervisionQuery

    with pytest.raises(ValidationError):
        SupervisionQuery.model_validate({"to": written})
    with pytest.raises(ValidationError):
        CalendarYear.model_validate({"holidays": [written]})
    with pytest.raises(ValidationError):
        CalendarYear.model_validate_json('{"holidays": [0]}')


def test_a_date_written_yyyy_mm_dd_reads():
    from datetime import date

    from contracts.cases import CalendarYear, SupervisionQuery

    assert SupervisionQuery.model_validate({"from": "2026-01-01"}).from_ == date(2026, 1, 1)
    assert CalendarYear.model_validate_json('{"holidays": ["2030-01-01"]}').holidays == [date(2030, 1, 1)]
