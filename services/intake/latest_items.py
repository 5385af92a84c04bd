"""The latest published version of each item, kept per intake process.

A submission names only the item, so intake asked catalog for its latest version with every case
(an RPC: two broker messages and catalog's work per case). Now each process keeps what it fetched:

- catalog's `item_published` event, broadcast to every intake process, makes an item's kept
  version stale the moment a newer one is announced (milliseconds after it is published);
- its `item_withdrawn` event does the same for the withdrawn version, so the next submission asks
  catalog, which refuses it;
- an entry is also fetched again once it is `MAX_AGE` old, for a process that missed an event
  (its broadcast queue exists only while it is connected);
- a fetch that answers with a version older than one already announced is not kept (it raced
  the publication).

Published versions never change, so these are the only ways an entry can go stale. A process
that missed a withdrawal takes applications for the item for `MAX_AGE` at most.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nameko.extensions import DependencyProvider

from contracts.catalog import PublishedItem

MAX_AGE = 60.0  # seconds
DEFAULT_SIZE = 4096  # items kept per process; a province publishes a few thousand


class LatestItemCache:
    def __init__(
        self, max_age: float = MAX_AGE, size: int = DEFAULT_SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age, self.size, self._clock = max_age, size, clock
        self._items: OrderedDict[str, tuple[PublishedItem, float]] = OrderedDict()  # code -> (item, fetched at)
        # The oldest version that may be kept, per code, from what was announced while this process ran.
        self._announced: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, item_code: str, fetch: Callable[[], dict[str, Any]]) -> PublishedItem:
        """The latest version: kept, or fetched (a failed fetch raises and keeps nothing)."""
        with self._lock:
            kept = self._items.get(item_code)
            if kept is not None and self._fresh(item_code, *kept):
                self._items.move_to_end(item_code)
                return kept[0]
        started = self._clock()  # an entry's age counts from before its fetch
        item = PublishedItem.model_validate(fetch())  # outside the lock: a fetch is an RPC
        with self._lock:
            kept = self._items.get(item_code)
            # Neither older than announced, nor than what a concurrent fetch kept meanwhile.
            if item.version >= max(self._announced.get(item_code, 0), kept[0].version if kept else 0):
                self._items[item_code] = (item, started)
                self._items.move_to_end(item_code)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return item

    def announced(self, item_code: str, version: int) -> None:
        """Catalog published `version` of the item: anything older kept here is stale now."""
        with self._lock:
            self._announced[item_code] = max(version, self._announced.get(item_code, 0))

    def withdrawn(self, item_code: str, version: int) -> None:
        """Catalog withdrew the item at `version`: only a version published after it may be kept."""
        self.announced(item_code, version + 1)

    def _fresh(self, item_code: str, item: PublishedItem, fetched_at: float) -> bool:
        newest = self._announced.get(item_code, 0)
        return item.version >= newest and self._clock() - fetched_at < self.max_age


class LatestItems(DependencyProvider):
    """Injects the process's LatestItemCache (one per service container)."""

    def setup(self) -> None:
        self.cache = LatestItemCache()

    def get_dependency(self, worker_ctx: Any) -> LatestItemCache:
        return self.cache
