"""Times as the document store keeps them."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """A moment read back from the store: pymongo returns naive UTC datetimes unless the client is
    tz_aware (a naive one is UTC, never the host's zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_stored_precision(moment: datetime) -> datetime:
    """The moment at the millisecond precision the store keeps: one read back equals it, so it can
    identify a document in a later write (or a replayed answer equals the first)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
