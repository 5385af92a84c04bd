"""The gateway's HTTP spans never read the request body (the route reads it, bounded)."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.http_tracing import BodyUnreadHttpAdapter


class Unreadable(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the span read the request body")


class Service:
    def route(self, request: Request) -> None: ...


def worker_ctx_for(request: Request) -> Any:
    pool = SimpleNamespace(running=lambda: 1, free=lambda: 9)
    container = SimpleNamespace(service_cls=Service, _worker_pool=pool)
    entrypoint = SimpleNamespace(method_name="route", container=container, url="/api/v1/cases")
    return SimpleNamespace(
        service_name="gateway", container=container, entrypoint=entrypoint, args=(request,), kwargs={}, data={}
    )


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
def test_the_span_takes_its_attributes_without_reading_the_body(content_type: str) -> None:
    environ = EnvironBuilder(
        method="POST", path="/api/v1/cases", headers={"Content-Length": str(2**31)}, content_type=content_type
    ).get_environ()
    environ["wsgi.input"] = Unreadable()
    attributes = BodyUnreadHttpAdapter({}).get_attributes(worker_ctx_for(Request(environ)))
    assert attributes["http.method"] == "POST" and attributes["method_name"] == "route"
    assert not any(key.startswith(("request.data", "call_args")) for key in attributes)


def test_nameko_opentelemetrys_own_adapter_reads_it() -> None:
    # Why the subclass exists: should the library stop reading the body, this test says so.
    from nameko_opentelemetry.http import HttpEntrypointAdapter

    environ = EnvironBuilder(method="POST", path="/", content_type="application/json").get_environ()
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = Unreadable(), "10"
    with pytest.raises(AssertionError, match="read the request body"):
        HttpEntrypointAdapter({}).get_attributes(worker_ctx_for(Request(environ)))


@pytest.mark.parametrize(
    ("status", "code"),
    [(200, "UNSET"), (401, "UNSET"), (404, "UNSET"), (422, "UNSET"), (429, "UNSET"), (500, "ERROR"), (503, "ERROR")],
)
def test_a_refusal_is_the_clients_and_leaves_the_span_unset_a_5xx_is_an_error(status: int, code: str) -> None:
    from nameko.web.handlers import Response

    adapter = BodyUnreadHttpAdapter({})
    worker_ctx = worker_ctx_for(Request(EnvironBuilder(method="GET", path="/api/v1/cases").get_environ()))
    answered = adapter.get_status(worker_ctx, Response("{}", status=status), None)
    assert answered.status_code.name == code
