"""Identity against the real broker and document server."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest
from nameko.standalone.rpc import ServiceRpcClient
from nameko.testing.services import entrypoint_waiter

from contracts.cases import Decision
from contracts.envelope import new_event
from contracts.events import CaseApproved
from services.common.errors import Conflict, RateLimited, Unauthenticated
from services.identity.first_admin import first_admin_password
from services.identity.service import IdentityService
from tests.support import citizen, dispatch_event, event_recorder, eventually


@pytest.fixture
def identity_config(rabbit_config, store_config):
    return store_config


def start(container_factory, config):
    container = container_factory(IdentityService, config)
    container.start()
    return container


def test_register_login_and_verify_with_published_keys(container_factory, identity_config):
    start(container_factory, identity_config)
    person = citizen()
    with ServiceRpcClient("identity") as identity:
        user = identity.register(person)
        with pytest.raises(Conflict) as dup:
            identity.register({**citizen(), "id_number": person["id_number"]})
        assert dup.value.details == [{"field": "id_number", "issue": "already registered"}]
        with pytest.raises(Conflict) as dup_phone:
            identity.register({**citizen(), "phone": person["phone"]})
        assert dup_phone.value.details[0]["field"] == "phone"

        by_phone = identity.login(
            {"credentials": {"username": person["phone"], "password": person["password"]}, "client_address": "10.0.0.1"}
        )
        by_id = identity.login(attempt(person))
        keys = identity.jwks()["keys"]
        with pytest.raises(Unauthenticated):
            identity.login({**attempt(person), "credentials": {"username": person["phone"], "password": "wrong-pass"}})

    for pair in (by_phone, by_id):
        kid = jwt.get_unverified_header(pair["access_token"])["kid"]
        key = next(jwt.PyJWK(k).key for k in keys if k["kid"] == kid)
        claims = jwt.decode(pair["access_token"], key, algorithms=["EdDSA"], audience="yiwang")
        assert claims["sub"] == user["user_id"] and claims["roles"] == ["applicant"]


def test_signing_key_survives_a_restart(container_factory, identity_config):
    container = start(container_factory, identity_config)
    with ServiceRpcClient("identity") as identity:
        first = identity.jwks()
    container.stop()
    start(container_factory, identity_config)
    with ServiceRpcClient("identity") as identity:
        assert identity.jwks() == first


def test_first_admin_is_seeded_once(container_factory, identity_config):
    start(container_factory, identity_config)
    with ServiceRpcClient("identity") as identity:
        assert identity.ensure_admin() == "admin"
        assert identity.ensure_admin() == "admin"
        token = identity.login(
            {"credentials": {"username": "admin", "password": first_admin_password()}, "client_address": "10.0.0.2"}
        )["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["roles"] == ["admin"]


def test_throttling_holds_across_processes(container_factory, identity_config, monkeypatch):
    monkeypatch.setenv("YIWANG_LOGIN_ACCOUNT_LIMIT", "2")
    first = start(container_factory, identity_config)
    person = citizen()
    wrong = {"credentials": {"username": person["phone"], "password": "wrong-password"}, "client_address": "10.9.9.9"}
    right = {"credentials": {"username": person["phone"], "password": person["password"]}, "client_address": "10.9.9.9"}
    with ServiceRpcClient("identity") as identity:
        identity.register(person)
        for _ in range(2):
            with pytest.raises(Unauthenticated):
                identity.login(wrong)
    first.stop()

    start(container_factory, identity_config)  # another process, same store
    with ServiceRpcClient("identity") as identity, pytest.raises(RateLimited) as blocked:
        identity.login(right)
    assert 0 < blocked.value.retry_after <= 900


def refusals(replies) -> list[str]:
    """What each login sent at once was refused with (all are wrong guesses)."""
    outcomes = []
    for reply in replies:
        try:
            reply.result()
        except (Unauthenticated, RateLimited) as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def test_parallel_guesses_get_no_more_than_the_allowance(container_factory, identity_config, monkeypatch):
    # Each guess is counted before its password is checked: of twelve wrong guesses sent at once,
    # five are checked (401) and the rest refused (429), however the workers interleave.
    monkeypatch.setenv("YIWANG_LOGIN_ACCOUNT_LIMIT", "5")
    monkeypatch.setenv("YIWANG_LOGIN_ADDRESS_LIMIT", "1000")
    start(container_factory, identity_config)
    person = citizen()
    with ServiceRpcClient("identity") as identity:
        identity.register(person)
        credentials = {"username": person["phone"], "password": "wrong-password"}
        wrong = {"credentials": credentials, "client_address": "10.8.8.8"}
        replies = [identity.login.call_async(wrong) for _ in range(12)]
        outcomes = refusals(replies)
    assert outcomes.count("Unauthenticated") == 5 and outcomes.count("RateLimited") == 7


def test_parallel_failures_from_one_address_get_no_more_than_its_allowance(
    container_factory, identity_config, monkeypatch
):
    # The address is counted before the password is checked too: of twelve wrong guesses at
    # twelve names sent at once from one address, five are checked and the rest refused.
    monkeypatch.setenv("YIWANG_LOGIN_ACCOUNT_LIMIT", "1000")
    monkeypatch.setenv("YIWANG_LOGIN_ADDRESS_LIMIT", "5")
    start(container_factory, identity_config)
    with ServiceRpcClient("identity") as identity:
        guesses = [
            {"credentials": {"username": f"13800{n:06d}", "password": "wrong-password"}, "client_address": "10.7.7.7"}
            for n in range(12)
        ]
        replies = [identity.login.call_async(guess) for guess in guesses]
        outcomes = refusals(replies)
    assert outcomes.count("Unauthenticated") == 5 and outcomes.count("RateLimited") == 7


def test_parallel_registrations_from_one_address_get_no_more_than_its_allowance(
    container_factory, identity_config, monkeypatch
):
    # Counted before anything is read or hashed, in one atomic write: of seven registrations sent
    # at once from one address (one of them a repeat), four are handled (registered, or 409 for the
    # repeat) and the rest refused. Another address is counted apart.
    monkeypatch.setenv("YIWANG_REGISTRATION_ADDRESS_LIMIT", "4")
    start(container_factory, identity_config)
    people = [citizen() for _ in range(7)]
    with ServiceRpcClient("identity") as identity:
        identity.register(people[0])  # from inside the system: not counted
        replies = [identity.register.call_async(person, "10.6.6.6") for person in people]
        outcomes = []
        for reply in replies:
            try:
                reply.result()
            except (Conflict, RateLimited) as exc:
                outcomes.append(type(exc).__name__)
            else:
                outcomes.append("ok")
        assert identity.register(citizen(), "10.6.6.7")["assurance_level"] == 1
    assert outcomes.count("RateLimited") == 3 and outcomes.count("ok") + outcomes.count("Conflict") == 4


def test_reusing_a_refresh_token_revokes_the_session_and_says_so(container_factory, identity_config):
    revoked = event_recorder("identity", "identity.session_revoked.v1")
    container_factory(revoked).start()
    start(container_factory, identity_config)
    person = citizen()
    with ServiceRpcClient("identity") as identity:
        identity.register(person)
        pair = identity.login(attempt(person))
        renewed = identity.refresh({"refresh_token": pair["refresh_token"]})
        with pytest.raises(Unauthenticated):
            identity.refresh({"refresh_token": pair["refresh_token"]})
        with pytest.raises(Unauthenticated):
            identity.refresh({"refresh_token": renewed["refresh_token"]})
        event = eventually(lambda: revoked.events, what="session_revoked")[0]
        sid = jwt.decode(pair["access_token"], options={"verify_signature": False})["sid"]
        assert event["payload"]["session_id"] == sid
        assert [r["session_id"] for r in identity.revoked_sessions()] == [sid]


def test_an_approved_case_issues_one_certificate_that_rules_and_intake_can_see(container_factory, identity_config):
    issued = event_recorder("identity", "identity.certificate_issued.v1")
    container_factory(issued).start()
    container = start(container_factory, identity_config)
    person = citizen()
    with ServiceRpcClient("identity") as identity:
        user_id = identity.register(person)["user_id"]
    envelope = approved_with_certificate(user_id)
    for _ in range(2):  # redelivered: still one certificate
        with entrypoint_waiter(container, "on_case_approved"):
            dispatch_event("intake", envelope)

    with ServiceRpcClient("identity") as identity:
        certificates = identity.list_certificates(user_id)["items"]
        assert len(certificates) == 1
        cert = certificates[0]
        assert cert["type"] == "name_reservation" and cert["data"]["proposed_name"] == "武山县云帆科技有限公司"
        assert identity.applicant_profile(user_id)["certificates"] == ["name_reservation"]
        mine, theirs = (
            identity.check_certificates(user_id, [cert["certificate_id"]])[0],
            identity.check_certificates("someone-else", [cert["certificate_id"]])[0],
        )
    assert mine == {"certificate_id": cert["certificate_id"], "owned": True, "valid": True, "type": "name_reservation"}
    assert theirs["owned"] is False and theirs["type"] is None
    assert len(eventually(lambda: issued.events, what="certificate_issued")) == 1


def test_verification_raises_the_level_and_announces_it(container_factory, identity_config):
    raised = event_recorder("identity", "identity.assurance_raised.v1")
    container_factory(raised).start()
    start(container_factory, identity_config)
    person = citizen()
    with ServiceRpcClient("identity") as identity:
        user_id = identity.register(person)["user_id"]
        principal = {"user_id": user_id, "account_type": "citizen", "roles": ["applicant"]}
        assert identity.verify_real_name(principal)["assurance_level"] == 2
        assert identity.verify_real_name(principal)["assurance_level"] == 2  # idempotent
        token = {"liveness_token": f"local-live:{person['id_number']}"}
        assert identity.verify_face(principal, token)["assurance_level"] == 3
    events = eventually(lambda: len(raised.events) == 2 and raised.events, what="two assurance_raised events")
    assert [(e["payload"]["previous_level"], e["payload"]["assurance_level"]) for e in events] == [(1, 2), (2, 3)]


def attempt(person: dict) -> dict:
    return {
        "credentials": {"username": person["id_number"], "password": person["password"]},
        "client_address": "10.0.0.1",
    }


def approved_with_certificate(user_id: str) -> dict:
    decision = Decision(outcome="approved", decided_by="auto", reason="ok", decided_at=datetime.now(UTC))
    payload = CaseApproved(
        case_no="620524SC-20261126-000001",
        item_code="62052400SC-XK-0001",
        item_name="企业名称自主申报",
        department_code="620524SC",
        applicant_id=user_id,
        decision=decision,
        issues_certificate={"type": "name_reservation", "name": "企业名称自主申报告知书", "valid_days": 60},
        form={"proposed_name": "武山县云帆科技有限公司", "industry": "软件"},
    )
    return new_event(payload, producer="intake").model_dump(mode="json")
