"""The whole system, driven only over HTTP, in one of two modes:

- local (the default, `make test-e2e`): started as processes exactly like `make run`, isolated in
  its own vhost, databases and port;
- docker (`YIWANG_E2E_MODE=docker`, `make test-docker`): the docker-compose.yml stack, built and
  started by pytest-docker as a project of its own, on free host ports.

The same tests run in both; those that read the system's insides (log and span files, the local
Maildir, metrics ports, the document store) are marked `local_only` and skipped in docker mode.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from infra import system
from services.identity.code_secret import code_secret
from services.identity.first_admin import first_admin_password
from tests import support
from tests.support import MONGO_PORT, create_vhost, delete_vhost, drop_databases, free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
DOCKER = os.environ.get("YIWANG_E2E_MODE", "local") == "docker"

# What the tests need of any system they drive, in both modes.
SETTINGS = {
    "YIWANG_LOGIN_ACCOUNT_LIMIT": "3",
    "YIWANG_LOGIN_ADDRESS_LIMIT": "6",
    # The tests' own registrations each come from an address of their own (support.sign_up), but
    # a few post from this machine's.
    "YIWANG_REGISTRATION_ADDRESS_LIMIT": "20",
    # Quick retries of notifications.
    "YIWANG_NOTIFY_RETRY_BASE": "0.5",
    "YIWANG_NOTIFY_RETRY_CAP": "2",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not DOCKER:
        return
    for item in items:
        marker = item.get_closest_marker("local_only")
        if marker is not None:
            why = marker.args[0] if marker.args else "reads what only a local system exposes"
            item.add_marker(pytest.mark.skip(reason=f"local mode only: {why}"))


@dataclass
class RunningSystem:
    base_url: str
    span_dir: Path
    vhost: str
    db_prefix: str
    log_dir: Path
    sms_url: str
    mail_dir: Path
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@pytest.fixture(scope="session")
def yiwang(request: pytest.FixtureRequest) -> Iterator[RunningSystem]:
    if DOCKER:
        yield request.getfixturevalue("compose_stack")
    else:
        yield from local_system()


def local_system() -> Iterator[RunningSystem]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    span_dir = ARTIFACTS / "spans"
    span_dir.mkdir(parents=True)
    vhost = create_vhost("yiwang-e2e")
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "YIWANG_RABBIT_VHOST": vhost,
        "YIWANG_DB_PREFIX": prefix,
        "YIWANG_HTTP_PORT": str(port),
        "YIWANG_SPAN_DIR": str(span_dir),
        "YIWANG_MONGO_PORT": MONGO_PORT,
        # The tests come from one address; like a load balancer, they say whose request it is.
        "YIWANG_TRUSTED_PROXIES": "127.0.0.1",
        **SETTINGS,
        # The local SMS provider and mail server on ports of their own.
        "YIWANG_SMS_PORT": str(free_port()),
        "YIWANG_SMTP_PORT": str(free_port()),
        "YIWANG_METRICS_BASE_PORT": "0",  # free ports for the Prometheus endpoints
    }
    try:
        running = system.start_ready(env, log_dir=ARTIFACTS / "logs", timeout=120)
        try:
            assert running.mail_dir is not None
            yield RunningSystem(
                running.base_url,
                span_dir,
                vhost,
                prefix,
                ARTIFACTS / "logs",
                running.sms_url,
                running.mail_dir,
                running.metrics_ports,
            )
        finally:
            system.stop(running)
    finally:
        delete_vhost(vhost)
        drop_databases(prefix)


# --- docker mode (pytest-docker's fixtures, configured for docker-compose.yml) ----------------------

DOCKER_ARTIFACTS = ROOT / "test-artifacts" / "e2e-docker"
# The compose project's own network, so that the gateway knows the address the tests' requests come
# from (the network's gateway, through Docker's port publishing) and believes their X-Forwarded-For.
SUBNET = ipaddress.ip_network(os.environ.get("YIWANG_E2E_DOCKER_SUBNET", f"172.31.{200 + os.getpid() % 50}.0/24"))
NETWORK_GATEWAY = str(next(SUBNET.hosts()))
# Host ports of the stack: free ones, so a `make up` stack or the local broker may keep theirs.
HOST_PORTS = (
    "YIWANG_HOST_HTTP_PORT",
    "YIWANG_HOST_SMS_PORT",
    "YIWANG_HOST_RABBIT_MGMT_PORT",
    "YIWANG_HOST_JAEGER_UI_PORT",
)


@pytest.fixture(scope="session")
def docker_compose_file() -> list[str]:
    DOCKER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    override = DOCKER_ARTIFACTS / "docker-compose.e2e.yml"
    override.write_text(
        "# Written by tests/e2e/conftest.py: the test stack's network.\n"
        "networks:\n  default:\n    ipam:\n      config:\n"
        f"        - subnet: {SUBNET}\n          gateway: {NETWORK_GATEWAY}\n",
        encoding="utf-8",
    )
    return [str(ROOT / "docker-compose.yml"), str(override)]


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"yiwang-e2e-{os.getpid()}"


@pytest.fixture(scope="session")
def docker_setup(compose_settings: None) -> list[str]:
    return ["up --build --wait"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    # Keep every container's log lines for after the run, then remove the stack and its volumes.
    return [f'logs --no-color --timestamps > "{DOCKER_ARTIFACTS / "compose.log"}"', "down --volumes"]


@pytest.fixture(scope="session")
def compose_settings() -> Iterator[None]:
    """The stack's settings, read by docker-compose.yml's ${...} when pytest-docker runs compose."""
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine answers `docker info`")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SETTINGS.items():
            patch.setenv(name, value)
        patch.setenv("YIWANG_TRUSTED_PROXIES", NETWORK_GATEWAY)
        # The stack seeds its admin with the password the tests log in with (generated on first use).
        patch.setenv("YIWANG_ADMIN_PASSWORD", first_admin_password())
        patch.setenv("YIWANG_CODE_SECRET", code_secret().decode())
        for name in HOST_PORTS:
            patch.setenv(name, str(free_port()))
        yield


@pytest.fixture(scope="session")
def compose_stack(docker_ip: str, docker_services) -> RunningSystem:
    base_url = f"http://{docker_ip}:{docker_services.port_for('gateway', 8000)}"

    def ready() -> bool:
        try:
            return requests.get(f"{base_url}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    docker_services.wait_until_responsive(check=ready, timeout=180, pause=1)
    empty = DOCKER_ARTIFACTS / "not-available-in-docker-mode"
    return RunningSystem(
        base_url=base_url,
        span_dir=empty,
        vhost="yiwang",
        db_prefix="yiwang",
        log_dir=empty,
        sms_url=f"http://{docker_ip}:{docker_services.port_for('sms-provider', 8025)}",
        mail_dir=empty,
    )


def sign_up(yiwang: RunningSystem, body: dict[str, str] | None = None) -> dict[str, str]:
    """Register and log in; returns the registration body plus 'token' and 'refresh_token'."""
    return support.sign_up(yiwang.base_url, body)


def log_in(yiwang: RunningSystem, username: str, password: str) -> dict[str, str]:
    return support.log_in(yiwang.base_url, username, password)


@pytest.fixture
def applicant(yiwang: RunningSystem) -> dict[str, str]:
    """A registered, logged-in citizen aged over 80 from the seeded region: {'token', ...body}."""
    return sign_up(yiwang)


def auth(person: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {person['token']}"}
