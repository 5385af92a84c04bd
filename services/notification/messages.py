"""Rendering notifications from versioned Jinja2 templates kept as files.

`templates/<channel>/<event type>.j2`: the first line is the title, the rest the body.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATE_DIR = Path(__file__).parent / "templates"
CHINA = ZoneInfo("Asia/Shanghai")

_env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), undefined=StrictUndefined, autoescape=False)


def local_time(value: datetime | str) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(CHINA).strftime("%Y年%m月%d日 %H:%M")


def render(channel: str, event_type: str, context: dict[str, Any]) -> tuple[str, str]:
    """(title, body) for one channel and event type; StrictUndefined makes a missing field an error."""
    text = _env.get_template(f"{channel}/{event_type}.j2").render(**context).strip()
    title, _, body = text.partition("\n")
    return title.strip(), body.strip()


def notification_id(event_id: str, recipient: str) -> str:
    """One notification per event and recipient, however often the event is redelivered."""
    return hashlib.sha256(f"{event_id}:{recipient}".encode()).hexdigest()[:24]
