"""Verifying access tokens locally against identity's published keys (no RPC per request)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request

from contracts.common import Principal
from services.common.errors import Forbidden, Unauthenticated

ISSUER = "yiwang-identity"
AUDIENCE = "yiwang"
# An unknown key id triggers a refetch, at most this often (key rotation without log-outs).
REFETCH_INTERVAL = 30.0


class KeySet:
    """Caches identity's JWKS; refetches when a token names a key id it has not seen."""

    def __init__(self, fetch: Callable[[], dict[str, Any]]) -> None:
        self._fetch = fetch
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # monotonic() has no fixed origin: never compare with 0
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any:
        stale = self._fetched_at is None or time.monotonic() - self._fetched_at > REFETCH_INTERVAL
        if kid not in self._keys and stale:
            with self._lock:
                self._keys = {k["kid"]: jwt.PyJWK(k).key for k in self._fetch()["keys"]}
                self._fetched_at = time.monotonic()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthenticated("the access token is signed by an unknown key") from None


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
        user_id=claims["sub"], account_type=claims["acct"], roles=claims["roles"], department_code=claims.get("dept")
    )


def bearer_token(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <access_token>")
    return token.strip()


class Authenticator:
    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    def principal(self, request: Request) -> Principal:
        return verify(bearer_token(request), self.keys)


def require_role(principal: Principal, *roles: str) -> None:
    if not set(roles) & set(principal.roles):
        raise Forbidden(f"this needs the role {' or '.join(roles)}")


class Auth(DependencyProvider):
    """Holds the process-wide key cache; fetches keys through a standalone RPC client."""

    def setup(self) -> None:
        from nameko.standalone.rpc import ServiceRpcClient

        from services.common.rpc import call

        def fetch() -> dict[str, Any]:
            with ServiceRpcClient("identity") as identity:
                return call(identity.jwks, timeout=5)

        self.authenticator = Authenticator(KeySet(fetch))

    def get_dependency(self, worker_ctx: Any) -> Authenticator:
        return self.authenticator
