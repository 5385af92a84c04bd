from datetime import UTC, date, datetime, timedelta
from unittest.mock import MagicMock

import jwt
import pytest
from nameko.testing.services import worker_factory

from contracts.cases import Decision
from contracts.envelope import new_event, parse_event
from contracts.events import (
    AssuranceRaised,
    CaseApproved,
    CaseRejected,
    CertificateIssued,
    ContactChanged,
    SessionRevoked,
    StaffChanged,
    StaffStatusChanged,
)
from contracts.identity import (
    ApplicantProfile,
    AssuranceView,
    Certificate,
    JwkSet,
    RegistrationResult,
    StaffCreated,
    TokenPair,
    UserView,
)
from services.common.china_time import CHINA
from services.common.consuming import PoisonMessage
from services.common.errors import Conflict, Forbidden, NotFound, RateLimited, Unauthenticated, ValidationFailed
from services.common.stored_time import to_stored_precision
from services.identity import accounts, phone_codes, tokens
from services.identity.accounts import SessionStart
from services.identity.idnumbers import make_credit_code, make_id_number
from services.identity.service import REFRESH_TTL, RESET_REFUSED, SESSION_MAX_AGE, IdentityService
from services.identity.throttling import Failures

ID_NUMBER = make_id_number("620524", date(1940, 5, 6), 13)
PASSWORD = "Lintao-2026-secure"


@pytest.fixture
def signing_key():
    return tokens.new_signing_key()  # under the tests' identity secret (conftest)


@pytest.fixture
def store(signing_key):
    store = MagicMock()
    store.newest_keys.return_value = [signing_key]
    store.public_keys.return_value = [signing_key]
    store.find_by_login.return_value = None
    store.get_user.return_value = None
    store.failures.return_value = {}
    store.record_failure.side_effect = lambda key, now, window: Failures(1, now)  # the first in its window
    store.spend_refresh_token.return_value = (None, False)
    store.get_session.return_value = None
    store.revoke_session.return_value = True
    store.raise_assurance.return_value = True
    store.insert_certificate.return_value = True
    store.certificates_of.return_value = []
    store.certificates_by_id.return_value = {}
    store.login_still_valid.return_value = True
    return store


@pytest.fixture(autouse=True)
def at_once(monkeypatch):
    """What identity does after answering runs before the call returns here."""
    monkeypatch.setattr("services.identity.service.run_in_background", lambda fn, *args: fn(*args))


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


def test_a_registration_of_a_taken_name_is_refused_before_the_password_is_hashed(service, store, monkeypatch):
    hashed = []
    monkeypatch.setattr(accounts, "hash_password", lambda password: hashed.append(password) or "h")
    store.refuse_registered.side_effect = Conflict("id_number is already registered")
    with pytest.raises(Conflict):
        service.register(citizen_payload())
    store.refuse_registered.assert_called_once_with(ID_NUMBER, "13800138000", "id_number")
    assert hashed == [] and not store.insert_user.called


def test_register_enterprise(service, store):
    result = service.register(
        {
            "account_type": "enterprise",
            "name": "武山县示例有限公司",
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


def test_a_registration_that_loses_the_race_for_its_id_number_is_a_conflict_and_answers_nothing(service, store):
    # Both found the id number free; the unique index lets one in: the other is 409, nothing else.
    store.insert_user.side_effect = Conflict("id_number is already registered", [{"field": "id_number"}])
    with pytest.raises(Conflict) as lost:
        service.register(citizen_payload())
    assert lost.value.details == [{"field": "id_number"}]
    store.refuse_registered.assert_called_once()  # it was checked first, and was free then
    store.insert_user.assert_called_once()


def test_a_registration_delivered_again_answers_the_account_it_made_and_another_is_still_refused(service, store):
    # Its reply was lost as the broker went away, and the request came again: before, 409 for the
    # registration that had happened (CI saw a fault test fail so).
    first = service.register(citizen_payload(), "198.51.100.7", "gateway:r-1")
    made = store.insert_user.call_args.args[0]
    assert made["request_key"] == "gateway:r-1"
    store.refuse_registered.side_effect = Conflict("id_number is already registered", [{"field": "id_number"}])
    store.find_by_login.return_value = made
    assert service.register(citizen_payload(), "198.51.100.7", "gateway:r-1") == first
    with pytest.raises(Conflict):
        service.register(citizen_payload(), "198.51.100.7", "gateway:r-2")  # another request: taken
    store.find_by_login.assert_called_with([ID_NUMBER], "")


def test_id_number_with_a_superscript_digit_is_a_validation_error(service, store):
    # '²'.isdigit() is True but int('²') fails: it must be a 422, never a 500.
    with pytest.raises(ValidationFailed) as info:
        service.register(citizen_payload(id_number="²" + ID_NUMBER[1:]))
    assert [d["field"] for d in info.value.details] == ["id_number"]
    store.insert_user.assert_not_called()


def test_a_registration_counts_against_its_client_address_before_anything_is_read_or_hashed(service, store):
    order = []
    store.record_failure.side_effect = lambda key, now, window: order.append(key) or Failures(1, now)
    store.refuse_registered.side_effect = lambda *logins: order.append("read")
    service.register(citizen_payload(), "203.0.113.9")
    assert order == ["registrations:203.0.113.9", "read"]  # every registration counts, not only refused ones
    assert store.record_failure.call_args.args[2] == timedelta(minutes=10)  # the throttling window (fixture)


def test_registrations_past_the_address_limit_are_refused_with_retry_after(service, store, monkeypatch):
    monkeypatch.setenv("YIWANG_REGISTRATION_ADDRESS_LIMIT", "2")
    store.record_failure.side_effect = lambda key, now, window: Failures(3, now - timedelta(seconds=100))
    with pytest.raises(RateLimited) as refused:
        service.register(citizen_payload(), "203.0.113.9")
    assert refused.value.retry_after == 500  # what is left of the 600 s window
    assert "registrations" in refused.value.message
    assert not store.refuse_registered.called and not store.insert_user.called


@pytest.mark.parametrize(
    "invalid",
    [
        {"phone": "123"},
        {"password": "password"},
        {"id_number": ID_NUMBER[:-1] + ("0" if ID_NUMBER[-1] != "0" else "1")},
    ],
)
def test_an_invalid_registration_is_not_counted_and_an_inside_caller_is_not_either(service, store, invalid):
    with pytest.raises(ValidationFailed):
        service.register(citizen_payload(**invalid), "203.0.113.9")
    assert not store.refuse_registered.called  # nor read: a common password, a check digit are 422 first
    service.register(citizen_payload())  # seeding, tests: no address
    store.record_failure.assert_not_called()
    store.insert_user.assert_called_once()


# --- login --------------------------------------------------------------------------------------

ADDRESS = "203.0.113.7"
ACCOUNT_KEY = f"account:{ID_NUMBER}"
ADDRESS_KEY = f"address:{ADDRESS}"


@pytest.fixture(autouse=True)
def login_policy(monkeypatch):
    # Explicit limits, whatever the environment of the test run says.
    monkeypatch.setenv("YIWANG_LOGIN_ACCOUNT_LIMIT", "3")
    monkeypatch.setenv("YIWANG_LOGIN_ADDRESS_LIMIT", "6")
    monkeypatch.setenv("YIWANG_LOGIN_WINDOW_SECONDS", "600")


def attempt(username=ID_NUMBER, password=PASSWORD, address=ADDRESS):
    return {"credentials": {"username": username, "password": password}, "client_address": address}


def _claims(token, signing_key):
    return jwt.decode(token, jwt.PyJWK(signing_key["public_jwk"]).key, algorithms=["EdDSA"], audience="yiwang")


def test_login_issues_a_verifiable_token_pair(service, store, citizen_doc, signing_key):
    store.find_by_login.return_value = citizen_doc
    pair = TokenPair.model_validate(service.login(attempt()))
    assert pair.token_type == "Bearer"
    assert pair.expires_in == 900
    claims = _claims(pair.access_token, signing_key)
    assert claims["sub"] == citizen_doc["_id"]
    assert claims["roles"] == ["applicant"]
    store.find_by_login.assert_called_once_with(accounts.login_keys(ID_NUMBER), "")  # an id number is no phone
    digest, user_id, family, expires_at = store.store_refresh_token.call_args.args
    assert digest == tokens.refresh_digest(pair.refresh_token)
    assert digest != pair.refresh_token
    assert user_id == citizen_doc["_id"]
    assert family
    assert REFRESH_TTL.days == 14
    assert expires_at.tzinfo is not None
    assert timedelta(days=13, hours=23) < expires_at - datetime.now(UTC) <= REFRESH_TTL


def test_login_starts_a_session_that_the_tokens_belong_to(service, store, citizen_doc, signing_key):
    store.find_by_login.return_value = citizen_doc
    pair = service.login(attempt())
    store.start_session.assert_called_once()
    session_id, user_id, checked = store.start_session.call_args.args
    assert user_id == citizen_doc["_id"]
    # What the login checked goes with the session: a change stored meanwhile ends it by this.
    assert checked == {
        "password": accounts.password_fingerprint(citizen_doc["password_hash"]),
        "staff_version": 0,
    }
    # Index entries of sessions past the maximum age go as the new one is indexed.
    ended_before = store.start_session.call_args.kwargs["ended_before"]
    assert abs(ended_before - (datetime.now(UTC) - SESSION_MAX_AGE)) < timedelta(minutes=1)
    assert _claims(pair["access_token"], signing_key)["sid"] == session_id
    assert store.store_refresh_token.call_args.args[2] == session_id  # the refresh-token family


def test_every_login_is_a_new_session(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    service.login(attempt())
    service.login(attempt())
    first, second = (c.args[0] for c in store.start_session.call_args_list)
    assert first != second


def test_login_by_phone_is_looked_up_by_phone(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    service.login(attempt(username="13800138000"))
    assert store.find_by_login.call_args.args[1] == "13800138000"


def test_wrong_password_and_unknown_user_are_told_apart_by_nothing(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    with pytest.raises(Unauthenticated) as wrong:
        service.login(attempt(password="not the password"))
    store.find_by_login.return_value = None
    with pytest.raises(Unauthenticated) as unknown:
        service.login(attempt(username="nobody", password="not the password"))
    assert wrong.value.message == unknown.value.message
    assert wrong.value.details == unknown.value.details == []
    store.store_refresh_token.assert_not_called()
    store.start_session.assert_not_called()


def test_user_without_password_hash_cannot_log_in(service, store, citizen_doc):
    store.find_by_login.return_value = {**citizen_doc, "password_hash": None}
    with pytest.raises(Unauthenticated):
        service.login(attempt())
    store.start_session.assert_not_called()


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"username": ID_NUMBER, "password": PASSWORD},  # the bare credentials: the gateway must say where from
        {"credentials": {"username": ID_NUMBER, "password": PASSWORD}},
        {"credentials": {}, "client_address": ADDRESS},
        {"credentials": {"username": "", "password": "x"}, "client_address": ADDRESS},
        {"credentials": {"username": "a"}, "client_address": ADDRESS},
    ],
    ids=["empty", "bare-credentials", "no-address", "no-credentials", "empty-username", "no-password"],
)
def test_malformed_login_is_a_validation_error(service, store, payload):
    with pytest.raises(ValidationFailed):
        service.login(payload)
    store.failures.assert_not_called()
    store.find_by_login.assert_not_called()
    store.record_failure.assert_not_called()


@pytest.mark.parametrize(
    "method", ["register", "create_staff", "login", "refresh", "verify_face", "change_contact"], ids=lambda name: name
)
def test_secrets_are_marked_sensitive(method):
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

    [entrypoint] = getattr(getattr(IdentityService, method), ENTRYPOINT_EXTENSIONS_ATTR)
    assert "payload" in entrypoint.sensitive_arguments


# --- login throttling ---------------------------------------------------------------------------


def test_login_looks_up_failures_of_the_account_and_the_address(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    service.login(attempt(username=f" {ID_NUMBER.lower()} "))
    # The login name and address first; once the account is known, its own allowance too.
    assert [c.args[0] for c in store.failures.call_args_list] == [
        [ACCOUNT_KEY, ADDRESS_KEY],
        [f"user:{citizen_doc['_id']}"],
    ]


def test_blocked_account_is_rate_limited_without_checking_the_password(service, store, citizen_doc, monkeypatch):
    checked = []
    monkeypatch.setattr(accounts, "password_matches", lambda *a: checked.append(a) or True)
    store.find_by_login.return_value = citizen_doc
    store.failures.return_value = {ACCOUNT_KEY: Failures(3, datetime.now(UTC) - timedelta(seconds=100))}
    with pytest.raises(RateLimited) as info:
        service.login(attempt())
    assert 495 <= info.value.retry_after <= 500  # the rest of the 600 s window
    assert checked == []
    store.find_by_login.assert_not_called()
    store.record_failure.assert_not_called()
    store.clear_failures.assert_not_called()
    store.start_session.assert_not_called()
    store.store_refresh_token.assert_not_called()


def test_blocked_account_is_refused_even_with_the_right_password(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    store.failures.return_value = {ACCOUNT_KEY: Failures(7, datetime.now(UTC))}
    with pytest.raises(RateLimited):
        service.login(attempt())


def test_blocked_address_is_rate_limited_for_any_account(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    store.failures.return_value = {ADDRESS_KEY: Failures(6, datetime.now(UTC) - timedelta(seconds=300))}
    with pytest.raises(RateLimited) as info:
        service.login(attempt(username="someone-else"))
    assert 295 <= info.value.retry_after <= 300
    store.find_by_login.assert_not_called()


def test_the_longer_wait_of_account_and_address_applies(service, store):
    now = datetime.now(UTC)
    store.failures.return_value = {
        ACCOUNT_KEY: Failures(3, now - timedelta(seconds=500)),  # 100 s left
        ADDRESS_KEY: Failures(6, now - timedelta(seconds=100)),  # 500 s left
    }
    with pytest.raises(RateLimited) as info:
        service.login(attempt())
    assert 495 <= info.value.retry_after <= 500


@pytest.mark.parametrize(
    "failures",
    [
        {ACCOUNT_KEY: Failures(2, datetime.now(UTC))},
        {ADDRESS_KEY: Failures(5, datetime.now(UTC))},
        {ACCOUNT_KEY: Failures(9, datetime.now(UTC) - timedelta(seconds=601))},
    ],
    ids=["account-below-limit", "address-below-limit", "window-closed"],
)
def test_not_blocked_logs_in(service, store, citizen_doc, failures):
    store.find_by_login.return_value = citizen_doc
    store.failures.return_value = failures
    TokenPair.model_validate(service.login(attempt()))


def test_a_failure_is_counted_for_the_account_and_the_address(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    before = datetime.now(UTC)
    with pytest.raises(Unauthenticated):
        service.login(attempt(password="not the password"))
    keys = [c.args[0] for c in store.record_failure.call_args_list]
    # The account (its login names share it) and the address, before the password is checked.
    assert keys == [f"user:{citizen_doc['_id']}", ADDRESS_KEY]
    for call in store.record_failure.call_args_list:
        _, at, window = call.args
        assert before <= at <= datetime.now(UTC)
        assert window == timedelta(seconds=600)
    store.clear_failures.assert_not_called()
    store.take_back_failure.assert_not_called()


def test_failures_of_unknown_accounts_are_counted_too(service, store):
    # So a blocked account and one that does not exist look alike.
    with pytest.raises(Unauthenticated):
        service.login(attempt(username="nobody", password="not the password"))
    assert [c.args[0] for c in store.record_failure.call_args_list] == ["account:NOBODY", ADDRESS_KEY]


def test_success_clears_the_account_failures_only(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    store.failures.return_value = {ACCOUNT_KEY: Failures(2, datetime.now(UTC))}
    service.login(attempt())
    # Not the address's: it may be guessing other accounts.
    assert [c.args[0] for c in store.clear_failures.call_args_list] == [ACCOUNT_KEY, f"user:{citizen_doc['_id']}"]
    # Counted before the check; the address's count of this login is taken back, not its others.
    assert [c.args[0] for c in store.record_failure.call_args_list] == [f"user:{citizen_doc['_id']}", ADDRESS_KEY]
    [(key, window)] = [c.args for c in store.take_back_failure.call_args_list]
    assert key == ADDRESS_KEY and window.count == 1  # from the window it was counted in


def test_a_guess_past_the_address_allowance_is_refused_and_not_held_against_the_account(
    service, store, citizen_doc, monkeypatch
):
    # Parallel failures from one address all passed the read of its count; counting first stops them.
    checked = []
    monkeypatch.setattr(accounts, "password_matches", lambda *a: checked.append(a) or False)
    store.find_by_login.return_value = citizen_doc
    limit = 6  # the tests' address limit

    def counted(key, now, window):
        return Failures(limit + 1 if key == ADDRESS_KEY else 1, now - timedelta(seconds=100))

    store.record_failure.side_effect = counted
    with pytest.raises(RateLimited):
        service.login(attempt(password="not the password"))
    assert checked == []
    assert [c.args[0] for c in store.take_back_failure.call_args_list] == [f"user:{citizen_doc['_id']}"]


@pytest.mark.parametrize("counted", [6, 9])
def test_a_guess_past_the_allowance_is_refused_before_the_password_is_checked(
    service, store, citizen_doc, monkeypatch, counted
):
    # Parallel guesses all passed the read of the count; the count taken first stops the excess.
    checked = []
    monkeypatch.setattr(accounts, "password_matches", lambda *a: checked.append(a) or True)
    store.find_by_login.return_value = citizen_doc
    store.record_failure.side_effect = lambda key, now, window: Failures(counted, now - timedelta(seconds=100))
    with pytest.raises(RateLimited) as info:
        service.login(attempt())
    assert 495 <= info.value.retry_after <= 500
    assert checked == []
    store.start_session.assert_not_called()


def test_the_last_guess_within_the_allowance_is_checked(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    store.record_failure.side_effect = lambda key, now, window: Failures(3, now)  # the tests' limit is 3
    TokenPair.model_validate(service.login(attempt()))


def test_rate_limited_crosses_rpc_with_its_retry_after():
    from nameko.exceptions import deserialize, serialize

    rebuilt = deserialize(serialize(RateLimited("too many failed logins; try again later", retry_after=123)))
    assert type(rebuilt) is RateLimited
    assert rebuilt.retry_after == 123
    assert rebuilt.message == "too many failed logins; try again later"


# --- refresh ------------------------------------------------------------------------------------

REFRESH_TOKEN = "r" * 43
SESSION_ID = "5e55" * 8


def refresh_token_doc(citizen_doc, **overrides):
    return {
        "_id": tokens.refresh_digest(REFRESH_TOKEN),
        "user_id": citizen_doc["_id"],
        "family": SESSION_ID,
        "expires_at": datetime.now(UTC) + timedelta(days=3),
        "used_at": None,
        **overrides,
    }


def live_session(citizen_doc, **overrides):
    return {
        "_id": SESSION_ID,
        "user_id": citizen_doc["_id"],
        "created_at": datetime.now(UTC),
        "revoked_at": None,
        **overrides,
    }


def test_refresh_trades_a_token_once_for_a_new_pair_of_the_same_session(service, store, citizen_doc, signing_key):
    store.spend_refresh_token.return_value = (refresh_token_doc(citizen_doc), True)
    store.get_session.return_value = live_session(citizen_doc)
    store.get_user.return_value = citizen_doc
    pair = TokenPair.model_validate(service.refresh({"refresh_token": REFRESH_TOKEN}))
    store.spend_refresh_token.assert_called_once_with(tokens.refresh_digest(REFRESH_TOKEN))
    store.get_session.assert_called_once_with(SESSION_ID)
    claims = _claims(pair.access_token, signing_key)
    assert claims["sub"] == citizen_doc["_id"]
    assert claims["sid"] == SESSION_ID
    digest, user_id, family, _ = store.store_refresh_token.call_args.args
    assert digest == tokens.refresh_digest(pair.refresh_token)
    assert pair.refresh_token != REFRESH_TOKEN
    assert (user_id, family) == (citizen_doc["_id"], SESSION_ID)
    store.start_session.assert_not_called()
    store.revoke_session.assert_not_called()


def test_unknown_refresh_token_is_refused(service, store):
    with pytest.raises(Unauthenticated):
        service.refresh({"refresh_token": REFRESH_TOKEN})
    store.revoke_session.assert_not_called()
    store.store_refresh_token.assert_not_called()


def test_reused_refresh_token_ends_the_whole_session(service, store, citizen_doc):
    store.spend_refresh_token.return_value = (refresh_token_doc(citizen_doc, used_at=datetime.now(UTC)), False)
    store.get_session.return_value = live_session(citizen_doc)
    with pytest.raises(Unauthenticated, match="already used"):
        service.refresh({"refresh_token": REFRESH_TOKEN})
    store.revoke_session.assert_called_once()
    session_id, event = store.revoke_session.call_args.args
    assert session_id == SESSION_ID
    _, revoked = parse_event(event.model_dump(mode="json"), expected=SessionRevoked)
    assert (revoked.session_id, revoked.user_id, revoked.reason) == (
        SESSION_ID,
        citizen_doc["_id"],
        "refresh token reused",
    )
    service.events.publish.assert_called_once_with(store.session_outbox, SESSION_ID, [event])
    store.store_refresh_token.assert_not_called()


def test_reuse_of_an_already_revoked_session_publishes_nothing_new(service, store, citizen_doc):
    store.spend_refresh_token.return_value = (refresh_token_doc(citizen_doc, used_at=datetime.now(UTC)), False)
    store.revoke_session.return_value = False  # revoked before
    with pytest.raises(Unauthenticated):
        service.refresh({"refresh_token": REFRESH_TOKEN})
    service.events.publish.assert_not_called()


@pytest.mark.parametrize(
    ("token_overrides", "session"),
    [
        ({"expires_at": datetime.now(UTC) - timedelta(seconds=1)}, "live"),
        ({}, "revoked"),
        ({}, "missing"),
    ],
    ids=["expired-token", "revoked-session", "missing-session"],
)
def test_refresh_of_an_ended_session_is_refused(service, store, citizen_doc, token_overrides, session):
    store.spend_refresh_token.return_value = (refresh_token_doc(citizen_doc, **token_overrides), True)
    store.get_user.return_value = citizen_doc
    store.get_session.return_value = {
        "live": live_session(citizen_doc),
        "revoked": live_session(citizen_doc, revoked_at=datetime.now(UTC) - timedelta(minutes=1)),
        "missing": None,
    }[session]
    with pytest.raises(Unauthenticated, match="log in again"):
        service.refresh({"refresh_token": REFRESH_TOKEN})
    store.store_refresh_token.assert_not_called()


def test_refresh_of_a_session_older_than_the_maximum_age_is_refused(service, store, citizen_doc):
    store.spend_refresh_token.return_value = (refresh_token_doc(citizen_doc), True)
    store.get_user.return_value = citizen_doc
    store.get_session.return_value = live_session(citizen_doc, created_at=datetime.now(UTC) - timedelta(days=31))
    with pytest.raises(Unauthenticated, match="log in again"):
        service.refresh({"refresh_token": REFRESH_TOKEN})


def test_a_login_that_raced_a_new_password_ends_its_own_session(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    store.login_still_valid.return_value = False  # a change was stored while the old hash was checked
    with pytest.raises(Unauthenticated):
        service.login(attempt())
    session_id = store.start_session.call_args.args[0]
    assert store.revoke_session.call_args.args[0] == session_id
    store.store_refresh_token.assert_not_called()


@pytest.mark.parametrize("payload", [{}, {"refresh_token": ""}, {"refresh_token": REFRESH_TOKEN, "x": 1}])
def test_malformed_refresh_is_a_validation_error(service, store, payload):
    with pytest.raises(ValidationFailed):
        service.refresh(payload)
    store.spend_refresh_token.assert_not_called()


def test_a_refresh_token_that_is_not_one_of_ours_is_unauthenticated(service, store):
    # Whatever its shape: a client holding a broken token must log in again (401), as with a spent one.
    store.spend_refresh_token.return_value = (None, False)
    with pytest.raises(Unauthenticated):
        service.refresh({"refresh_token": "short"})


# --- logout and revoked sessions ----------------------------------------------------------------


def applicant_principal(citizen_doc, session_id=SESSION_ID):
    return {
        "user_id": citizen_doc["_id"],
        "account_type": "citizen",
        "roles": ["applicant"],
        "department_code": None,
        "session_id": session_id,
    }


def test_logout_revokes_the_session_and_announces_it(service, store, citizen_doc):
    before = datetime.now(UTC)
    assert service.logout(applicant_principal(citizen_doc)) is None
    store.revoke_session.assert_called_once()
    session_id, event = store.revoke_session.call_args.args
    assert session_id == SESSION_ID
    assert event.type == "identity.session_revoked.v1"
    assert event.producer == "identity"
    _, revoked = parse_event(event.model_dump(mode="json"), expected=SessionRevoked)
    assert (revoked.session_id, revoked.user_id, revoked.reason) == (SESSION_ID, citizen_doc["_id"], "logout")
    # Until then an access token of the session could still be unexpired.
    assert before + tokens.ACCESS_TOKEN_TTL <= revoked.expires_at <= datetime.now(UTC) + tokens.ACCESS_TOKEN_TTL
    service.events.publish.assert_called_once_with(store.session_outbox, SESSION_ID, [event])


def test_second_logout_publishes_nothing(service, store, citizen_doc):
    store.revoke_session.return_value = False
    service.logout(applicant_principal(citizen_doc))
    service.events.publish.assert_not_called()


def test_logout_without_a_session_does_nothing(service, store, citizen_doc):
    service.logout(applicant_principal(citizen_doc, session_id=None))
    store.revoke_session.assert_not_called()
    service.events.publish.assert_not_called()


def test_logout_refuses_an_invalid_principal(service, store):
    with pytest.raises(ValidationFailed):
        service.logout({"user_id": "u", "session_id": SESSION_ID})
    store.revoke_session.assert_not_called()


def test_revoked_sessions_lists_those_whose_tokens_may_still_be_live(service, store):
    revoked_at = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    store.revoked_since.return_value = [{"_id": "s1", "revoked_at": revoked_at}]
    before = datetime.now(UTC)
    assert service.revoked_sessions() == [
        {"session_id": "s1", "expires_at": (revoked_at + tokens.ACCESS_TOKEN_TTL).isoformat()}
    ]
    [since] = store.revoked_since.call_args.args
    assert before - tokens.ACCESS_TOKEN_TTL <= since <= datetime.now(UTC) - tokens.ACCESS_TOKEN_TTL
    assert datetime.fromisoformat(service.revoked_sessions()[0]["expires_at"]).tzinfo is not None


# --- keys ---------------------------------------------------------------------------------------


def test_a_newest_key_this_secret_cannot_open_is_replaced_not_used(service, store, signing_key, monkeypatch):
    # The secret was replaced (the state directory lost, another YIWANG_CODE_SECRET): logins go on
    # under a new key; what the old one signed stays verifiable by its public half.
    monkeypatch.setenv("YIWANG_CODE_SECRET", "a-secret-of-another-deployment")
    fresh = service._signing_key()
    assert fresh["kid"] != signing_key["kid"] and tokens.signing_half(fresh) is not None
    store.add_key.assert_called_once_with(fresh)


def test_processes_holding_different_secrets_each_keep_their_own_key_not_one_per_login(
    service, store, signing_key, monkeypatch
):
    # A deployment's mistake, logged; it must not add a key at every login, each superseding the
    # other process's.
    monkeypatch.setenv("YIWANG_CODE_SECRET", "the-other-process-secret")
    theirs = tokens.new_signing_key()
    store.newest_keys.return_value = [theirs, signing_key]  # theirs superseded ours a moment ago
    monkeypatch.setenv("YIWANG_CODE_SECRET", "a-secret-of-the-tests")
    assert [service._signing_key()["kid"] for _ in range(3)] == [signing_key["kid"]] * 3
    store.add_key.assert_not_called()
    # Once what it would sign could outlive its place in the key set, it signs no more: a new key.
    theirs["created_at"] = datetime.now(UTC) - (tokens.RETIRE_AFTER - tokens.ACCESS_TOKEN_TTL) - timedelta(seconds=1)
    signing_key["created_at"] = theirs["created_at"] - timedelta(minutes=1)
    assert service._signing_key()["kid"] not in (signing_key["kid"], theirs["kid"])
    store.add_key.assert_called_once()


def test_jwks_publishes_public_keys(service, store, signing_key):
    result = JwkSet.model_validate(service.jwks())
    assert [k.kid for k in result.keys] == [signing_key["kid"]]
    store.add_key.assert_not_called()


def test_a_superseded_key_leaves_the_key_set_once_its_tokens_have_expired(service, store):
    now = datetime.now(UTC)
    oldest, old, newest = (tokens.new_signing_key() for _ in range(3))
    oldest["created_at"] = now - timedelta(days=30)
    old["created_at"] = now - timedelta(days=1)  # superseded by newest 10 minutes ago: tokens may live
    newest["created_at"] = now - timedelta(minutes=10)
    store.public_keys.return_value = [newest, old, oldest]
    assert [k.kid for k in JwkSet.model_validate(service.jwks()).keys] == [newest["kid"], old["kid"]]
    newest["created_at"] = now - tokens.RETIRE_AFTER - timedelta(seconds=1)
    assert [k.kid for k in JwkSet.model_validate(service.jwks()).keys] == [newest["kid"]]


def test_jwks_makes_sure_a_signing_key_exists(service, store, signing_key):
    store.newest_keys.return_value = []
    service.jwks()
    store.add_key.assert_called_once()
    [candidate] = store.add_key.call_args.args
    assert {"_id", "kid", "private_pem", "public_jwk"} <= set(candidate)


def test_tokens_are_signed_with_the_newest_key(service, store, citizen_doc):
    older = tokens.new_signing_key()
    newer = tokens.new_signing_key()
    store.newest_keys.return_value = [newer, older]
    store.find_by_login.return_value = citizen_doc
    pair = service.login(attempt())
    assert jwt.get_unverified_header(pair["access_token"])["kid"] == newer["kid"]


ADMIN = {"user_id": "u-admin", "account_type": "staff", "roles": ["admin"], "department_code": None}
REVIEWER = {"user_id": "u-rev", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524MZ"}


def test_rotate_signing_key_adds_a_new_key(service, store):
    result = service.rotate_signing_key(ADMIN)
    store.add_key.assert_called_once()
    [key] = store.add_key.call_args.args
    assert result == {"kid": key["kid"]}
    assert key["public_jwk"]["kid"] == key["kid"]


@pytest.mark.parametrize("principal", [REVIEWER, {**ADMIN, "roles": ["supervisor"]}], ids=["reviewer", "supervisor"])
def test_rotate_signing_key_needs_admin(service, store, principal, citizen_doc):
    with pytest.raises(Forbidden, match="admin"):
        service.rotate_signing_key(principal)
    with pytest.raises(Forbidden):
        service.rotate_signing_key(applicant_principal(citizen_doc))
    store.add_key.assert_not_called()


# --- users --------------------------------------------------------------------------------------


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
    china_today = datetime.now(UTC).astimezone(CHINA).date()
    assert profile.age == accounts.applicant_profile(citizen_doc, china_today, []).age
    assert profile.age >= 86


def test_an_age_turns_on_chinas_date_not_the_servers(service, store, citizen_doc, monkeypatch):
    # 07:30 in Beijing on the 80th birthday is still the day before in UTC, where servers run.
    class AtSevenThirtyInBeijing(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 27, 23, 30, tzinfo=UTC).astimezone(tz)

    class ServerDate(date):  # what the server's own calendar says then: still the 27th
        @classmethod
        def today(cls):
            return date(2026, 11, 27)

    monkeypatch.setattr("services.identity.service.datetime", AtSevenThirtyInBeijing)
    monkeypatch.setattr("services.identity.service.date", ServerDate, raising=False)
    store.get_user.return_value = {**citizen_doc, "id_number": make_id_number("620524", date(1946, 11, 28), 1)}
    assert ApplicantProfile.model_validate(service.applicant_profile(citizen_doc["_id"])).age == 80


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


def test_applicant_profile_lists_the_types_of_valid_certificates_held(service, store, citizen_doc):
    now = datetime.now(UTC)
    store.get_user.return_value = citizen_doc
    store.certificates_of.return_value = [
        {"type": "name_reservation", "valid_until": now + timedelta(days=1), "revoked_at": None},
        {"type": "name_reservation", "valid_until": None},
        {"type": "household_register", "valid_until": None},
        {"type": "expired_permit", "valid_until": now - timedelta(seconds=1)},
        {"type": "revoked_permit", "valid_until": None, "revoked_at": now - timedelta(days=1)},
    ]
    profile = ApplicantProfile.model_validate(service.applicant_profile(citizen_doc["_id"]))
    assert profile.certificates == ["household_register", "name_reservation"]
    store.certificates_of.assert_called_once_with(citizen_doc["_id"])


# --- staff --------------------------------------------------------------------------------------


def staff_payload(**overrides):
    return {
        "username": "wang.reviewer",
        "name": "王审核",
        "password": "Reviewer-pass-2026",
        "roles": ["reviewer"],
        "department_code": "620524MZ",
        **overrides,
    }


def test_admin_creates_a_staff_account(service, store):
    result = StaffCreated.model_validate(service.create_staff(ADMIN, staff_payload()))
    assert (result.username, result.name, result.roles, result.department_code) == (
        "wang.reviewer",
        "王审核",
        ["reviewer"],
        "620524MZ",
    )
    doc, field = store.insert_user.call_args.args
    assert field == "username"
    assert doc["_id"] == result.user_id
    assert doc["login_key"] == "staff:wang.reviewer"
    assert doc["account_type"] == "staff"
    assert doc["roles"] == ["reviewer"]
    assert doc["department_code"] == "620524MZ"
    assert accounts.password_matches(doc["password_hash"], "Reviewer-pass-2026")
    assert "Reviewer-pass-2026" not in str(doc)
    assert doc["password_change_required"] is False and result.password_change_required is False


def test_a_password_change_delivered_again_is_done_not_a_wrong_password(service, store, citizen_doc):
    # The first delivery changed it; the second found its current password wrong (and counted it).
    store.get_user.return_value = citizen_doc
    service.change_password(applicant_principal(citizen_doc), password_change(), "gateway:p-1")
    assert store.set_password.call_args.kwargs["changed_by"] == "gateway:p-1"
    store.set_password.reset_mock()
    store.get_user.return_value = {**citizen_doc, "password_changed_by": "gateway:p-1", "password_hash": "new"}
    assert service.change_password(applicant_principal(citizen_doc), password_change(), "gateway:p-1") is None
    store.set_password.assert_not_called()
    with pytest.raises((Unauthenticated, ValidationFailed)):
        service.change_password(applicant_principal(citizen_doc), password_change(), "gateway:p-2")  # checked


def test_a_staff_creation_delivered_again_answers_the_account_it_made(service, store):
    first = service.create_staff(ADMIN, staff_payload(), "gateway:s-1")
    made = store.insert_user.call_args.args[0]
    assert made["request_key"] == "gateway:s-1"
    store.insert_user.side_effect = Conflict("username is already registered", [{"field": "username"}])
    store.find_by_login.side_effect = lambda keys, phone: made if keys == ["staff:wang.reviewer"] else None
    assert service.create_staff(ADMIN, staff_payload(), "gateway:s-1") == first
    with pytest.raises(Conflict):
        service.create_staff(ADMIN, staff_payload(), "gateway:s-2")


def test_an_admin_may_have_a_new_staff_account_choose_its_own_password_first(service, store):
    result = StaffCreated.model_validate(service.create_staff(ADMIN, staff_payload(password_change_required=True)))
    doc, _ = store.insert_user.call_args.args
    assert doc["password_change_required"] is True and result.password_change_required is True


@pytest.mark.parametrize("principal", [REVIEWER, {**ADMIN, "roles": ["supervisor", "reviewer"]}])
def test_create_staff_needs_admin(service, store, principal, citizen_doc):
    with pytest.raises(Forbidden, match="admin"):
        service.create_staff(principal, staff_payload())
    with pytest.raises(Forbidden):
        service.create_staff(applicant_principal(citizen_doc), staff_payload(roles=["admin"]))
    store.insert_user.assert_not_called()


def test_create_staff_refuses_an_invalid_principal(service, store):
    with pytest.raises(ValidationFailed):
        service.create_staff({"roles": ["admin"]}, staff_payload())
    store.insert_user.assert_not_called()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"roles": []}, "roles"),
        ({"roles": ["applicant"]}, "roles.0"),
        ({"username": "X"}, "username"),
        ({"password": "short"}, "password"),
        ({"department_code": "mz"}, "department_code"),
    ],
)
def test_create_staff_names_invalid_fields(service, store, overrides, field):
    with pytest.raises(ValidationFailed) as info:
        service.create_staff(ADMIN, staff_payload(**overrides))
    assert field in [d["field"] for d in info.value.details]
    store.insert_user.assert_not_called()


def test_a_staff_account_with_a_common_password_is_refused(service, store):
    with pytest.raises(ValidationFailed) as info:
        service.create_staff(ADMIN, staff_payload(password="password1"))
    assert info.value.details == [{"field": "password", "issue": "too common; choose another"}]
    store.insert_user.assert_not_called()


def test_a_staff_username_that_reads_as_a_credit_code_is_refused(service, store):
    # Logins look a name up upper-cased as a credit code first: the enterprise registering
    # A1B2C3D4E5F6G7H8JG would have received this clerk's logins (and been locked out by them).
    with pytest.raises(ValidationFailed) as info:
        service.create_staff(ADMIN, staff_payload(username="a1b2c3d4e5f6g7h8jg"))
    assert [d["field"] for d in info.value.details] == ["username"]
    store.insert_user.assert_not_called()


def test_duplicate_staff_username_conflict_passes_through(service, store):
    store.insert_user.side_effect = Conflict("username is already registered", [{"field": "username"}])
    with pytest.raises(Conflict):
        service.create_staff(ADMIN, staff_payload())


# --- assurance ----------------------------------------------------------------------------------


def _raised(store):
    user_id, from_level, to_level, event = store.raise_assurance.call_args.args
    _, payload = parse_event(event.model_dump(mode="json"), expected=AssuranceRaised)
    return (user_id, from_level, to_level), payload, event


def test_real_name_check_raises_the_level_and_announces_it(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    result = AssuranceView.model_validate(service.verify_real_name(applicant_principal(citizen_doc)))
    assert (result.user_id, result.assurance_level) == (citizen_doc["_id"], 2)
    change, payload, event = _raised(store)
    assert change == (citizen_doc["_id"], 1, 2)
    assert (payload.user_id, payload.previous_level, payload.assurance_level, payload.method) == (
        citizen_doc["_id"],
        1,
        2,
        "population_registry",
    )
    assert event.producer == "identity"
    service.events.publish.assert_called_once_with(store.user_outbox, citizen_doc["_id"], [event])


def test_real_name_check_again_changes_nothing(service, store, citizen_doc):
    store.get_user.return_value = {**citizen_doc, "assurance_level": 2}
    assert service.verify_real_name(applicant_principal(citizen_doc))["assurance_level"] == 2
    store.raise_assurance.assert_not_called()
    service.events.publish.assert_not_called()


def test_real_name_not_confirmed_is_a_validation_error(service, store, citizen_doc):
    unknown_person = make_id_number("620524", date(1940, 5, 6), 999)
    store.get_user.return_value = {**citizen_doc, "id_number": unknown_person}
    with pytest.raises(ValidationFailed):
        service.verify_real_name(applicant_principal(citizen_doc))
    store.raise_assurance.assert_not_called()
    service.events.publish.assert_not_called()


def test_a_concurrent_raise_is_announced_once(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    store.raise_assurance.return_value = False  # another request raised it first
    assert service.verify_real_name(applicant_principal(citizen_doc))["assurance_level"] == 2
    service.events.publish.assert_not_called()


def test_verification_is_for_applicants_only(service, store):
    with pytest.raises(Forbidden):
        service.verify_real_name(REVIEWER)
    with pytest.raises(Forbidden):
        service.verify_face(REVIEWER, {"liveness_token": "local-live:x"})
    store.get_user.assert_not_called()
    store.raise_assurance.assert_not_called()


def test_verification_of_an_unknown_user_is_not_found(service, store, citizen_doc):
    with pytest.raises(NotFound):
        service.verify_real_name(applicant_principal(citizen_doc))


def test_face_check_raises_the_level_to_3(service, store, citizen_doc):
    store.get_user.return_value = {**citizen_doc, "assurance_level": 2}
    result = service.verify_face(applicant_principal(citizen_doc), {"liveness_token": f"local-live:{ID_NUMBER}"})
    assert result == {"user_id": citizen_doc["_id"], "assurance_level": 3}
    change, payload, event = _raised(store)
    assert change == (citizen_doc["_id"], 2, 3)
    assert (payload.previous_level, payload.assurance_level, payload.method) == (2, 3, "face")
    service.events.publish.assert_called_once_with(store.user_outbox, citizen_doc["_id"], [event])


def test_face_check_of_someone_else_is_refused(service, store, citizen_doc):
    store.get_user.return_value = {**citizen_doc, "assurance_level": 2}
    other = make_id_number("620524", date(1980, 1, 2), 41)
    with pytest.raises(ValidationFailed):
        service.verify_face(applicant_principal(citizen_doc), {"liveness_token": f"local-live:{other}"})
    store.raise_assurance.assert_not_called()


def test_face_check_before_real_name_is_a_conflict(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    with pytest.raises(Conflict):
        service.verify_face(applicant_principal(citizen_doc), {"liveness_token": f"local-live:{ID_NUMBER}"})
    store.raise_assurance.assert_not_called()


def test_face_check_needs_a_token(service, store, citizen_doc):
    store.get_user.return_value = {**citizen_doc, "assurance_level": 2}
    with pytest.raises(ValidationFailed):
        service.verify_face(applicant_principal(citizen_doc), {"liveness_token": ""})
    store.raise_assurance.assert_not_called()


# --- certificates -------------------------------------------------------------------------------

CASE_NO = "620524SC-20261126-000003"


def approval_event(issues_certificate=None):
    return new_event(
        CaseApproved(
            case_no=CASE_NO,
            item_code="62052400SC-XK-0001",
            item_name="企业名称自主申报",
            department_code="620524SC",
            applicant_id="u-citizen",
            decision=Decision(outcome="approved", decided_by="auto", decided_at=datetime.now(UTC)),
            issues_certificate=issues_certificate,
            form={"proposed_name": "武山县某某商贸有限公司", "industry": "零售"},
        ),
        producer="approval",
    )


NAME_RESERVATION = {"type": "name_reservation", "name": "企业名称自主申报告知书", "valid_days": 60}


def test_approval_of_a_certificate_item_issues_the_certificate(service, store):
    service.on_case_approved(approval_event(NAME_RESERVATION).model_dump(mode="json"))
    store.insert_certificate.assert_called_once()
    doc, event = store.insert_certificate.call_args.args
    assert doc["_id"] == f"name_reservation:{CASE_NO}"
    assert doc["user_id"] == "u-citizen"
    assert doc["type"] == "name_reservation"
    assert doc["data"]["proposed_name"] == "武山县某某商贸有限公司"
    assert doc["valid_until"] - doc["issued_at"] == timedelta(days=60)
    _, issued = parse_event(event.model_dump(mode="json"), expected=CertificateIssued)
    assert (issued.certificate_id, issued.certificate_type, issued.case_no, issued.user_id) == (
        doc["_id"],
        "name_reservation",
        CASE_NO,
        "u-citizen",
    )
    assert event.producer == "identity"
    service.events.publish.assert_called_once_with(store.certificate_outbox, doc["_id"], [event])


def test_approval_of_an_item_without_certificate_issues_nothing(service, store):
    service.on_case_approved(approval_event(None).model_dump(mode="json"))
    store.insert_certificate.assert_not_called()
    service.events.publish.assert_not_called()


def test_a_redelivered_approval_does_not_issue_twice(service, store):
    body = approval_event(NAME_RESERVATION).model_dump(mode="json")
    service.on_case_approved(body)
    store.insert_certificate.return_value = False  # the certificate of this case exists already
    service.on_case_approved(body)
    first, second = (c.args[0]["_id"] for c in store.insert_certificate.call_args_list)
    assert first == second  # the same deterministic id: the unique _id refuses the second
    service.events.publish.assert_called_once()


def test_invalid_approval_event_is_poison(service, store):
    with pytest.raises(PoisonMessage):
        service.on_case_approved({"type": "case.approved.v1", "payload": {}})
    store.insert_certificate.assert_not_called()


def test_a_reviewers_approval_announced_by_intake_issues_the_certificate_once_per_case(service, store):
    from_intake = approval_event(NAME_RESERVATION).model_copy(update={"producer": "intake"})
    from_intake.payload["decision"]["decided_by"] = "r-1"
    service.on_case_approved(from_intake.model_dump(mode="json"))
    doc, event = store.insert_certificate.call_args.args
    assert doc["_id"] == f"name_reservation:{CASE_NO}"  # the same id as for an automatic approval
    assert doc["user_id"] == "u-citizen"
    assert event.type == "identity.certificate_issued.v1"
    service.events.publish.assert_called_once_with(store.certificate_outbox, doc["_id"], [event])


def test_certificates_follow_the_decisions_intake_announces():
    """Not approval's: an automatic approval that came after a withdrawal issues nothing."""
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

    [entrypoint] = getattr(IdentityService.on_case_approved, ENTRYPOINT_EXTENSIONS_ATTR)
    assert (entrypoint.source_service, entrypoint.event_type) == ("intake", "case.approved.v1")
    assert not hasattr(IdentityService, "on_case_approved_by_reviewer")


def test_a_reviewers_rejection_is_not_an_approval(service, store):
    rejected = new_event(
        CaseRejected(
            case_no=CASE_NO,
            item_code="62052400SC-XK-0001",
            item_name="企业名称自主申报",
            department_code="620524SC",
            applicant_id="u-citizen",
            decision=Decision(outcome="rejected", decided_by="r-1", reason="x", decided_at=datetime.now(UTC)),
        ),
        producer="intake",
    )
    with pytest.raises(PoisonMessage):
        service.on_case_approved(rejected.model_dump(mode="json"))
    store.insert_certificate.assert_not_called()


def test_list_certificates(service, store):
    store.certificates_of.return_value = [
        {
            "_id": "name_reservation:X",
            "certificate_id": "name_reservation:X",
            "type": "name_reservation",
            "name": "企业名称自主申报告知书",
            "user_id": "u-citizen",
            "issued_at": datetime(2026, 11, 26, tzinfo=UTC),
            "valid_until": None,
            "case_no": "X",
            "data": {"industry": "零售"},
        }
    ]
    result = service.list_certificates("u-citizen")
    store.certificates_of.assert_called_once_with("u-citizen")
    [item] = result["items"]
    assert Certificate.model_validate(item).certificate_id == "name_reservation:X"
    assert "user_id" not in item
    assert item["issued_at"] == "2026-11-26T00:00:00Z"


def test_check_certificates_answers_for_the_asking_user(service, store):
    mine = {"_id": "a", "type": "name_reservation", "user_id": "u-citizen", "valid_until": None}
    theirs = {"_id": "b", "type": "business_licence", "user_id": "u-other", "valid_until": None}
    store.certificates_by_id.return_value = {"a": mine, "b": theirs}
    result = service.check_certificates("u-citizen", ["a", "b", "c"])
    store.certificates_by_id.assert_called_once_with(["a", "b", "c"])
    assert result == [
        {"certificate_id": "a", "owned": True, "valid": True, "type": "name_reservation"},
        {"certificate_id": "b", "owned": False, "valid": False, "type": None},
        {"certificate_id": "c", "owned": False, "valid": False, "type": None},
    ]


def test_an_account_blocked_under_one_login_name_is_blocked_under_the_others(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    user_key = f"user:{citizen_doc['_id']}"
    store.failures.side_effect = lambda keys: {user_key: Failures(5, datetime.now(UTC))} if keys == [user_key] else {}
    with pytest.raises(RateLimited):
        service.login(attempt(username="13800138000"))
    store.record_failure.assert_not_called()


# --- what the notification service asks -------------------------------------------------------------


def test_contact_gives_phone_and_email_only(service, store, citizen_doc):
    doc = {**citizen_doc, "email": "zhang@example.cn"}
    store.get_user.return_value = doc
    assert service.contact(doc["_id"]) == {"user_id": doc["_id"], "phone": "13800138000", "email": "zhang@example.cn"}


def test_contact_of_staff_has_neither(service, store):
    staff = accounts.new_staff("reviewer1", "审核员", "a-good-password", ["reviewer"], "620524MZ")
    store.get_user.return_value = staff
    assert service.contact(staff["_id"]) == {"user_id": staff["_id"], "phone": None, "email": None}


def test_contact_of_nobody_is_404(service, store):
    with pytest.raises(NotFound):
        service.contact("u-missing")


def test_reviewers_of_a_department(service, store):
    store.staff_with_role.return_value = ["r-1", "r-2"]
    assert service.reviewers_of("620524MZ") == ["r-1", "r-2"]
    store.staff_with_role.assert_called_once_with("620524MZ", "reviewer")


# --- contact (phone, email) ---------------------------------------------------------------------

NEW_PHONE = "13911112222"
CODE = "480213"


def change(**fields):
    if "phone" in fields:
        fields.setdefault("phone_code", CODE)
    return {"password": PASSWORD, **fields}


@pytest.fixture
def code_sent(store, citizen_doc):
    """A code texted to NEW_PHONE a moment ago, as the store answers it once this try is counted."""
    now = to_stored_precision(datetime.now(UTC))  # as the store keeps it
    key = phone_codes.challenge_key("phone_change", citizen_doc["_id"])
    challenge = phone_codes.new_challenge(key, NEW_PHONE, CODE, None, now, phone_codes.Policy())
    store.count_code_attempt.return_value = {**challenge, "attempts": 1}
    store.use_phone_challenge.return_value = True
    return challenge


def test_the_account_holder_reads_their_contact(service, store, citizen_doc):
    store.get_user.return_value = {**citizen_doc, "email": "li@example.cn"}
    assert service.get_contact(applicant_principal(citizen_doc)) == {
        "phone": citizen_doc["phone"],
        "email": "li@example.cn",
    }


def test_a_new_phone_is_stored_and_announced_without_the_number(service, store, citizen_doc, code_sent):
    store.get_user.return_value = citizen_doc
    result = service.change_contact(applicant_principal(citizen_doc), change(phone=NEW_PHONE))
    assert result == {"phone": NEW_PHONE, "email": citizen_doc["email"]}
    user, changes, event, _ = store.change_contact.call_args.args
    assert user is citizen_doc and changes == {"phone": NEW_PHONE}
    assert event.type == "identity.contact_changed.v1"
    assert event.payload == {"user_id": citizen_doc["_id"], "changed": ["phone"]}
    assert NEW_PHONE not in event.model_dump_json()
    service.events.publish.assert_called_once_with(store.user_outbox, citizen_doc["_id"], [event])
    store.use_phone_challenge.assert_called_once_with(f"phone_change:{citizen_doc['_id']}", code_sent["sent_at"])


def test_an_email_is_added_and_removed_with_null_and_left_alone_when_not_given(service, store, citizen_doc, code_sent):
    store.get_user.return_value = citizen_doc
    service.change_contact(applicant_principal(citizen_doc), change(email="li@example.cn"))
    assert store.change_contact.call_args.args[1] == {"email": "li@example.cn"}
    store.get_user.return_value = {**citizen_doc, "email": "li@example.cn"}
    service.change_contact(applicant_principal(citizen_doc), change(email=None))
    assert store.change_contact.call_args.args[1] == {"email": None}
    service.change_contact(applicant_principal(citizen_doc), change(phone=NEW_PHONE))
    assert store.change_contact.call_args.args[1] == {"phone": NEW_PHONE}  # the email stays


def test_the_same_contact_again_changes_and_announces_nothing(service, store, citizen_doc, code_sent):
    store.get_user.return_value = citizen_doc
    assert (
        service.change_contact(applicant_principal(citizen_doc), change(phone=citizen_doc["phone"]))["phone"]
        == (citizen_doc["phone"])
    )
    store.change_contact.assert_not_called()
    service.events.publish.assert_not_called()
    store.count_code_attempt.assert_not_called()  # the phone it has needs no code


def test_a_wrong_password_changes_nothing_and_counts_as_a_failure(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    with pytest.raises(ValidationFailed) as info:
        service.change_contact(applicant_principal(citizen_doc), {"password": "not-the-password", "phone": NEW_PHONE})
    assert [d["field"] for d in info.value.details] == ["password"]
    store.change_contact.assert_not_called()
    assert store.record_failure.call_args.args[0] == f"user:{citizen_doc['_id']}"


def test_an_account_blocked_by_failures_cannot_change_its_contact(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    store.failures.return_value = {f"user:{citizen_doc['_id']}": Failures(3, datetime.now(UTC))}
    with pytest.raises(RateLimited):
        service.change_contact(applicant_principal(citizen_doc), change(phone=NEW_PHONE))
    store.change_contact.assert_not_called()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"password": PASSWORD}, "body"),  # nothing to change
        (change(phone="12345"), "phone"),
        (change(email="not-an-address"), "email"),
        ({"phone": NEW_PHONE}, "password"),
        (change(phone=NEW_PHONE, name="改名"), "name"),
    ],
)
def test_an_invalid_change_is_refused_with_its_field(service, store, citizen_doc, payload, field):
    store.get_user.return_value = citizen_doc
    with pytest.raises(ValidationFailed) as info:
        service.change_contact(applicant_principal(citizen_doc), payload)
    assert field in [d["field"] for d in info.value.details]
    store.change_contact.assert_not_called()


def test_staff_have_no_contact_to_change_here(service, store, citizen_doc):
    staff = {**applicant_principal(citizen_doc), "account_type": "staff", "roles": ["reviewer"]}
    with pytest.raises(Forbidden):
        service.change_contact(staff, change(phone=NEW_PHONE))
    with pytest.raises(Forbidden):
        service.get_contact(staff)


# --- phone codes (短信验证码) ------------------------------------------------------------------------


def test_the_notice_to_the_number_the_account_left_is_kept_with_the_change(service, store, citizen_doc, code_sent):
    store.get_user.return_value = citizen_doc
    service.change_contact(applicant_principal(citizen_doc), change(phone=NEW_PHONE))
    _, _, event, notices = store.change_contact.call_args.args
    notice = notices[event.event_id]
    assert notice["phone"] == citizen_doc["phone"] and notice["kind"] == "phone_changed"
    assert notice["new_phone_masked"] == "139****2222" and NEW_PHONE not in str(notice)
    assert notice["reference"].endswith(event.event_id)
    service.notification.send_security_notice.call_async.assert_not_called()  # on hearing the event


def contact_changed(changed=("phone",)):
    event = new_event(ContactChanged(user_id="u-1", changed=list(changed)), producer="identity")
    return event.model_dump(mode="json"), event.event_id


def kept_notice(age=timedelta(0)):
    return {"phone": "13800138000", "kind": "phone_changed", "at": (datetime.now(UTC) - age).isoformat()}


def test_on_hearing_the_change_the_kept_notice_goes_out_and_is_forgotten(service, store):
    message, event_id = contact_changed()
    notice = kept_notice()
    store.pending_notice.return_value = notice
    service.tell_the_old_phone(message)
    store.pending_notice.assert_called_once_with("u-1", event_id)
    service.notification.send_security_notice.call_async.assert_called_once_with(notice)
    store.forget_notice.assert_called_once_with("u-1", event_id)


def test_a_notice_replayed_days_later_is_dropped_not_sent(service, store):
    message, event_id = contact_changed()
    store.pending_notice.return_value = kept_notice(age=timedelta(days=2))  # the number may be someone's now
    service.tell_the_old_phone(message)
    service.notification.send_security_notice.call_async.assert_not_called()
    store.forget_notice.assert_called_once_with("u-1", event_id)


def test_with_every_sending_slot_taken_a_notice_waits_for_a_retry(service, store, monkeypatch):
    import eventlet.semaphore

    from services.common.errors import Unavailable

    monkeypatch.setattr("services.identity.service.SENDING", eventlet.semaphore.Semaphore(0))
    message, _ = contact_changed()
    store.pending_notice.return_value = kept_notice()
    with pytest.raises(Unavailable):
        service.tell_the_old_phone(message)
    service.notification.send_security_notice.call_async.assert_not_called()
    store.forget_notice.assert_not_called()


def test_a_notice_that_does_not_go_out_is_kept_for_the_retry(service, store):
    from services.common.errors import Unavailable

    message, _ = contact_changed()
    store.pending_notice.return_value = kept_notice()
    service.notification.send_security_notice.call_async.return_value.result.side_effect = Unavailable("down")
    with pytest.raises(Unavailable):
        service.tell_the_old_phone(message)
    store.forget_notice.assert_not_called()


def test_a_redelivery_after_the_notice_went_out_sends_nothing(service, store):
    message, _ = contact_changed()
    store.pending_notice.return_value = None
    service.tell_the_old_phone(message)
    service.notification.send_security_notice.call_async.assert_not_called()


def test_an_email_change_keeps_no_notice(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    service.change_contact(applicant_principal(citizen_doc), change(email="li@example.cn"))
    assert store.change_contact.call_args.args[3] == {}


def test_a_new_phone_without_its_code_is_refused_on_phone_code(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    with pytest.raises(ValidationFailed) as info:
        service.change_contact(applicant_principal(citizen_doc), {"password": PASSWORD, "phone": NEW_PHONE})
    assert [d["field"] for d in info.value.details] == ["phone_code"]
    store.change_contact.assert_not_called()


@pytest.mark.parametrize(
    ("counted", "issue"),
    [
        ({"phone_code": "000000"}, "not the code that was sent; 4 tries left"),
        ({"attempts": 6}, "too many wrong codes"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expired"),
        ({"phone": "13700000000"}, "no code was sent to this phone"),
        (None, "no code was sent to this phone"),
    ],
    ids=["wrong", "worn-out", "expired", "other-phone", "none"],
)
def test_a_phone_code_that_does_not_answer_changes_nothing(service, store, citizen_doc, code_sent, counted, issue):
    store.get_user.return_value = citizen_doc
    payload = change(phone=NEW_PHONE)
    if counted is None:
        store.count_code_attempt.return_value = None
    elif "phone_code" in counted:
        payload["phone_code"] = counted["phone_code"]
    else:
        store.count_code_attempt.return_value = {**store.count_code_attempt.return_value, **counted}
    with pytest.raises(ValidationFailed) as info:
        service.change_contact(applicant_principal(citizen_doc), payload)
    assert info.value.details[0]["field"] == "phone_code"
    assert issue in info.value.details[0]["issue"]
    store.count_code_attempt.assert_called_once_with(f"phone_change:{citizen_doc['_id']}")
    store.use_phone_challenge.assert_not_called()
    store.change_contact.assert_not_called()


def test_a_code_spent_by_a_parallel_change_changes_nothing(service, store, citizen_doc, code_sent):
    store.get_user.return_value = citizen_doc
    store.use_phone_challenge.return_value = False
    with pytest.raises(ValidationFailed, match="used already"):
        service.change_contact(applicant_principal(citizen_doc), change(phone=NEW_PHONE))
    store.change_contact.assert_not_called()


def test_a_code_is_texted_to_the_new_phone_and_only_its_digest_kept(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    store.phone_challenge.return_value = None
    store.count_code_to_phone.return_value = 1
    store.keep_phone_challenge.return_value = True
    sent = service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    challenge, previous = store.keep_phone_challenge.call_args.args
    assert (
        previous is None
        and challenge["phone"] == NEW_PHONE
        and challenge["_id"] == f"phone_change:{citizen_doc['_id']}"
    )
    (text,) = service.notification.send_verification_code.call_async.call_args.args
    assert text["phone"] == NEW_PHONE and text["purpose"] == "phone_change" and text["valid_minutes"] == 5
    assert challenge["code_hash"] == phone_codes.digest(challenge["_id"], NEW_PHONE, text["code"])
    assert text["code"] not in str(challenge)
    assert datetime.fromisoformat(sent.pop("expires_at")) == challenge["expires_at"]
    assert sent == {"phone": NEW_PHONE, "resend_after": 60}
    store.count_code_to_phone.assert_called_once_with(NEW_PHONE, challenge["day"])
    store.void_phone_challenge.assert_not_called()


def test_no_code_for_the_phone_the_account_has(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    with pytest.raises(ValidationFailed) as info:
        service.send_phone_code(applicant_principal(citizen_doc), {"phone": citizen_doc["phone"]})
    assert info.value.details == [{"field": "phone", "issue": "already this account's phone"}]
    service.notification.send_verification_code.call_async.assert_not_called()


def test_no_second_code_within_the_minute(service, store, citizen_doc, code_sent):
    store.get_user.return_value = citizen_doc
    store.phone_challenge.return_value = code_sent
    with pytest.raises(RateLimited) as info:
        service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    assert 0 < info.value.retry_after <= 60
    store.keep_phone_challenge.assert_not_called()
    service.notification.send_verification_code.call_async.assert_not_called()


def code_requested(store, count=1):
    store.phone_challenge.return_value = None
    store.count_code_to_phone.return_value = count
    store.keep_phone_challenge.return_value = True


def test_a_request_that_loses_to_a_parallel_one_texts_nothing_and_counts_nothing(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    code_requested(store)
    store.keep_phone_challenge.return_value = False
    with pytest.raises(RateLimited):
        service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    store.count_code_to_phone.assert_not_called()
    service.notification.send_verification_code.call_async.assert_not_called()


def test_a_flooded_phone_gets_no_code_and_the_refusal_counts_against_nothing(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    code_requested(store, count=11)
    with pytest.raises(RateLimited):
        service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    service.notification.send_verification_code.call_async.assert_not_called()
    challenge, previous = store.keep_phone_challenge.call_args.args
    # The code asked for before stands: the refusal replaced it for nothing.
    store.put_back_phone_challenge.assert_called_once_with(challenge["_id"], challenge["sent_at"], previous)
    store.void_phone_challenge.assert_not_called()
    store.uncount_code_to_phone.assert_called_once_with(NEW_PHONE, challenge["day"])


def test_a_text_that_did_not_go_out_voids_its_code_but_still_counts(service, store, citizen_doc):
    from services.common.errors import Unavailable

    store.get_user.return_value = citizen_doc
    code_requested(store)
    service.notification.send_verification_code.call_async.return_value.result.side_effect = Unavailable("down")
    with pytest.raises(Unavailable):
        service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    challenge = store.keep_phone_challenge.call_args.args[0]
    # The provider may yet send it late: void, but counted, and the resend interval holds.
    store.void_phone_challenge.assert_called_once_with(challenge["_id"], challenge["sent_at"])
    store.uncount_code_to_phone.assert_not_called()


def test_with_every_sending_slot_taken_a_request_is_refused_at_once_and_counts_nothing(
    service, store, citizen_doc, monkeypatch
):
    import eventlet.semaphore

    from services.common.errors import Unavailable

    monkeypatch.setattr("services.identity.service.SENDING", eventlet.semaphore.Semaphore(0))
    store.get_user.return_value = citizen_doc
    code_requested(store)
    with pytest.raises(Unavailable, match="too many codes"):
        service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    service.notification.send_verification_code.call_async.assert_not_called()
    # Refused before anything is claimed: a code texted before stays as it was.
    store.keep_phone_challenge.assert_not_called()
    store.void_phone_challenge.assert_not_called()
    store.count_code_to_phone.assert_not_called()


def test_a_sending_slot_is_given_back_whatever_the_outcome(service, store, citizen_doc, monkeypatch):
    import eventlet.semaphore

    from services.common.errors import Unavailable

    one = eventlet.semaphore.Semaphore(1)
    monkeypatch.setattr("services.identity.service.SENDING", one)
    store.get_user.return_value = citizen_doc
    code_requested(store)
    service.notification.send_verification_code.call_async.return_value.result.side_effect = Unavailable("down")
    with pytest.raises(Unavailable, match="down"):
        service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    assert one.balance == 1
    service.notification.send_verification_code.call_async.return_value.result.side_effect = None
    service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    assert one.balance == 1


def test_a_code_text_has_a_deadline_the_caller_waits_for(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    code_requested(store)
    service.send_phone_code(applicant_principal(citizen_doc), {"phone": NEW_PHONE})
    (text,) = service.notification.send_verification_code.call_async.call_args.args
    challenge = store.keep_phone_challenge.call_args.args[0]
    assert datetime.fromisoformat(text["not_after"]) == challenge["sent_at"] + phone_codes.SEND_WITHIN


def test_a_phone_taken_meanwhile_gives_the_code_back(service, store, citizen_doc, code_sent):
    store.get_user.return_value = citizen_doc
    store.change_contact.side_effect = Conflict("phone is already registered")
    with pytest.raises(Conflict):
        service.change_contact(applicant_principal(citizen_doc), change(phone=NEW_PHONE))
    store.unuse_phone_challenge.assert_called_once_with(code_sent["_id"], code_sent["sent_at"])


def test_staff_get_no_phone_codes(service, store, citizen_doc):
    staff = {**applicant_principal(citizen_doc), "account_type": "staff", "roles": ["reviewer"]}
    with pytest.raises(Forbidden):
        service.send_phone_code(staff, {"phone": NEW_PHONE})


# --- passwords: change, and reset with a texted code ------------------------------------------------

NEW_PASSWORD = "Another-pass-2027"
ADDRESS_OF_CALLER = "198.51.100.20"


def password_change(current=PASSWORD, new=NEW_PASSWORD):
    return {"current_password": current, "new_password": new}


def test_a_new_password_is_stored_and_announced_keeping_this_session(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    assert service.change_password(applicant_principal(citizen_doc), password_change()) is None
    user, password_hash, event = store.set_password.call_args.args
    assert user is citizen_doc and accounts.password_matches(password_hash, NEW_PASSWORD)
    assert event.type == "identity.password_changed.v1"
    assert {k: event.payload[k] for k in ("user_id", "account_type", "how", "kept_session_id")} == {
        "user_id": citizen_doc["_id"],
        "account_type": "citizen",
        "how": "changed",
        "kept_session_id": SESSION_ID,
    }
    assert NEW_PASSWORD not in event.model_dump_json() and password_hash not in event.model_dump_json()
    service.events.publish.assert_called_once_with(store.user_outbox, citizen_doc["_id"], [event])
    # The kept session counts as having checked the new password (a late earlier change spares it).
    store.keep_checked.assert_called_once_with(citizen_doc["_id"], SESSION_ID, password_hash)


def test_the_moment_of_a_change_is_taken_after_the_new_password_is_hashed(service, store, citizen_doc, monkeypatch):
    # Sessions started before that moment end. A login that starts its session during the hash
    # (a tenth of a second) and reads the old hash must not start after the moment and keep it.
    hashed_at = []
    real = accounts.hash_password
    monkeypatch.setattr(
        accounts, "hash_password", lambda password: hashed_at.append(datetime.now(UTC)) or real(password)
    )
    store.get_user.return_value = citizen_doc
    service.change_password(applicant_principal(citizen_doc), password_change())
    event = store.set_password.call_args.args[2]
    assert datetime.fromisoformat(event.payload["changed_at"]) >= hashed_at[-1]


def password_changed(kept=SESSION_ID, how="changed", at=None):
    from contracts.events import PasswordChanged

    changed = PasswordChanged(
        user_id="u-1", account_type="citizen", how=how, changed_at=at or datetime.now(UTC), kept_session_id=kept
    )
    return new_event(changed, producer="identity")


def test_hearing_of_a_new_password_ends_the_sessions_started_before_it_but_the_one_that_made_it(service, store):
    at = datetime.now(UTC)
    event = password_changed(at=at)
    store.sessions_of.return_value = {
        SESSION_ID: SessionStart(at - timedelta(hours=1)),  # made the change
        "s-phone": SessionStart(at - timedelta(days=3)),
        "s-tablet": SessionStart(at - timedelta(seconds=1)),
        "s-after": SessionStart(at + timedelta(seconds=1)),  # logged in with the new password
    }
    service.end_sessions_after_password_change(event.model_dump(mode="json"))
    assert [c.args[0] for c in store.revoke_session.call_args_list] == ["s-phone", "s-tablet"]
    assert store.revoke_session.call_args.args[1].payload["reason"] == "password changed"
    assert store.sessions_of.call_args.kwargs["since"] == at - SESSION_MAX_AGE
    store.forget_sessions.assert_called_once_with("u-1", ["s-phone", "s-tablet"])


def test_a_login_that_checked_the_old_password_ends_though_its_session_started_after_the_change(service, store):
    # The change's moment is taken before the store's write; a login in between read the old hash.
    at = datetime.now(UTC)
    store.get_user.return_value = {"_id": "u-1", "password_hash": "$argon2id$new"}
    old, new = accounts.password_fingerprint("$argon2id$old"), accounts.password_fingerprint("$argon2id$new")
    store.sessions_of.return_value = {
        "s-raced": SessionStart(at + timedelta(milliseconds=5), password=old, staff_version=0),
        "s-after": SessionStart(at + timedelta(seconds=1), password=new, staff_version=0),
        SESSION_ID: SessionStart(at - timedelta(hours=1), password=old, staff_version=0),  # made the change
    }
    service.end_sessions_after_password_change(password_changed(at=at).model_dump(mode="json"))
    assert [c.args[0] for c in store.revoke_session.call_args_list] == ["s-raced"]


def test_hearing_of_a_reset_ends_every_earlier_session(service, store):
    at = datetime.now(UTC)
    event = password_changed(kept=None, how="reset", at=at)
    store.sessions_of.return_value = {
        SESSION_ID: SessionStart(at - timedelta(hours=1)),
        "s-2": SessionStart(at - timedelta(minutes=1)),
    }
    service.end_sessions_after_password_change(event.model_dump(mode="json"))
    assert sorted(c.args[0] for c in store.revoke_session.call_args_list) == [SESSION_ID, "s-2"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (password_change(current="not-the-password"), "current_password"),
        (password_change(new=PASSWORD), "new_password"),  # the same again
        (password_change(new="password1"), "new_password"),  # too common
        (password_change(new="short"), "new_password"),
        ({"new_password": NEW_PASSWORD}, "current_password"),
    ],
    ids=["wrong-current", "same", "common", "short", "no-current"],
)
def test_a_refused_password_change_changes_nothing(service, store, citizen_doc, payload, field):
    store.get_user.return_value = citizen_doc
    with pytest.raises(ValidationFailed) as info:
        service.change_password(applicant_principal(citizen_doc), payload)
    assert field in [d["field"] for d in info.value.details]
    store.set_password.assert_not_called()
    service.events.publish.assert_not_called()


def test_wrong_current_passwords_count_against_the_login_allowance(service, store, citizen_doc):
    store.get_user.return_value = citizen_doc
    with pytest.raises(ValidationFailed):
        service.change_password(applicant_principal(citizen_doc), password_change(current="guess-1"))
    assert store.record_failure.call_args.args[0] == f"user:{citizen_doc['_id']}"
    store.failures.return_value = {f"user:{citizen_doc['_id']}": Failures(3, datetime.now(UTC))}
    with pytest.raises(RateLimited):
        service.change_password(applicant_principal(citizen_doc), password_change())
    store.set_password.assert_not_called()


def test_staff_change_their_password_too(service, store):
    staff = accounts.new_staff("reviewer1", "审核员", PASSWORD, ["reviewer"], "620524MZ")
    store.get_user.return_value = staff
    principal = {"user_id": staff["_id"], "account_type": "staff", "roles": ["reviewer"], "session_id": "s-1"}
    service.change_password(principal, password_change())
    assert store.set_password.call_args.args[2].payload["account_type"] == "staff"


RESET_KEY_OF = "password_reset:{}".format


def reset_code_sent(store, user, code=CODE):
    now = to_stored_precision(datetime.now(UTC))
    key = RESET_KEY_OF(user["_id"])
    challenge = phone_codes.new_challenge(key, user["phone"], code, None, now, phone_codes.Policy())
    store.count_code_attempt.return_value = {**challenge, "attempts": 1}
    store.use_phone_challenge.return_value = True
    return challenge


def ask_reset_code(service, username):
    return service.send_password_reset_code({"username": username}, ADDRESS_OF_CALLER)


SAME_ANSWER = {"valid_minutes": 5, "resend_after": 60}


def test_a_reset_code_goes_to_the_accounts_own_phone(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    code_requested(store)
    assert ask_reset_code(service, ID_NUMBER) == SAME_ANSWER
    (text,) = service.notification.send_verification_code.call_async.call_args.args
    assert text["phone"] == citizen_doc["phone"] and text["purpose"] == "password_reset"
    challenge = store.keep_phone_challenge.call_args.args[0]
    assert challenge["_id"] == RESET_KEY_OF(citizen_doc["_id"])
    store.count_code_to_phone.assert_not_called()  # the account's own phone: the account's limit holds
    assert store.record_failure.call_args.args[0] == f"reset-requests:{ADDRESS_OF_CALLER}"  # every request counts


@pytest.mark.parametrize("case", ["unknown", "staff", "asked too often", "provider down", "provider refused"])
def test_a_reset_code_request_answers_alike_whoever_asks(service, store, citizen_doc, case):
    from services.common.errors import Unavailable

    store.find_by_login.return_value = citizen_doc
    code_requested(store)
    if case == "unknown":
        store.find_by_login.return_value = None
    elif case == "staff":
        store.find_by_login.return_value = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    elif case == "asked too often":
        store.phone_challenge.return_value = reset_code_sent(store, citizen_doc)
    else:
        error = Unavailable("down") if case == "provider down" else ValidationFailed("refused", [{"field": "phone"}])
        service.notification.send_verification_code.call_async.return_value.result.side_effect = error
    assert ask_reset_code(service, "someone") == SAME_ANSWER


def test_a_reset_code_request_is_answered_before_the_account_is_looked_up(service, store, monkeypatch):
    later = []
    monkeypatch.setattr("services.identity.service.run_in_background", lambda fn, *args: later.append((fn, args)))
    assert ask_reset_code(service, ID_NUMBER) == SAME_ANSWER
    store.find_by_login.assert_not_called()  # no lookup before the answer: no time to tell accounts apart
    assert len(later) == 1


@pytest.mark.parametrize("counted", [6, 7])
def test_a_client_address_asking_too_often_is_refused(service, store, counted):
    # Counted first, in one write: parallel requests all passed a read of the count (the limit is 6).
    store.record_failure.side_effect = lambda key, now, window: Failures(counted, now - timedelta(seconds=10))
    if counted == 6:  # the sixth request is within the allowance
        assert ask_reset_code(service, ID_NUMBER) == SAME_ANSWER
        return
    with pytest.raises(RateLimited):
        ask_reset_code(service, ID_NUMBER)
    store.find_by_login.assert_not_called()
    store.keep_phone_challenge.assert_not_called()


def reset(service, username=ID_NUMBER, code=CODE, new_password=NEW_PASSWORD):
    return service.reset_password({"username": username, "code": code, "new_password": new_password}, ADDRESS_OF_CALLER)


def test_a_reset_with_the_code_sets_and_announces_the_password_and_forgives_failures(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    challenge = reset_code_sent(store, citizen_doc)
    assert reset(service, username=citizen_doc["phone"]) is None
    store.count_code_attempt.assert_called_once_with(challenge["_id"])
    store.use_phone_challenge.assert_called_once_with(challenge["_id"], challenge["sent_at"])
    _, password_hash, event = store.set_password.call_args.args
    assert accounts.password_matches(password_hash, NEW_PASSWORD)
    assert event.payload["how"] == "reset" and event.payload["kept_session_id"] is None
    store.keep_checked.assert_not_called()
    cleared = {c.args[0] for c in store.clear_failures.call_args_list}
    assert cleared == {f"user:{citizen_doc['_id']}", f"account:{citizen_doc['phone']}", f"account:{ID_NUMBER}"}
    # Counted against the address before the code was checked, and taken back: it was right.
    assert store.record_failure.call_args.args[0] == f"address:{ADDRESS_OF_CALLER}"
    assert [c.args[0] for c in store.take_back_failure.call_args_list] == [f"address:{ADDRESS_OF_CALLER}"]


def test_a_reset_that_loses_to_a_parallel_change_gives_the_code_back(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    challenge = reset_code_sent(store, citizen_doc)
    store.set_password.side_effect = Conflict("the password changed meanwhile; try again")
    with pytest.raises(Conflict):
        reset(service)
    store.unuse_phone_challenge.assert_called_once_with(challenge["_id"], challenge["sent_at"])


@pytest.mark.parametrize("case", ["wrong code", "unknown account", "worn-out code", "spent code"])
def test_every_refused_reset_reads_the_same_and_counts_against_the_address(service, store, citizen_doc, case):
    store.find_by_login.return_value = None if case == "unknown account" else citizen_doc
    challenge = reset_code_sent(store, citizen_doc)
    if case == "worn-out code":
        store.count_code_attempt.return_value = {**challenge, "attempts": 6}
    if case == "spent code":
        store.use_phone_challenge.return_value = False
    with pytest.raises(ValidationFailed) as info:
        reset(service, code="000000" if case == "wrong code" else CODE)
    assert info.value.details == [{"field": "code", "issue": RESET_REFUSED}]
    assert store.record_failure.call_args.args[0] == f"address:{ADDRESS_OF_CALLER}"
    store.take_back_failure.assert_not_called()
    store.set_password.assert_not_called()


def test_a_reset_to_a_common_password_does_not_spend_the_code(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    reset_code_sent(store, citizen_doc)
    with pytest.raises(ValidationFailed) as info:
        reset(service, new_password="password1")
    assert info.value.details[0]["field"] == "new_password"
    store.count_code_attempt.assert_not_called()


def test_a_client_address_guessing_too_much_is_refused(service, store, citizen_doc):
    store.find_by_login.return_value = citizen_doc
    reset_code_sent(store, citizen_doc)
    store.failures.return_value = {f"address:{ADDRESS_OF_CALLER}": Failures(6, datetime.now(UTC))}
    with pytest.raises(RateLimited):
        reset(service)
    store.count_code_attempt.assert_not_called()


ADMIN_PRINCIPAL = {"user_id": "u-admin", "account_type": "staff", "roles": ["admin"], "session_id": "s-admin"}


def test_an_admin_sets_a_staff_password_and_every_session_of_it_ends(service, store):
    clerk = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    store.find_by_login.return_value = clerk
    assert service.reset_staff_password(ADMIN_PRINCIPAL, "li", {"new_password": NEW_PASSWORD}) is None
    store.find_by_login.assert_called_once_with(["staff:li"], "")
    _, password_hash, event = store.set_password.call_args.args
    assert accounts.password_matches(password_hash, NEW_PASSWORD)
    assert event.payload["how"] == "reset_by_admin" and event.payload["kept_session_id"] is None
    assert store.set_password.call_args.kwargs["change_required"] is True  # the admin knows this one
    assert {c.args[0] for c in store.clear_failures.call_args_list} == {f"user:{clerk['_id']}", "account:LI"}


def test_a_password_of_ones_own_clears_the_change_an_admin_required(service, store):
    clerk = {**accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ"), "password_change_required": True}
    store.get_user.return_value = clerk
    principal = {
        "user_id": clerk["_id"],
        "account_type": "staff",
        "roles": ["reviewer"],
        "session_id": "s-1",
        "password_change_required": True,
    }
    service.change_password(principal, password_change())
    assert store.set_password.call_args.kwargs["change_required"] is False


def test_a_login_whose_password_an_admin_set_says_so_and_its_token_too(service, store, signing_key):
    clerk = {**accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ"), "password_change_required": True}
    store.find_by_login.return_value = clerk
    pair = TokenPair.model_validate(service.login(attempt(username="li")))
    assert pair.password_change_required is True
    assert _claims(pair.access_token, signing_key)["pwc"] is True
    store.find_by_login.return_value = {**clerk, "password_change_required": False}
    pair = TokenPair.model_validate(service.login(attempt(username="li")))
    assert pair.password_change_required is False
    assert "pwc" not in _claims(pair.access_token, signing_key)


def test_an_admin_whose_password_an_admin_set_administers_nothing_until_changed(service, store):
    flagged = {**ADMIN_PRINCIPAL, "password_change_required": True}
    with pytest.raises(Forbidden) as info:
        service.create_staff(flagged, staff_payload())
    assert info.value.details == [{"field": "password", "issue": "change_required"}]
    with pytest.raises(Forbidden):
        service.reset_staff_password(flagged, "li", {"new_password": NEW_PASSWORD})
    store.insert_user.assert_not_called()
    store.set_password.assert_not_called()


@pytest.mark.parametrize("case", ["not an admin", "an applicant", "nobody", "common password"])
def test_a_staff_password_is_set_only_by_an_admin_for_staff(service, store, citizen_doc, case):
    store.find_by_login.return_value = {"nobody": None, "an applicant": citizen_doc}.get(
        case, accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    )
    principal = {**ADMIN_PRINCIPAL, "roles": ["supervisor"]} if case == "not an admin" else ADMIN_PRINCIPAL
    new = "password1" if case == "common password" else NEW_PASSWORD
    expected = {"not an admin": Forbidden, "common password": ValidationFailed}.get(case, NotFound)
    with pytest.raises(expected):
        service.reset_staff_password(principal, "li", {"new_password": new})
    store.set_password.assert_not_called()


# --- the staff directory ----------------------------------------------------------------------------


def directory_entry(user, **overrides):
    return {
        "_id": user["_id"],
        "username": user["login_key"].removeprefix("staff:"),
        "name": user["name"],
        "roles": user["roles"],
        "department_code": user["department_code"],
        "active": True,
        "created_at": user["created_at"],
        "deactivated_at": None,
        **overrides,
    }


def test_admins_list_the_staff_directory_narrowed_as_asked(service, store):
    clerk = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    store.staff_page.return_value = ([directory_entry(clerk)], 41)
    listed = service.list_staff(ADMIN, {"page": 3, "page_size": 20, "role": "reviewer", "active": "true"})
    assert store.staff_page.call_args.args == ({"roles": "reviewer", "active": True}, 40, 20)
    assert listed["total"] == 41 and listed["page"] == 3
    assert listed["items"][0]["user_id"] == clerk["_id"] and listed["items"][0]["username"] == "li"
    assert "password_hash" not in listed["items"][0]
    with pytest.raises(Forbidden):
        service.list_staff(REVIEWER, {})
    with pytest.raises(ValidationFailed):
        service.list_staff(ADMIN, {"role": "applicant"})


def test_a_deactivation_is_stored_with_its_announcement(service, store):
    clerk = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    store.find_by_login.return_value = clerk
    store.set_staff_active.return_value = True
    store.get_user.return_value = {**clerk, "active": False, "deactivated_at": datetime.now(UTC)}
    view = service.set_staff_status(ADMIN_PRINCIPAL, "li", {"active": False})
    assert view["active"] is False and view["deactivated_at"] and view["username"] == "li"
    user, active, at, event = store.set_staff_active.call_args.args
    assert (user["_id"], active) == (clerk["_id"], False)
    assert event.type == "identity.staff_status_changed.v1"
    assert StaffStatusChanged.model_validate(event.payload) == StaffStatusChanged(
        user_id=clerk["_id"], active=False, changed_at=at
    )
    service.events.publish.assert_called_once_with(store.user_outbox, clerk["_id"], [event])
    store.revoke_session.assert_not_called()  # identity ends them on hearing it


def test_a_later_change_stored_first_wins_and_nothing_is_announced(service, store):
    clerk = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    store.find_by_login.return_value = clerk
    store.set_staff_active.return_value = False
    store.get_user.return_value = clerk  # still active: the later change said so
    assert service.set_staff_status(ADMIN_PRINCIPAL, "li", {"active": False})["active"] is True
    service.events.publish.assert_not_called()


def status_changed(user_id, active):
    payload = StaffStatusChanged(user_id=user_id, active=active, changed_at=datetime.now(UTC))
    return new_event(payload, producer="identity").model_dump(mode="json"), payload


def test_on_hearing_a_deactivation_every_session_ends_and_the_directory_follows(service, store):
    now = datetime.now(UTC)
    # Even one started after the change was stored: ending every session leaves no gap for a login.
    store.sessions_of.return_value = {
        "s-1": SessionStart(now - timedelta(days=1)),
        "s-2": SessionStart(now + timedelta(seconds=1)),
    }
    store.account_active.return_value = False
    message, _ = status_changed("u-li", False)
    service.on_staff_status_changed(message)
    store.sync_directory.assert_called_once_with("u-li")
    assert {c.args[0] for c in store.revoke_session.call_args_list} == {"s-1", "s-2"}
    store.forget_sessions.assert_called_once_with("u-li", ["s-1", "s-2"])


def test_a_late_deactivation_ends_only_the_sessions_an_account_let_in_again_had_before_it(service, store):
    # Reactivated before identity heard the deactivation: the sessions it was meant to end (a
    # leaver's stolen laptop) end all the same; a login made since stays.
    message, payload = status_changed("u-li", False)
    store.sessions_of.return_value = {
        "s-before": SessionStart(payload.changed_at - timedelta(hours=2)),
        "s-after": SessionStart(payload.changed_at + timedelta(minutes=1)),
    }
    store.account_active.return_value = True  # activated again since
    service.on_staff_status_changed(message)
    assert [c.args[0] for c in store.revoke_session.call_args_list] == ["s-before"]
    store.forget_sessions.assert_called_once_with("u-li", ["s-before"])


def test_on_hearing_an_activation_no_session_ends(service, store):
    store.sessions_of.return_value = {"s-1": SessionStart(datetime.now(UTC))}
    message, _ = status_changed("u-li", True)
    service.on_staff_status_changed(message)
    store.sync_directory.assert_called_once_with("u-li")
    store.revoke_session.assert_not_called()


def test_a_token_of_an_account_no_longer_an_active_admin_administers_nothing(service, store):
    store.is_active_admin.return_value = False  # deactivated, or its admin role taken, meanwhile
    with pytest.raises(Forbidden, match="no longer an active admin"):
        service.create_staff(ADMIN, staff_payload())
    store.is_active_admin.assert_called_once_with(ADMIN["user_id"])
    store.insert_user.assert_not_called()


def test_when_no_admin_is_active_the_configured_one_is_let_in_again(service, store):
    admin = {**accounts.new_staff("admin", "系统管理员", PASSWORD, ["admin"], None), "active": False}
    store.login_key_exists.return_value = True
    store.find_by_login.return_value = admin
    store.get_user.return_value = admin
    store.any_active_admin.return_value = True
    service.ensure_admin()
    store.resync_directory.assert_called_once()  # decided on a fresh copy
    store.set_staff_active.assert_not_called()
    store.any_active_admin.return_value = False
    store.set_staff_active.return_value = True
    service.ensure_admin()
    user, active, _, event = store.set_staff_active.call_args.args
    assert (user["_id"], active, event.payload["active"]) == (admin["_id"], True, True)
    store.update_staff.assert_not_called()  # it is an admin still


def test_an_admin_another_process_restores_meanwhile_is_no_error(service, store):
    admin = {**accounts.new_staff("admin", "系统管理员", PASSWORD, ["supervisor"], None), "active": False}
    store.login_key_exists.return_value = True
    store.find_by_login.return_value = admin
    store.any_active_admin.return_value = False
    store.update_staff.return_value = False  # the other process's change came first
    assert service.ensure_admin() == "admin"
    store.set_staff_active.assert_not_called()


def test_a_configured_admin_that_lost_the_role_gets_it_back_when_no_admin_is_left(service, store):
    admin = accounts.new_staff("admin", "系统管理员", PASSWORD, ["supervisor"], None)
    store.login_key_exists.return_value = True
    store.find_by_login.return_value = admin
    store.any_active_admin.return_value = False
    service.ensure_admin()
    user, changes, event = store.update_staff.call_args.args
    assert (user["_id"], changes) == (admin["_id"], {"roles": ["supervisor", "admin"]})
    assert event.type == "identity.staff_changed.v1"
    store.set_staff_active.assert_not_called()  # it was active


@pytest.mark.parametrize("case", ["not an admin", "an applicant", "nobody", "oneself", "no state"])
def test_only_an_admin_deactivates_and_never_themself(service, store, citizen_doc, case):
    clerk = accounts.new_staff("li", "李", PASSWORD, ["admin"], None)
    store.find_by_login.return_value = {"nobody": None, "an applicant": citizen_doc}.get(case, clerk)
    principal = {**ADMIN_PRINCIPAL, "roles": ["supervisor"]} if case == "not an admin" else ADMIN_PRINCIPAL
    if case == "oneself":
        principal = {**ADMIN_PRINCIPAL, "user_id": clerk["_id"]}
    payload = {} if case == "no state" else {"active": False}
    expected = {"not an admin": Forbidden, "oneself": Conflict, "no state": ValidationFailed}.get(case, NotFound)
    with pytest.raises(expected):
        service.set_staff_status(principal, "li", payload)
    store.set_staff_active.assert_not_called()


def test_a_deactivated_account_cannot_log_in_or_refresh(service, store, citizen_doc):
    clerk = {**accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ"), "active": False}
    store.find_by_login.return_value = clerk
    with pytest.raises(Unauthenticated, match="deactivated"):
        service.login(attempt(username="li"))
    store.start_session.assert_not_called()
    # The password was right: the guess counted before the check is taken back.
    assert {c.args[0] for c in store.clear_failures.call_args_list} == {"account:LI", f"user:{clerk['_id']}"}

    store.spend_refresh_token.return_value = (refresh_token_doc(clerk), True)
    store.get_session.return_value = live_session(clerk)
    store.get_user.return_value = clerk
    with pytest.raises(Unauthenticated, match="deactivated"):
        service.refresh({"refresh_token": REFRESH_TOKEN})
    assert store.revoke_session.call_args.args[0] == SESSION_ID
    store.store_refresh_token.assert_not_called()


def test_a_staff_login_puts_the_account_in_the_directory_if_a_crash_left_it_out(service, store):
    clerk = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    store.find_by_login.return_value = clerk
    service.login(attempt(username="li"))
    store.list_staff_member.assert_called_once_with(clerk)


def test_a_new_staff_account_is_listed_in_the_directory(service, store):
    service.create_staff(ADMIN, staff_payload())
    doc, _ = store.insert_user.call_args.args
    store.list_staff_member.assert_called_once_with(doc)


def staff_update(**overrides):
    return {"name": "李", "roles": ["reviewer"], "department_code": "620524MZ", **overrides}


def test_an_admin_moves_a_reviewer_to_another_department_and_it_is_announced(service, store):
    clerk = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    store.find_by_login.return_value = clerk
    moved = {**clerk, "department_code": "620524GA", "roles": ["supervisor"], "staff_version": 1}
    store.get_user.return_value = moved  # the account as it stands after the change
    view = service.update_staff(ADMIN_PRINCIPAL, "li", staff_update(department_code="620524GA", roles=["supervisor"]))
    assert (view["department_code"], view["roles"], view["username"]) == ("620524GA", ["supervisor"], "li")
    assert view["version"] == 1
    user, changes, event = store.update_staff.call_args.args
    assert user["_id"] == clerk["_id"]
    assert changes == {"department_code": "620524GA", "roles": ["supervisor"]}
    assert event.type == "identity.staff_changed.v1"
    assert event.payload["changed"] == ["department_code", "roles"]
    service.events.publish.assert_called_once_with(store.user_outbox, clerk["_id"], [event])


def test_a_staff_account_is_found_by_its_username_in_any_spelling(service, store):
    # Logins take `Bob` for bob; the admin routes answered 404 for it.
    clerk = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    store.find_by_login.side_effect = lambda keys, phone: clerk if keys == ["staff:li"] else None
    store.get_user.return_value = {**clerk, "staff_version": 1}
    assert service.update_staff(ADMIN_PRINCIPAL, "LI", staff_update(name="李四"))["username"] == "li"
    assert accounts.new_staff("Wang", "王", PASSWORD, ["reviewer"], "620524MZ")["login_key"] == "staff:wang"


def test_an_edit_made_from_a_stale_copy_is_refused(service, store):
    clerk = {**accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ"), "staff_version": 4}
    store.find_by_login.return_value = clerk
    with pytest.raises(Conflict, match="changed since it was read"):
        service.update_staff(ADMIN_PRINCIPAL, "li", staff_update(name="李四"), 3)
    store.update_staff.assert_not_called()
    store.update_staff.return_value = False  # and one that changed between the read and the write
    with pytest.raises(Conflict, match="changed since it was read"):
        service.update_staff(ADMIN_PRINCIPAL, "li", staff_update(name="李四"), 4)
    service.events.publish.assert_not_called()


def test_an_update_that_changes_nothing_stores_and_announces_nothing(service, store):
    store.find_by_login.return_value = accounts.new_staff("li", "李", PASSWORD, ["reviewer"], "620524MZ")
    assert service.update_staff(ADMIN_PRINCIPAL, "li", staff_update())["name"] == "李"
    store.update_staff.assert_not_called()
    service.events.publish.assert_not_called()


@pytest.mark.parametrize("case", ["not an admin", "an applicant", "nobody", "own admin role", "no roles"])
def test_only_an_admin_changes_staff_and_never_takes_their_own_admin_role(service, store, citizen_doc, case):
    me = accounts.new_staff("boss", "王", PASSWORD, ["admin"], None)
    store.find_by_login.return_value = {"nobody": None, "an applicant": citizen_doc}.get(case, me)
    principal = {**ADMIN_PRINCIPAL, "roles": ["supervisor"]} if case == "not an admin" else ADMIN_PRINCIPAL
    if case == "own admin role":
        principal = {**ADMIN_PRINCIPAL, "user_id": me["_id"]}
    payload = staff_update(roles=[] if case == "no roles" else ["reviewer"])
    expected = {"not an admin": Forbidden, "own admin role": Conflict, "no roles": ValidationFailed}.get(case, NotFound)
    with pytest.raises(expected):
        service.update_staff(principal, "boss", payload)
    store.update_staff.assert_not_called()


def staff_changed(changed):
    payload = StaffChanged(user_id="u-li", changed=changed, changed_at=datetime.now(UTC))
    return new_event(payload, producer="identity").model_dump(mode="json"), payload


def test_new_roles_or_department_end_the_sessions_started_before(service, store):
    message, payload = staff_changed(["department_code"])
    store.sessions_of.return_value = {
        "s-old": SessionStart(payload.changed_at - timedelta(hours=1)),
        "s-new": SessionStart(payload.changed_at + timedelta(seconds=1)),  # logged in with the new ones already
    }
    service.on_staff_changed(message)
    store.sync_directory.assert_called_once_with("u-li")
    assert [c.args[0] for c in store.revoke_session.call_args_list] == ["s-old"]


def test_a_login_that_read_the_old_roles_ends_though_its_session_started_after_the_change(service, store):
    message, payload = staff_changed(["roles"])
    store.get_user.return_value = {"_id": "u-li", "password_hash": "$argon2id$x", "staff_version": 4}
    after = payload.changed_at + timedelta(milliseconds=5)
    store.sessions_of.return_value = {
        "s-raced": SessionStart(after, password="f", staff_version=3),
        "s-new": SessionStart(after, password="f", staff_version=4),
    }
    service.on_staff_changed(message)
    assert [c.args[0] for c in store.revoke_session.call_args_list] == ["s-raced"]


def test_a_new_name_alone_ends_no_session(service, store):
    message, _ = staff_changed(["name"])
    store.sessions_of.return_value = {"s-old": SessionStart(datetime.now(UTC) - timedelta(hours=1), "f", 3)}
    service.on_staff_changed(message)
    store.sync_directory.assert_called_once_with("u-li")
    store.revoke_session.assert_not_called()


def test_simulated_identity_checks_are_announced_as_such(service, caplog):
    from nameko import config

    with caplog.at_level("WARNING", logger="services.identity.service"):
        service.warn_of_simulated_providers()
    assert "simulated" in caplog.text and "not for production" in caplog.text
    caplog.clear()
    with config.patch({"IDENTITY_PROVIDERS": "registry"}), caplog.at_level("WARNING"):
        service.warn_of_simulated_providers()
    assert "simulated" not in caplog.text


def test_a_wrong_current_password_is_counted_before_it_is_checked(service, store, citizen_doc, monkeypatch):
    # As at login: parallel guesses of the current password (a stolen access token) get no more
    # than the allowance.
    checked = []
    monkeypatch.setattr(accounts, "password_matches", lambda *a: checked.append(a) or False)
    store.get_user.return_value = citizen_doc
    store.record_failure.side_effect = lambda key, now, window: Failures(4, now - timedelta(seconds=10))
    payload = {"current_password": "not-it", "new_password": "Another-pass-2026"}
    with pytest.raises(RateLimited):
        service.change_password(applicant_principal(citizen_doc), payload)
    assert checked == []


def test_unknown_identity_providers_answer_unavailable_not_500(service, store, citizen_doc):
    from nameko import config

    from services.common.errors import Unavailable

    store.get_user.return_value = citizen_doc
    with config.patch({"IDENTITY_PROVIDERS": "typo"}), pytest.raises(Unavailable, match="not configured"):
        service.verify_real_name(applicant_principal(citizen_doc))


def _audit_record(**changes):
    entry = {
        "entry_id": "c" * 32,
        "actor_id": "u-li",
        "actor_roles": ["reviewer"],
        "action": "GET /api/v1/cases/C-1",
        "target": {"case_no": "C-1"},
        "status": 200,
        "at": datetime.now(UTC).isoformat(),
        "address": "10.0.0.1",
    }
    return {**entry, **changes}


def test_an_audit_entry_is_stored_under_the_id_the_gateway_gave_it(service, store):
    service.record_audit(_audit_record())
    entry_id, entry = store.append_audit.call_args.args
    assert entry_id == "c" * 32 and "entry_id" not in entry and entry["action"] == "GET /api/v1/cases/C-1"


@pytest.mark.parametrize("entry_id", ["", "not-hex", "C" * 32])
def test_an_audit_entry_with_an_improper_id_is_refused(service, store, entry_id):
    with pytest.raises(ValidationFailed):
        service.record_audit(_audit_record(entry_id=entry_id))
    store.append_audit.assert_not_called()


def test_an_audit_entry_of_a_gateway_older_than_the_id_gets_one_of_identitys(service, store):
    record = _audit_record()
    del record["entry_id"]
    service.record_audit(record)
    entry_id, _ = store.append_audit.call_args.args
    assert len(entry_id) == 32
