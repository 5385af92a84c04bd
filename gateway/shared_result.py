"""One result shared by every request of a process for a moment, computed by one request at a time.

For anonymous routes whose answer costs other services work and changes rarely: readiness probes,
the signing keys, the departments. A flood of such requests then costs those services one call per
gateway process and `FRESH_SECONDS`, not one per request, and holds no more workers than one.
"""

from __future__ import annotations

import copy
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


def _copy_of(error: Exception) -> Exception:
    try:
        return copy.copy(error)
    except Exception:  # an exception that cannot be copied: the same, as before
        return error


@dataclass
class _Run:
    """A computation under way: its waiters' event, and the generation it was started in."""

    done: Event = field(default_factory=Event)
    generation: int = 0


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
        self._running: _Run | None = None
        self._generation = 0  # moved by forget(): what was computed, or began, before is old

    def result(self, check: Callable[[], T]) -> T:
        while True:
            last, running = self._last, self._running
            age = math.inf if last is None else self._clock() - last[0]
            if last is not None and age < self.fresh_for:
                return last[1]
            if running is None or running.generation != self._generation:
                return self._run(check)  # none under way, or one begun before forget(): its answer is old
            if last is not None and age < self.stale_after:
                return last[1]  # being checked again: the last answer meanwhile, no worker held
            how, value = running.done.wait()
            if how == "value":
                return value
            if how == "error":
                # Its waiters share its failure: each running the call again in turn would wait as
                # long again, the last of them many times over (a service away: 10 s each). A copy
                # each: raised in many greenthreads, one exception would gather all their frames.
                raise _copy_of(value) from None
            # Killed (its greenthread, not the call, failed): one of its waiters runs the next.

    def forget(self) -> None:
        """The result changed at its source (this process changed it): the next caller computes."""
        self._last = None
        self._generation += 1

    def _run(self, check: Callable[[], T]) -> T:
        run = self._running = _Run(generation=self._generation)
        outcome: tuple[str, Any] = ("killed", None)
        try:
            value = check()
            outcome = ("value", value)
            if run.generation == self._generation:
                self._last = (self._clock(), value)
            return value
        except Exception as exc:
            outcome = ("error", exc)
            raise
        finally:
            if self._running is run:  # not one begun after forget() meanwhile
                self._running = None
            run.done.send(outcome)


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
