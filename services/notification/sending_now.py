"""Deliveries sent as soon as a case event's handler has stored the notification.

The delivery timer (once a second) had to claim each new entry before sending it: one
`findAndModify` per SMS, and up to a second's wait. A handler now queues its entries already
claimed and hands their send to a greenthread of this process, then returns (the event is acked:
the notification and its entries are stored). A slow provider so holds up no handler. When `bound`
such sends are in flight, new entries are queued unclaimed and the timer sends them as before.

One person's notifications are stored and sent one after another in a process: a handler waits
for the send of that person's previous notification, so "received" still goes out before
"approved" when the events come in that order.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import eventlet
from eventlet.greenthread import GreenThread
from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)

DEFAULT_BOUND = 16


@dataclass
class Turn:
    """A person's turn: `may_send` says whether a send may be handed over (`send`)."""

    may_send: bool
    work: Callable[[], None] | None = None

    def send(self, work: Callable[[], None]) -> None:
        """Run `work` after the turn's block, in a greenthread that keeps the turn until it ends."""
        if not self.may_send:
            raise RuntimeError("no send slot was free for this turn")
        self.work = work


class SendingNow:
    def __init__(self, bound: int = DEFAULT_BOUND) -> None:
        self.bound = bound
        self._reserved = 0  # slots taken by turns and their sends
        self._running: set[GreenThread] = set()
        self._people: dict[str, tuple[Semaphore, int]] = {}  # recipient -> (their turn, holders and waiters)

    @contextmanager
    def turn(self, recipient: str) -> Iterator[Turn]:
        """The recipient's turn, after their notifications already under way in this process."""
        lock, users = self._people.get(recipient, (Semaphore(1), 0))
        self._people[recipient] = (lock, users + 1)
        try:
            lock.acquire()
        except BaseException:  # killed while waiting
            self._part(recipient)
            raise
        turn = Turn(may_send=self._reserved < self.bound)
        self._reserved += turn.may_send
        try:
            yield turn
        except BaseException:
            self._leave(recipient, turn.may_send)
            raise
        if turn.work is None:
            self._leave(recipient, turn.may_send)
        else:
            self._running.add(eventlet.spawn(self._run, contextvars.copy_context(), turn.work, recipient))

    def _run(self, context: contextvars.Context, work: Callable[[], None], recipient: str) -> None:
        try:
            context.run(work)
        except Exception:  # what it claimed stays claimed: the timer tries again when the claim ends
            log.exception("delivery attempt failed", extra={"recipient": recipient})
        finally:
            self._running.discard(eventlet.getcurrent())  # type: ignore[arg-type]
            self._leave(recipient, True)

    def _leave(self, recipient: str, had_slot: bool) -> None:
        self._reserved -= had_slot
        self._people[recipient][0].release()
        self._part(recipient)

    def _part(self, recipient: str) -> None:
        lock, users = self._people[recipient]
        if users == 1:
            del self._people[recipient]
        else:
            self._people[recipient] = (lock, users - 1)

    def wait(self) -> None:
        """Until every send handed over has ended."""
        while self._running:
            next(iter(self._running)).wait()

    def kill(self) -> None:
        for thread in list(self._running):
            thread.kill()

    def people_waiting(self) -> int:
        return len(self._people)


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
