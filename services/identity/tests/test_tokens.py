from datetime import UTC, datetime

import jwt
import pytest

from contracts.identity import Jwk
from services.identity import tokens

USER = {"_id": "u1", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524MZ"}
SESSION = "s" * 32


@pytest.fixture
def key():
    return tokens.new_signing_key()  # under the tests' identity secret (conftest)


def _public(key):
    return jwt.PyJWK(key["public_jwk"]).key


def test_signing_key_shape(key):
    assert len(key["kid"]) == 16
    assert key["private_pem"].startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    jwk = key["public_jwk"]
    assert jwk["kid"] == key["kid"]
    assert jwk["alg"] == "EdDSA"
    assert jwk["use"] == "sig"
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert "d" not in jwk  # never the private part
    Jwk.model_validate(jwk)  # publishable as /.well-known/jwks.json
    assert key["created_at"].tzinfo is not None


def test_the_stored_private_half_signs_nothing_without_identitys_secret(key, monkeypatch):
    # A copy of the database (a backup, a read-only account) must not be able to sign an admin's
    # token: the private half is encrypted with a key derived from the secret kept outside it.
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(TypeError):  # encrypted: no password, no key
        serialization.load_pem_private_key(key["private_pem"].encode(), None)
    assert tokens.signing_half(key) is not None
    monkeypatch.setenv("YIWANG_CODE_SECRET", "another-secret")
    assert tokens.signing_half(key) is None
    with pytest.raises(ValueError, match="cannot be read"):
        tokens.issue_access_token(key, USER, SESSION)


def test_a_key_stored_unencrypted_before_still_signs():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    plain = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key = {**tokens.new_signing_key(), "private_pem": plain}
    token, _ = tokens.issue_access_token(key, USER, SESSION)
    claims = jwt.decode(token, private.public_key(), algorithms=["EdDSA"], audience=tokens.AUDIENCE)
    assert claims["sub"] == "u1"


def test_keys_are_fresh():
    first, second = tokens.new_signing_key(), tokens.new_signing_key()
    assert first["kid"] != second["kid"]
    assert first["private_pem"] != second["private_pem"]


def test_access_token_claims(key):
    now = datetime(2025, 11, 26, 8, 0, 30, tzinfo=UTC)
    token, expires_in = tokens.issue_access_token(key, USER, SESSION, now=now)
    assert expires_in == 15 * 60
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": key["kid"], "typ": "JWT"}
    claims = jwt.decode(
        token,
        _public(key),
        algorithms=["EdDSA"],
        audience="yiwang",
        issuer="yiwang-identity",
        options={"verify_exp": False},
    )
    assert claims["sub"] == "u1"
    assert claims["acct"] == "staff"
    assert claims["roles"] == ["reviewer"]
    assert claims["dept"] == "620524MZ"
    assert claims["sid"] == SESSION  # lets the gateway refuse tokens of a revoked session
    assert claims["iat"] == int(now.timestamp())
    assert claims["exp"] - claims["iat"] == expires_in
    assert len(claims["jti"]) == 32


def test_applicant_token_has_no_department(key):
    token, _ = tokens.issue_access_token(key, {"_id": "u2", "account_type": "citizen", "roles": ["applicant"]}, SESSION)
    claims = jwt.decode(token, _public(key), algorithms=["EdDSA"], audience=tokens.AUDIENCE)
    assert claims["dept"] is None


def test_every_token_has_its_own_id(key):
    first, _ = tokens.issue_access_token(key, USER, SESSION)
    second, _ = tokens.issue_access_token(key, USER, SESSION)
    decode = lambda t: jwt.decode(t, _public(key), algorithms=["EdDSA"], audience=tokens.AUDIENCE)  # noqa: E731
    assert decode(first)["jti"] != decode(second)["jti"]


def test_signing_key_is_stored_under_its_kid(key):
    assert key["_id"] == key["kid"]


def test_tokens_of_different_sessions_name_their_session(key):
    decode = lambda t: jwt.decode(t, _public(key), algorithms=["EdDSA"], audience=tokens.AUDIENCE)  # noqa: E731
    first, _ = tokens.issue_access_token(key, USER, "session-a")
    second, _ = tokens.issue_access_token(key, USER, "session-b")
    assert (decode(first)["sid"], decode(second)["sid"]) == ("session-a", "session-b")


def test_token_does_not_verify_with_another_key(key):
    token, _ = tokens.issue_access_token(key, USER, SESSION)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, _public(tokens.new_signing_key()), algorithms=["EdDSA"], audience=tokens.AUDIENCE)


def test_refresh_token_only_the_digest_is_kept():
    token, digest = tokens.new_refresh_token()
    assert len(token) >= 40
    assert token not in digest
    assert digest == tokens.refresh_digest(token)
    assert len(digest) == 64
    assert int(digest, 16) >= 0


def test_refresh_tokens_are_unique():
    assert tokens.new_refresh_token()[0] != tokens.new_refresh_token()[0]


def test_refresh_digest_is_deterministic_and_sensitive():
    assert tokens.refresh_digest("abc") == tokens.refresh_digest("abc")
    assert tokens.refresh_digest("abc") != tokens.refresh_digest("abd")


def test_an_access_token_lives_15_minutes_and_a_superseded_key_is_trusted_20_more():
    # The README's figures: a leaked key rotated away is distrusted within about 25 minutes (these
    # 20, then at most the gateway's 5-minute cache of the keys).
    assert tokens.ACCESS_TOKEN_TTL.total_seconds() == 15 * 60
    assert tokens.RETIRE_AFTER.total_seconds() == 20 * 60
