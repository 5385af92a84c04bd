import base64
import concurrent.futures
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from contracts.common import Principal
from gateway import auth
from gateway.auth import Authenticator, KeySet, Revocations, bearer_token, client_address, require_role, verify
from services.common.errors import Forbidden, Unauthenticated, Unavailable
from services.identity import tokens
from services.identity.tokens import issue_access_token, new_signing_key

CITIZEN = {"_id": "u-citizen", "account_type": "citizen", "roles": ["applicant"]}
REVIEWER = {"_id": "u-rev", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524MZ"}
SESSION = "5e55" * 8


@pytest.fixture(scope="module")
def key():
    return new_signing_key()


@pytest.fixture(scope="module")
def other_key():
    return new_signing_key()


class CountingFetch:
    def __init__(self, *keys):
        self.keys = list(keys)
        self.calls = 0
        self.fail = False

    def __call__(self):
        self.calls += 1
        if self.fail:
            raise ConnectionError("identity is down")
        return {"keys": [k["public_jwk"] for k in self.keys]}


class CountingLoad:
    def __init__(self, *revoked):
        self.revoked = list(revoked)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return list(self.revoked)


@pytest.fixture
def fetch(key):
    return CountingFetch(key)


@pytest.fixture
def keyset(fetch):
    return KeySet(fetch)


def no_revocations():
    return []


def _encode(key, claims, headers=None):
    return jwt.encode(
        claims, tokens.signing_half(key), algorithm="EdDSA", headers={"kid": key["kid"], **(headers or {})}
    )


def _claims(**overrides):
    now = datetime.now(UTC)
    claims = {
        "iss": tokens.ISSUER,
        "aud": tokens.AUDIENCE,
        "sub": "u1",
        "acct": "citizen",
        "roles": ["applicant"],
        "dept": None,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not ...}


def _request(headers=None):
    return Request(EnvironBuilder(path="/api/v1/me", headers=headers or {}).get_environ())


# --- verify -------------------------------------------------------------------------------------


def test_gateway_and_identity_agree_on_issuer_and_audience():
    assert auth.ISSUER == tokens.ISSUER
    assert auth.AUDIENCE == tokens.AUDIENCE


def test_valid_token_gives_the_principal(key, keyset):
    token, expires_in = issue_access_token(key, CITIZEN, SESSION)
    principal = verify(token, keyset)
    assert principal == Principal(
        user_id="u-citizen", account_type="citizen", roles=["applicant"], department_code=None, session_id=SESSION
    )
    assert expires_in == 900


def test_a_token_says_when_an_admin_set_the_password_and_only_then(key, keyset):
    flagged, _ = issue_access_token(key, {**REVIEWER, "password_change_required": True}, SESSION)
    assert verify(flagged, keyset).password_change_required is True
    # Without its roles: an app that does not know `pwc` grants it nothing either.
    assert verify(flagged, keyset).roles == []
    cleared, _ = issue_access_token(key, {**REVIEWER, "password_change_required": False}, SESSION)
    assert verify(cleared, keyset).password_change_required is False
    assert verify(cleared, keyset).roles == ["reviewer"]
    assert "pwc" not in jwt.decode(cleared, options={"verify_signature": False})
    # Whatever form the claim takes, it restricts.
    assert verify(_encode(key, _claims(pwc=1)), keyset).password_change_required is True


def test_staff_token_carries_department(key, keyset):
    token, _ = issue_access_token(key, REVIEWER, SESSION)
    principal = verify(token, keyset)
    assert principal.roles == ["reviewer"]
    assert principal.department_code == "620524MZ"
    assert principal.account_type == "staff"


def test_expired_token_is_refused_with_a_hint_to_refresh(key, keyset):
    token, _ = issue_access_token(key, CITIZEN, SESSION, now=datetime.now(UTC) - timedelta(minutes=16))
    with pytest.raises(Unauthenticated, match="expired"):
        verify(token, keyset)


def test_token_just_issued_is_not_expired(key, keyset):
    token, _ = issue_access_token(key, CITIZEN, SESSION, now=datetime.now(UTC) - timedelta(minutes=14))
    assert verify(token, keyset).user_id == "u-citizen"


def test_wrong_audience_is_refused(key, keyset):
    with pytest.raises(Unauthenticated, match="not valid"):
        verify(_encode(key, _claims(aud="another-app")), keyset)


def test_wrong_issuer_is_refused(key, keyset):
    with pytest.raises(Unauthenticated, match="not valid"):
        verify(_encode(key, _claims(iss="somebody-else")), keyset)


@pytest.mark.parametrize("claim", ["exp", "sub", "aud", "iss"])
def test_required_claims(key, keyset, claim):
    with pytest.raises(Unauthenticated):
        verify(_encode(key, _claims(**{claim: ...})), keyset)


def test_unknown_kid_is_refused(other_key, keyset):
    token, _ = issue_access_token(other_key, CITIZEN, SESSION)
    with pytest.raises(Unauthenticated, match="unknown key"):
        verify(token, keyset)


def test_token_signed_by_another_key_under_a_known_kid_is_refused(key, other_key, keyset):
    forged = jwt.encode(_claims(), tokens.signing_half(other_key), algorithm="EdDSA", headers={"kid": key["kid"]})
    with pytest.raises(Unauthenticated, match="not valid"):
        verify(forged, keyset)


def test_tampered_claims_are_refused(key, keyset):
    token, _ = issue_access_token(key, CITIZEN, SESSION)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="not valid"):
        verify(f"{header}.{forged_payload}.{signature}", keyset)


def test_unsigned_token_is_refused(key, keyset):
    token = jwt.encode(_claims(), None, algorithm="none", headers={"kid": key["kid"]})
    with pytest.raises(Unauthenticated):
        verify(token, keyset)


def test_symmetric_algorithm_is_refused(key, keyset):
    token = jwt.encode(
        _claims(), "shared-secret-that-is-long-enough-32b", algorithm="HS256", headers={"kid": key["kid"]}
    )
    with pytest.raises(Unauthenticated):
        verify(token, keyset)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJFZERTQSJ9.e30.", "Bearer x"],
)
def test_garbage_is_refused(keyset, token):
    with pytest.raises(Unauthenticated):
        verify(token, keyset)


def test_non_string_kid_is_refused(key, keyset):
    header = base64.urlsafe_b64encode(json.dumps({"alg": "EdDSA", "kid": ["x"]}).encode()).rstrip(b"=").decode()
    _, payload, signature = issue_access_token(key, CITIZEN, SESSION)[0].split(".")
    with pytest.raises(Unauthenticated):
        verify(f"{header}.{payload}.{signature}", keyset)


def test_token_without_kid_is_refused(key, keyset):
    token = jwt.encode(_claims(), tokens.signing_half(key), algorithm="EdDSA")
    with pytest.raises(Unauthenticated):
        verify(token, keyset)


# --- KeySet -------------------------------------------------------------------------------------


def test_keys_are_fetched_once_and_cached(key, keyset, fetch):
    for _ in range(3):
        verify(issue_access_token(key, CITIZEN, SESSION)[0], keyset)
    assert fetch.calls == 1


def test_unknown_kid_refetches_at_most_every_interval(key, other_key, monkeypatch):
    clock = [10_000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    fetch = CountingFetch(key)
    keyset = KeySet(fetch)
    keyset.key(key["kid"])
    assert fetch.calls == 1

    for _ in range(3):
        with pytest.raises(Unauthenticated):
            keyset.key(other_key["kid"])
    assert fetch.calls == 1  # within the interval: no refetch storm, and no one waits

    clock[0] += 0.9  # the README's "at most once a second"
    with pytest.raises(Unauthenticated):
        keyset.key(other_key["kid"])
    assert fetch.calls == 1

    fetch.keys.append(other_key)  # identity rotated its key
    clock[0] += 0.2
    assert keyset.key(other_key["kid"]) is not None
    assert fetch.calls == 2
    assert keyset.key(key["kid"]) is not None
    assert fetch.calls == 2


def test_forged_key_ids_at_once_cause_one_fetch_not_one_each(key, other_key):
    # Requests that found the keys due queue for the one fetch; those behind it do not fetch again.
    class SlowFetch(CountingFetch):
        def __call__(self):
            time.sleep(0.05)
            return super().__call__()

    fetch = SlowFetch(key)
    keyset = KeySet(fetch)
    keyset.key(key["kid"])
    keyset._fetched_at -= 2  # the last fetch was two seconds ago

    def forged(_):
        with pytest.raises(Unauthenticated):
            keyset.key(other_key["kid"])

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        list(pool.map(forged, range(30)))
    assert fetch.calls == 2  # the first fetch, and one for the 30 forged ones


def test_keys_are_refetched_every_five_minutes_and_a_retired_key_leaves_then(key, other_key, monkeypatch):
    # The README: a retired (leaked) key is distrusted within about 25 minutes, 20 of them identity's
    # RETIRE_AFTER and at most 5 the gateway's cache.
    assert auth.KEYS_MAX_AGE == 300
    clock = [10_000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    fetch = CountingFetch(key, other_key)
    keyset = KeySet(fetch)
    assert keyset.key(key["kid"]) is not None
    fetch.keys.remove(key)  # identity retired it
    clock[0] += 299
    assert keyset.key(key["kid"]) is not None and fetch.calls == 1
    clock[0] += 2
    keyset.key(other_key["kid"])  # the request that finds the keys due refetches them in passing
    with pytest.raises(Unauthenticated):
        keyset.key(key["kid"])


def test_a_refresh_fetches_at_once_whatever_the_interval(key, other_key, monkeypatch):
    monkeypatch.setattr(auth.time, "monotonic", lambda: 10_000.0)
    fetch = CountingFetch(key)
    keyset = KeySet(fetch)
    keyset.key(key["kid"])
    fetch.keys.append(other_key)  # this process rotated the key
    keyset.refresh()
    assert keyset.key(other_key["kid"]) is not None and fetch.calls == 2


def test_a_failing_fetch_also_waits_for_the_interval(key, monkeypatch):
    clock = [10_000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    calls = []

    def failing():
        calls.append(1)
        raise ConnectionError("identity is down")

    keyset = KeySet(failing)
    with pytest.raises(ConnectionError):
        keyset.key(key["kid"])
    # Identity is not asked again within the interval; the token is not called invalid meanwhile
    # (a 401 makes clients drop it and log their user out): 503, as for the first.
    with pytest.raises(Unavailable, match="cannot be fetched"):
        keyset.key(key["kid"])
    assert len(calls) == 1


def test_key_rotation_is_picked_up_without_log_outs(key, other_key, monkeypatch):
    clock = [50_000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    fetch = CountingFetch(key)
    keyset = KeySet(fetch)
    verify(issue_access_token(key, CITIZEN, SESSION)[0], keyset)
    fetch.keys = [key, other_key]
    clock[0] += auth.REFETCH_INTERVAL + 1
    assert verify(issue_access_token(other_key, CITIZEN, SESSION)[0], keyset).user_id == "u-citizen"


def test_fetch_failure_propagates(key):
    def failing():
        raise ConnectionError("identity is down")

    with pytest.raises(ConnectionError):
        KeySet(failing).key(key["kid"])


def test_first_lookup_fetches_even_when_the_monotonic_clock_is_small(key, monkeypatch):
    # monotonic() has no fixed origin: shortly after boot it may be below REFETCH_INTERVAL.
    monkeypatch.setattr(auth.time, "monotonic", lambda: 5.0)
    fetch = CountingFetch(key)
    assert KeySet(fetch).key(key["kid"]) is not None
    assert fetch.calls == 1


# --- bearer_token and the authenticator ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer abc", "abc"), ("BEARER  abc ", "abc")],
)
def test_bearer_token_is_read(header, token):
    assert bearer_token(_request({"Authorization": header})) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwdw==", "Token abc"])
def test_missing_or_other_scheme_is_unauthenticated(header):
    request = _request({} if header is None else {"Authorization": header})
    with pytest.raises(Unauthenticated, match="Bearer"):
        bearer_token(request)


def test_authenticator_verifies_the_bearer_token(key, keyset):
    token, _ = issue_access_token(key, CITIZEN, SESSION)
    principal = Authenticator(keyset, Revocations(no_revocations)).principal(
        _request({"Authorization": f"Bearer {token}"})
    )
    assert principal.user_id == "u-citizen"


def test_authenticator_refuses_requests_without_a_token(keyset, fetch):
    load = CountingLoad()
    with pytest.raises(Unauthenticated):
        Authenticator(keyset, Revocations(load)).principal(_request())
    assert fetch.calls == 0
    assert load.calls == 0


def test_authenticator_refuses_a_revoked_session(key, keyset):
    revocations = Revocations(no_revocations)
    authenticator = Authenticator(keyset, revocations)
    token, _ = issue_access_token(key, CITIZEN, SESSION)
    other, _ = issue_access_token(key, CITIZEN, "another-session")
    revocations.add(SESSION, datetime.now(UTC) + timedelta(minutes=15))
    with pytest.raises(Unauthenticated, match="log in again"):
        authenticator.principal(_request({"Authorization": f"Bearer {token}"}))
    assert authenticator.principal(_request({"Authorization": f"Bearer {other}"})).session_id == "another-session"


def test_authenticator_refuses_a_session_revoked_before_it_started(key, keyset):
    # A gateway process that starts after the logout learns it from identity's list.
    load = CountingLoad({"session_id": SESSION, "expires_at": (datetime.now(UTC) + timedelta(minutes=10)).isoformat()})
    token, _ = issue_access_token(key, CITIZEN, SESSION)
    with pytest.raises(Unauthenticated):
        Authenticator(keyset, Revocations(load)).principal(_request({"Authorization": f"Bearer {token}"}))
    assert load.calls == 1


def test_token_without_a_session_id_gives_no_session(key, keyset):
    principal = verify(_encode(key, _claims()), keyset)
    assert principal.session_id is None


def test_authenticator_trusts_no_proxy_by_default(keyset):
    assert Authenticator(keyset, Revocations(no_revocations)).trusted_proxies == frozenset()


def test_require_role():
    reviewer = Principal(user_id="r", account_type="staff", roles=["reviewer", "supervisor"])
    require_role(reviewer, "reviewer")
    require_role(reviewer, "admin", "supervisor")
    with pytest.raises(Forbidden, match="admin"):
        require_role(reviewer, "admin")
    with pytest.raises(Forbidden):
        require_role(Principal(user_id="a", account_type="citizen", roles=["applicant"]), "reviewer")


# --- Revocations --------------------------------------------------------------------------------


def _in(seconds):
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_revocations_load_lazily_and_once():
    load = CountingLoad({"session_id": "s-old", "expires_at": _in(600).isoformat()})
    revocations = Revocations(load)
    assert load.calls == 0  # nothing is asked of identity while the gateway starts
    assert revocations.is_revoked("s-old")
    assert not revocations.is_revoked("s-other")
    assert revocations.is_revoked("s-old")
    assert load.calls == 1


def test_no_session_is_never_revoked_and_loads_nothing():
    load = CountingLoad()
    assert not Revocations(load).is_revoked(None)
    assert load.calls == 0


def test_added_sessions_are_revoked_and_loaded_ones_kept():
    load = CountingLoad({"session_id": "s-old", "expires_at": _in(600).isoformat()})
    revocations = Revocations(load)
    revocations.add("s-new", _in(600))  # before the first check: must not hide what identity knows
    assert revocations.is_revoked("s-new")
    assert revocations.is_revoked("s-old")
    assert load.calls == 1


def test_a_reload_catches_up_with_a_missed_broadcast_and_keeps_what_was_heard():
    load = CountingLoad({"session_id": "s-old", "expires_at": _in(600).isoformat()})
    revocations = Revocations(load)
    assert not revocations.is_revoked("s-missed")
    revocations.add("s-heard", _in(600))
    load.revoked.append({"session_id": "s-missed", "expires_at": _in(600).isoformat()})  # its event was lost
    revocations.reload()
    assert revocations.is_revoked("s-missed") and revocations.is_revoked("s-heard") and revocations.is_revoked("s-old")
    assert load.calls == 2


def test_a_reload_keeps_the_later_end_and_drops_what_has_expired():
    load = CountingLoad({"session_id": "s-1", "expires_at": _in(60).isoformat()})
    revocations = Revocations(load)
    revocations.add("s-1", _in(600))  # the event said later: a retried logout
    revocations.add("s-gone", _in(-1))
    revocations.reload()
    assert revocations._until is not None and set(revocations._until) == {"s-1"}
    assert revocations._until["s-1"] > time.time() + 300


def test_a_reload_before_the_first_check_is_the_first_load():
    load = CountingLoad({"session_id": "s-old", "expires_at": _in(600).isoformat()})
    revocations = Revocations(load)
    revocations.reload()
    assert revocations.is_revoked("s-old") and load.calls == 1


def test_revocation_expires_with_the_sessions_tokens(monkeypatch):
    clock = [time.time()]
    monkeypatch.setattr(auth.time, "time", lambda: clock[0])
    load = CountingLoad({"session_id": "s-old", "expires_at": _in(60).isoformat()})
    revocations = Revocations(load)
    revocations.add("s-new", _in(120))
    assert revocations.is_revoked("s-old") and revocations.is_revoked("s-new")

    clock[0] += 90  # every token of s-old has expired by now; s-new's have not
    assert not revocations.is_revoked("s-old")
    assert revocations.is_revoked("s-new")
    assert "s-old" not in revocations._entries()  # dropped: the list does not grow for ever

    clock[0] += 60
    assert not revocations.is_revoked("s-new")
    assert revocations._entries() == {}
    assert load.calls == 1


def test_adding_again_extends_the_revocation(monkeypatch):
    clock = [time.time()]
    monkeypatch.setattr(auth.time, "time", lambda: clock[0])
    revocations = Revocations(no_revocations)
    revocations.add("s", _in(10))
    revocations.add("s", _in(100))
    clock[0] += 50
    assert revocations.is_revoked("s")


def test_revocations_load_failure_propagates():
    def failing():
        raise ConnectionError("identity is down")

    with pytest.raises(ConnectionError):
        Revocations(failing).is_revoked("s")


# --- client_address -----------------------------------------------------------------------------

PROXY = "10.0.0.5"


def _from(remote, forwarded=None):
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    return Request(EnvironBuilder(path="/", headers=headers, environ_base={"REMOTE_ADDR": remote}).get_environ())


def test_direct_caller_is_its_remote_address():
    assert client_address(_from("203.0.113.7"), frozenset({PROXY})) == "203.0.113.7"


def test_forwarded_for_from_an_untrusted_caller_is_ignored():
    # Anyone could send the header to spread their failed logins over invented addresses.
    assert client_address(_from("203.0.113.7", "198.51.100.1"), frozenset({PROXY})) == "203.0.113.7"
    assert client_address(_from("203.0.113.7", "198.51.100.1"), frozenset()) == "203.0.113.7"


def test_forwarded_for_from_a_trusted_proxy_is_believed():
    assert client_address(_from(PROXY, "198.51.100.1"), frozenset({PROXY})) == "198.51.100.1"


def test_the_last_hop_is_taken_from_a_trusted_proxy():
    # Earlier entries were written by the client and can be forged; the last one the proxy saw.
    forwarded = "1.2.3.4, 198.51.100.1"
    assert client_address(_from(PROXY, forwarded), frozenset({PROXY})) == "198.51.100.1"
    assert client_address(_from(PROXY, "1.2.3.4,198.51.100.9 "), frozenset({PROXY})) == "198.51.100.9"


def test_trusted_proxy_without_forwarded_for_is_itself():
    assert client_address(_from(PROXY), frozenset({PROXY})) == PROXY
    assert client_address(_from(PROXY, ""), frozenset({PROXY})) == PROXY
    assert client_address(_from(PROXY, "1.2.3.4, "), frozenset({PROXY})) == PROXY


def test_no_remote_address_is_unknown():
    request = Request(EnvironBuilder(path="/").get_environ())
    request.environ.pop("REMOTE_ADDR", None)
    assert client_address(request, frozenset()) == "unknown"


def test_forwarded_for_through_two_trusted_proxies_reaches_the_client():
    inner, outer = "10.0.0.5", "10.0.0.6"
    request = _from(inner, f"203.0.113.9, 198.51.100.1, {outer}")
    assert client_address(request, frozenset({inner, outer})) == "198.51.100.1"
    assert client_address(request, frozenset({inner})) == outer  # the outer proxy is not trusted


def test_known_keys_are_refetched_so_a_retired_key_stops_verifying(key, other_key, monkeypatch):
    clock = [10_000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    fetch = CountingFetch(key)
    fetch.keys.append(other_key)
    keyset = KeySet(fetch)
    token = issue_access_token(key, CITIZEN, SESSION)[0]
    verify(token, keyset)
    fetch.keys = [other_key]  # identity retired `key` (rotated longer ago than a token lives)
    clock[0] += auth.KEYS_MAX_AGE - 1
    verify(token, keyset)  # not yet asked again
    clock[0] += 2
    with pytest.raises(Unauthenticated, match="unknown key"):
        verify(token, keyset)
    assert fetch.calls == 2


def fetched_keyset(key, monkeypatch):
    """A KeySet that has fetched `key` once, on a clock the test moves: (keyset, fetch, clock)."""
    clock = [10_000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    fetch = CountingFetch(key)
    keyset = KeySet(fetch)
    keyset.key(key["kid"])
    return keyset, fetch, clock


def test_a_failing_periodic_refetch_keeps_the_known_keys(key, monkeypatch):
    keyset, fetch, clock = fetched_keyset(key, monkeypatch)
    fetch.fail = True
    clock[0] += auth.KEYS_MAX_AGE + 1
    assert keyset.key(key["kid"]) is not None  # identity away: tokens still verify


def test_a_periodic_refetch_in_progress_is_not_waited_for_nor_repeated(key, monkeypatch):
    keyset, fetch, clock = fetched_keyset(key, monkeypatch)
    seen_meanwhile = []

    def slow_fetch():
        # Another request arrives while this fetch is on its way: it uses the keys known.
        seen_meanwhile.append(keyset.key(key["kid"]))
        return fetch()

    keyset._fetch = slow_fetch
    clock[0] += auth.KEYS_MAX_AGE + 1
    assert keyset.key(key["kid"]) is not None
    assert fetch.calls == 2 and seen_meanwhile and seen_meanwhile[0] is not None


def test_a_forged_key_id_is_still_401_once_identity_answers_again(key, monkeypatch):
    keyset, fetch, clock = fetched_keyset(key, monkeypatch)
    fetch.fail = True
    clock[0] += auth.REFETCH_INTERVAL + 1
    with pytest.raises(ConnectionError):  # the fetch's own failure, as for any request that fetched
        keyset.key("forged")
    with pytest.raises(Unavailable):  # within the interval: not asked again, and not called a bad token
        keyset.key("forged")
    fetch.fail = False
    clock[0] += auth.REFETCH_INTERVAL + 1
    with pytest.raises(Unauthenticated, match="unknown key"):
        keyset.key("forged")
