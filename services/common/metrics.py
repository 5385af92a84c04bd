"""Prometheus metrics, one endpoint per process (`YIWANG_METRICS_PORT`; `infra/system.py` gives
each process its own, from 9100 up).

- `yiwang_entrypoint_seconds` / `yiwang_entrypoint_calls_total`: every RPC, HTTP route, event
  handler and timer, by service, entrypoint and outcome (ok, expected: a domain error such as a
  validation failure, error);
- `yiwang_events_published_total`, `yiwang_events_consumed_total`, `yiwang_events_dead_lettered_total`
  by event type;
- `yiwang_queue_messages` / `yiwang_queue_consumers`: depth of this service's queues, read from the
  RabbitMQ management API when scraped;
- `yiwang_store_commands_total` / `yiwang_store_command_seconds`: every command this process sends
  to the document server, by command and collection (what a case costs the store, and where);
- services add their own (intake: cases by status; notification: deliveries by channel and status).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlparse

import requests
from nameko.extensions import DependencyProvider
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pymongo import monitoring

from services.common.errors import EXPECTED_ERRORS

log = logging.getLogger(__name__)

ENTRYPOINT_SECONDS = Histogram(
    "yiwang_entrypoint_seconds",
    "Time spent in an entrypoint (RPC, HTTP route, event handler, timer)",
    ["service", "entrypoint", "kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ENTRYPOINT_CALLS = Counter(
    "yiwang_entrypoint_calls", "Entrypoint calls by outcome", ["service", "entrypoint", "kind", "outcome"]
)
EVENTS_PUBLISHED = Counter("yiwang_events_published", "Events published (confirmed by the broker)", ["type"])
EVENTS_CONSUMED = Counter("yiwang_events_consumed", "Events handled", ["queue"])
EVENTS_DEAD_LETTERED = Counter("yiwang_events_dead_lettered", "Events dead-lettered", ["queue"])

STORE_COMMANDS = Counter("yiwang_store_commands", "Commands sent to the document server", ["command", "collection"])
STORE_COMMAND_SECONDS = Histogram(
    "yiwang_store_command_seconds",
    "Time from sending a command to the document server to its answer",
    ["command"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# Commands the driver sends for itself, not on behalf of the service's code.
_DRIVER_COMMANDS = frozenset({"hello", "ismaster", "ping", "endsessions", "buildinfo"})


class StoreCommandListener(monitoring.CommandListener):
    """Counts and times the store commands of the process (pymongo tells every client's listeners)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name.lower()
        if name in _DRIVER_COMMANDS:
            return
        target = event.command.get(event.command_name)
        STORE_COMMANDS.labels(name, target if isinstance(target, str) else "").inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._timed(event.command_name, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._timed(event.command_name, event.duration_micros)

    @staticmethod
    def _timed(command_name: str, micros: int) -> None:
        name = command_name.lower()
        if name not in _DRIVER_COMMANDS:
            STORE_COMMAND_SECONDS.labels(name).observe(micros / 1e6)


_lock = threading.Lock()
_started: set[int] = set()


def serve(port: int) -> None:
    """Start this process's endpoint once (several services in one process share it)."""
    with _lock:
        if port in _started:
            return
        start_http_server(port, addr=os.environ.get("YIWANG_METRICS_HOST", "127.0.0.1"))
        _started.add(port)


def outcome_of(exc_info: Any, result: Any = None) -> str:
    """ok, expected (a domain refusal) or error. An HTTP route answers every exception as a
    response, so there the status says it: a 4xx is expected, a 5xx an error."""
    if exc_info is not None:
        return "expected" if isinstance(exc_info[1], EXPECTED_ERRORS) else "error"
    status = getattr(result, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return "error" if status >= 500 else "expected"
    return "ok"


class QueueDepthCollector(Collector):
    """Depth and consumers of this service's queues, at scrape time."""

    def __init__(self, service: str, amqp_uri: str, management_url: str) -> None:
        self.service = service
        broker = urlparse(amqp_uri)
        self.vhost = unquote(broker.path.lstrip("/")) or "/"
        self.management_url = management_url.rstrip("/")
        # The broker's own account: the compose stack has no guest.
        self.auth = (unquote(broker.username or "guest"), unquote(broker.password or "guest"))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        messages = GaugeMetricFamily("yiwang_queue_messages", "Messages waiting in a queue", labels=["queue"])
        consumers = GaugeMetricFamily("yiwang_queue_consumers", "Consumers of a queue", labels=["queue"])
        try:
            response = requests.get(
                f"{self.management_url}/api/queues/{quote(self.vhost, safe='')}",
                params={"columns": "name,messages,consumers"},
                auth=self.auth,
                timeout=2,
            )
            response.raise_for_status()
            for queue in response.json():
                if self._consumed_here(queue["name"]):
                    messages.add_metric([queue["name"]], queue.get("messages", 0))
                    consumers.add_metric([queue["name"]], queue.get("consumers", 0))
        except (requests.RequestException, ValueError):
            log.warning("queue depths unavailable from the management API")
        yield messages
        yield consumers

    def _consumed_here(self, name: str) -> bool:
        """This service's queues (RPC, handlers, their retry and dead-letter queues), not every queue
        whose name mentions it (`dlq.evt-intake-...--approval.on_case_submitted` is approval's)."""
        return name == f"rpc-{self.service}" or f"--{self.service}." in name


class Metrics(DependencyProvider):
    """Declare once per service class: serves the endpoint and times every entrypoint."""

    def __init__(self) -> None:
        self._started_at: dict[Any, float] = {}

    def setup(self) -> None:
        port = int(os.environ.get("YIWANG_METRICS_PORT") or 0)
        if not port:
            return
        serve(port)
        config = self.container.config
        # The management API lives on the broker's host (127.0.0.1 here, `rabbitmq` in compose).
        host = urlparse(config.get("AMQP_URI", "")).hostname or "127.0.0.1"
        management = f"http://{host}:{os.environ.get('YIWANG_RABBIT_MGMT_PORT', '15672')}"
        collector = QueueDepthCollector(self.container.service_name, config.get("AMQP_URI", ""), management)
        REGISTRY.register(collector)
        self._collectors = [collector]

    def stop(self) -> None:
        for collector in getattr(self, "_collectors", []):
            REGISTRY.unregister(collector)
        self._collectors = []

    def worker_setup(self, worker_ctx: Any) -> None:
        self._started_at[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        started = self._started_at.pop(worker_ctx, None)
        if started is None:
            return
        entrypoint = worker_ctx.entrypoint
        labels = (worker_ctx.service_name, entrypoint.method_name, type(entrypoint).__name__)
        ENTRYPOINT_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        ENTRYPOINT_CALLS.labels(*labels, outcome_of(exc_info, result)).inc()
