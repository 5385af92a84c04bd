"""Answers kept per process for a short while, dropped at once when this process hears of a change.

A person's contact (notification asks identity for it) and a person's chosen channels (notification
reads them from its store) are asked for again and again within seconds: a 秒批 case's two
notifications come within a second. Each is kept for `max_age`. A change this process hears of (an
event, or its own write) drops the kept answer, and an answer that was on its way while the change
happened is used once but not kept. A failed fetch raises and keeps nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from services.common.lru import Lru

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeptAnswers(Generic[K, V]):
    def __init__(self, max_age: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self._clock = max_age, clock
        self._kept: Lru[K, tuple[V, float]] = Lru(size)  # key -> (answer, asked at)
        self._changed: Lru[K, float] = Lru(size)  # key -> when this process heard of a change

    def get(self, key: K, fetch: Callable[[], V]) -> V:
        """The answer: kept, or fetched (not under the map's lock: a fetch may be an RPC)."""
        asked_at = self._clock()  # an answer's age counts from before its fetch
        kept = self._kept.get(key)
        if kept is not None and asked_at - kept[1] < self.max_age and not self._changed_since(key, kept[1]):
            return kept[0]
        answer = fetch()
        if not self._changed_since(key, asked_at):
            self._kept.put(key, (answer, asked_at))
        return answer

    def changed(self, key: K) -> None:
        """What is kept for the key, or on its way, is old."""
        self._changed.put(key, self._clock())
        self._kept.discard(key)  # even should the change itself be forgotten first

    def _changed_since(self, key: K, moment: float) -> bool:
        changed_at = self._changed.get(key)
        return changed_at is not None and changed_at >= moment
