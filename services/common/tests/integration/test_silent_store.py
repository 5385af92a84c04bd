"""A command the store never answers fails at the command bound instead of holding its worker until
TCP gives up; index builds and migrations at start, which may run long on a large collection, have
no bound.

pymongo's monitor already frees such commands when its own heartbeat goes unanswered (10 s between
heartbeats, 5 s each), so a host that vanishes whole is noticed within about 15 s. The bound is for
what the monitor cannot see: one connection gone silent (a firewall or NAT that dropped its state)
or a command stuck on a store that still answers heartbeats. The test silences the command's
connection and not the monitor's, so that only the bound can free the command."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import eventlet
import pymongo.errors
import pytest

from services.common import mongo
from services.common.mongo import COMMAND_TIMEOUT, STORE_UNREACHABLE, Storage, client_for, new_client
from tests.support import MONGO_PORT, MONGO_URI, eventually


class SilenceableProxy:
    """Passes bytes between pymongo and the document server; once `silence(first)` is called, the
    connections from the `first`th accepted on read and drop them, resetting nothing (what a
    connection whose host or firewall lost it looks like to a client)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.accepted = 0
        self.silent_from: int | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, self.accepted), daemon=True).start()
            self.accepted += 1

    def silence(self, first: int) -> None:
        self.silent_from = first

    def _pump(self, source: socket.socket, sink: socket.socket, n: int) -> None:
        try:
            while data := source.recv(65536):
                if self.silent_from is None or n < self.silent_from:
                    sink.sendall(data)
        except (OSError, EOFError):  # closed at the test's end (EOFError: eventlet's green socket)
            return

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@contextmanager
def proxy_to_store() -> Iterator[SilenceableProxy]:
    proxy = SilenceableProxy(int(MONGO_PORT))
    threading.Thread(target=proxy.serve, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_command_the_silent_store_never_answers_fails_at_the_bound(db_prefix):
    with proxy_to_store() as proxy:
        client = new_client(f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true", command_timeout=1.0)
        things = client[f"{db_prefix}_silent"]["things"]
        try:
            # The monitor's connections come first; the command's, opened by the insert, after.
            eventually(lambda: client.topology_description.has_known_servers, what="the monitor's first hello")
            monitor_connections = proxy.accepted
            things.insert_one({"_id": 1})
            proxy.silence(first=monitor_connections)
            # Without the bound the find waits for ever: the guard turns that into a failure.
            guard = eventlet.Timeout(20, AssertionError("the command still waits on the silent store"))
            with guard, pytest.raises(STORE_UNREACHABLE) as raised:
                things.find_one({"_id": 1})
            assert isinstance(raised.value, pymongo.errors.NetworkTimeout)  # the bound, not a reset
        finally:
            proxy.close()  # resets every connection: closing the client must not wait on a silent one
            client.close()


class RecordingStore:
    """Notes the command bound of the client each of its uses runs on."""

    ensured_with: Any = "not ensured"

    def __init__(self, db: Any) -> None:
        self.db = db

    def ensure_indexes(self) -> None:
        RecordingStore.ensured_with = self.db.client.options.pool_options.socket_timeout

    def bound(self) -> float | None:
        return self.db.client.options.pool_options.socket_timeout


def test_workers_get_the_bounded_client_and_index_builds_one_without_the_bound(monkeypatch):
    monkeypatch.setattr(mongo, "store_uri", lambda settings: MONGO_URI)
    provider = Storage(RecordingStore, database="silent_store_test")
    provider.setup()
    store = provider.get_dependency(worker_ctx=None)

    assert store.bound() == COMMAND_TIMEOUT == client_for(MONGO_URI).options.pool_options.socket_timeout
    assert RecordingStore.ensured_with is None
