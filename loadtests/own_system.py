"""A whole Yiwang system of a benchmark's own: its own vhost, databases and ports, started like
`make run`, stopped and removed afterwards."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra import system
from tests.support import create_vhost, delete_vhost, drop_databases, free_port


@dataclass
class OwnSystem:
    base_url: str
    vhost: str
    db_prefix: str
    running: system.System


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (`kill`, `timeout`) ends the run as Ctrl-C does, through the `finally` blocks that
    stop its system: Python's default for SIGTERM exits at once and left every process running."""

    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, exit_now)
    except ValueError:  # not the main thread: only it may set handlers (and receives signals)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def own_system(name: str, log_dir: Path, **env: str) -> Iterator[OwnSystem]:
    """`env` adds to (or overrides) the isolation settings; the system is ready when this yields."""
    vhost, prefix = create_vhost(f"yiwang-{name}"), f"{name}{uuid.uuid4().hex[:6]}"
    settings = {
        "YIWANG_RABBIT_VHOST": vhost,
        "YIWANG_DB_PREFIX": prefix,
        "YIWANG_HTTP_PORT": str(free_port()),
        "YIWANG_SMS_PORT": str(free_port()),
        "YIWANG_SMTP_PORT": str(free_port()),
        "YIWANG_METRICS_BASE_PORT": "0",
        # Benchmarks register every applicant from this machine (the load test gives each its own
        # address through X-Forwarded-For): registrations per address are not what they measure.
        "YIWANG_REGISTRATION_ADDRESS_LIMIT": "1000000",
        **env,
    }
    with terminate_as_exit():
        try:
            running = system.start_ready(settings, log_dir=log_dir, timeout=180)
            try:
                yield OwnSystem(running.base_url, vhost, prefix, running)
            finally:
                system.stop(running)
        finally:
            delete_vhost(vhost)
            drop_databases(prefix)
