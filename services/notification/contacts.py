"""People's phone numbers and email addresses, kept per notification process for a short while.

Every SMS or email asked identity for its recipient's contact (an RPC: two broker messages and a
read of the user). A 秒批 case's "received" and "approved" SMS go out within a second of each
other, so the second asked again for what the first had just been told.

A stale phone number would send someone's case news to another person, so:

- identity's `contact_changed` event, broadcast to every notification process, drops the person's
  entry the moment they change their phone or email (milliseconds after), and an answer that was
  on its way while they changed it is used once but not kept;
- an entry is also asked again once it is `MAX_AGE` old, for a process that missed an event (its
  broadcast queue exists only while it is connected).

Failed lookups (no such account, identity unavailable) are not kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nameko.extensions import DependencyProvider

from contracts.notifications import Contact
from services.common.kept_answers import KeptAnswers

MAX_AGE = 60.0  # seconds
DEFAULT_SIZE = 10_000  # people kept per process: those with deliveries in the last minute


class ContactCache:
    """Contacts by user id, validated as identity answers them (see KeptAnswers)."""

    def __init__(
        self, max_age: float = MAX_AGE, size: int = DEFAULT_SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._answers: KeptAnswers[str, Contact] = KeptAnswers(max_age, size, clock)

    def get(self, user_id: str, fetch: Callable[[], dict[str, Any]]) -> Contact:
        """The person's contact: kept, or fetched (a failed fetch raises and keeps nothing)."""
        return self._answers.get(user_id, lambda: Contact.model_validate(fetch()))

    def changed(self, user_id: str) -> None:
        """Identity announced a new phone or email: what is kept, or on its way, is old."""
        self._answers.changed(user_id)


class Contacts(DependencyProvider):
    """Injects the process's ContactCache (one per service container)."""

    def setup(self) -> None:
        self.cache = ContactCache()

    def get_dependency(self, worker_ctx: Any) -> ContactCache:
        return self.cache
