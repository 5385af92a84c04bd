"""Fixtures of intake's integration tests."""

from __future__ import annotations

import pytest

from services.intake.storage import IntakeStore


@pytest.fixture
def store(mongo_client, db_prefix) -> IntakeStore:
    """intake's store on the real document server, in a database of the test's own, indexes ensured."""
    store = IntakeStore(mongo_client[f"{db_prefix}_intake"])
    store.ensure_indexes()
    return store
