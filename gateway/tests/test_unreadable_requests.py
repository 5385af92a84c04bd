"""Requests eventlet refuses before any handler runs get the contract's error shape, over a socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import eventlet
import pytest
from opentelemetry.sdk.trace import TracerProvider

from gateway import routing, unreadable_requests


@pytest.fixture
def address(monkeypatch) -> Iterator[tuple[str, int]]:
    """The gateway's own wsgi server and protocol, around an app that answers 200 to anything."""
    monkeypatch.setattr(unreadable_requests, "_tracer", TracerProvider().get_tracer("test"))  # real trace ids
    web = routing.ApiWebServer()
    web.container = SimpleNamespace(config={})
    listener = eventlet.listen(("127.0.0.1", 0))

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"handled"]

    server = eventlet.spawn(eventlet.wsgi.server, listener, app, **_server_settings(web, listener, app))
    try:
        yield listener.getsockname()
    finally:
        server.kill()
        listener.close()


def _server_settings(web, listener, app) -> dict:
    made = web.get_wsgi_server(listener, app)
    return {
        "protocol": made.protocol,
        "url_length_limit": made.url_length_limit,
        "socket_timeout": made.socket_timeout,
        "log_output": False,
    }


def exchange(address: tuple[str, int], raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):  # the gateway closes the connection after refusing
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


REQUESTS = {
    "request line too long": b"GET /" + b"a" * (routing.MAX_REQUEST_LINE + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header line too long": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "headers too large": b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: %s\r\n" % (n, b"a" * 8000) for n in range(9))
    + b"\r\n",
    "too many headers": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(120)) + b"\r\n",
    "bad version": b"GET / HTTP/9.x\r\nHost: x\r\n\r\n",
    "content length not a number": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
    "negative content length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "length and chunked": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
}


@pytest.mark.parametrize("raw", REQUESTS.values(), ids=REQUESTS.keys())
def test_an_unreadable_request_is_a_400_in_the_contracts_shape(address, raw):
    status, headers, body = exchange(address, raw)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"  # the security headers, as on any answer
    error = json.loads(body)["error"]
    assert error["code"] == "malformed_request" and error["message"]
    assert error["trace_id"] and headers["x-trace-id"] == error["trace_id"]  # findable in the traces


def test_a_readable_request_still_reaches_the_app(address):
    status, _, body = exchange(
        address, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab"
    )
    assert (status, body) == (200, b"handled")
