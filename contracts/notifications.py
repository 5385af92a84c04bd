"""Notification payloads."""

from datetime import datetime
from typing import Literal

from contracts.base import Contract

Channel = Literal["inbox", "sms", "email"]
DeliveryStatus = Literal["pending", "sent", "delivered", "failed"]


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
