"""The shared event envelope and the registry of versioned event types."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from contracts.base import Contract

EVENT_TYPE_PATTERN = r"^[a-z_]+(\.[a-z_]+)+\.v[0-9]+$"


class EventPayload(Contract):
    """Base of every event payload; subclasses set `event_type` (with its version)."""

    event_type: ClassVar[str]


class Envelope(Contract):
    event_id: str = Field(min_length=8, max_length=64)
    type: str = Field(pattern=EVENT_TYPE_PATTERN)
    occurred_at: datetime
    producer: str = Field(min_length=1)
    payload: dict[str, Any]


_REGISTRY: dict[str, type[EventPayload]] = {}


def register(model: type[EventPayload]) -> type[EventPayload]:
    """Class decorator: makes an event type known to `parse_event`."""
    if model.event_type in _REGISTRY:
        raise ValueError(f"event type registered twice: {model.event_type}")
    _REGISTRY[model.event_type] = model
    return model


def registered_events() -> dict[str, type[EventPayload]]:
    return dict(_REGISTRY)


def new_event(payload: EventPayload, producer: str) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4().hex,
        type=payload.event_type,
        occurred_at=datetime.now(UTC),
        producer=producer,
        payload=payload.model_dump(mode="json"),
    )


class UnknownEventType(ValueError):
    pass


def parse_event(raw: Any, expected: type[EventPayload] | None = None) -> tuple[Envelope, EventPayload]:
    """Validate an envelope and its payload; raises pydantic.ValidationError or UnknownEventType."""
    envelope = Envelope.model_validate(raw)
    model = _REGISTRY.get(envelope.type)
    if model is None:
        raise UnknownEventType(envelope.type)
    if expected is not None and model is not expected:
        raise UnknownEventType(f"expected {expected.event_type}, got {envelope.type}")
    return envelope, model.model_validate(envelope.payload)
