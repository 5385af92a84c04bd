"""Published item versions, kept per process: a published version never changes (catalog only
inserts versions), so a caller that names one asks catalog once per version and process instead
of once per case, and validates the guide once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nameko.extensions import DependencyProvider

from contracts.catalog import PublishedItem
from services.common.lru import Lru

# Versions kept per process; a province publishes a few thousand items.
DEFAULT_SIZE = 4096


class ItemVersionCache:
    """Least recently used versions; a failed fetch is not kept (the next call asks again)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._items: Lru[tuple[str, int], PublishedItem] = Lru(size)

    def get(self, item_code: str, version: int, fetch: Callable[[], dict[str, Any]]) -> PublishedItem:
        key = (item_code, version)
        item = self._items.get(key)
        if item is None:
            item = PublishedItem.model_validate(fetch())  # not under the map's lock: a fetch is an RPC
            self._items.put(key, item)
        return item


class ItemVersions(DependencyProvider):
    """Injects the process's ItemVersionCache (one per service container)."""

    def setup(self) -> None:
        self.cache = ItemVersionCache()

    def get_dependency(self, worker_ctx: Any) -> ItemVersionCache:
        return self.cache
