"""Times as the document store keeps them."""

from __future__ import annotations

from datetime import datetime


def to_stored_precision(moment: datetime) -> datetime:
    """The moment at the millisecond precision the store keeps: one read back equals it, so it can
    identify a document in a later write (or a replayed answer equals the first)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
