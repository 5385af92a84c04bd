"""Notification payloads."""

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from contracts.base import Contract, OpenContract
from contracts.common import PageQuery

Channel = Literal["inbox", "sms", "email"]
DeliveryStatus = Literal["pending", "sent", "delivered", "failed"]


class NotificationListQuery(PageQuery):
    """GET /api/v1/notifications: the caller's messages, optionally only the unread."""

    unread: bool = False


class Delivery(Contract):
    channel: Channel
    status: DeliveryStatus


class NotificationView(Contract):
    notification_id: str
    case_no: str | None
    type: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None = None
    deliveries: list[Delivery]


class NotificationPreferences(Contract):
    """`GET`/`PUT /api/v1/me/notification-preferences`: the inbox is always on."""

    channels: list[Channel]

    @field_validator("channels")
    @classmethod
    def _inbox_first_and_once(cls, channels: list[Channel]) -> list[Channel]:
        # Order and duplicates carry no meaning; the inbox cannot be switched off.
        return [c for c in ("inbox", "sms", "email") if c == "inbox" or c in channels]


class VerificationText(Contract):
    """Notification RPC `send_verification_code`: one text with a one-time code, sent at once (the
    person is waiting for it), never stored, never retried later: a late code is a useless one."""

    phone: str = Field(pattern=r"^1[3-9][0-9]{9}$")
    code: str = Field(pattern=r"^[0-9]{6}$")
    purpose: Literal["phone_change", "password_reset"]
    valid_minutes: int = Field(ge=1, le=60)
    reference: str = Field(min_length=1, max_length=200)  # the provider sends once per reference
    not_after: datetime  # sent by then or not at all: the asker has given up (a redelivered request)


class SecurityNotice(Contract):
    """Notification RPC `send_security_notice`: one text to a number the account no longer has (so
    no notification of the account reaches it), telling its holder what changed; sent at once."""

    phone: str = Field(pattern=r"^1[3-9][0-9]{9}$")
    kind: Literal["phone_changed"]
    at: datetime
    new_phone_masked: str = Field(pattern=r"^1[0-9]{2}\*{4}[0-9]{4}$")  # 139****2222
    reference: str = Field(min_length=1, max_length=200)


class Contact(Contract):
    """Where a person can be reached (identity RPC `contact`); None when the account has none."""

    user_id: str
    phone: str | None = None
    email: str | None = None


# --- the SMS provider interface (outbound HTTP; `infra/sms_provider.py` is the local one) ------------


class SmsRequest(Contract):
    """`POST {provider}/v1/messages`. `reference` is ours: a provider that sees it twice sends once."""

    to: str
    text: str
    reference: str


class SmsReceipt(OpenContract):
    """The provider's answer to a send (202) and to `GET {provider}/v1/messages/{message_id}`."""

    message_id: str
    status: Literal["accepted", "delivered", "failed"]
    error: str | None = None
