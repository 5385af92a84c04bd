"""Deliveries sent as soon as a case event's handler has stored the notification.

The delivery timer (once a second) had to claim each new entry before sending it: one
`findAndModify` per SMS, and up to a second's wait. A handler now queues its entries already
claimed and hands their send to this process's greenthreads, then returns (the event is acked:
the notification and its entries are stored). The handler never waits for a send, so a slow
provider holds up no handler. When `bound` such sends are in flight, new entries are queued
unclaimed and the timer sends them as before.

One person's sends run one after another, in the order their handlers handed them over, so
"received" still goes out before "approved" when the events come in that order: each person with
sends has one greenthread working through them.
"""

from __future__ import annotations

import contextvars
import logging
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import eventlet
from eventlet.greenthread import GreenThread
from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)

DEFAULT_BOUND = 4  # as the timer's: more sends at once on a busy machine cost submissions their CPU


class Slot:
    """A send slot, if one was free (`free`); `send` hands work over to use it."""

    def __init__(self, sending: SendingNow, recipient: str, free: bool) -> None:
        self._sending, self._recipient, self.free, self.used = sending, recipient, free, False

    def send(self, work: Callable[[], None]) -> None:
        """Run `work` after the person's sends handed over before it (not in this greenthread)."""
        if not self.free or self.used:
            raise RuntimeError("no send slot was free for this work")
        self._sending._hand_over(self._recipient, work)
        self.used = True


class SendingNow:
    def __init__(self, bound: int = DEFAULT_BOUND) -> None:
        self.bound = bound
        self._reserved = 0  # slots taken: by slots being decided, and by work not yet done
        self._queues: dict[str, deque[Callable[[], None]]] = {}  # recipient -> work not yet done
        self._running: set[GreenThread] = set()
        self._held: set[str] = set()  # people whose sends the rate limit held back: the rest go to the timer

    @contextmanager
    def slot(self, recipient: str) -> Iterator[Slot]:
        """A slot for one of the recipient's sends, given back at the end unless work was handed over."""
        slot = Slot(self, recipient, free=self._reserved < self.bound)
        self._reserved += slot.free
        try:
            yield slot
        finally:
            if slot.free and not slot.used:
                self._reserved -= 1

    def hold(self, recipient: str) -> None:
        """The person's sends still handed over are left to the timer, which keeps their order,
        until the person's greenthread has none left."""
        if recipient in self._queues:
            self._held.add(recipient)

    def held(self, recipient: str) -> bool:
        return recipient in self._held

    def _hand_over(self, recipient: str, work: Callable[[], None]) -> None:
        job = partial(contextvars.copy_context().run, work)  # the handler's context: trace, log fields
        queued = self._queues.get(recipient)
        if queued is not None:  # the person's greenthread takes it after what it has
            queued.append(job)
            return
        self._queues[recipient] = deque([job])
        try:
            self._running.add(eventlet.spawn(self._work_through, recipient))
        except BaseException:
            del self._queues[recipient]
            raise

    def _work_through(self, recipient: str) -> None:
        queued = self._queues[recipient]
        try:
            while queued:
                try:
                    queued[0]()
                except Exception:  # what it claimed stays due when the claim ends: the timer tries again
                    log.exception("delivery attempt failed", extra={"recipient": recipient})
                finally:
                    queued.popleft()
                    self._reserved -= 1
        finally:  # killed: what is left keeps its claim, and the timer sends it when the claim ends
            self._reserved -= len(queued)
            del self._queues[recipient]
            self._held.discard(recipient)
            self._running.discard(eventlet.getcurrent())  # type: ignore[arg-type]

    def wait(self) -> None:
        """Until every send handed over has ended."""
        while self._running:
            next(iter(self._running)).wait()

    def kill(self) -> None:
        for thread in list(self._running):
            thread.kill()
        # A greenthread killed before it started never ran its clean-up.
        self._running.clear()
        self._queues.clear()
        self._held.clear()
        self._reserved = 0

    def in_flight(self) -> int:
        """Slots taken (for tests and metrics)."""
        return self._reserved

    def people_waiting(self) -> int:
        return len(self._queues)


class SendNow(DependencyProvider):
    """The process's SendingNow, bounded by the config's NOTIFY.SENDS_AT_ONCE. Stopping waits for
    the sends in flight (a send cut short would be sent again when its claim ends)."""

    def setup(self) -> None:
        settings: dict[str, Any] = self.container.config.get("NOTIFY") or {}
        self.sending = SendingNow(int(settings.get("SENDS_AT_ONCE", DEFAULT_BOUND)))

    def stop(self) -> None:
        self.sending.wait()

    def kill(self) -> None:
        self.sending.kill()

    def get_dependency(self, worker_ctx: Any) -> SendingNow:
        return self.sending
