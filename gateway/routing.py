"""The gateway's HTTP entrypoint: every response, success or error, in the contract's shape.

Handlers run inside a nameko worker, so the request's span is current there; errors are
therefore turned into responses inside the worker, where the trace id is known.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from opentelemetry import propagate, trace
from pydantic import BaseModel
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from gateway import body_arrival
from gateway.auth import require_role
from gateway.body_arrival import IDLE_SECONDS
from gateway.http import (
    TRACE_HEADER,
    error_for_http_exception,
    json_response,
    response_for_exception,
    with_security_headers,
)
from gateway.unreadable_requests import AnswersUnreadableRequests
from services.common.errors import Unavailable, ValidationFailed, password_change_first

_tracer = trace.get_tracer("yiwang.gateway")
access_log = logging.getLogger("gateway.access")


@dataclass
class RouteDoc:
    """What the OpenAPI document says about one route."""

    method: str
    url: str
    summary: str
    auth: bool
    request_model: Any = None
    response_model: Any = None
    status: int = 200
    query: list[str] = field(default_factory=list)
    roles: tuple[str, ...] = ()
    query_model: Any = None  # the contract model the query is validated with, when there is one
    before_password_change: bool = False  # answers a token whose password an admin set
    also_status: tuple[int, ...] = ()  # other success statuses with the same body (a replay's 200)
    headers: tuple[HeaderDoc, ...] = ()  # request headers the route reads, besides the token
    upload: str | None = None  # a multipart/form-data body's file field, for an upload


@dataclass(frozen=True)
class HeaderDoc:
    """A request header a route reads, as its OpenAPI parameter says it."""

    name: str
    description: str
    schema: dict[str, Any]


ROUTES: list[RouteDoc] = []


def query_names(model: type[BaseModel]) -> list[str]:
    """The query parameters a contract model describes (by alias: `from` is `from_` in Python)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def refuse_unknown_query(request: Request, names: list[str]) -> None:
    """A parameter the operation does not have is an error (a misspelt `page-size` silently ignored
    would return the wrong page), not something to ignore."""
    unknown = sorted(set(request.args) - set(names))
    if unknown:
        details = [{"field": f"query.{name}", "issue": "not a parameter of this operation"} for name in unknown]
        raise ValidationFailed("unknown query parameter", details)


def drop_empty_query(request: Request) -> None:
    """An empty parameter (`?status=&q=`, as a portal's search form sends its blank fields) means
    the parameter was not given, not that it is a bad value."""
    if any(value == "" for value in request.args.values()):
        request.args = ImmutableMultiDict([(k, v) for k, v in request.args.items(multi=True) if v != ""])


def log_access(environ: dict[str, Any], status: str, headers: list[tuple[str, str]], seconds: float) -> None:
    """One line per request, as eventlet's access log had it, plus the trace id the response
    carries: the request's span has ended by now (it lived in the worker), so eventlet's own line
    could not lead to the trace."""
    answer = {name.lower(): value for name, value in headers}
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    client = f"{forwarded},{environ.get('REMOTE_ADDR', '-')}" if forwarded else environ.get("REMOTE_ADDR", "-")
    target = environ.get("PATH_INFO", "") + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
    access_log.info(
        '%s "%s %s" %s %s %.6f',
        client,
        environ.get("REQUEST_METHOD"),
        target,
        status.split(" ", 1)[0],
        answer.get("content-length", "-"),
        seconds,
        extra={"trace_id": answer.get(TRACE_HEADER.lower())},
    )


class ApiWsgiApp(WsgiApp):
    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        started = time.perf_counter()

        def secured(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = with_security_headers(headers)
            # The whole body is built when a response starts (a werkzeug Response of bytes).
            log_access(environ, status, headers, time.perf_counter() - started)
            return start_response(status, headers, exc_info)

        return self._route(environ, secured)

    def _route(self, environ: dict[str, Any], start_response: Callable) -> Any:
        try:
            self.url_map.bind_to_environ(environ).match()
        except HTTPException as exc:
            # Unknown path or method: still a JSON error.
            answer = functools.partial(error_for_http_exception, exc)
            return _answered_before_a_worker(environ, start_response, "unmatched", answer)
        # The body is read before a worker is taken (see body_arrival), within a budget of bytes.
        size = body_arrival.charge(environ)
        if not body_arrival.budget.take(size):
            busy = Unavailable("too many request bodies are arriving at once; try again in a moment")
            return self._refused_unread(environ, start_response, "busy", busy)
        try:
            not_arrived = body_arrival.read_ahead(environ, size)
            if not_arrived is not None:
                return self._refused_unread(environ, start_response, "body", not_arrived)
            return super().__call__(environ, start_response)
        finally:
            body_arrival.budget.give_back(size)

    @staticmethod
    def _refused_unread(environ: dict[str, Any], start_response: Callable, why: str, error: Exception) -> Any:
        """An answer to a request whose body was not read whole: its connection closes after it
        (the rest of the body would be taken for the next request, and what was read is gone)."""
        close_after_answer(environ)
        return _answered_before_a_worker(environ, start_response, why, functools.partial(response_for_exception, error))


def _answered_before_a_worker(
    environ: dict[str, Any], start_response: Callable, why: str, answer: Callable[[], Any]
) -> Any:
    """An answer given before any handler ran, made in the caller's trace when it gave one (api-v1:
    an incoming traceparent is honoured) or in a trace of its own (the answer carries its id)."""
    headers = {"traceparent": environ.get("HTTP_TRACEPARENT"), "tracestate": environ.get("HTTP_TRACESTATE")}
    caller = propagate.extract({k: v for k, v in headers.items() if v})
    with _tracer.start_as_current_span(
        f"{environ.get('REQUEST_METHOD')} ({why})", context=caller, kind=trace.SpanKind.SERVER
    ):
        return answer()(environ, start_response)


# The longest request line the gateway reads. Up to this, the route's checks answer it (a query
# parameter over its length is 422 naming it); past it, 400 (eventlet's own limit, 8 KiB, answered
# a bare 414).
MAX_REQUEST_LINE = 64 * 1024


def close_after_answer(environ: dict[str, Any]) -> None:
    """The request's connection closes once it is answered (its body was not read to its end)."""
    connection = environ.get(ApiProtocol.ENVIRON_KEY)
    if connection is not None:
        connection.close_connection = 1


class ApiProtocol(AnswersUnreadableRequests, HttpOnlyProtocol):
    """nameko's protocol, which puts itself in each request's environ: an answer given before any
    handler ran can close the connection (`close_connection`). A request it cannot read is refused
    in the contract's shape (`gateway.unreadable_requests`)."""

    ENVIRON_KEY = "yiwang.connection"

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[self.ENVIRON_KEY] = self
        return environ


class ApiWebServer(WebServer):
    def get_wsgi_app(self) -> WsgiApp:
        return ApiWsgiApp(self)

    def get_wsgi_server(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("protocol", ApiProtocol)
        server = super().get_wsgi_server(*args, **kwargs)
        server.log_output = False  # `log_access` writes the access line, with the trace id
        server.url_length_limit = MAX_REQUEST_LINE
        # A client silent this long is let go (eventlet waited for ever: a stalled upload held its
        # worker); a JSON body must also arrive whole within body_arrival's own bound.
        server.socket_timeout = IDLE_SECONDS
        return server


class ApiRoute(HttpRequestHandler):
    server = ApiWebServer()

    def response_from_exception(self, exc: BaseException) -> Response:
        return response_for_exception(exc)


def api(
    method: str,
    url: str,
    *,
    summary: str,
    auth: bool = True,
    request_model: Any = None,
    response_model: Any = None,
    status: int = 200,
    query: list[str] | type[BaseModel] | None = None,
    roles: tuple[str, ...] = (),
    before_password_change: bool = False,
    audit_reads: bool = False,
    also_status: tuple[int, ...] = (),
    headers: tuple[HeaderDoc, ...] = (),
    upload: str | None = None,
) -> Callable:
    """Declare a public API route and who may call it; the handler returns a body, or (status, body).

    `auth=False`: anyone. Otherwise a valid, unrevoked access token, and when `roles` is given one of
    them. This is the one place access is checked at the gateway; services then scope data to the
    caller (an applicant's own cases, a reviewer's department), answering 404 for what is not theirs.
    A change made by staff (anything but GET, by a reviewer, supervisor or admin) is reported to the
    service's `audit` hook once it succeeded. A token of an account whose password an admin set
    opens only the routes marked `before_password_change` (403 elsewhere) until its holder chose one.
    `audit_reads`: a staff member's read through this route is reported too (it shows a person's
    personal data: who looked at whose case is on record, 查询留痕).
    """
    model = query if isinstance(query, type) else None
    names = query_names(model) if model else list(query or [])
    ROUTES.append(
        RouteDoc(
            method,
            url,
            summary,
            auth,
            request_model,
            response_model,
            status,
            names,
            roles,
            model,
            before_password_change,
            also_status,
            headers,
            upload,
        )
    )

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def handler(self: Any, request: Request, **path: Any) -> Response:
            try:
                if auth:
                    principal = self.auth.principal(request)
                    if principal.password_change_required and not before_password_change:
                        raise password_change_first()
                    if roles:
                        require_role(principal, *roles)
                    path["principal"] = principal
                refuse_unknown_query(request, names)
                drop_empty_query(request)
                result = fn(self, request, **path)
                if isinstance(result, Response):
                    result.headers.setdefault("X-Trace-Id", json_response(None).headers["X-Trace-Id"])
                    response = result
                else:
                    code, body = result if isinstance(result, tuple) else (status, result)
                    response = json_response(body, code)
                principal, audit = path.get("principal"), getattr(self, "audit", None)
                # By account type: a staff token awaiting its password change has no roles.
                audited = method != "GET" or audit_reads
                if audit and audited and principal is not None and principal.account_type == "staff":
                    target = {k: str(v) for k, v in path.items() if k != "principal"}
                    audit(principal, request, f"{method} {url}", target, response.status_code)
                return response
            except Exception as exc:  # every failure becomes the contract's error shape
                return response_for_exception(exc)

        return ApiRoute.decorator(method, url)(handler)

    return decorator
