"""Published item versions, kept per process: a published version never changes (catalog only
inserts versions), so a caller that names one asks catalog once per version and process instead
of once per case, and validates the guide once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nameko.extensions import DependencyProvider

from contracts.catalog import PublishedItem

# Versions kept per process; a province publishes a few thousand items.
DEFAULT_SIZE = 4096


class ItemVersionCache:
    """Least recently used versions; a failed fetch is not kept (the next call asks again)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int], PublishedItem] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, item_code: str, version: int, fetch: Callable[[], dict[str, Any]]) -> PublishedItem:
        key = (item_code, version)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
        item = PublishedItem.model_validate(fetch())  # outside the lock: a fetch is an RPC
        with self._lock:
            self._items[key] = item
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


class ItemVersions(DependencyProvider):
    """Injects the process's ItemVersionCache (one per service container)."""

    def setup(self) -> None:
        self.cache = ItemVersionCache()

    def get_dependency(self, worker_ctx: Any) -> ItemVersionCache:
        return self.cache
