"""Helpers for the integration and end-to-end tiers (real RabbitMQ, real document server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, TypeVar

import pymongo
import requests
from pymongo import monitoring

from infra.system import free_port
from services.identity.idnumbers import make_id_number

T = TypeVar("T")

AMQP_PORT = os.environ.get("YIWANG_AMQP_PORT", "5672")
MONGO_PORT = os.environ.get("YIWANG_MONGO_PORT", "27017")
MONGO_URI = f"mongodb://127.0.0.1:{MONGO_PORT}"
MGMT_URL = f"http://127.0.0.1:{os.environ.get('YIWANG_RABBIT_MGMT_PORT', '15672')}/api"
MGMT_AUTH = ("guest", "guest")


class CommandLog(monitoring.CommandListener):
    """What a pymongo client sends, in order: each command's name, and what it names (for most
    commands, the collection): `logging_client()` attaches one."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.targets: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)
        self.targets.append(event.command.get(event.command_name))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def clear(self) -> None:
        self.names.clear()
        self.targets.clear()


def logging_client() -> tuple[pymongo.MongoClient, CommandLog]:
    """A client of the document server (aware datetimes, as the services' own) and its CommandLog."""
    log = CommandLog()
    return pymongo.MongoClient(MONGO_URI, event_listeners=[log], tz_aware=True), log


def create_vhost(prefix: str = "yiwang-test", api: str = MGMT_URL) -> str:
    """A fresh vhost (guest may use it) on the broker whose management API is `api`."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    requests.put(f"{api}/vhosts/{vhost}", auth=MGMT_AUTH, timeout=10).raise_for_status()
    requests.put(
        f"{api}/permissions/{vhost}/guest",
        json={"configure": ".*", "write": ".*", "read": ".*"},
        auth=MGMT_AUTH,
        timeout=10,
    ).raise_for_status()
    return vhost


def delete_vhost(vhost: str, api: str = MGMT_URL) -> None:
    requests.delete(f"{api}/vhosts/{vhost}", auth=MGMT_AUTH, timeout=10)


def drop_databases(prefix: str, uri: str = MONGO_URI) -> None:
    """Every database of a system started with YIWANG_DB_PREFIX=prefix (`<prefix>_<service>`)."""
    client = pymongo.MongoClient(uri)
    for name in client.list_database_names():
        if name.startswith(f"{prefix}_"):
            client.drop_database(name)


def queue_info(vhost: str, queue: str) -> dict[str, Any]:
    resp = requests.get(f"{MGMT_URL}/queues/{requests.utils.quote(vhost, safe='')}/{queue}", auth=MGMT_AUTH, timeout=10)
    resp.raise_for_status()
    return resp.json()


def queue_depth(vhost: str, queue: str) -> int:
    return int(queue_info(vhost, queue).get("messages", 0))


def eventually(check: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.2, what: str = "") -> T:
    """Poll until `check` returns something truthy (asynchronous results arrive eventually)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


def citizen(born: date | None = None, region: str = "620524", phone: str | None = None) -> dict[str, str]:
    """A registration body for a fresh citizen: a valid, unused id number (by default born 1935–1944,
    so over 80) and phone. Sequence code 999 is left out: the local registry refuses it on purpose."""
    rand = uuid.uuid4().int
    born = born or date(1935, 1, 1) + timedelta(days=rand % 3650)
    return {
        "account_type": "citizen",
        "name": "测试申请人",
        "id_number": make_id_number(region, born, (rand >> 20) % 999),
        "phone": phone or f"139{(rand >> 40) % 10**8:08d}",
        "password": "correct-horse-42",
    }


def log_in(base_url: str, username: str, password: str, timeout: float = 10) -> dict[str, str]:
    """Log in over the public API: {'token', 'refresh_token'}."""
    body = {"username": username, "password": password}
    login = requests.post(f"{base_url}/api/v1/auth/login", json=body, timeout=timeout)
    assert login.status_code == 200, login.text
    return {"token": login.json()["access_token"], "refresh_token": login.json()["refresh_token"]}


def sign_up(base_url: str, body: dict[str, str] | None = None, timeout: float = 10) -> dict[str, str]:
    """Register (a fresh citizen by default) and log in over the public API: the registration body
    plus 'user_id', 'token' and 'refresh_token'."""
    body = body or citizen()
    # From an address of its own, as each applicant is behind the portal's proxy: registrations are
    # limited per client address (a system that trusts no proxy counts the caller's own address).
    rand = uuid.uuid4().int
    proxied = {"X-Forwarded-For": f"10.{rand % 256}.{(rand >> 8) % 256}.{(rand >> 16) % 256}"}
    registered = requests.post(f"{base_url}/api/v1/auth/register", json=body, headers=proxied, timeout=timeout)
    assert registered.status_code == 201, registered.text
    tokens = log_in(base_url, body["id_number"], body["password"], timeout)
    return {**body, "user_id": registered.json()["user_id"], **tokens}


def published_item(index: int = 0, **changes: Any) -> dict[str, Any]:
    """A seeded guide as catalog would serve it (published, version 1)."""
    from services.catalog.seed_data import seed_items

    return {**seed_items()[index], "version": 1, **changes}


def current_vhost() -> str:
    from urllib.parse import unquote, urlparse

    from nameko import config

    return unquote(urlparse(config["AMQP_URI"]).path.lstrip("/")) or "/"


def event_recorder(source_service: str, event_type: str) -> type:
    """A throwaway nameko service class that records every `event_type` event from `source_service`."""
    from nameko.events import BROADCAST, event_handler

    received: list[dict[str, Any]] = []

    class Recorder:
        name = f"recorder_{uuid.uuid4().hex[:8]}"
        events = received

        @event_handler(source_service, event_type, handler_type=BROADCAST, reliable_delivery=False)
        def record(self, body: dict[str, Any]) -> None:
            received.append(body)

    return Recorder


def dispatch_event(source_service: str, envelope: dict[str, Any], headers: dict[str, Any] | None = None) -> None:
    """Publish an envelope as if `source_service` had (persistent, confirmed), with `headers`."""
    from nameko.standalone import events

    # Not through nameko-opentelemetry's wrapper: it finds the dispatcher's publisher in the frame of
    # the first Python function called after it sets a trace hook, and when the garbage collector
    # runs a callback first (hypothesis registers one) that is the wrong frame: KeyError 'publisher'
    # (seen once in CI). The services never use the standalone dispatcher; tests need no span of it.
    event_dispatcher = getattr(events.event_dispatcher, "__wrapped__", events.event_dispatcher)
    event_dispatcher(headers=headers or {})(source_service, envelope["type"], envelope)


# --- the local SMS provider and mail server, as processes of the test's own -------------------------


class LocalProvider:
    """A stand-in outbound provider process on a port of its own; stop() and start() again to
    simulate an outage (what it received survives: the SMS provider keeps a file)."""

    def __init__(self, command: list[str], port: int) -> None:
        self.command, self.port = command, port
        self.process: Any = None

    def start(self) -> LocalProvider:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen([sys.executable, *self.command], cwd=root, stdout=subprocess.DEVNULL)
        eventually(lambda: _listening(self.port), timeout=15, what=f"{self.command[1]} on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        eventually(lambda: not _listening(self.port), timeout=10, what=f"port {self.port} closed")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def sms_provider(store: Any) -> LocalProvider:
    port = free_port()
    return LocalProvider(["-m", "infra.sms_provider", "--port", str(port), "--store", str(store)], port)


def mail_server(maildir: Any) -> LocalProvider:
    port = free_port()
    handler = ["-c", "aiosmtpd.handlers.Mailbox", str(maildir)]
    return LocalProvider(["-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", *handler], port)


def sms_received(provider_url: str) -> list[dict[str, Any]]:
    return requests.get(f"{provider_url}/v1/messages", timeout=5).json()["items"]


def mail_received(maildir: Any) -> list[Any]:
    """Every message the local mail server stored, parsed (email.message.EmailMessage)."""
    import mailbox
    from email import policy
    from email.parser import BytesParser

    if not os.path.isdir(os.path.join(str(maildir), "new")):
        return []
    box = mailbox.Maildir(str(maildir), create=False)
    return [BytesParser(policy=policy.default).parsebytes(box.get_bytes(key)) for key in box.iterkeys()]
