"""Requests eventlet cannot read are answered in the contract's error shape, not eventlet's own.

eventlet refuses some requests before any handler runs, with a bare status line or an HTML page and
no trace id: a request line past the server's limit, a header line over 8 KiB, headers over 64 KiB
or more than 100 of them, a bad HTTP version, a `Content-Length` that is no number, or both
`Content-Length` and `Transfer-Encoding`. api-v1 promises the error shape for every error, so each
of these is a 400 `malformed_request` saying what was wrong, with a trace of its own. The connection
then closes: what follows such a request cannot be told apart from its body.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from eventlet.wsgi import HeaderLineTooLong, HeadersTooLarge
from opentelemetry import trace

from contracts.errors import ErrorCode
from gateway.http import TRACE_HEADER, error_response, with_security_headers

_tracer = trace.get_tracer("yiwang.gateway")
log = logging.getLogger("gateway.access")


class AnswersUnreadableRequests:
    """Mixed into the gateway's HTTP protocol (an eventlet `HttpProtocol`)."""

    server: Any
    wfile: Any
    headers: Any
    close_connection: Any

    def _read_request_line(self) -> bytes | str:
        line: bytes | str = super()._read_request_line()  # type: ignore[misc]
        if len(line) >= self.server.url_length_limit:
            self.refuse(f"the request line is longer than {self.server.url_length_limit // 1024} KiB")
            return b""  # read as a closed connection: eventlet answers nothing more
        return line

    def parse_request(self) -> bool:
        try:
            parsed: bool = super().parse_request()  # type: ignore[misc]
        except HeaderLineTooLong:
            self.refuse("a header line is longer than 8 KiB")
            return False
        except HeadersTooLarge:
            self.refuse("the headers are larger than 64 KiB")
            return False
        if not parsed:
            return False  # send_error answered
        problem = _body_framing_problem(self.headers.get("Content-Length"), self.headers.get("Transfer-Encoding"))
        if problem is not None:
            self.refuse(problem)
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's answer to a request line or headers it cannot parse (its page was HTML)."""
        said = "; ".join(part for part in (message, explain) if part)
        self.refuse(f"the request cannot be read ({code}{': ' + said if said else ''})")

    def refuse(self, message: str) -> None:
        with _tracer.start_as_current_span("HTTP (unreadable request)", kind=trace.SpanKind.SERVER):
            response = error_response(ErrorCode.MALFORMED_REQUEST, message)  # carries the trace id
        response.headers["Connection"] = "close"
        head = [
            f"HTTP/1.1 {response.status}",
            *(f"{k}: {v}" for k, v in with_security_headers(response.headers.to_wsgi_list())),
        ]
        try:
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.get_data())
            self.wfile.flush()
        except OSError:
            pass  # the client has gone: nothing to tell it
        self.close_connection = 1
        log.info("unreadable request refused: %s", message, extra={"trace_id": response.headers.get(TRACE_HEADER)})


def _body_framing_problem(content_length: str | None, transfer_encoding: str | None) -> str | None:
    """What eventlet would refuse in how the body is delimited (then it answered a bare 400)."""
    if content_length is None:
        return None
    if not re.fullmatch(r"[0-9]+", content_length.strip()):
        return "Content-Length must be a whole number of bytes"
    if transfer_encoding is not None:
        return "Content-Length and Transfer-Encoding are not allowed together"
    return None
