"""Identity against the real broker and document server."""

from __future__ import annotations

import jwt
import pytest
from nameko.standalone.rpc import ServiceRpcClient

from services.common.errors import Conflict, Unauthenticated
from services.identity.service import IdentityService
from tests.support import citizen


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

        by_phone = identity.login({"username": person["phone"], "password": person["password"]})
        by_id = identity.login({"username": person["id_number"], "password": person["password"]})
        keys = identity.jwks()["keys"]
        with pytest.raises(Unauthenticated):
            identity.login({"username": person["phone"], "password": "wrong-password"})

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
        token = identity.login({"username": "admin", "password": "Yiwang-admin-2026"})["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["roles"] == ["admin"]
