"""The per-process cache of published item versions."""

from __future__ import annotations

import pytest

from services.catalog.seed_data import seed_items
from services.common.item_versions import ItemVersionCache, ItemVersions

ITEM = next(i for i in seed_items() if i["item_code"] == "62052400MZ-GF-0001")


def published(version: int) -> dict:
    return {**ITEM, "version": version}


def test_each_version_is_fetched_once_and_validated():
    cache, fetched = ItemVersionCache(), []

    def fetch(version):
        def ask():
            fetched.append(version)
            return published(version)

        return ask

    first = cache.get(ITEM["item_code"], 1, fetch(1))
    assert cache.get(ITEM["item_code"], 1, fetch(1)) is first
    assert cache.get(ITEM["item_code"], 2, fetch(2)).version == 2
    assert fetched == [1, 2]
    assert first.item_code == ITEM["item_code"]


def test_the_least_recently_used_version_leaves_first():
    cache, fetched = ItemVersionCache(size=2), []

    def ask(version):
        return lambda: fetched.append(version) or published(version)

    cache.get("X", 1, ask(1))
    cache.get("X", 2, ask(2))
    cache.get("X", 1, ask(1))  # 1 used again: 2 is now the oldest
    cache.get("X", 3, ask(3))
    cache.get("X", 1, ask(1))
    cache.get("X", 2, ask(2))
    assert fetched == [1, 2, 3, 2]


def test_a_failed_fetch_is_not_kept():
    cache = ItemVersionCache()

    def unavailable():
        raise ConnectionError("catalog did not answer")

    with pytest.raises(ConnectionError):
        cache.get("X", 1, unavailable)
    assert cache.get("X", 1, lambda: published(1)).version == 1


def test_one_cache_per_container():
    provider = ItemVersions()
    provider.setup()
    assert provider.get_dependency(None) is provider.get_dependency(None)


def test_a_version_is_kept_for_a_bounded_time(monkeypatch):
    # It cannot change; another service's data is kept for a bounded time anyway (DEVELOPERS.md).
    from services.common import item_versions

    clock = [1000.0]
    monkeypatch.setattr(item_versions, "_now", lambda: clock[0])
    cache, fetched = ItemVersionCache(keep_seconds=60), []
    ask = lambda: fetched.append(1) or published(1)  # noqa: E731
    cache.get("X", 1, ask)
    clock[0] += 59
    cache.get("X", 1, ask)
    assert fetched == [1]
    clock[0] += 2
    cache.get("X", 1, ask)
    assert fetched == [1, 1]
