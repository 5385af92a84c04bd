"""Notification payloads."""

from datetime import datetime
from typing import Literal

from pydantic import field_validator

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
