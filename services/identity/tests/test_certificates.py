from datetime import UTC, datetime, timedelta

import pytest

from contracts.cases import Decision
from contracts.catalog import IssuedCertificate
from contracts.events import CaseApproved
from contracts.identity import Certificate, CertificateCheck
from services.identity import certificates

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
CASE_NO = "620524SC-20261126-000003"


def approved(issues=None, form=None, **overrides):
    return CaseApproved(
        case_no=CASE_NO,
        item_code="62052400SC-XK-0001",
        item_name="企业名称自主申报",
        department_code="620524SC",
        applicant_id="u-citizen",
        decision=Decision(outcome="approved", decided_by="auto", decided_at=NOW),
        issues_certificate=issues,
        form={"proposed_name": "武山县某某商贸有限公司", "industry": "零售"} if form is None else form,
        **overrides,
    )


NAME_RESERVATION = IssuedCertificate(type="name_reservation", name="企业名称自主申报告知书", valid_days=60)
LICENCE = IssuedCertificate(type="business_licence", name="营业执照（电子）", valid_days=None)


def doc(user_id="u-citizen", type_="name_reservation", valid_until=NOW + timedelta(days=1), **overrides):
    return {
        "_id": f"{type_}:{CASE_NO}",
        "certificate_id": f"{type_}:{CASE_NO}",
        "type": type_,
        "name": "企业名称自主申报告知书",
        "user_id": user_id,
        "issued_at": NOW - timedelta(days=1),
        "valid_until": valid_until,
        "case_no": CASE_NO,
        "data": {},
        **overrides,
    }


# --- ids ----------------------------------------------------------------------------------------


def test_certificate_id_is_deterministic_per_case():
    assert certificates.certificate_id("name_reservation", CASE_NO) == f"name_reservation:{CASE_NO}"
    assert certificates.certificate_id("name_reservation", CASE_NO) == certificates.certificate_id(
        "name_reservation", CASE_NO
    )
    assert certificates.certificate_id("name_reservation", CASE_NO) != certificates.certificate_id(
        "name_reservation", "620524SC-20261126-000004"
    )
    assert certificates.certificate_id("name_reservation", CASE_NO) != certificates.certificate_id(
        "business_licence", CASE_NO
    )


def test_a_redelivered_approval_makes_the_same_certificate_id():
    first = certificates.new_certificate(approved(NAME_RESERVATION), NOW)
    again = certificates.new_certificate(approved(NAME_RESERVATION), NOW + timedelta(minutes=3))
    assert first["_id"] == again["_id"] == first["certificate_id"]


# --- new_certificate ----------------------------------------------------------------------------


def test_no_certificate_when_the_item_issues_none():
    assert certificates.new_certificate(approved(None), NOW) is None


def test_new_certificate_document():
    cert = certificates.new_certificate(approved(NAME_RESERVATION), NOW)
    assert cert == {
        "_id": f"name_reservation:{CASE_NO}",
        "certificate_id": f"name_reservation:{CASE_NO}",
        "type": "name_reservation",
        "name": "企业名称自主申报告知书",
        "user_id": "u-citizen",
        "issued_at": NOW,
        "valid_until": NOW + timedelta(days=60),
        "case_no": CASE_NO,
        "data": {
            "item_code": "62052400SC-XK-0001",
            "item_name": "企业名称自主申报",
            "proposed_name": "武山县某某商贸有限公司",
            "industry": "零售",
        },
    }


def test_certificate_without_valid_days_never_expires():
    cert = certificates.new_certificate(approved(LICENCE), NOW)
    assert cert["valid_until"] is None
    assert certificates.is_valid(cert, NOW + timedelta(days=365 * 50))


def test_valid_until_follows_valid_days():
    one_day = IssuedCertificate(type="permit", name="许可", valid_days=1)
    assert certificates.new_certificate(approved(one_day), NOW)["valid_until"] == NOW + timedelta(days=1)


# --- is_valid -----------------------------------------------------------------------------------


def test_valid_until_in_the_future_is_valid():
    assert certificates.is_valid(doc(valid_until=NOW + timedelta(seconds=1)), NOW)


@pytest.mark.parametrize("valid_until", [NOW, NOW - timedelta(seconds=1)], ids=["at-expiry", "after-expiry"])
def test_expired_is_not_valid(valid_until):
    assert not certificates.is_valid(doc(valid_until=valid_until), NOW)


def test_revoked_is_not_valid_even_before_expiry():
    assert not certificates.is_valid(doc(revoked_at=NOW - timedelta(hours=1)), NOW)
    assert not certificates.is_valid(doc(valid_until=None, revoked_at=NOW), NOW)


def test_revoked_at_none_is_not_revoked():
    assert certificates.is_valid(doc(revoked_at=None), NOW)


# --- view ---------------------------------------------------------------------------------------


def test_view_has_the_public_fields_only():
    view = certificates.view({**doc(), "outbox": {"x": 1}, "outbox_ids": ["x"]})
    assert isinstance(view, Certificate)
    dumped = view.model_dump(mode="json")
    assert set(dumped) == {"certificate_id", "type", "name", "issued_at", "valid_until", "case_no", "data"}
    assert dumped["certificate_id"] == f"name_reservation:{CASE_NO}"


def test_view_of_a_fresh_certificate():
    cert = certificates.new_certificate(approved(LICENCE), NOW)
    view = certificates.view(cert)
    assert view.valid_until is None
    assert view.case_no == CASE_NO
    assert view.data["item_code"] == "62052400SC-XK-0001"


# --- check --------------------------------------------------------------------------------------


def test_check_of_ones_own_valid_certificate():
    mine = doc()
    assert certificates.check([mine["_id"]], {mine["_id"]: mine}, "u-citizen", NOW) == [
        CertificateCheck(certificate_id=mine["_id"], owned=True, valid=True, type="name_reservation")
    ]


def test_check_of_ones_own_expired_certificate_says_its_type():
    mine = doc(valid_until=NOW - timedelta(days=1))
    [result] = certificates.check([mine["_id"]], {mine["_id"]: mine}, "u-citizen", NOW)
    assert (result.owned, result.valid, result.type) == (True, False, "name_reservation")


def test_check_hides_other_peoples_certificates():
    theirs = doc(user_id="u-someone-else")
    [result] = certificates.check([theirs["_id"]], {theirs["_id"]: theirs}, "u-citizen", NOW)
    assert result == CertificateCheck(certificate_id=theirs["_id"], owned=False, valid=False, type=None)


def test_unknown_certificate_looks_like_someone_elses():
    [unknown] = certificates.check(["nope:1"], {}, "u-citizen", NOW)
    theirs = doc(user_id="u-someone-else")
    [other] = certificates.check([theirs["_id"]], {theirs["_id"]: theirs}, "u-citizen", NOW)
    assert unknown.model_dump(exclude={"certificate_id"}) == other.model_dump(exclude={"certificate_id"})


def test_check_answers_every_id_in_order():
    mine, theirs = doc(), doc(user_id="u-other", type_="business_licence")
    found = {mine["_id"]: mine, theirs["_id"]: theirs}
    results = certificates.check(["missing", theirs["_id"], mine["_id"]], found, "u-citizen", NOW)
    assert [(r.certificate_id, r.owned, r.valid) for r in results] == [
        ("missing", False, False),
        (theirs["_id"], False, False),
        (mine["_id"], True, True),
    ]
