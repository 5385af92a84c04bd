"""Access tokens: EdDSA-signed JWTs with a key id, verifiable by anyone holding the JWKS."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.identity.code_secret import code_secret

log = logging.getLogger(__name__)

ISSUER = "yiwang-identity"
AUDIENCE = "yiwang"
ACCESS_TOKEN_TTL = timedelta(minutes=15)
# A key superseded by a newer one signs nothing more, and what it signed expires within a token's
# lifetime: past that (and a margin for clocks) it leaves the published key set, so a key that
# leaked is retired by rotating (gateways drop it at their next refetch of the keys).
RETIRE_AFTER = ACCESS_TOKEN_TTL + timedelta(minutes=5)


def key_password() -> bytes:
    """What the private halves of signing keys are encrypted with in the store: derived from
    identity's secret held outside the database (`code_secret`), so that a copy of the database (a
    backup, a read-only account) cannot sign an admin's token. Its own derivation: the codes' HMAC
    key is never used as this password itself."""
    return hashlib.sha256(b"yiwang signing keys\0" + code_secret()).digest()


def new_signing_key() -> dict[str, Any]:
    """A fresh Ed25519 key as stored by identity: private PEM (encrypted) and the public JWK."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(key_password()),
    ).decode()
    public_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    kid = uuid.uuid4().hex[:16]
    public_jwk.update({"kid": kid, "alg": "EdDSA", "use": "sig"})
    return {"_id": kid, "kid": kid, "private_pem": pem, "public_jwk": public_jwk, "created_at": datetime.now(UTC)}


def signing_half(key: dict[str, Any]) -> Ed25519PrivateKey | None:
    """The stored key's private half, or None when this identity's secret does not open it (the
    secret was replaced: the key must be replaced too). Keys stored unencrypted, before, open as
    they are."""
    return _opened(key["private_pem"], key_password())


@functools.lru_cache(maxsize=16)
def _opened(pem: str, password: bytes) -> Ed25519PrivateKey | None:
    # Decrypting costs a key derivation: once per key and process, not per token.
    encrypted = "ENCRYPTED" in pem.split("\n", 1)[0]
    try:
        private = serialization.load_pem_private_key(pem.encode(), password if encrypted else None)
    except ValueError:
        return None
    return private if isinstance(private, Ed25519PrivateKey) else None


def keys_in_use(
    keys: list[dict[str, Any]], now: datetime, retire_after: timedelta = RETIRE_AFTER
) -> list[dict[str, Any]]:
    """The newest key, and every older one superseded less than `retire_after` ago; newest first."""
    newest_first = sorted(keys, key=lambda key: key["created_at"], reverse=True)
    return [
        key
        for index, key in enumerate(newest_first)
        if index == 0 or newest_first[index - 1]["created_at"] > now - retire_after
    ]


def keys_to_sign_with(keys: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The keys a token may still be signed with, newest first: a superseded key only while what it
    signs now stays verifiable for a token's whole lifetime (it leaves the key set RETIRE_AFTER
    after its successor came)."""
    return keys_in_use(keys, now, RETIRE_AFTER - ACCESS_TOKEN_TTL)


def issue_access_token(
    key: dict[str, Any], user: dict[str, Any], session_id: str, now: datetime | None = None
) -> tuple[str, int]:
    now = now or datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user["_id"],
        "acct": user["account_type"],
        "roles": user["roles"],
        "dept": user.get("department_code"),
        "sid": session_id,
        "iat": int(now.timestamp()),
        "exp": int((now + ACCESS_TOKEN_TTL).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if user.get("password_change_required"):
        # Our gateway opens only GET /me, PUT /me/password and logout to it; without its roles the
        # token fails closed for anyone else too (another app that verifies it, a service).
        claims.update(pwc=True, roles=[])
    private = signing_half(key)
    if private is None:
        raise ValueError(f"signing key {key['kid']} cannot be read with this identity's secret")
    token = jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": key["kid"]})
    return token, int(ACCESS_TOKEN_TTL.total_seconds())


def new_refresh_token() -> tuple[str, str]:
    """(token for the client, digest to store): only the digest is kept."""
    token = secrets.token_urlsafe(32)
    return token, refresh_digest(token)


def refresh_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
