"""Log lines: JSON, one object a line, carrying the trace and span they were written in, and
never personal data in clear.

Installed on every handler by config.yml: `ScrubbingFilter` masks resident id numbers, credit
codes, mainland mobile numbers, email addresses, bearer tokens and passwords in URLs in the
message, its arguments, any `extra` fields and tracebacks (`ScrubbingJsonFormatter` masks what
python-json-logger formats itself: it formats a traceback again, ignoring the masked text);
`TraceContextFilter` adds `service`, `trace_id` and `span_id`;
the JSON formatter is python-json-logger's.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

_PATTERNS = [
    # A password in a URL (nameko-opentelemetry puts the broker's AMQP URI on every span), written
    # as kombu writes it in its own log lines: amqp://user:**@host.
    # The user and password hold no "/", "?" or "#": a "@" further on (a path, a query's email) is
    # not theirs, and the match stays linear.
    (re.compile(r"(?<=://)([^:/?#@\s\[\]]+):[^/?#@\s]*@"), r"\1:**@"),
    (re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{9}[0-9Xx](?![0-9A-Za-z])"), "[id-number]"),
    (re.compile(r"(?<![0-9A-Z])[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}(?![0-9A-Z])"), "[credit-code]"),
    (re.compile(r"(?<![0-9])(?:\+?86[- ]?)?1[3-9][0-9]{9}(?![0-9])"), "[phone]"),  # also +86 13800138000
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[token]"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "[email]"),
]


# Every pattern above needs a digit, an "@" or a token's "eyJ": text with none of them is left as
# it is without running the five patterns (most span attributes: names, settings).
_MAY_HOLD_PERSONAL_DATA = re.compile(r"[0-9@]|eyJ")


def scrub(text: str) -> str:
    if not _MAY_HOLD_PERSONAL_DATA.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Hex identifiers, never personal data: a trace id's digits may happen to read as a phone number.
_IDENTIFIERS = {"trace_id", "span_id"}


class ScrubbingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and key not in _IDENTIFIERS and isinstance(value, str):
                setattr(record, key, scrub(value))
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class ScrubbingJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, masking what it formats itself: it formats a record's
    exception again from `exc_info`, ignoring the masked `exc_text` the filter left."""

    def formatException(self, ei: Any) -> str:
        return scrub(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return scrub(super().formatStack(stack_info))


class TraceContextFilter(logging.Filter):
    """`service`, `trace_id` and `span_id` on every record, so a log line leads to its trace."""

    service = os.environ.get("YIWANG_SERVICE", "")

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.service = self.service
        # Outside any span a line may name its trace itself (`extra={"trace_id": …}`).
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else getattr(record, "trace_id", None)
        record.span_id = format(context.span_id, "016x") if context.is_valid else None
        return True
