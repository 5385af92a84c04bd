"""Throttling: too many failed logins per account or per client address, or too many
registrations per client address → 429 with Retry-After.

Counters live in identity's store, so the limit holds across processes and restarts. A fixed
window per key: the first attempt counted opens it; reaching the limit inside it blocks until it
closes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Policy:
    account_limit: int = 5
    # An address is often shared: a mobile carrier's NAT puts thousands behind one, an office or a
    # service hall's kiosks hundreds, and a client's test suite runs from one host. At 20 failures
    # (and 10 registrations) such an address locked everyone behind it out for 15 minutes; the
    # account's own allowance is what stops guessing one person's password.
    address_limit: int = 100
    window: timedelta = timedelta(minutes=15)
    # Registrations per client address and window: each costs a password hash (0.16 s of CPU,
    # so 300 are under 6% of a core per address), and each answer says whether an id number is
    # registered (409).
    registration_limit: int = 300

    @classmethod
    def from_env(cls) -> Policy:
        # The defaults are the fields' own: written once.
        window = int(os.environ.get("YIWANG_LOGIN_WINDOW_SECONDS", cls.window.total_seconds()))
        return cls(
            account_limit=int(os.environ.get("YIWANG_LOGIN_ACCOUNT_LIMIT", cls.account_limit)),
            address_limit=int(os.environ.get("YIWANG_LOGIN_ADDRESS_LIMIT", cls.address_limit)),
            window=timedelta(seconds=window),
            registration_limit=int(os.environ.get("YIWANG_REGISTRATION_ADDRESS_LIMIT", cls.registration_limit)),
        )


@dataclass(frozen=True)
class Failures:
    count: int
    first_at: datetime


def account_key(username: str) -> str:
    # Unknown users are counted too, so a blocked and a non-existent account look alike.
    return f"account:{username.strip().upper()}"


def user_key(user_id: str) -> str:
    # One account has several login names (id number, phone): they share this allowance too.
    return f"user:{user_id}"


def address_key(address: str) -> str:
    return f"address:{address}"


def registration_key(address: str) -> str:
    # Every registration counts (not only refused ones): see Policy.registration_limit.
    return f"registrations:{address}"


def reset_request_key(address: str) -> str:
    # Every request for a reset code counts (not only failures): each may text someone.
    return f"reset-requests:{address}"


def retry_after(failures: Failures | None, limit: int, policy: Policy, now: datetime) -> int | None:
    """Seconds until the key may try again, or None when it is not blocked."""
    if failures is None or failures.count < limit:
        return None
    remaining = (failures.first_at + policy.window - now).total_seconds()
    return math.ceil(remaining) if remaining > 0 else None
