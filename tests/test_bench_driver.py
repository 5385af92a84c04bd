"""The closed-loop driver of `make bench`, `bench-cpu` and `bench-tracing` (loadtests.bench_tracing.drive)
against a stand-in gateway: what goes wrong is counted, not lost with the client that met it."""

from __future__ import annotations

import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from loadtests.bench_tracing import drive, rate


class Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_every_answer_is_counted_with_its_latency_and_the_rate_counts_what_was_answered_in_time():
    answers = iter([201, 201, 500] * 10_000)

    def gateway(environ, start_response):
        status = next(answers)
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [b"{}"]

    server = make_server("127.0.0.1", 0, gateway, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = drive(f"http://127.0.0.1:{server.server_port}", ["t1", "t2"], 0.5)
    finally:
        server.shutdown()
    assert result["accepted"] > 0 and result["errors"] > 0
    assert len(result["latencies"]) == result["accepted"] + result["errors"]  # failures' latencies too
    assert result["in_time"] <= result["accepted"] and rate(result) == result["in_time"] / 0.5


def test_a_connection_that_fails_is_an_error_and_its_client_goes_on():
    # Before, the exception ended the client's thread unseen: fewer clients, and "0 errors".
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    result = drive(f"http://127.0.0.1:{port}", ["t1"], 0.3)
    assert result["accepted"] == 0 and result["errors"] > 1  # more than one: the client went on
    assert result["errors"] < 10  # a moment between tries, not thousands of instant refusals
    assert result["latencies"] == []  # refused at once: no latency to pull the percentiles down
