"""Published item versions, kept per process: a published version never changes (catalog only
inserts versions), so a caller that names one asks catalog once per version and process instead
of once per case, and validates the guide once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nameko.extensions import DependencyProvider

from contracts.catalog import PublishedItem
from services.common.lru import Lru

# Versions kept per process; a province publishes a few thousand items.
DEFAULT_SIZE = 4096
# Seconds a version is kept: it cannot change, but another service's data is kept for a bounded
# time anyway (DEVELOPERS.md), should that ever stop being true unannounced.
KEEP_SECONDS = 3600.0
_now = time.monotonic


class ItemVersionCache:
    """Least recently used versions, each for KEEP_SECONDS; a failed fetch is not kept (the next
    call asks again)."""

    def __init__(self, size: int = DEFAULT_SIZE, keep_seconds: float = KEEP_SECONDS) -> None:
        self._items: Lru[tuple[str, int], tuple[float, PublishedItem]] = Lru(size)
        self.keep_seconds = keep_seconds

    def get(self, item_code: str, version: int, fetch: Callable[[], dict[str, Any]]) -> PublishedItem:
        key = (item_code, version)
        kept = self._items.get(key)
        if kept is not None and _now() - kept[0] < self.keep_seconds:
            return kept[1]
        item = PublishedItem.model_validate(fetch())  # not under the map's lock: a fetch is an RPC
        self._items.put(key, (_now(), item))
        return item


class ItemVersions(DependencyProvider):
    """Injects the process's ItemVersionCache (one per service container)."""

    def setup(self) -> None:
        self.cache = ItemVersionCache()

    def get_dependency(self, worker_ctx: Any) -> ItemVersionCache:
        return self.cache
