"""One-time codes texted to a phone (短信验证码), for two purposes: an applicant proves they hold
the phone they want as their new one (`phone_change`), and someone who forgot their password
proves they hold the account's phone (`password_reset`).

One challenge per account and purpose is kept, as a digest bound to the challenge key (purpose and
account) and the phone and keyed with a secret held outside the database (`code_secret.py`), never
the code itself. Limits, so that neither a code nor a phone's owner
can be worn down:

- a code works for `lifetime` and once, and dies after `max_attempts` wrong tries;
- an account asks for a new one at most every `resend_interval`, and `daily_limit` times a day
  (per purpose); a text that did not go out does not count;
- a phone the requester chose (a new phone) receives at most `phone_daily_limit` codes a day,
  whichever accounts ask, so no one floods a stranger's phone by opening accounts. A reset code goes
  to the account's own phone and is bounded by the account's limit alone, so no one can use up a
  holder's reset codes by asking for new-phone codes to their number.

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
from typing import Any, Literal

from services.common.china_time import CHINA
from services.common.errors import RateLimited, ValidationFailed
from services.identity.code_secret import code_secret


@dataclass(frozen=True)
class Policy:
    lifetime: timedelta = timedelta(minutes=5)
    resend_interval: timedelta = timedelta(seconds=60)
    max_attempts: int = 5
    daily_limit: int = 5
    phone_daily_limit: int = 10

    @classmethod
    def from_env(cls) -> Policy:
        return cls(
            lifetime=timedelta(seconds=int(os.environ.get("YIWANG_PHONE_CODE_LIFETIME_SECONDS", 300))),
            resend_interval=timedelta(seconds=int(os.environ.get("YIWANG_PHONE_CODE_RESEND_SECONDS", 60))),
            max_attempts=int(os.environ.get("YIWANG_PHONE_CODE_ATTEMPTS", 5)),
            daily_limit=int(os.environ.get("YIWANG_PHONE_CODE_DAILY_LIMIT", 5)),
            phone_daily_limit=int(os.environ.get("YIWANG_PHONE_CODE_PHONE_DAILY_LIMIT", 10)),
        )

    @property
    def valid_minutes(self) -> int:
        return max(1, math.ceil(self.lifetime.total_seconds() / 60))


Purpose = Literal["phone_change", "password_reset"]


def challenge_key(purpose: Purpose, user_id: str) -> str:
    return f"{purpose}:{user_id}"


# A code is texted within this long or not at all (the person is waiting; a late code is useless).
SEND_WITHIN = timedelta(seconds=5)


def counts_per_phone(purpose: Purpose) -> bool:
    """Whether the phone is one the requester chose (and so counted against flooding)."""
    return purpose == "phone_change"


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def digest(key: str, phone: str, code: str) -> str:
    # Bound to the purpose, the account and the phone: a code is good for nothing else. Keyed with
    # a secret kept outside the database: a million codes are tried in a moment against a plain one.
    return hmac.new(code_secret(), f"{key}\0{phone}\0{code}".encode(), hashlib.sha256).hexdigest()


def china_day(now: datetime) -> date:
    return now.astimezone(CHINA).date()


def seconds_to_next_day(now: datetime) -> int:
    midnight = datetime.combine(china_day(now) + timedelta(days=1), time(), tzinfo=CHINA)
    return max(1, math.ceil((midnight - now).total_seconds()))


def new_challenge(
    key: str, phone: str, code: str, previous: dict[str, Any] | None, now: datetime, policy: Policy
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
        "_id": key,
        "phone": phone,
        "code_hash": digest(key, phone, code),
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


NO_CODE = "no code was sent to this phone for this account; ask for one first"


def check(
    challenge: dict[str, Any] | None,
    key: str,
    phone: str,
    code: str,
    now: datetime,
    policy: Policy,
    field: str = "phone_code",
) -> dict[str, Any]:
    """The challenge the code answers, or ValidationFailed on `field`. `challenge` is as read
    after counting this attempt."""
    if challenge is None or challenge["phone"] != phone or challenge["used"]:
        raise rejected(NO_CODE, field)
    if challenge["expires_at"] <= now:
        raise rejected("the code has expired; ask for a new one", field)
    if challenge["attempts"] > policy.max_attempts:
        raise rejected("too many wrong codes; ask for a new one", field)
    if not hmac.compare_digest(challenge["code_hash"], digest(key, phone, code)):
        left = policy.max_attempts - challenge["attempts"]
        raise rejected(
            f"not the code that was sent; {left} tries left" if left else "not the code that was sent", field
        )
    return challenge


def code_required() -> ValidationFailed:
    return rejected("a new phone needs the code texted to it: POST /api/v1/me/contact/phone-code")


def rejected(issue: str, field: str = "phone_code") -> ValidationFailed:
    return ValidationFailed(f"the code is not accepted: {issue}", [{"field": field, "issue": issue}])
