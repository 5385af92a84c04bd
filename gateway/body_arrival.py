"""A JSON body is read whole before a worker takes the request.

The gateway has a few workers (`max_workers`), and a handler used to read its body inside one: a
request whose body never came (a `Content-Length` of 100 and 6 bytes sent) held a worker for
ever, so ten of them, sent by anyone to the anonymous login route, stopped the gateway. Read here,
in the connection's own greenthread, a slow body costs that greenthread only, and it has
`BODY_WAIT_SECONDS` to arrive whole, however it trickles. A chunked JSON body is read here too,
which werkzeug would read as empty. Uploads (multipart) stream in the worker as before, after
their token is checked, with the server's `IDLE_SECONDS` between reads.

Bodies held so are bounded per process (`BODY_BUDGET`, counted from their declared length until
their request is answered): without it, anyone could make the gateway hold 1 MiB per connection.
A body that did not arrive leaves its connection closed: what of it was read is gone, and the rest
would be taken for the next request.
"""

from __future__ import annotations

import io
from typing import Any

import eventlet

from gateway.http import MAX_JSON_BODY
from services.common.errors import MalformedRequest

BODY_WAIT_SECONDS = 30.0  # for the whole of a JSON body
IDLE_SECONDS = 30.0  # the server's socket timeout: the longest wait for any read from a client
READ_BYTES = 64 * 1024
BODY_BUDGET = 64 * 1024 * 1024  # bytes of bodies read ahead and not yet answered, per process


class ByteBudget:
    """Bytes that may be held at once (greenthreads only: no lock needed between yields)."""

    def __init__(self, total: int) -> None:
        self.total, self.held = total, 0

    def take(self, size: int) -> bool:
        if self.held + size > self.total:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


budget = ByteBudget(BODY_BUDGET)


def is_json(environ: dict[str, Any]) -> bool:
    return environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower() == "application/json"


def _chunked(environ: dict[str, Any]) -> bool:
    return environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"


def charge(environ: dict[str, Any]) -> int:
    """The bytes a request's body will hold if read ahead: 0 when it is not (see `read_ahead`)."""
    if not is_json(environ):
        return 0
    if _chunked(environ):
        return MAX_JSON_BODY + 1  # one byte more tells a chunked body too large
    declared = _declared_length(environ)
    return declared if declared is not None and 0 < declared <= MAX_JSON_BODY else 0


def read_ahead(environ: dict[str, Any], wanted: int) -> MalformedRequest | None:
    """Read a JSON body of `wanted` bytes (its `charge`) now, into `wsgi.input`; the error to answer
    when it does not arrive whole in time. A larger or absent one is left to `read_json` (413 or
    400, without reading it)."""
    if wanted == 0:
        return None
    chunked = _chunked(environ)
    try:
        with eventlet.Timeout(BODY_WAIT_SECONDS):
            data = _read(environ["wsgi.input"], wanted)
    except eventlet.Timeout:
        return MalformedRequest(f"the body did not arrive within {BODY_WAIT_SECONDS:g} s")
    except OSError:  # a client silent for IDLE_SECONDS, or gone
        return MalformedRequest("the body stopped arriving")
    except ValueError:  # eventlet's ChunkReadError
        return MalformedRequest("the chunked body is malformed")
    if not chunked and len(data) < wanted:
        return MalformedRequest("the body ended before its Content-Length")
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return None


def _declared_length(environ: dict[str, Any]) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def _read(stream: Any, wanted: int) -> bytes:
    parts: list[bytes] = []
    left = wanted
    while left > 0:
        part = stream.read(min(READ_BYTES, left))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
