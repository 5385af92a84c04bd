"""Verifying access tokens locally against identity's published keys (no RPC per request)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jwt
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request

from contracts.common import Principal
from services.common.errors import Forbidden, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

ISSUER = "yiwang-identity"
AUDIENCE = "yiwang"
# An unknown key id triggers a refetch (key rotation without log-outs), at most this often per process,
# so forged key ids cannot turn into an RPC storm; a token of a key unknown within it is refused.
REFETCH_INTERVAL = 1.0
# Known keys are refetched this often too, so a key identity retired (superseded by a rotation
# longer ago than a token lives) stops verifying here within this many seconds.
KEYS_MAX_AGE = 300.0


class KeySet:
    """Caches identity's JWKS; refetches when a token names a key id it has not seen, and every
    KEYS_MAX_AGE seconds (keys identity retired leave then)."""

    def __init__(self, fetch: Callable[[], dict[str, Any]]) -> None:
        self._fetch = fetch
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # monotonic() has no fixed origin: never compare with 0
        self._last_fetch_failed = False
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any:
        age = None if self._fetched_at is None else time.monotonic() - self._fetched_at
        if age is None or (kid not in self._keys and age > REFETCH_INTERVAL):
            self._refresh_for(kid)
        elif age > KEYS_MAX_AGE:
            self._refresh_in_passing()
        try:
            return self._keys[kid]
        except KeyError:
            if self._last_fetch_failed:  # identity away: the key may well exist (no 401 to log users out)
                raise Unavailable("the keys that verify access tokens cannot be fetched now; try again") from None
            raise Unauthenticated("the access token is signed by an unknown key") from None

    def _refresh_in_passing(self) -> None:
        """The periodic refetch: by the one request that finds it due, while every other request
        goes on with the keys known (none waits for it, nor fetches again); a failure keeps them."""
        if not self._lock.acquire(blocking=False):
            return  # another request is fetching them
        try:
            if self._fetched_at is not None and time.monotonic() - self._fetched_at <= KEYS_MAX_AGE:
                return  # fetched meanwhile
            self._fetch_now()
        except Exception:  # identity away: the known keys stay (asked again after KEYS_MAX_AGE)
            log.warning("could not refetch the signing keys; the known ones stay in use", exc_info=True)
        finally:
            self._lock.release()

    def _refresh_for(self, kid: str) -> None:
        """Fetch the keys for a key id not known, unless a request that waited before this one just
        did (many tokens with forged key ids at once cause one fetch a second, not one each)."""
        with self._lock:
            fetched = self._fetched_at
            if fetched is not None and (kid in self._keys or time.monotonic() - fetched <= REFETCH_INTERVAL):
                return
            self._fetch_now()

    def _fetched_keys(self) -> dict[str, Any]:
        return {k["kid"]: jwt.PyJWK(k).key for k in self._fetch()["keys"]}

    def refresh(self) -> None:
        """Fetch the keys now (also after this process rotated them: its next tokens must work
        even within the interval of a refetch that a forged key id caused)."""
        with self._lock:
            self._fetch_now()

    def _fetch_now(self) -> None:
        """Under the lock."""
        try:
            self._keys = self._fetched_keys()
            self._last_fetch_failed = False
        except BaseException:  # only once it failed: a lookup during a fetch still says 401
            self._last_fetch_failed = True
            raise
        finally:  # a failing fetch counts too: identity away is not asked on every request
            self._fetched_at = time.monotonic()


def verify(token: str, keys: KeySet) -> Principal:
    try:
        kid = jwt.get_unverified_header(token).get("kid", "")
        claims = jwt.decode(
            token,
            keys.key(kid),
            algorithms=["EdDSA"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the access token has expired; refresh it") from None
    except jwt.InvalidTokenError:
        raise Unauthenticated("the access token is not valid") from None
    return Principal(
        user_id=claims["sub"],
        account_type=claims["acct"],
        roles=claims["roles"],
        department_code=claims.get("dept"),
        session_id=claims.get("sid"),
        password_change_required=bool(claims.get("pwc")),  # whatever its form, it restricts
    )


def bearer_token(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <access_token>")
    return token.strip()


class Revocations:
    """Sessions ended before their access tokens expire (logout, refresh-token reuse).

    Loaded once from identity, then kept current by identity's `session_revoked` events, so a
    request still needs no RPC, and merged with identity's list again every half minute (a
    broadcast is lost while the process is away from the broker). Entries are dropped when every
    token of the session has expired.
    """

    def __init__(self, load: Callable[[], list[dict[str, Any]]]) -> None:
        self._load = load
        self._until: dict[str, float] | None = None
        self._lock = threading.Lock()

    def add(self, session_id: str, expires_at: datetime) -> None:
        self._entries()[session_id] = expires_at.timestamp()

    def reload(self) -> None:
        """Merge identity's list again: revocations whose broadcast this process missed (it is not
        queued while the process is away from the broker) are caught up with."""
        loaded = self._fetch_all()
        with self._lock:
            now, merged = time.time(), dict(self._until or {})
            for session_id, until in loaded.items():
                merged[session_id] = max(until, merged.get(session_id, until))  # the later end wins
            # A new dict (readers keep the old one meanwhile), without what has expired.
            self._until = {session_id: until for session_id, until in merged.items() if until >= now}

    def is_revoked(self, session_id: str | None) -> bool:
        if session_id is None:
            return False
        entries = self._entries()
        until = entries.get(session_id)
        if until is not None and until < time.time():
            entries.pop(session_id, None)
            return False
        return until is not None

    def _entries(self) -> dict[str, float]:
        if self._until is None:
            with self._lock:
                if self._until is None:
                    self._until = self._fetch_all()
        return self._until

    def _fetch_all(self) -> dict[str, float]:
        return {r["session_id"]: datetime.fromisoformat(r["expires_at"]).timestamp() for r in self._load()}


class Authenticator:
    def __init__(self, keys: KeySet, revocations: Revocations, trusted_proxies: frozenset[str] = frozenset()) -> None:
        self.keys = keys
        self.revocations = revocations
        self.trusted_proxies = trusted_proxies  # whose X-Forwarded-For is believed (login throttling)

    def principal(self, request: Request) -> Principal:
        principal = verify(bearer_token(request), self.keys)
        if self.revocations.is_revoked(principal.session_id):
            raise Unauthenticated("this session has ended; log in again")
        return principal


def client_address(request: Request, trusted_proxies: frozenset[str]) -> str:
    """The caller's address. X-Forwarded-For is read from the right, hop by hop, only while the hop
    that handed it on is a trusted proxy: the first untrusted address is the client."""
    address = request.remote_addr or "unknown"
    header = request.headers.get("X-Forwarded-For")
    hops = [h.strip() for h in header.split(",")] if header else []
    while address in trusted_proxies and hops:
        previous = hops.pop()
        if not previous:  # a malformed hop: trust nothing before it
            break
        address = previous
    return address


def require_role(principal: Principal, *roles: str) -> None:
    if not set(roles) & set(principal.roles):
        raise Forbidden(f"this needs the role {' or '.join(roles)}")


class Auth(DependencyProvider):
    """Holds the process-wide key cache and revocation list, loaded through a standalone RPC client."""

    def setup(self) -> None:
        from nameko.standalone.rpc import ServiceRpcClient

        from services.common.rpc import call

        def ask(method: str) -> Any:
            with ServiceRpcClient("identity") as identity:
                return call(getattr(identity, method), timeout=5)

        proxies = frozenset(filter(None, os.environ.get("YIWANG_TRUSTED_PROXIES", "").split(",")))
        self.authenticator = Authenticator(
            KeySet(lambda: ask("jwks")), Revocations(lambda: ask("revoked_sessions")), proxies
        )

    def get_dependency(self, worker_ctx: Any) -> Authenticator:
        return self.authenticator
