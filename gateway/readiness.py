"""Readiness probes share one check per process.

`/readyz` is anonymous, and each probe asked every service (five RPCs, five database reads); while
one service did not answer, each probe held a gateway worker for the ping's whole wait, so ten
probes at once held every worker. Now a result is reused for `FRESH_SECONDS`, and while a check
runs, other probes get the last result at once if it is recent (`STALE_AFTER`), or wait for that
check, which is bounded itself (the gateway's `_check_services`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from eventlet.event import Event
from nameko.extensions import DependencyProvider

T = TypeVar("T")
FRESH_SECONDS = 1.0
STALE_AFTER = 10.0  # older than this, a result is not served while a new check runs: it is awaited


class SharedCheck(Generic[T]):
    """The latest result of a check, shared by every caller in the process."""

    def __init__(
        self,
        fresh_for: float = FRESH_SECONDS,
        stale_after: float = STALE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_for, self.stale_after, self._clock = fresh_for, stale_after, clock
        self._last: tuple[float, T] | None = None
        self._running: Event | None = None

    def result(self, check: Callable[[], T]) -> T:
        while True:
            last, running = self._last, self._running
            age = math.inf if last is None else self._clock() - last[0]
            if last is not None and age < self.fresh_for:
                return last[1]
            if running is None:
                return self._run(check)
            if last is not None and age < self.stale_after:
                return last[1]  # being checked again: the last answer meanwhile, no worker held
            done, value = running.wait()
            if done:
                return value
            # That check failed (its greenthread killed, say): one of its waiters runs the next.

    def _run(self, check: Callable[[], T]) -> T:
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
