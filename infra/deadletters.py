"""Dead letters: list them with their errors, and replay them into the queue they came from.

    python -m infra.deadletters list [--vhost V] [--show 5]
    python -m infra.deadletters replay dlq.<queue> [--vhost V] [--limit N]
    make deadletters                       # the list, for the vhost of `make run`

A handler that still fails after its retries (`YIWANG_RETRY_DELAYS`: five, over about 13 minutes),
a message that is not a valid event, and one whose handlers never finish it (delivered again
unsettled more than five times) go to `dlq.<its queue>` with `x-yiwang-error` (see
services/common/consuming.py). Replaying publishes each message again, persistent and confirmed,
to the queue it failed in (its handler is idempotent by event id), then removes it from the
dead-letter queue; a message whose republish fails stays where it is, and so does every message
of a queue that no longer exists (a retired handler's: see DEVELOPERS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import requests
from amqp.exceptions import ChannelError
from kombu import Connection, Queue

from services.common.consuming import ATTEMPT_HEADER, ERROR_HEADER, FAILED_AT_HEADER, UNSETTLED_HEADER

PREFIX = "dlq."


def broker_host() -> str:
    return os.environ.get("YIWANG_RABBIT_HOST", "127.0.0.1")


def credentials() -> tuple[str, str]:
    """The account the services use (config.yml's defaults): guest here, its own in compose."""
    return os.environ.get("YIWANG_RABBIT_USER", "guest"), os.environ.get("YIWANG_RABBIT_PASSWORD", "guest")


def management_url() -> str:
    return f"http://{broker_host()}:{os.environ.get('YIWANG_RABBIT_MGMT_PORT', '15672')}/api"


def amqp_uri(vhost: str) -> str:
    user, password = (quote(part, safe="") for part in credentials())
    port = os.environ.get("YIWANG_AMQP_PORT", "5672")
    return f"amqp://{user}:{password}@{broker_host()}:{port}/{quote(vhost, safe='')}"


def dead_letter_queues(vhost: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{management_url()}/queues/{quote(vhost, safe='')}",
        params={"columns": "name,messages"},
        auth=credentials(),
        timeout=10,
    )
    response.raise_for_status()
    return sorted((q for q in response.json() if q["name"].startswith(PREFIX)), key=lambda q: q["name"])


def peek(vhost: str, queue: str, count: int) -> list[dict[str, Any]]:
    """The first messages, left in place: event type and id, the error, when it failed."""
    response = requests.post(
        f"{management_url()}/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/get",
        json={"count": count, "ackmode": "reject_requeue_true", "encoding": "auto", "truncate": 50000},
        auth=credentials(),
        timeout=10,
    )
    response.raise_for_status()
    shown = []
    for message in response.json():
        headers = message.get("properties", {}).get("headers") or {}
        try:
            body = json.loads(message["payload"])
        except (ValueError, TypeError):
            body = {}
        shown.append(
            {
                "event_id": body.get("event_id") if isinstance(body, dict) else None,
                "type": body.get("type") if isinstance(body, dict) else None,
                "error": headers.get(ERROR_HEADER, "(dead-lettered by the broker: no error recorded)"),
                "failed_at": headers.get(FAILED_AT_HEADER),
            }
        )
    return shown


class OriginGone(Exception):
    """The queue a dead letter came from no longer exists: replaying into it would lose it."""


def replay(vhost: str, dead_letter_queue: str, limit: int | None = None) -> int:
    """Move up to `limit` messages back to the queue they failed in; returns how many moved."""
    if not dead_letter_queue.startswith(PREFIX):
        raise ValueError(f"not a dead-letter queue: {dead_letter_queue}")
    origin = dead_letter_queue[len(PREFIX) :]
    moved = 0
    with Connection(amqp_uri(vhost), transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        source = Queue(dead_letter_queue, routing_key=origin, durable=True, no_declare=True)(channel)
        # What is there now, and no more: a message that fails again while the cause persists comes
        # back to this queue, and must not be picked up again by this same replay.
        waiting = source.queue_declare(passive=True).message_count
        # Its queue must exist: the default exchange confirms, and drops, a message for one that
        # does not. (A passive declare of a missing queue closes its channel: one of its own.)
        try:
            Queue(origin, no_declare=True)(conn.channel()).queue_declare(passive=True)
        except ChannelError:
            raise OriginGone(f"its queue {origin} does not exist (a retired handler's?)") from None
        limit = waiting if limit is None else min(limit, waiting)
        producer = conn.Producer(channel=conn.channel())
        while moved < limit:
            message = source.get(no_ack=False, accept=None)
            if message is None:
                break
            headers = {
                k: v
                for k, v in (message.headers or {}).items()
                # A replay gets every retry again.
                if not k.startswith("x-death") and k not in (ATTEMPT_HEADER, UNSETTLED_HEADER)
            }
            headers["x-yiwang-replayed"] = int(headers.get("x-yiwang-replayed", 0)) + 1
            producer.publish(
                message.body,
                exchange="",  # the default exchange: straight to the queue it failed in
                routing_key=origin,
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                serializer=None,
                mandatory=True,  # and should its queue go meanwhile: an error, not a message lost
            )
            message.ack()
            moved += 1
    return moved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "replay"])
    parser.add_argument("queue", nargs="?", help="for replay: the dead-letter queue (dlq.<queue>), or 'all'")
    parser.add_argument("--vhost", default=os.environ.get("YIWANG_RABBIT_VHOST") or "/")
    parser.add_argument("--show", type=int, default=3, help="messages to show per queue")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    queues = dead_letter_queues(args.vhost)
    if args.command == "list":
        waiting = [q for q in queues if q.get("messages")]
        print(f"{len(waiting)} of {len(queues)} dead-letter queues hold messages (vhost {args.vhost})")
        for q in waiting:
            print(f"{q['name']}: {q['messages']}")
            for m in peek(args.vhost, q["name"], args.show):
                print(f"  {m['type']} {m['event_id']} failed {m['failed_at']}: {m['error']}")
        return 0
    if not args.queue:
        parser.error("replay needs a dead-letter queue (or 'all')")
    targets = [q["name"] for q in queues if q.get("messages")] if args.queue == "all" else [args.queue]
    left = 0
    for name in targets:
        try:
            print(f"{name}: replayed {replay(args.vhost, name, args.limit)}")
        except OriginGone as gone:
            print(f"{name}: left alone: {gone}")
            left += 1
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
