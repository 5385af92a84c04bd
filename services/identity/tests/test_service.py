from datetime import date
from unittest.mock import MagicMock

import jwt
import pytest
from nameko.testing.services import worker_factory

from contracts.identity import ApplicantProfile, JwkSet, RegistrationResult, TokenPair, UserView
from services.common.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from services.identity import accounts, tokens
from services.identity.idnumbers import make_credit_code, make_id_number
from services.identity.service import REFRESH_TTL, IdentityService

ID_NUMBER = make_id_number("620524", date(1940, 5, 6), 13)
PASSWORD = "Lintao-2026-secure"


@pytest.fixture(scope="module")
def signing_key():
    return tokens.new_signing_key()


@pytest.fixture
def store(signing_key):
    store = MagicMock()
    store.active_key.return_value = signing_key
    store.public_keys.return_value = [signing_key["public_jwk"]]
    store.find_by_login.return_value = None
    store.get_user.return_value = None
    return store


@pytest.fixture
def service(store):
    return worker_factory(IdentityService, store=store)


def citizen_payload(**overrides):
    payload = {
        "account_type": "citizen",
        "name": "张三",
        "id_number": ID_NUMBER,
        "phone": "13800138000",
        "password": PASSWORD,
    }
    payload.update(overrides)
    return payload


@pytest.fixture(scope="module")
def citizen_doc():
    from contracts.identity import CitizenRegistration

    return accounts.new_applicant(CitizenRegistration.model_validate(citizen_payload()))


# --- register -----------------------------------------------------------------------------------


def test_register_citizen_stores_the_user(service, store):
    result = service.register(citizen_payload())
    RegistrationResult.model_validate(result)
    assert result["account_type"] == "citizen"
    assert result["name"] == "张三"
    assert result["assurance_level"] == 1
    store.insert_user.assert_called_once()
    doc, login_field = store.insert_user.call_args.args
    assert login_field == "id_number"
    assert doc["_id"] == result["user_id"]
    assert doc["login_key"] == ID_NUMBER
    assert PASSWORD not in str(doc)


def test_register_enterprise(service, store):
    result = service.register(
        {
            "account_type": "enterprise",
            "name": "临洮县示例有限公司",
            "credit_code": make_credit_code("91620524MA0000001"),
            "legal_person_name": "李四",
            "legal_person_id_number": ID_NUMBER,
            "phone": "13900139000",
            "password": PASSWORD,
        }
    )
    assert result["account_type"] == "enterprise"
    assert store.insert_user.call_args.args[1] == "credit_code"


def test_invalid_id_check_digit_is_a_validation_error(service, store):
    bad = ID_NUMBER[:17] + ("0" if ID_NUMBER[17] != "0" else "1")
    with pytest.raises(ValidationFailed) as info:
        service.register(citizen_payload(id_number=bad))
    assert [d["field"] for d in info.value.details] == ["id_number"]
    store.insert_user.assert_not_called()


def test_common_password_is_refused(service, store):
    with pytest.raises(ValidationFailed) as info:
        service.register(citizen_payload(password="12345678"))
    assert [d["field"] for d in info.value.details] == ["password"]
    store.insert_user.assert_not_called()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"phone": "12345"}, "phone"),
        ({"password": "short"}, "password"),
        ({"id_number": "123"}, "id_number"),
        ({"email": "not-an-email"}, "email"),
        ({"name": ""}, "name"),
        ({"role": "admin"}, "role"),
    ],
)
def test_invalid_fields_are_named(service, store, overrides, field):
    with pytest.raises(ValidationFailed) as info:
        service.register(citizen_payload(**overrides))
    assert any(d["field"].endswith(field) for d in info.value.details), info.value.details
    store.insert_user.assert_not_called()


@pytest.mark.parametrize("payload", [{}, {"account_type": "staff"}, {"account_type": "citizen"}])
def test_incomplete_or_staff_registration_is_refused(service, store, payload):
    with pytest.raises(ValidationFailed):
        service.register(payload)
    store.insert_user.assert_not_called()


def test_duplicate_registration_conflict_passes_through(service, store):
    store.insert_user.side_effect = Conflict("id_number is already registered", [{"field": "id_number"}])
    with pytest.raises(Conflict):
        service.register(citizen_payload())


def test_id_number_with_a_superscript_digit_is_a_validation_error(service, store):
    # '²'.isdigit() is True but int('²') fails: it must be a 422, never a 500.
    with pytest.raises(ValidationFailed) as info:
        service.register(citizen_payload(id_number="²" + ID_NUMBER[1:]))
    assert [d["field"] for d in info.value.details] == ["id_number"]
    store.insert_user.assert_not_called()


# --- login --------------------------------------------------------------------------------------


def test_login_issues_a_verifiable_token_pair(service, store, citizen_doc, signing_key):
    store.find_by_login.return_value = citizen_doc
    pair = TokenPair.model_validate(service.login({"username": ID_NUMBER, "password": PASSWORD}))
    assert pair.token_type == "Bearer"
    assert pair.expires_in == 900
    claims = jwt.decode(
        pair.access_token, jwt.PyJWK(signing_key["public_jwk"]).key, algorithms=["EdDSA"], audience="yiwang"
    )
    assert claims["sub"] == citizen_doc["_id"]
    assert claims["roles"] == ["applicant"]
    store.find_by_login.assert_called_once_with(accounts.login_keys(ID_NUMBER), ID_NUMBER)
    digest, user_id, family, expires_at = store.store_refresh_token.call_args.args
    assert digest == tokens.refresh_digest(pair.refresh_token)
    assert digest != pair.refresh_token
    assert user_id == citizen_doc["_id"]
    assert family
    assert REFRESH_TTL.days == 14
    assert expires_at.tzinfo is not None


def test_login_by_phone_is_looked_up_by_phone(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    service.login({"username": "13800138000", "password": PASSWORD})
    assert store.find_by_login.call_args.args[1] == "13800138000"


def test_wrong_password_and_unknown_user_are_told_apart_by_nothing(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    with pytest.raises(Unauthenticated) as wrong:
        service.login({"username": ID_NUMBER, "password": "not the password"})
    store.find_by_login.return_value = None
    with pytest.raises(Unauthenticated) as unknown:
        service.login({"username": "nobody", "password": "not the password"})
    assert wrong.value.message == unknown.value.message
    assert wrong.value.details == unknown.value.details == []
    store.store_refresh_token.assert_not_called()


def test_user_without_password_hash_cannot_log_in(service, store, citizen_doc):
    store.find_by_login.return_value = {**citizen_doc, "password_hash": None}
    with pytest.raises(Unauthenticated):
        service.login({"username": ID_NUMBER, "password": PASSWORD})


@pytest.mark.parametrize("payload", [{}, {"username": "", "password": "x"}, {"username": "a"}])
def test_malformed_login_is_a_validation_error(service, store, payload):
    with pytest.raises(ValidationFailed):
        service.login(payload)
    store.find_by_login.assert_not_called()


def test_login_is_marked_sensitive():
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

    [entrypoint] = getattr(IdentityService.login, ENTRYPOINT_EXTENSIONS_ATTR)
    assert "payload" in entrypoint.sensitive_arguments


# --- keys, users, profiles ----------------------------------------------------------------------


def test_jwks_publishes_public_keys_and_ensures_one_exists(service, store, signing_key):
    result = JwkSet.model_validate(service.jwks())
    assert [k.kid for k in result.keys] == [signing_key["kid"]]
    store.active_key.assert_called_once()
    candidate = store.active_key.call_args.args[0]
    assert {"kid", "private_pem", "public_jwk"} <= set(candidate)


def test_get_user(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    view = UserView.model_validate(service.get_user(citizen_doc["_id"]))
    assert view.user_id == citizen_doc["_id"]
    store.get_user.assert_called_once_with(citizen_doc["_id"])


def test_get_unknown_user_is_not_found(service, store):
    with pytest.raises(NotFound):
        service.get_user("missing")
    with pytest.raises(NotFound):
        service.applicant_profile("missing")


def test_applicant_profile(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    profile = ApplicantProfile.model_validate(service.applicant_profile(citizen_doc["_id"]))
    assert profile.region_code == "620524"
    assert profile.gender == "male"
    assert profile.age == accounts.applicant_profile(citizen_doc, date.today(), []).age
    assert profile.age >= 86


def test_ensure_admin_creates_the_first_admin_once(service, store, monkeypatch):
    monkeypatch.setenv("YIWANG_ADMIN_USERNAME", "root")
    monkeypatch.setenv("YIWANG_ADMIN_PASSWORD", "Root-pass-2026")
    store.login_key_exists.return_value = False
    assert service.ensure_admin() == "root"
    doc, field = store.insert_user.call_args.args
    assert field == "username"
    assert doc["login_key"] == "staff:root"
    assert doc["roles"] == ["admin"]
    assert accounts.password_matches(doc["password_hash"], "Root-pass-2026")

    store.insert_user.reset_mock()
    store.login_key_exists.return_value = True
    service.ensure_admin()
    store.insert_user.assert_not_called()
