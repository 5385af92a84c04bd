"""Shared pytest fixtures. Run through `nameko test` (see Makefile), which monkey-patches eventlet first."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pymongo
import pytest

from tests.support import MONGO_URI

# Failed events wait 0.2 s, then 0.5 s, before their retries (1 s, 5 s, 30 s in a running system):
# the tests see retries and dead letters without waiting half a minute. The end-to-end systems
# inherit it.
os.environ.setdefault("YIWANG_RETRY_DELAYS", "0.2,0.5")
# hypothesis loads plugins of installed packages at import; trio's (a Selenium dependency) cannot
# be imported under eventlet's monkey-patching, which `nameko test` applies first.
os.environ.setdefault("HYPOTHESIS_NO_PLUGINS", "1")

from hypothesis import settings  # imported after the line above

# No timing assertions in the suite (speed is measured by benchmarks): hypothesis's default
# 200 ms deadline per example failed a CI run when a busy machine made one example slow.
settings.register_profile("yiwang", deadline=None)
settings.load_profile("yiwang")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: breaks infrastructure of its own under load (make test-faults)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The tier follows the folder: */integration/*, tests/e2e/* and tests/faults/* need real infrastructure.
    for item in items:
        path = str(item.path)
        if f"{os.sep}faults{os.sep}" in path:
            item.add_marker(pytest.mark.faults)
        elif f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)
        elif f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def mongo_client() -> Iterator[pymongo.MongoClient]:
    client = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def db_prefix(mongo_client: pymongo.MongoClient) -> Iterator[str]:
    """A database prefix of this test's own; its databases are dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    for name in mongo_client.list_database_names():
        if name.startswith(f"{prefix}_"):
            mongo_client.drop_database(name)


@pytest.fixture
def store_config(db_prefix: str) -> dict[str, str]:
    """nameko config entries that point a service at the real document server, isolated per test."""
    return {"MONGO_URI": MONGO_URI, "MONGO_DB_PREFIX": db_prefix}
