"""Readiness probes share one check per process.

`/readyz` is anonymous, and each probe asked every service (five RPCs, five database reads); while
one service did not answer, each probe held a gateway worker for the ping's whole wait, so ten
probes at once held every worker. Now a result is reused for `FRESH_SECONDS`, and while a check
runs, other probes get the last result at once (or, before there is one, wait for that check).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from eventlet.event import Event
from nameko.extensions import DependencyProvider

T = TypeVar("T")
FRESH_SECONDS = 1.0


class SharedCheck(Generic[T]):
    """The latest result of a check, shared by every caller in the process."""

    def __init__(self, fresh_for: float = FRESH_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.fresh_for, self._clock = fresh_for, clock
        self._last: tuple[float, T] | None = None
        self._running: Event | None = None

    def result(self, check: Callable[[], T]) -> T:
        last = self._last
        if last is not None and self._clock() - last[0] < self.fresh_for:
            return last[1]
        running = self._running
        if running is not None:
            if last is not None:
                return last[1]  # being checked again: the last answer meanwhile, no worker held
            done, value = running.wait()
            return value if done else check()  # that check failed: this caller's own
        self._running = running = Event()
        outcome: tuple[bool, Any] = (False, None)
        try:
            value = check()
            self._last, outcome = (self._clock(), value), (True, value)
            return value
        finally:
            self._running = None
            running.send(outcome)


class Readiness(DependencyProvider):
    """The process's SharedCheck for `/readyz`."""

    def setup(self) -> None:
        self.shared: SharedCheck[Any] = SharedCheck()

    def get_dependency(self, worker_ctx: Any) -> SharedCheck[Any]:
        return self.shared
