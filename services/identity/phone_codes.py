"""One-time codes that prove an applicant holds the phone they want as their new one (短信验证码).

A code is texted to the new phone; the change of phone then needs it. One challenge per account
is kept, as a digest bound to the account and the phone (never the code itself). Limits, so that
neither a code nor a phone's owner can be worn down:

- a code works for `lifetime` and once, and dies after `max_attempts` wrong tries;
- an account asks for a new one at most every `resend_interval`, and `daily_limit` times a day;
- one phone receives at most `phone_daily_limit` codes a day, whichever accounts ask (no one can
  flood a stranger's phone with texts by opening accounts).

Days are China's calendar days.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from services.common.china_time import CHINA
from services.common.errors import RateLimited, ValidationFailed


@dataclass(frozen=True)
class Policy:
    lifetime: timedelta = timedelta(minutes=5)
    resend_interval: timedelta = timedelta(seconds=60)
    max_attempts: int = 5
    daily_limit: int = 10
    phone_daily_limit: int = 10

    @classmethod
    def from_env(cls) -> Policy:
        return cls(
            lifetime=timedelta(seconds=int(os.environ.get("YIWANG_PHONE_CODE_LIFETIME_SECONDS", 300))),
            resend_interval=timedelta(seconds=int(os.environ.get("YIWANG_PHONE_CODE_RESEND_SECONDS", 60))),
            max_attempts=int(os.environ.get("YIWANG_PHONE_CODE_ATTEMPTS", 5)),
            daily_limit=int(os.environ.get("YIWANG_PHONE_CODE_DAILY_LIMIT", 10)),
            phone_daily_limit=int(os.environ.get("YIWANG_PHONE_CODE_PHONE_DAILY_LIMIT", 10)),
        )

    @property
    def valid_minutes(self) -> int:
        return max(1, math.ceil(self.lifetime.total_seconds() / 60))


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def digest(user_id: str, phone: str, code: str) -> str:
    # Bound to the account and the phone: a code is good for nothing else.
    return hashlib.sha256(f"{user_id}\0{phone}\0{code}".encode()).hexdigest()


def china_day(now: datetime) -> date:
    return now.astimezone(CHINA).date()


def seconds_to_next_day(now: datetime) -> int:
    midnight = datetime.combine(china_day(now) + timedelta(days=1), time(), tzinfo=CHINA)
    return max(1, math.ceil((midnight - now).total_seconds()))


def new_challenge(
    user_id: str, phone: str, code: str, previous: dict[str, Any] | None, now: datetime, policy: Policy
) -> dict[str, Any]:
    """The challenge to keep for a code about to be sent, or RateLimited when the account asked
    too recently or too often today."""
    today = china_day(now).isoformat()
    sent_today = previous["sent_today"] if previous and previous["day"] == today else 0
    if previous and previous["next_send_at"] > now:
        wait = math.ceil((previous["next_send_at"] - now).total_seconds())
        raise RateLimited(f"a code was sent a moment ago; ask again in {wait} s", retry_after=wait)
    if sent_today >= policy.daily_limit:
        raise RateLimited(
            "this account asked for too many codes today; try again tomorrow", retry_after=seconds_to_next_day(now)
        )
    return {
        "_id": user_id,
        "phone": phone,
        "code_hash": digest(user_id, phone, code),
        "sent_at": now,
        "next_send_at": now + policy.resend_interval,
        "expires_at": now + policy.lifetime,
        "attempts": 0,
        "used": False,
        "day": today,
        "sent_today": sent_today + 1,
    }


def refuse_flooding(sent_to_phone_today: int, now: datetime, policy: Policy) -> None:
    """RateLimited once the phone has had its codes for the day (counting this one)."""
    if sent_to_phone_today > policy.phone_daily_limit:
        raise RateLimited(
            "this phone has received too many codes today; try again tomorrow", retry_after=seconds_to_next_day(now)
        )


def check(
    challenge: dict[str, Any] | None, user_id: str, phone: str, code: str, now: datetime, policy: Policy
) -> dict[str, Any]:
    """The challenge the code answers, or ValidationFailed on `phone_code`. `challenge` is as read
    after counting this attempt."""
    if challenge is None or challenge["phone"] != phone or challenge["used"]:
        raise rejected("no code was sent to this phone for this account; ask for one first")
    if challenge["expires_at"] <= now:
        raise rejected("the code has expired; ask for a new one")
    if challenge["attempts"] > policy.max_attempts:
        raise rejected("too many wrong codes; ask for a new one")
    if not hmac.compare_digest(challenge["code_hash"], digest(user_id, phone, code)):
        left = policy.max_attempts - challenge["attempts"]
        raise rejected(f"not the code that was sent; {left} tries left" if left else "not the code that was sent")
    return challenge


def code_required() -> ValidationFailed:
    return rejected("a new phone needs the code texted to it: POST /api/v1/me/contact/phone-code")


def rejected(issue: str) -> ValidationFailed:
    return ValidationFailed(f"the phone code is not accepted: {issue}", [{"field": "phone_code", "issue": issue}])
