import json
import logging
from types import SimpleNamespace

import eventlet
import pytest
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from contracts.common import Principal
from gateway import body_arrival, routing
from gateway.routing import ApiRoute, api
from services.common.errors import NotFound, Unauthenticated

PRINCIPAL = Principal(user_id="u1", account_type="citizen", roles=["applicant"])


class FakeAuth:
    def __init__(self, principal=PRINCIPAL, error=None):
        self.principal_value, self.error, self.requests = principal, error, []

    def principal(self, request):
        self.requests.append(request)
        if self.error:
            raise self.error
        return self.principal_value


@pytest.fixture
def routes(monkeypatch):
    monkeypatch.setattr(routing, "ROUTES", [])
    return routing.ROUTES


def _request(path="/x"):
    return Request(EnvironBuilder(path=path).get_environ())


def _json(response):
    return json.loads(response.get_data(as_text=True))


def test_declaring_a_route_documents_it(routes):
    @api("POST", "/api/v1/things/<thing_id>", summary="Make a thing", status=201, query=["q"])
    def handler(self, request, principal, thing_id):
        return {}

    [doc] = routes
    assert (doc.method, doc.url, doc.summary, doc.auth, doc.status, doc.query) == (
        "POST",
        "/api/v1/things/<thing_id>",
        "Make a thing",
        True,
        201,
        ["q"],
    )
    [entrypoint] = getattr(handler, ENTRYPOINT_EXTENSIONS_ATTR)
    assert isinstance(entrypoint, ApiRoute)
    assert (entrypoint.method, entrypoint.url) == ("POST", "/api/v1/things/<thing_id>")


def test_authenticated_route_gets_the_principal_and_path(routes):
    seen = {}

    @api("GET", "/things/<thing_id>", summary="s")
    def handler(self, request, principal, thing_id):
        seen.update(principal=principal, thing_id=thing_id)
        return {"id": thing_id}

    service = SimpleNamespace(auth=FakeAuth())
    response = handler(service, _request(), thing_id="t1")
    assert response.status_code == 200
    assert _json(response) == {"id": "t1"}
    assert seen == {"principal": PRINCIPAL, "thing_id": "t1"}
    assert response.headers["X-Trace-Id"] is not None


def test_a_route_records_the_roles_it_needs(routes):
    @api("POST", "/admin/things", summary="s", roles=("admin", "supervisor"))
    def handler(self, request, principal):
        return {}

    assert routes[0].roles == ("admin", "supervisor")


def test_routes_need_no_role_by_default(routes):
    @api("GET", "/me", summary="s")
    def handler(self, request, principal):
        return {"user_id": principal.user_id}

    assert routes[0].roles == ()
    staff_without_roles = Principal(user_id="x", account_type="staff", roles=[])
    assert handler(SimpleNamespace(auth=FakeAuth(staff_without_roles)), _request()).status_code == 200


def test_a_route_for_admins_answers_403_to_an_applicant(routes):
    called = []

    @api("POST", "/admin/staff", summary="s", roles=("admin",))
    def handler(self, request, principal):
        called.append(principal)
        return {}

    response = handler(SimpleNamespace(auth=FakeAuth(PRINCIPAL)), _request())
    assert response.status_code == 403
    error = _json(response)["error"]
    assert error["code"] == "forbidden"
    assert "admin" in error["message"]
    assert response.headers["X-Trace-Id"] is not None
    assert called == []


def test_a_route_for_admins_lets_an_admin_in(routes):
    admin = Principal(user_id="a1", account_type="staff", roles=["admin"])

    @api("POST", "/admin/staff", summary="s", roles=("admin",))
    def handler(self, request, principal):
        return {"by": principal.user_id}

    response = handler(SimpleNamespace(auth=FakeAuth(admin)), _request())
    assert response.status_code == 200
    assert _json(response) == {"by": "a1"}


def test_any_one_of_the_roles_is_enough(routes):
    supervisor = Principal(user_id="s1", account_type="staff", roles=["reviewer", "supervisor"])

    @api("GET", "/stats", summary="s", roles=("admin", "supervisor"))
    def handler(self, request, principal):
        return {}

    assert handler(SimpleNamespace(auth=FakeAuth(supervisor)), _request()).status_code == 200
    assert handler(SimpleNamespace(auth=FakeAuth(PRINCIPAL)), _request()).status_code == 403


def test_without_a_token_a_role_route_is_401_not_403(routes):
    @api("POST", "/admin/staff", summary="s", roles=("admin",))
    def handler(self, request, principal):
        return {}

    response = handler(SimpleNamespace(auth=FakeAuth(error=Unauthenticated("send a token"))), _request())
    assert response.status_code == 401


def test_public_route_does_not_authenticate(routes):
    @api("GET", "/healthz", summary="s", auth=False)
    def handler(self, request):
        return {"status": "ok"}

    auth = FakeAuth(error=Unauthenticated("no"))
    assert handler(SimpleNamespace(auth=auth), _request()).status_code == 200
    assert auth.requests == []


def test_missing_authentication_is_a_401_in_the_contract_shape(routes):
    called = []

    @api("GET", "/me", summary="s")
    def handler(self, request, principal):
        called.append(True)

    response = handler(SimpleNamespace(auth=FakeAuth(error=Unauthenticated("send a token"))), _request())
    assert response.status_code == 401
    assert _json(response)["error"]["code"] == "unauthenticated"
    assert called == []


def test_declared_status_is_used(routes):
    @api("POST", "/things", summary="s", auth=False, status=201)
    def handler(self, request):
        return {"id": 1}

    assert handler(SimpleNamespace(), _request()).status_code == 201


def test_handler_may_choose_the_status(routes):
    @api("GET", "/readyz", summary="s", auth=False)
    def handler(self, request):
        return 503, {"status": "unavailable"}

    response = handler(SimpleNamespace(), _request())
    assert response.status_code == 503
    assert _json(response) == {"status": "unavailable"}


def test_no_content(routes):
    @api("POST", "/things/<thing_id>/read", summary="s", status=204)
    def handler(self, request, principal, thing_id):
        return 204, None

    response = handler(SimpleNamespace(auth=FakeAuth()), _request(), thing_id="n1")
    assert response.status_code == 204
    assert response.get_data() == b""


def test_a_ready_response_passes_through_with_a_trace_header(routes):
    @api("GET", "/raw", summary="s", auth=False)
    def handler(self, request):
        return Response("plain", status=202, mimetype="text/plain")

    response = handler(SimpleNamespace(), _request())
    assert response.status_code == 202
    assert response.get_data(as_text=True) == "plain"
    assert "X-Trace-Id" in response.headers


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [(NotFound("no case"), 404, "not_found"), (KeyError("password_hash"), 500, "internal_error")],
)
def test_handler_errors_become_contract_errors(routes, exc, status, code):
    @api("GET", "/boom", summary="s", auth=False)
    def handler(self, request):
        raise exc

    response = handler(SimpleNamespace(), _request())
    assert response.status_code == status
    assert _json(response)["error"]["code"] == code
    assert "password_hash" not in response.get_data(as_text=True)


def test_route_exceptions_map_through_response_from_exception():
    route = ApiRoute("GET", "/x")
    response = route.response_from_exception(Unauthenticated("who"))
    assert response.status_code == 401
    assert _json(response)["error"]["code"] == "unauthenticated"


def _app_response(environ):
    from werkzeug.routing import Map, Rule

    from gateway.routing import ApiWsgiApp

    app = ApiWsgiApp.__new__(ApiWsgiApp)  # only the unmatched path is exercised: no server needed
    app.url_map = Map([Rule("/known", methods=["GET"], endpoint="known")])
    status = {}

    def start_response(line, headers, exc_info=None):
        status["line"], status["headers"] = line, dict(headers)

    body = b"".join(app(environ, start_response))
    return status["line"], status["headers"], json.loads(body)


def test_unknown_path_is_a_json_404():
    line, headers, body = _app_response(EnvironBuilder(path="/nowhere").get_environ())
    assert line.startswith("404")
    assert headers["Content-Type"] == "application/json"
    assert body["error"]["code"] == "not_found"


def test_wrong_method_is_a_json_405():
    line, headers, body = _app_response(EnvironBuilder(path="/known", method="DELETE").get_environ())
    assert line.startswith("405")
    assert body["error"]["code"] == "malformed_request"
    assert set(headers["Allow"].split(", ")) == {"GET", "HEAD"}


def test_every_answer_writes_an_access_line_that_names_its_trace(caplog, monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setattr(routing, "_tracer", TracerProvider().get_tracer("test"))  # real trace ids
    environ = EnvironBuilder(
        path="/nowhere",
        query_string="page=2",
        headers={"X-Forwarded-For": "10.1.2.3"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        _line, headers, _body = _app_response(environ.get_environ())
    [record] = [r for r in caplog.records if r.name == "gateway.access"]
    message = record.getMessage()
    assert message.startswith('10.1.2.3,127.0.0.1 "GET /nowhere?page=2" 404 ')
    assert message.split(" ")[4] == headers["Content-Length"]
    # The request's span has ended by now: the line carries the trace id the answer carried.
    assert record.trace_id == headers["X-Trace-Id"] and len(record.trace_id) == 32


@pytest.mark.parametrize("path, method", [("/nowhere", "GET"), ("/known", "DELETE")])
def test_an_unmatched_request_answers_in_the_callers_trace(monkeypatch, path, method):
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setattr(routing, "_tracer", TracerProvider().get_tracer("test"))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    environ = EnvironBuilder(path=path, method=method, headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    _line, headers, body = _app_response(environ.get_environ())
    assert headers["X-Trace-Id"] == body["error"]["trace_id"] == trace_id


def test_eventlets_own_access_line_is_off():
    server = routing.ApiWebServer()
    server.container = SimpleNamespace(config={})
    listener = eventlet.listen(("127.0.0.1", 0))
    try:
        assert server.get_wsgi_server(listener, lambda environ, start_response: []).log_output is False
    finally:
        listener.close()


def test_staff_changes_are_reported_to_the_audit_hook_and_nothing_else_is(routes):
    recorded = []

    @api("POST", "/cases/<case_no>/decisions", summary="s", roles=("reviewer",))
    def decide(self, request, principal, case_no):
        return 201, {"case_no": case_no}

    @api("GET", "/cases/<case_no>", summary="s")
    def read(self, request, principal, case_no):
        return {}

    reviewer = Principal(user_id="r-1", account_type="staff", roles=["reviewer"], department_code="620524GA")
    service = SimpleNamespace(auth=FakeAuth(reviewer), audit=lambda *args: recorded.append(args))
    assert decide(service, _request(), case_no="C-1").status_code == 201
    [(who, _, action, target, status)] = recorded
    assert (who, action, target, status) == (reviewer, "POST /cases/<case_no>/decisions", {"case_no": "C-1"}, 201)

    read(service, _request(), case_no="C-1")  # reads are not changes

    @api("POST", "/cases", summary="s", roles=("applicant",))
    def submit(self, request, principal):
        return 201, {}

    applicant = SimpleNamespace(auth=FakeAuth(PRINCIPAL), audit=lambda *args: recorded.append(args))
    assert submit(applicant, _request()).status_code == 201  # an applicant's own change: not staff's
    assert len(recorded) == 1

    @api("PUT", "/me/password", summary="s", status=204, before_password_change=True)
    def change(self, request, principal):
        return 204, None

    # A staff token awaiting its password change has no roles; its change is staff's all the same.
    awaiting = Principal(user_id="r-2", account_type="staff", roles=[], password_change_required=True)
    flagged = SimpleNamespace(auth=FakeAuth(awaiting), audit=lambda *args: recorded.append(args))
    assert change(flagged, _request()).status_code == 204
    assert recorded[-1][0] == awaiting and recorded[-1][2] == "PUT /me/password"


def test_empty_query_parameters_are_not_given_and_unknown_ones_still_refused(routes):
    seen = []

    @api("GET", "/api/v1/things", summary="s", auth=False, query=["status", "q"])
    def handler(self, request):
        seen.append(dict(request.args))
        return {}

    assert handler(SimpleNamespace(), _request("/api/v1/things?status=&q=%E6%88%B7")).status_code == 200
    assert seen == [{"q": "户"}]
    refused = handler(SimpleNamespace(), _request("/api/v1/things?stauts="))
    assert refused.status_code == 422
    assert _json(refused)["error"]["details"][0]["field"] == "query.stauts"


def test_a_staff_read_of_a_route_that_shows_personal_data_is_on_record(routes):
    recorded = []

    @api("GET", "/cases/<case_no>", summary="s", audit_reads=True)
    def read(self, request, principal, case_no):
        return {}

    supervisor = Principal(user_id="s-1", account_type="staff", roles=["supervisor"])
    service = SimpleNamespace(auth=FakeAuth(supervisor), audit=lambda *args: recorded.append(args))
    read(service, _request(), case_no="C-9")
    [(who, _, action, target, status)] = recorded
    assert (who, action, target, status) == (supervisor, "GET /cases/<case_no>", {"case_no": "C-9"}, 200)
    own = SimpleNamespace(auth=FakeAuth(PRINCIPAL), audit=lambda *args: recorded.append(args))
    read(own, _request(), case_no="C-9")  # the applicant reading their own case: not staff's
    assert len(recorded) == 1


def test_a_json_body_that_does_not_arrive_is_answered_before_any_worker_is_taken(monkeypatch):
    # The route's handler (a worker) never runs: ten such requests stopped the gateway before.
    from werkzeug.routing import Map, Rule

    from gateway.routing import ApiWsgiApp

    class Stalled:
        def read(self, size):
            eventlet.sleep(3600)

    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setattr(routing, "_tracer", TracerProvider().get_tracer("test"))
    monkeypatch.setattr(body_arrival, "BODY_WAIT_SECONDS", 0.05)
    app = ApiWsgiApp.__new__(ApiWsgiApp)
    app.url_map = Map([Rule("/login", methods=["POST"], endpoint="login")])
    monkeypatch.setattr(routing.WsgiApp, "__call__", lambda *a: pytest.fail("a worker took the request"))
    environ = EnvironBuilder(path="/login", method="POST", content_type="application/json").get_environ()
    connection = SimpleNamespace(close_connection=0)  # eventlet's protocol (routing.ApiProtocol)
    environ.update({"CONTENT_LENGTH": "100", "wsgi.input": Stalled(), routing.ApiProtocol.ENVIRON_KEY: connection})
    status = {}
    body = b"".join(app(environ, lambda line, headers, exc_info=None: status.update(line=line, headers=dict(headers))))
    assert status["line"].startswith("400") and status["headers"]["X-Trace-Id"]
    assert json.loads(body)["error"]["code"] == "malformed_request"
    # What was read of it is gone, and the rest would be read as the next request: closed.
    assert connection.close_connection == 1
    assert body_arrival.budget.held == 0


def test_bodies_read_ahead_are_bounded_by_a_budget(monkeypatch):
    from werkzeug.routing import Map, Rule

    from gateway.routing import ApiWsgiApp

    monkeypatch.setattr(body_arrival, "budget", body_arrival.ByteBudget(150))
    app = ApiWsgiApp.__new__(ApiWsgiApp)
    app.url_map = Map([Rule("/login", methods=["POST"], endpoint="login")])
    seen = []
    monkeypatch.setattr(
        routing.WsgiApp, "__call__", lambda self, env, start: seen.append(env["wsgi.input"].read()) or []
    )

    def post(body: bytes):
        environ = EnvironBuilder(path="/login", method="POST", data=body, content_type="application/json").get_environ()
        environ[routing.ApiProtocol.ENVIRON_KEY] = connection = SimpleNamespace(close_connection=0)
        status = {}
        answer = b"".join(app(environ, lambda line, headers, exc_info=None: status.update(line=line)))
        return status.get("line", "200 OK"), answer, connection

    assert post(b'{"a": 1}')[0].startswith("200") and seen == [b'{"a": 1}']
    assert body_arrival.budget.held == 0  # given back once answered
    body_arrival.budget.take(100)  # other bodies being read
    line, answer, connection = post(b'{"b": "' + b"x" * 60 + b'"}')
    assert line.startswith("503") and json.loads(answer)["error"]["code"] == "unavailable"
    assert len(seen) == 1 and connection.close_connection == 1  # never read, never handled


def test_a_silent_client_is_let_go():
    server = routing.ApiWebServer()
    server.container = SimpleNamespace(config={})
    listener = eventlet.listen(("127.0.0.1", 0))
    try:
        assert server.get_wsgi_server(listener, lambda environ, start_response: []).socket_timeout == 30
    finally:
        listener.close()
