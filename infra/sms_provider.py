"""A local SMS provider for development and tests: speaks the provider interface the notification
service uses (contracts.notifications: SmsRequest, SmsReceipt), records every message it accepts,
and can be told to fail.

    python -m infra.sms_provider --port 8025 --store .run/sms.jsonl

POST /v1/messages            SmsRequest -> 202 SmsReceipt(status="accepted"); a reference seen before
                             answers 200 with the first receipt (the provider sends once per reference)
GET  /v1/messages/{id}       SmsReceipt: "delivered", or "failed" for a number told unreachable
GET  /v1/messages            every accepted message (tests and developers read this)
POST /control                {"fail": true|false, "unreachable": ["138..."]}: 503 for every send
                             while failing; unreachable numbers get a "failed" receipt
GET  /healthz                200

Accepted messages are appended to the store file, so a restarted provider still knows them (a test
stops it, lets sends fail, starts it again and counts what arrived).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.notifications import SmsRequest


class Provider:
    def __init__(self, store: Path | None) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.messages: dict[str, dict[str, Any]] = {}
        self.by_reference: dict[str, str] = {}
        self.failing = False
        self.unreachable: set[str] = set()
        if store and store.exists():
            for line in store.read_text(encoding="utf-8").splitlines():
                self._remember(json.loads(line))

    def _remember(self, message: dict[str, Any]) -> None:
        self.messages[message["message_id"]] = message
        self.by_reference[message["reference"]] = message["message_id"]

    def accept(self, request: SmsRequest) -> tuple[dict[str, Any], bool]:
        with self.lock:
            if request.reference in self.by_reference:
                return self.messages[self.by_reference[request.reference]], False
            message = {
                **request.model_dump(),
                "message_id": uuid.uuid4().hex,
                "received_at": datetime.now(UTC).isoformat(),
            }
            self._remember(message)
            if self.store:
                with self.store.open("a", encoding="utf-8") as file:
                    file.write(json.dumps(message, ensure_ascii=False) + "\n")
            return message, True

    def receipt(self, message: dict[str, Any], status: str = "") -> dict[str, Any]:
        if not status:
            status = "failed" if message["to"] in self.unreachable else "delivered"
        error = "number unreachable" if status == "failed" else None
        return {"message_id": message["message_id"], "status": status, "error": error}


class Handler(BaseHTTPRequestHandler):
    provider: Provider
    # Keep-alive, as real providers offer: HTTP/1.0 (the default) cost the sender a new TCP
    # connection per message and receipt. Every reply carries a Content-Length.
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            return self._reply(HTTPStatus.OK, {"status": "ok"})
        if self.path == "/v1/messages":
            return self._reply(HTTPStatus.OK, {"items": list(self.provider.messages.values())})
        if self.path.startswith("/v1/messages/"):
            message = self.provider.messages.get(self.path.rsplit("/", 1)[1])
            if message is None:
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "no such message"})
            return self._reply(HTTPStatus.OK, self.provider.receipt(message))
        self._reply(HTTPStatus.NOT_FOUND, {"error": "no such path"})

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            return self._reply(HTTPStatus.BAD_REQUEST, {"error": "not JSON"})
        if self.path == "/control":
            self.provider.failing = bool(body.get("fail", self.provider.failing))
            self.provider.unreachable = set(body.get("unreachable", self.provider.unreachable))
            return self._reply(HTTPStatus.OK, {"fail": self.provider.failing})
        if self.path != "/v1/messages":
            return self._reply(HTTPStatus.NOT_FOUND, {"error": "no such path"})
        if self.provider.failing:
            return self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "told to fail"})
        try:
            request = SmsRequest.model_validate(body)
        except ValidationError as exc:
            return self._reply(HTTPStatus.BAD_REQUEST, {"error": exc.errors(include_url=False)})
        message, new = self.provider.accept(request)
        self._reply(HTTPStatus.ACCEPTED if new else HTTPStatus.OK, self.provider.receipt(message, "accepted"))

    def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read the messages, not the access log


def serve(port: int, store: Path | None, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"provider": Provider(store)})
    return ThreadingHTTPServer((host, port), handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--store", type=Path, default=None, help="JSON-lines file of accepted messages")
    args = parser.parse_args()
    server = serve(args.port, args.store, args.host)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
