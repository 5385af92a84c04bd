"""The fault tests' own system: a RabbitMQ node and a document server of their own, Toxiproxy in
front of both, and the six Yiwang processes started exactly like `make run`."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra import system
from tests.faults.audit import Figures, Store
from tests.faults.infrastructure import Broker, DocumentServer, Toxiproxy
from tests.support import free_port, sign_up

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults"
FIGURES: list[Figures] = []  # printed at the end of the run


@dataclass
class FaultySystem:
    broker: Broker
    docserver: DocumentServer
    toxiproxy: Toxiproxy
    running: system.System
    store: Store

    @property
    def base_url(self) -> str:
        return self.running.base_url

    def applicants(self, count: int) -> list[dict[str, str]]:
        return [sign_up(self.base_url, timeout=15) for _ in range(count)]


@pytest.fixture(scope="session")
def faulty() -> Iterator[FaultySystem]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    (ARTIFACTS / "logs").mkdir(parents=True)
    broker, docserver = Broker(), DocumentServer(ARTIFACTS / "docserver-data", ARTIFACTS / "logs" / "docserver.log")
    toxiproxy = Toxiproxy(ARTIFACTS / "logs" / "toxiproxy.log")
    broker.start()
    docserver.start()
    toxiproxy.start()
    running = None
    try:
        broker.create_vhost()
        prefix = f"faults{uuid.uuid4().hex[:6]}"
        env = {
            "YIWANG_AMQP_PORT": str(toxiproxy.proxy("amqp", broker.amqp_port)),
            "YIWANG_RABBIT_MGMT_PORT": str(broker.mgmt_port),
            "YIWANG_RABBIT_VHOST": broker.vhost,
            "YIWANG_MONGO_PORT": str(toxiproxy.proxy("mongo", docserver.port)),
            "YIWANG_DB_PREFIX": prefix,
            "YIWANG_HTTP_PORT": str(free_port()),
            "YIWANG_SMS_PORT": str(free_port()),
            "YIWANG_SMTP_PORT": str(free_port()),
            "YIWANG_METRICS_BASE_PORT": "0",
            "YIWANG_TRUSTED_PROXIES": "127.0.0.1",
            "YIWANG_NOTIFY_RETRY_BASE": "0.5",
            "YIWANG_NOTIFY_RETRY_CAP": "2",
            "OTEL_TRACES_EXPORTER": "none",  # the shared trace viewer is not part of this system
        }
        running = system.start_ready(env, log_dir=ARTIFACTS / "logs", timeout=180)
        yield FaultySystem(broker, docserver, toxiproxy, running, Store(docserver.uri, prefix))
    finally:
        if running is not None:
            system.stop(running)
        toxiproxy.stop()
        broker.delete_vhost()
        broker.stop()
        docserver.stop()
        docserver.close()
        shutil.rmtree(ARTIFACTS / "docserver-data", ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("faults under load: figures")
        for figures in FIGURES:
            terminalreporter.write_line(figures.line())
