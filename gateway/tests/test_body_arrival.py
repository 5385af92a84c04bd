"""A JSON body is read whole, within a bound, before a worker takes the request."""

from __future__ import annotations

import io
import json

import eventlet
import pytest
from werkzeug.test import EnvironBuilder

from gateway import body_arrival
from gateway.body_arrival import charge, read_ahead
from gateway.http import MAX_JSON_BODY


def ahead(env: dict):
    return read_ahead(env, charge(env))


class Trickle:
    """A client's body: what it has sent, then nothing (or gone, with `then`)."""

    def __init__(self, sent: bytes, then: BaseException | None = None) -> None:
        self.sent, self.then = io.BytesIO(sent), then

    def read(self, size: int) -> bytes:
        part = self.sent.read(size)
        if part:
            return part
        if self.then is not None:
            raise self.then
        eventlet.sleep(3600)  # a client that stopped sending
        return b""


def environ(
    body: Trickle | io.BytesIO, length: int | None, content_type: str = "application/json", **extra: str
) -> dict:
    env = EnvironBuilder(path="/api/v1/auth/login", method="POST").get_environ()
    env.update({"CONTENT_TYPE": content_type, "wsgi.input": body, **extra})
    env.pop("CONTENT_LENGTH", None)
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    return env


def test_a_body_that_stops_arriving_is_refused_within_the_bound(monkeypatch):
    monkeypatch.setattr(body_arrival, "BODY_WAIT_SECONDS", 0.05)
    refused = ahead(environ(Trickle(b'{"user'), 100))
    assert refused is not None and refused.code == "malformed_request" and "did not arrive" in refused.message


def test_a_client_that_goes_silent_or_away_is_refused():
    refused = ahead(environ(Trickle(b'{"user', then=TimeoutError("timed out")), 100))
    assert refused is not None and "stopped arriving" in refused.message


def test_a_body_shorter_than_its_length_is_refused():
    refused = ahead(environ(io.BytesIO(b'{"a": 1}'), 100))  # the client closed the connection
    assert refused is not None and "ended before its Content-Length" in refused.message


def test_a_whole_body_is_kept_for_the_handler():
    body = json.dumps({"username": "张三", "password": "x" * 10}).encode()
    env = environ(Trickle(body), len(body))
    assert ahead(env) is None
    assert env["wsgi.input"].read() == body and env["CONTENT_LENGTH"] == str(len(body))


def test_a_chunked_json_body_is_read_as_one():
    # eventlet hands werkzeug no length for it: the handler read an empty body ("not valid JSON").
    body = b'{"username": "13800138000", "password": "s3cret-pass"}'
    env = environ(io.BytesIO(body), None, HTTP_TRANSFER_ENCODING="chunked")
    assert ahead(env) is None
    assert env["CONTENT_LENGTH"] == str(len(body)) and "HTTP_TRANSFER_ENCODING" not in env
    assert env["wsgi.input"].read() == body


def test_a_chunked_body_too_large_is_left_to_say_so():
    env = environ(io.BytesIO(b" " * (MAX_JSON_BODY + 10)), None, HTTP_TRANSFER_ENCODING="chunked")
    assert ahead(env) is None
    assert int(env["CONTENT_LENGTH"]) == MAX_JSON_BODY + 1  # read_json answers 413 by it


@pytest.mark.parametrize(
    ("content_type", "length"),
    [("multipart/form-data; boundary=x", 100), ("application/json", MAX_JSON_BODY + 1), ("application/json", 0)],
)
def test_what_is_not_a_json_body_within_the_limit_is_not_read_here(content_type, length):
    stream = Trickle(b"")  # reading it would wait for ever
    env = environ(stream, length, content_type)
    assert charge(env) == 0 and ahead(env) is None and env["wsgi.input"] is stream
