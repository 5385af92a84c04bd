"""Identity and access, proven from the outside: tokens, sessions, throttling, roles, assurance,
certificates. Everything goes over HTTP except minting deliberately bad tokens."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pymongo
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.identity import tokens
from services.identity.first_admin import first_admin_password
from services.identity.idnumbers import make_credit_code, make_id_number
from tests.e2e.conftest import RunningSystem, auth, log_in, sign_up
from tests.support import MONGO_URI, citizen, eventually

ADMIN = ("admin", first_admin_password())
ALLOWANCE = "62052400MZ-GF-0001"
NAME_RESERVATION = "62052400SC-XK-0001"
BUSINESS_REGISTRATION = "62052400SC-XK-0002"
ALLOWANCE_FORM = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}


def get(yiwang, path, person=None, **kwargs):
    return requests.get(yiwang.url(path), headers=auth(person) if person else {}, timeout=10, **kwargs)


def post(yiwang, path, body=None, person=None, headers=None):
    return requests.post(
        yiwang.url(path), json=body, headers={**(auth(person) if person else {}), **(headers or {})}, timeout=15
    )


@pytest.fixture(scope="module")
def admin(yiwang):
    return eventually(lambda: _try_login(yiwang, *ADMIN), what="the seeded admin")


def _try_login(yiwang, username, password):
    response = requests.post(yiwang.url("/api/v1/auth/login"), json={"username": username, "password": password})
    return {"token": response.json()["access_token"]} if response.ok else None


def staff(yiwang, admin, roles, department_code=None):
    username = f"staff{uuid.uuid4().hex[:8]}"
    body = {"username": username, "name": "工作人员", "password": "staff-password-1", "roles": roles}
    if department_code:
        body["department_code"] = department_code
    created = post(yiwang, "/api/v1/admin/staff", body, admin)
    assert created.status_code == 201, created.text
    return {**created.json(), **log_in(yiwang, username, "staff-password-1")}


# --- tokens and single sign-on ------------------------------------------------------------------


def test_another_app_verifies_our_token_with_pyjwt_and_the_jwks_endpoint(yiwang, applicant):
    client = jwt.PyJWKClient(yiwang.url("/.well-known/jwks.json"))
    key = client.get_signing_key_from_jwt(applicant["token"])
    claims = jwt.decode(applicant["token"], key.key, algorithms=["EdDSA"], audience="yiwang", issuer="yiwang-identity")
    assert claims["sub"] == applicant["user_id"]
    assert claims["roles"] == ["applicant"]


def test_refresh_token_works_once_and_reuse_ends_the_session(yiwang, applicant):
    first = post(yiwang, "/api/v1/auth/refresh", {"refresh_token": applicant["refresh_token"]})
    assert first.status_code == 200
    pair = first.json()
    assert pair["refresh_token"] != applicant["refresh_token"]
    assert get(yiwang, "/api/v1/me", {"token": pair["access_token"]}).status_code == 200

    reused = post(yiwang, "/api/v1/auth/refresh", {"refresh_token": applicant["refresh_token"]})
    assert reused.status_code == 401
    # The whole family is revoked: the newer refresh token and the session's access tokens too.
    assert post(yiwang, "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}).status_code == 401
    eventually(lambda: get(yiwang, "/api/v1/me", {"token": pair["access_token"]}).status_code == 401, what="revocation")
    # Other sessions of the same person are not affected.
    other = log_in(yiwang, applicant["id_number"], applicant["password"])
    assert get(yiwang, "/api/v1/me", other).status_code == 200


def test_logout_stops_the_access_token_at_once(yiwang):
    person = sign_up(yiwang)
    assert post(yiwang, "/api/v1/auth/logout", person=person).status_code == 204
    after = get(yiwang, "/api/v1/me", person)
    assert after.status_code == 401 and after.json()["error"]["code"] == "unauthenticated"
    assert post(yiwang, "/api/v1/auth/refresh", {"refresh_token": person["refresh_token"]}).status_code == 401


def test_key_rotation_does_not_log_anyone_out(yiwang, admin, applicant):
    old_kid = jwt.get_unverified_header(applicant["token"])["kid"]
    rotated = post(yiwang, "/api/v1/admin/signing-keys", person=admin)
    assert rotated.status_code == 201
    new_kid = rotated.json()["kid"]
    assert get(yiwang, "/api/v1/me", applicant).status_code == 200
    fresh = log_in(yiwang, applicant["id_number"], applicant["password"])
    assert jwt.get_unverified_header(fresh["token"])["kid"] == new_kid != old_kid
    assert get(yiwang, "/api/v1/me", fresh).status_code == 200
    kids = {k["kid"] for k in get(yiwang, "/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, new_kid} <= kids


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _signing_key(yiwang: RunningSystem) -> dict:
    keys = pymongo.MongoClient(MONGO_URI)[f"{yiwang.db_prefix}_identity"]["signing_keys"]
    return keys.find_one({}, sort=[("created_at", -1)])


@pytest.mark.local_only("reads the signing key from the document store")
def test_bad_tokens_are_all_refused(yiwang, applicant):
    key = _signing_key(yiwang)
    claims = jwt.decode(applicant["token"], options={"verify_signature": False})
    now = datetime.now(UTC)
    expired = jwt.encode(
        {
            **claims,
            "iat": int((now - timedelta(hours=2)).timestamp()),
            "exp": int((now - timedelta(hours=1)).timestamp()),
        },
        tokens.signing_half(key),  # opened with the secret the system runs with (conftest)
        algorithm="EdDSA",
        headers={"kid": key["kid"]},
    )
    header, _, signature = applicant["token"].split(".")
    tampered = ".".join([header, _b64({**claims, "roles": ["admin"]}), signature])
    other_key = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": key["kid"]})
    alg_none = ".".join([_b64({"alg": "none", "typ": "JWT", "kid": key["kid"]}), _b64(claims), ""])
    hs256 = jwt.encode(claims, "a-secret-anyone-could-guess-32bytes!", algorithm="HS256", headers={"kid": key["kid"]})

    for name, token in [
        ("expired", expired),
        ("tampered", tampered),
        ("other key", other_key),
        ("alg none", alg_none),
        ("hs256", hs256),
        ("garbage", "not-a-token"),
    ]:
        response = get(yiwang, "/api/v1/me", {"token": token})
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthenticated", name
    assert "expired" in get(yiwang, "/api/v1/me", {"token": expired}).json()["error"]["message"]


# --- throttling ----------------------------------------------------------------------------------


def test_failed_logins_throttle_the_account(yiwang):
    person = sign_up(yiwang)
    here = {"X-Forwarded-For": "198.51.100.20"}
    for _ in range(3):
        wrong = post(
            yiwang, "/api/v1/auth/login", {"username": person["phone"], "password": "wrong-password"}, headers=here
        )
        assert wrong.status_code == 401
    blocked = post(
        yiwang, "/api/v1/auth/login", {"username": person["phone"], "password": person["password"]}, headers=here
    )
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert 0 < int(blocked.headers["Retry-After"]) <= 900
    # Another account from the same address still logs in.
    other = sign_up(yiwang)
    ok = post(yiwang, "/api/v1/auth/login", {"username": other["phone"], "password": other["password"]}, headers=here)
    assert ok.status_code == 200


def test_failed_logins_throttle_the_client_address(yiwang):
    person = sign_up(yiwang)
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    for n in range(6):
        guess = post(
            yiwang, "/api/v1/auth/login", {"username": f"nobody{n}", "password": "guess-guess"}, headers=attacker
        )
        assert guess.status_code == 401
    login = {"username": person["phone"], "password": person["password"]}
    blocked = post(yiwang, "/api/v1/auth/login", login, headers=attacker)
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    assert post(yiwang, "/api/v1/auth/login", login, headers={"X-Forwarded-For": "198.51.100.77"}).status_code == 200


def test_registrations_from_one_address_are_limited_refused_ones_too(yiwang):
    # 20 per window in these tests (SETTINGS). A refused repeat (409) counts as well: each answer
    # says whether an id number is registered, and nobody may ask that at will.
    here = {"X-Forwarded-For": "198.51.100.99"}
    person = citizen()
    assert post(yiwang, "/api/v1/auth/register", person, headers=here).status_code == 201
    for _ in range(19):
        assert post(yiwang, "/api/v1/auth/register", person, headers=here).status_code == 409
    blocked = post(yiwang, "/api/v1/auth/register", citizen(), headers=here)
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert 0 < int(blocked.headers["Retry-After"]) <= 900
    # Invalid input is refused before it is counted, and another address registers.
    assert post(yiwang, "/api/v1/auth/register", {**citizen(), "phone": "1"}, headers=here).status_code == 422
    elsewhere = post(yiwang, "/api/v1/auth/register", citizen(), headers={"X-Forwarded-For": "198.51.100.98"})
    assert elsewhere.status_code == 201


# --- roles and who sees what --------------------------------------------------------------------


def test_each_role_sees_only_what_it_may(yiwang, admin):
    owner, stranger = sign_up(yiwang), sign_up(yiwang)
    case_no = post(yiwang, "/api/v1/cases", {"item_code": ALLOWANCE, "form": ALLOWANCE_FORM}, owner).json()["case_no"]
    reviewer_here = staff(yiwang, admin, ["reviewer"], "620524MZ")
    reviewer_elsewhere = staff(yiwang, admin, ["reviewer"], "620524SC")
    supervisor = staff(yiwang, admin, ["supervisor"])

    assert get(yiwang, f"/api/v1/cases/{case_no}", owner).status_code == 200
    assert get(yiwang, f"/api/v1/cases/{case_no}", reviewer_here).status_code == 200
    assert get(yiwang, f"/api/v1/cases/{case_no}", supervisor).status_code == 200
    for outsider in (stranger, reviewer_elsewhere):
        hidden = get(yiwang, f"/api/v1/cases/{case_no}", outsider)
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    assert all(c["case_no"] != case_no for c in get(yiwang, "/api/v1/cases", stranger).json()["items"])
    assert case_no not in json.dumps(get(yiwang, "/api/v1/notifications", stranger).json())

    # Staff do not apply; applicants do not administer.
    assert (
        post(yiwang, "/api/v1/cases", {"item_code": ALLOWANCE, "form": ALLOWANCE_FORM}, reviewer_here).status_code
        == 403
    )
    for path in ("/api/v1/admin/staff", "/api/v1/admin/signing-keys"):
        forbidden = post(yiwang, path, {"username": "x"}, owner)
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"

    me = get(yiwang, "/api/v1/me", reviewer_here).json()
    assert me["roles"] == ["reviewer"] and me["department_code"] == "620524MZ"


def test_staff_creation_validates_and_refuses_duplicates(yiwang, admin):
    body = {
        "username": f"dup{uuid.uuid4().hex[:6]}",
        "name": "审核员",
        "password": "staff-password-1",
        "roles": ["reviewer"],
        "department_code": "620524MZ",
    }
    assert post(yiwang, "/api/v1/admin/staff", body, admin).status_code == 201
    assert post(yiwang, "/api/v1/admin/staff", body, admin).status_code == 409
    bad = post(yiwang, "/api/v1/admin/staff", {**body, "roles": ["king"], "username": "Bad Name"}, admin)
    assert bad.status_code == 422
    assert {d["field"] for d in bad.json()["error"]["details"]} >= {"username", "roles.0"}


# --- assurance levels ----------------------------------------------------------------------------


def test_real_name_then_face_raises_the_assurance_level(yiwang):
    person = sign_up(yiwang)
    face_first = post(
        yiwang, "/api/v1/me/verifications/face", {"liveness_token": f"local-live:{person['id_number']}"}, person
    )
    assert face_first.status_code == 409

    real_name = post(yiwang, "/api/v1/me/verifications/real-name", person=person)
    assert real_name.status_code == 200 and real_name.json()["assurance_level"] == 2
    assert get(yiwang, "/api/v1/me", person).json()["assurance_level"] == 2

    wrong_face = post(yiwang, "/api/v1/me/verifications/face", {"liveness_token": "local-live:someone-else"}, person)
    assert wrong_face.status_code == 422
    face = post(
        yiwang, "/api/v1/me/verifications/face", {"liveness_token": f"local-live:{person['id_number']}"}, person
    )
    assert face.status_code == 200 and face.json()["assurance_level"] == 3


def test_registry_refusal_leaves_the_level_unchanged(yiwang):
    unknown = citizen()
    unknown["id_number"] = make_id_number("620524", datetime(1970, 1, 1).date(), 999)
    person = sign_up(yiwang, unknown)
    refused = post(yiwang, "/api/v1/me/verifications/real-name", person=person)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_failed"
    assert get(yiwang, "/api/v1/me", person).json()["assurance_level"] == 1


# --- certificates: data travels instead of people -----------------------------------------------


def test_a_certificate_issued_on_approval_is_reused_instead_of_uploaded(yiwang):
    person = sign_up(yiwang)
    assert post(yiwang, "/api/v1/me/verifications/real-name", person=person).status_code == 200
    reserved = post(
        yiwang,
        "/api/v1/cases",
        {"item_code": NAME_RESERVATION, "form": {"proposed_name": "武山县云帆科技有限公司", "industry": "软件"}},
        person,
    ).json()

    def certificate():
        items = get(yiwang, "/api/v1/me/certificates", person).json()["items"]
        return items[0] if items else None

    cert = eventually(certificate, what="the name reservation certificate")
    assert cert["type"] == "name_reservation" and cert["case_no"] == reserved["case_no"]
    assert cert["data"]["proposed_name"] == "武山县云帆科技有限公司"
    assert cert["valid_until"] > cert["issued_at"]
    eventually(
        lambda: (
            get(yiwang, f"/api/v1/cases/{reserved['case_no']}", person).json()["certificate_id"]
            == cert["certificate_id"]
        ),
        what="the case to link its certificate",
    )

    form = {"registered_capital": 100, "business_scope": "软件开发"}
    missing = post(yiwang, "/api/v1/cases", {"item_code": BUSINESS_REGISTRATION, "form": form}, person)
    assert missing.status_code == 422
    uploaded = post(
        yiwang,
        "/api/v1/cases",
        {
            "item_code": BUSINESS_REGISTRATION,
            "form": form,
            "materials": [{"code": "name_reservation", "document_id": "d-1"}],
        },
        person,
    )
    assert uploaded.status_code == 422
    assert uploaded.json()["error"]["details"][0]["field"] == "materials.0.certificate_id"

    materials = [{"code": "name_reservation", "certificate_id": cert["certificate_id"]}]
    stranger = sign_up(yiwang)
    stolen = post(
        yiwang, "/api/v1/cases", {"item_code": BUSINESS_REGISTRATION, "form": form, "materials": materials}, stranger
    )
    assert stolen.status_code == 422
    assert stolen.json()["error"]["details"] == [
        {"field": "materials.0.certificate_id", "issue": "no such certificate of yours"}
    ]

    created = post(
        yiwang, "/api/v1/cases", {"item_code": BUSINESS_REGISTRATION, "form": form, "materials": materials}, person
    )
    assert created.status_code == 201, created.text

    def decided():
        case = get(yiwang, f"/api/v1/cases/{created.json()['case_no']}", person).json()
        return case if case["status"] == "approved" else None

    decision = eventually(decided, what="automatic approval from the certificate")["decision"]
    held = next(r for r in decision["explanation"] if r["rule_id"] == "holds_name_reservation")
    assert {"name": "certificates", "value": ["name_reservation"]} in held["inputs"]
    licence = eventually(
        lambda: [
            c for c in get(yiwang, "/api/v1/me/certificates", person).json()["items"] if c["type"] == "business_licence"
        ],
        what="the business licence",
    )
    assert licence[0]["valid_until"] is None


# --- registration input --------------------------------------------------------------------------


def test_registration_input_is_validated_field_by_field(yiwang):
    bad = {"account_type": "citizen", "name": "", "id_number": "123", "phone": "12345", "password": "short", "age": 3}
    response = post(yiwang, "/api/v1/auth/register", bad)
    assert response.status_code == 422
    fields = {d["field"] for d in response.json()["error"]["details"]}
    assert {"name", "id_number", "phone", "password", "age"} <= {f.split(".")[-1] for f in fields}

    common = {**citizen(), "password": "password"}
    assert post(yiwang, "/api/v1/auth/register", common).json()["error"]["details"][0]["field"] == "password"

    enterprise = {
        "account_type": "enterprise",
        "name": "武山县云帆科技有限公司",
        "credit_code": "91350100M000100Y44",
        "legal_person_name": "李四",
        "legal_person_id_number": citizen()["id_number"],
        "phone": citizen()["phone"],
        "password": "enterprise-pass-1",
    }
    refused = post(yiwang, "/api/v1/auth/register", enterprise)
    assert refused.status_code == 422
    assert refused.json()["error"]["details"] == [
        {"field": "credit_code", "issue": "check character does not match (GB 32100)"}
    ]
    accepted = post(yiwang, "/api/v1/auth/register", {**enterprise, "credit_code": "91350100M000100Y43"})
    assert accepted.status_code == 201 and accepted.json()["account_type"] == "enterprise"
    company = log_in(yiwang, "91350100m000100y43", "enterprise-pass-1")  # by credit code, any case
    me = get(yiwang, "/api/v1/me", company).json()
    assert me["account_type"] == "enterprise" and me["roles"] == ["applicant"]
    # The representative is a real person, and this company's: both registries confirm.
    assert post(yiwang, "/api/v1/me/verifications/real-name", person=company).status_code == 200

    # A real person naming themself the representative of a company the business registry does not
    # confirm them for (the local one: organization codes 999…) stays at level 1.
    stranger = {**citizen(), "password": "enterprise-pass-1"}
    unconfirmed = make_credit_code("91620524999000123")
    body = {
        **enterprise,
        "credit_code": unconfirmed,
        "phone": stranger["phone"],
        "legal_person_id_number": stranger["id_number"],
    }
    assert post(yiwang, "/api/v1/auth/register", body).status_code == 201
    claimed = log_in(yiwang, unconfirmed, "enterprise-pass-1")
    refused = post(yiwang, "/api/v1/me/verifications/real-name", person=claimed)
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "credit_code"
    assert get(yiwang, "/api/v1/me", claimed).json()["assurance_level"] == 1


@pytest.mark.local_only("reads the processes' log files")
def test_personal_data_never_reaches_the_logs(yiwang):
    person = sign_up(yiwang)
    post(yiwang, "/api/v1/auth/register", person)  # a conflict, logged as an expected error
    post(yiwang, "/api/v1/auth/login", {"username": person["id_number"], "password": "wrong-password"})
    logs = sorted(yiwang.log_dir.glob("*.log"))
    assert {"gateway.log", "identity.log"} <= {log.name for log in logs}  # else nothing is checked
    for log in logs:
        text = log.read_text(encoding="utf-8", errors="replace")
        assert person["id_number"] not in text, log.name
        assert person["phone"] not in text, log.name
        assert person["token"] not in text, log.name
