"""Rendering notifications from versioned Jinja2 templates kept as files.

`templates/<channel>/<event type>.j2`: the first line is the title (an email's subject), the rest
the body; an SMS is one text. A template's version is a digest of its source (and of what it
extends), recorded with every message so a sent text can be traced to the template that made it.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from contracts.envelope import Envelope
from services.common.china_time import CHINA
from services.common.stored_time import as_utc
from services.common.telemetry import current_traceparent
from services.notification.deliveries import view as deliveries_view

TEMPLATE_DIR = Path(__file__).parent / "templates"

_env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), undefined=StrictUndefined, autoescape=False)


def local_time(value: datetime | str) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(moment).astimezone(CHINA).strftime("%Y年%m月%d日 %H:%M")


def local_day(value: date | str) -> str:
    day = date.fromisoformat(value) if isinstance(value, str) else value
    return f"{day:%Y年%m月%d日}"


def render(channel: str, event_type: str, context: dict[str, Any]) -> tuple[str, str]:
    """(title, body) for one channel and event type; StrictUndefined makes a missing field an error."""
    text = _env.get_template(f"{channel}/{event_type}.j2").render(**context).strip()
    title, _, body = text.partition("\n")
    return title.strip(), body.strip()


# Characters of one text at most: providers refuse longer ones (a permanent failure: the text was
# lost) and bill every 67 characters of a long one. What is cut is in the inbox and the email.
MAX_SMS_CHARS = 300
SMS_CUT = "…（详情请登录查看）"


def render_sms(event_type: str, context: dict[str, Any]) -> str:
    text = " ".join(_env.get_template(f"sms/{event_type}.j2").render(**context).split())
    if len(text) <= MAX_SMS_CHARS:
        return text
    return text[: MAX_SMS_CHARS - len(SMS_CUT)] + SMS_CUT


@functools.cache  # templates are files of the package: they change only with a new release
def template_version(channel: str, event_type: str) -> str:
    sources = [_source(f"{channel}/{event_type}.j2")]
    if channel == "email":
        sources.append(_source("email/_letter.j2"))
    return hashlib.sha256("\0".join(sources).encode()).hexdigest()[:12]


def compose(event_type: str, context: dict[str, Any], channels: list[str]) -> dict[str, dict[str, str]]:
    """What each channel will carry, rendered once when the notification is created (retries resend
    exactly this). Keys: title, body, template (`<channel>/<event type>@<version>`)."""
    content = {}
    for channel in channels:
        if channel == "sms":
            title, body = "", render_sms(event_type, context)
        else:
            title, body = render(channel, event_type, context)
        content[channel] = {
            "title": title,
            "body": body,
            "template": f"{channel}/{event_type}@{template_version(channel, event_type)}",
        }
    return content


def _source(name: str) -> str:
    return (TEMPLATE_DIR / name).read_text(encoding="utf-8")


def notification_id(event_id: str, recipient: str) -> str:
    """One notification per event and recipient, however often the event is redelivered."""
    return hashlib.sha256(f"{event_id}:{recipient}".encode()).hexdigest()[:24]


def notification(
    envelope: Envelope, recipient: str, case_no: str | None, context: dict[str, Any], channels: list[str], now: datetime
) -> dict[str, Any]:
    """The stored notification: the inbox message, and what each outbound channel will carry."""
    content = compose(envelope.type, context, channels)
    nid = notification_id(envelope.event_id, recipient)
    return {
        "_id": nid,
        "notification_id": nid,
        "event_id": envelope.event_id,
        "recipient": recipient,
        "case_no": case_no,
        "type": envelope.type,
        "title": content["inbox"]["title"],
        "body": content["inbox"]["body"],
        "created_at": now,  # when it was made: how late a notice is told from it (the load tests)
        # Listed in the inbox by when its event happened, so a "received" that waited in a retry
        # queue is listed below the "approved" that followed it; never later than now (a
        # producer's clock ahead of ours).
        "listed_at": min(now, as_utc(envelope.occurred_at)),
        "read_at": None,
        # Sending happens later in a timer; its spans join the trace of the event that caused it.
        "traceparent": current_traceparent(),
        "content": {c: v for c, v in content.items() if c != "inbox"},
        "channels": {
            c: {"status": "delivered" if c == "inbox" else "pending", "attempts": 0, "template": content[c]["template"]}
            for c in channels
        },
    }


# A reviewer's deadline notices come as one digest a day and kind, not one per case: they went to
# every reviewer of the department, so a department with a few hundred cases due a day filled each
# reviewer's inbox month with thousands of entries (a document the store rewrites for each).
DIGEST_SHOWN = 20  # cases listed in a digest's text; the task list has them all


def digest(event_type: str, recipient: str, occurred_at: datetime, now: datetime) -> dict[str, Any]:
    """A reviewer's digest of one kind of deadline event for the day (in China) the event happened
    (an event retried past midnight joins its own day's), as first stored."""
    day = as_utc(occurred_at).astimezone(CHINA).date().isoformat()
    nid = hashlib.sha256(f"digest:{event_type}:{day}:{recipient}".encode()).hexdigest()[:24]
    return {
        "_id": nid,
        "notification_id": nid,
        "recipient": recipient,
        "case_no": None,  # many: listed in the text
        "type": event_type,
        "day": day,
        "created_at": now,
        "listed_at": min(now, as_utc(occurred_at)),
        "read_at": None,
        "channels": {"inbox": {"status": "delivered", "attempts": 0, "template": f"inbox/digest/{event_type}"}},
        "cases": {},
    }


def digest_entry(item_name: str, deadline: date | str) -> dict[str, str]:
    """What a digest keeps of one case (under its case number)."""
    return {"item_name": item_name, "deadline": date.fromisoformat(str(deadline)).isoformat()}


def _digest_text(doc: dict[str, Any]) -> tuple[str, str]:
    # Rendered when read: the digest grows through the day, and a text stored with it could be
    # overtaken by a case added at the same moment.
    listed = sorted(doc["cases"].items(), key=lambda item: (item[1]["deadline"], item[0]))
    shown = [{**entry, "case_no": no, "deadline": local_day(entry["deadline"])} for no, entry in listed[:DIGEST_SHOWN]]
    context = {"day": local_day(doc["day"]), "count": len(listed), "shown": shown, "more": len(listed) - len(shown)}
    return render("inbox", f"digest/{doc['type']}", context)


def view(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored notification as the API shows it."""
    fields = ("notification_id", "case_no", "type", "title", "body", "created_at", "read_at")
    shown = {f: doc.get(f) for f in fields}
    if "cases" in doc:
        shown["title"], shown["body"] = _digest_text(doc)
    return {**shown, "deliveries": deliveries_view(doc.get("channels") or {})}
