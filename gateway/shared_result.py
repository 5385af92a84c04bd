"""One result shared by every request of a process for a moment, computed by one request at a time.

For anonymous routes whose answer costs other services work and changes rarely: readiness probes,
the signing keys, the departments. A flood of such requests then costs those services one call per
gateway process and `FRESH_SECONDS`, not one per request, and holds no more workers than one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from eventlet.event import Event
from nameko.extensions import DependencyProvider

T = TypeVar("T")
FRESH_SECONDS = 1.0
STALE_AFTER = 10.0  # older than this, a result is not served while a new one is computed: it is awaited


class SharedResult(Generic[T]):
    """The latest result of a computation (a check, an RPC), shared by every caller in the process."""

    def __init__(
        self,
        fresh_for: float = FRESH_SECONDS,
        stale_after: float = STALE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_for, self.stale_after, self._clock = fresh_for, stale_after, clock
        self._last: tuple[float, T] | None = None
        self._running: Event | None = None
        self._generation = 0  # moved by forget(): a result computed from before is not kept

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

    def forget(self) -> None:
        """The result changed at its source (this process changed it): the next caller computes."""
        self._last = None
        self._generation += 1

    def _run(self, check: Callable[[], T]) -> T:
        self._running = running = Event()
        generation = self._generation
        outcome: tuple[bool, Any] = (False, None)
        try:
            value = check()
            outcome = (True, value)
            if generation == self._generation:
                self._last = (self._clock(), value)
            return value
        finally:
            self._running = None
            running.send(outcome)


@dataclass
class PublicAnswers:
    """The anonymous reads the gateway shares: identity's key set and catalog's departments."""

    keys: SharedResult[Any] = field(default_factory=SharedResult)
    departments: SharedResult[Any] = field(default_factory=SharedResult)


class SharedPublicAnswers(DependencyProvider):
    def setup(self) -> None:
        self.answers = PublicAnswers()

    def get_dependency(self, worker_ctx: Any) -> PublicAnswers:
        return self.answers
