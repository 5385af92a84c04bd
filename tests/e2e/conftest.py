"""The whole system, started as processes exactly like `make run`, isolated in its own vhost,
databases and port; driven only over HTTP."""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest
import requests

from infra import system
from tests.support import MONGO_PORT, MONGO_URI, citizen, create_vhost, delete_vhost

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"


@dataclass
class RunningSystem:
    base_url: str
    span_dir: Path
    vhost: str

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def yiwang() -> Iterator[RunningSystem]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    span_dir = ARTIFACTS / "spans"
    span_dir.mkdir(parents=True)
    vhost = create_vhost("yiwang-e2e")
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = {
        "YIWANG_RABBIT_VHOST": vhost,
        "YIWANG_DB_PREFIX": prefix,
        "YIWANG_HTTP_PORT": str(port),
        "YIWANG_SPAN_DIR": str(span_dir),
        "YIWANG_MONGO_PORT": MONGO_PORT,
    }
    running = system.start(env, log_dir=ARTIFACTS / "logs")
    try:
        system.wait_ready(running, timeout=120)
        yield RunningSystem(running.base_url, span_dir, vhost)
    finally:
        system.stop(running)
        delete_vhost(vhost)
        client = pymongo.MongoClient(MONGO_URI)
        for name in client.list_database_names():
            if name.startswith(f"{prefix}_"):
                client.drop_database(name)


@pytest.fixture
def applicant(yiwang: RunningSystem) -> dict[str, str]:
    """A registered, logged-in citizen aged over 80 from the seeded region: {'token', ...body}."""
    body = citizen()
    assert requests.post(yiwang.url("/api/v1/auth/register"), json=body, timeout=10).status_code == 201
    login = requests.post(
        yiwang.url("/api/v1/auth/login"), json={"username": body["id_number"], "password": body["password"]}, timeout=10
    )
    assert login.status_code == 200, login.text
    return {**body, "token": login.json()["access_token"]}


def auth(person: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {person['token']}"}
