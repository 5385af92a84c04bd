from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from contracts.envelope import UnknownEventType, new_event, parse_event
from contracts.events import CaseApproved, CaseSubmitted


def _submitted() -> CaseSubmitted:
    return CaseSubmitted(
        case_no="MZ-20261126-000001",
        item_code="62052400MZ-GF-0001",
        item_version=1,
        item_name="高龄津贴申领",
        department_code="620524MZ",
        applicant_id="u1",
        form={"age": 81},
        material_codes=[],
        submitted_at=datetime.now(UTC),
    )


def test_round_trip_keeps_type_and_payload():
    envelope = new_event(_submitted(), producer="intake")
    assert envelope.type == "case.submitted.v1"
    parsed, payload = parse_event(envelope.model_dump(mode="json"))
    assert parsed.event_id == envelope.event_id
    assert isinstance(payload, CaseSubmitted)
    assert payload.form == {"age": 81}


def test_unknown_type_is_refused():
    raw = new_event(_submitted(), producer="intake").model_dump(mode="json")
    raw["type"] = "case.exploded.v1"
    with pytest.raises(UnknownEventType):
        parse_event(raw)


def test_payload_is_validated_on_consume():
    raw = new_event(_submitted(), producer="intake").model_dump(mode="json")
    del raw["payload"]["case_no"]
    with pytest.raises(ValidationError):
        parse_event(raw)


def test_expected_type_mismatch_is_refused():
    raw = new_event(_submitted(), producer="intake").model_dump(mode="json")
    with pytest.raises(UnknownEventType):
        parse_event(raw, expected=CaseApproved)


def test_a_submission_carries_the_profile_of_its_own_applicant_only():
    profile = {"user_id": "u1", "account_type": "citizen", "name": "张三", "assurance_level": 2}
    raw = new_event(_submitted(), producer="intake").model_dump(mode="json")
    raw["payload"]["applicant"] = profile
    _, payload = parse_event(raw)
    assert payload.applicant is not None and payload.applicant.assurance_level == 2
    raw["payload"]["applicant"] = {**profile, "user_id": "u2"}
    with pytest.raises(ValidationError, match=r"applicant\.user_id must be applicant_id"):
        parse_event(raw)


def test_a_supplement_request_names_every_material_it_lists():
    # The notices list the materials by name: an event without one was valid, and every try of its
    # handler failed on the template until it went to the dead letters (no 一次性告知 sent).
    from contracts.events import CaseSupplementRequested

    common = {
        "case_no": "MZ-20261126-000001",
        "item_code": "62052400MZ-GF-0001",
        "item_name": "高龄津贴申领",
        "department_code": "620524MZ",
        "applicant_id": "u1",
        "by": "r1",
        "at": datetime.now(UTC),
    }
    listed = CaseSupplementRequested(**common, missing_materials=[{"code": "id_card", "name": "身份证"}])
    assert listed.model_dump(mode="json")["missing_materials"] == [{"code": "id_card", "name": "身份证"}]
    with pytest.raises(ValidationError, match="name"):
        CaseSupplementRequested(**common, missing_materials=[{"code": "id_card"}])
