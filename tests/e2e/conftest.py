"""The whole system, started as processes exactly like `make run`, isolated in its own vhost,
databases and port; driven only over HTTP."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest
import requests

from infra import system
from tests.support import MONGO_PORT, MONGO_URI, citizen, create_vhost, delete_vhost, free_port

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"


@dataclass
class RunningSystem:
    base_url: str
    span_dir: Path
    vhost: str
    db_prefix: str
    log_dir: Path
    sms_url: str
    mail_dir: Path
    metrics_ports: dict[str, int]

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@pytest.fixture(scope="session")
def yiwang() -> Iterator[RunningSystem]:
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
        "YIWANG_LOGIN_ACCOUNT_LIMIT": "3",
        "YIWANG_LOGIN_ADDRESS_LIMIT": "6",
        # The local SMS provider and mail server on ports of their own; quick retries.
        "YIWANG_SMS_PORT": str(free_port()),
        "YIWANG_SMTP_PORT": str(free_port()),
        "YIWANG_NOTIFY_RETRY_BASE": "0.5",
        "YIWANG_NOTIFY_RETRY_CAP": "2",
        "YIWANG_METRICS_BASE_PORT": "0",  # free ports for the Prometheus endpoints
    }
    running = system.start(env, log_dir=ARTIFACTS / "logs")
    try:
        system.wait_ready(running, timeout=120)
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
        delete_vhost(vhost)
        client = pymongo.MongoClient(MONGO_URI)
        for name in client.list_database_names():
            if name.startswith(f"{prefix}_"):
                client.drop_database(name)


def sign_up(yiwang: RunningSystem, body: dict[str, str] | None = None) -> dict[str, str]:
    """Register and log in; returns the registration body plus 'token' and 'refresh_token'."""
    body = body or citizen()
    registered = requests.post(yiwang.url("/api/v1/auth/register"), json=body, timeout=10)
    assert registered.status_code == 201, registered.text
    return {**body, "user_id": registered.json()["user_id"], **log_in(yiwang, body["id_number"], body["password"])}


def log_in(yiwang: RunningSystem, username: str, password: str) -> dict[str, str]:
    login = requests.post(
        yiwang.url("/api/v1/auth/login"), json={"username": username, "password": password}, timeout=10
    )
    assert login.status_code == 200, login.text
    return {"token": login.json()["access_token"], "refresh_token": login.json()["refresh_token"]}


@pytest.fixture
def applicant(yiwang: RunningSystem) -> dict[str, str]:
    """A registered, logged-in citizen aged over 80 from the seeded region: {'token', ...body}."""
    return sign_up(yiwang)


def auth(person: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {person['token']}"}
