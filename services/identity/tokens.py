"""Access tokens: EdDSA-signed JWTs with a key id, verifiable by anyone holding the JWKS."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ISSUER = "yiwang-identity"
AUDIENCE = "yiwang"
ACCESS_TOKEN_TTL = timedelta(minutes=15)
# A key superseded by a newer one signs nothing more, and what it signed expires within a token's
# lifetime: past that (and a margin for clocks) it leaves the published key set, so a key that
# leaked is retired by rotating (gateways drop it at their next refetch of the keys).
RETIRE_AFTER = ACCESS_TOKEN_TTL + timedelta(minutes=5)


def new_signing_key() -> dict[str, Any]:
    """A fresh Ed25519 key as stored by identity: private PEM and the public JWK."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    kid = uuid.uuid4().hex[:16]
    public_jwk.update({"kid": kid, "alg": "EdDSA", "use": "sig"})
    return {"_id": kid, "kid": kid, "private_pem": pem, "public_jwk": public_jwk, "created_at": datetime.now(UTC)}


def keys_in_use(keys: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The newest key, and every older one superseded less than RETIRE_AFTER ago; newest first."""
    newest_first = sorted(keys, key=lambda key: key["created_at"], reverse=True)
    return [
        key
        for index, key in enumerate(newest_first)
        if index == 0 or newest_first[index - 1]["created_at"] > now - RETIRE_AFTER
    ]


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
    token = jwt.encode(claims, key["private_pem"], algorithm="EdDSA", headers={"kid": key["kid"]})
    return token, int(ACCESS_TOKEN_TTL.total_seconds())


def new_refresh_token() -> tuple[str, str]:
    """(token for the client, digest to store): only the digest is kept."""
    token = secrets.token_urlsafe(32)
    return token, refresh_digest(token)


def refresh_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
