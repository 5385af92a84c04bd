"""A delivery's life on one channel, as plain rules (no broker, no store).

pending --send accepted--> sent --receipt--> delivered | failed      (SMS: the provider reports)
pending --send accepted--> delivered                                  (email: the SMTP server took it)
pending --temporary failure--> pending, again after an exponential backoff, until the attempt cap,
                               then failed (kept, visible, with the last error)
pending --permanent failure--> failed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from contracts.notifications import Contact

CHANNELS = ("inbox", "sms", "email")
# Who gets what unless they chose otherwise: applicants always have a phone; staff accounts have
# neither phone nor email, so reviewers get the inbox.
DEFAULT_CHANNELS = {"applicant": ["inbox", "sms"], "reviewer": ["inbox"]}


@dataclass(frozen=True)
class Policy:
    retry_base: float = 2.0  # seconds before the second attempt; doubles each time
    retry_cap: float = 300.0  # longest wait between attempts
    max_attempts: int = 10
    receipt_poll: float = 5.0  # first ask an SMS provider whether a sent message arrived after this
    receipt_poll_cap: float = 300.0  # longest wait between two asks
    receipt_patience: timedelta = timedelta(hours=1)  # then stop asking; it stays `sent`

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.retry_cap, self.retry_base * 2 ** max(0, attempts - 1)))

    def receipt_wait(self, out_for: timedelta) -> timedelta:
        """Until asking again for the receipt of a message out for `out_for`: as long again, so the
        asks double apart (5, 10, 20 s … then every 5 min). Most receipts come within seconds; one
        that never comes costs about 17 asks in the hour, not 720."""
        return timedelta(seconds=min(self.receipt_poll_cap, max(self.receipt_poll, out_for.total_seconds())))


@dataclass(frozen=True)
class Outcome:
    kind: Literal["accepted", "delivered", "temporary", "permanent"]
    reference: str | None = None  # the provider's message id
    error: str | None = None


@dataclass(frozen=True)
class Step:
    changes: dict[str, Any] = field(default_factory=dict)  # fields of the channel's state to set
    next_at: datetime | None = None  # when to look again; None: this delivery is finished


def channels_for(audience: str, chosen: list[str] | None) -> list[str]:
    """The channels of one notification, inbox first."""
    wanted = chosen if chosen is not None else DEFAULT_CHANNELS[audience]
    return [c for c in CHANNELS if c == "inbox" or c in wanted]


def unreachable(channel: str, contact: Contact) -> str | None:
    """Why this person cannot get this channel, or None."""
    if channel == "sms" and not contact.phone:
        return "the account has no phone number"
    if channel == "email" and not contact.email:
        return "the account has no email address"
    return None


def after_send(state: dict[str, Any], outcome: Outcome, now: datetime, policy: Policy) -> Step:
    attempts = int(state.get("attempts", 0)) + 1
    base = {"attempts": attempts, "updated_at": now}
    if outcome.kind == "delivered":
        return Step({**base, "status": "delivered", "reference": outcome.reference, "error": None})
    if outcome.kind == "accepted":
        changes = {**base, "status": "sent", "sent_at": now, "reference": outcome.reference, "error": None}
        return Step(changes, now + timedelta(seconds=policy.receipt_poll))
    if outcome.kind == "permanent" or attempts >= policy.max_attempts:
        return Step({**base, "status": "failed", "error": outcome.error})
    return Step({**base, "status": "pending", "error": outcome.error}, now + policy.backoff(attempts))


def after_receipt(state: dict[str, Any], outcome: Outcome, now: datetime, policy: Policy) -> Step:
    """What the provider said about a `sent` message when asked again."""
    if outcome.kind == "delivered":
        return Step({"status": "delivered", "updated_at": now, "error": None})
    if outcome.kind == "permanent":
        return Step({"status": "failed", "updated_at": now, "error": outcome.error})
    sent_at = state.get("sent_at") or now
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=now.tzinfo)
    if now - sent_at > policy.receipt_patience:
        return Step()  # no receipt will come: leave it `sent`
    return Step({}, now + policy.receipt_wait(now - sent_at))


# A notification's fields that a delivery's trace and log lines name.
IDENTIFIERS = ("traceparent", "case_no", "event_id")


def send_context(doc: dict[str, Any], channel: str) -> dict[str, Any]:
    """What sending one channel of a notification needs, kept in its queue entry: the send then
    reads no notification. `attempts` follows the entry's own retries."""
    about = {key: doc.get(key) for key in IDENTIFIERS}
    return {**about, "recipient": doc["recipient"], "content": doc["content"][channel], "attempts": 0}


def receipt_context(about: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """What asking for a sent SMS's receipt needs, kept in its queue entry: the provider's message
    id, when it was sent, and the notification's identifiers."""
    kept = {key: about.get(key) for key in IDENTIFIERS}
    return {"reference": state["reference"], "sent_at": state["sent_at"], **kept}


def view(channels: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """The API's `deliveries`, inbox first."""
    return [{"channel": c, "status": channels[c]["status"]} for c in CHANNELS if c in channels]
