"""Fixtures of identity's integration tests."""

from __future__ import annotations

import pytest

from services.identity.storage import IdentityStore


@pytest.fixture
def store(mongo_client, db_prefix) -> IdentityStore:
    """identity's store on the real document server, in a database of the test's own, indexes ensured."""
    store = IdentityStore(mongo_client[f"{db_prefix}_identity"])
    store.ensure_indexes()
    return store
