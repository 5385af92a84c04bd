"""`make bench`: the machine's own ceiling, the case path's sustained throughput, and one as a
share of the other, in one run on one machine.

1. Ceiling: the broker's rate of confirmed, persistent publish-and-consume (kombu, a durable
   queue, envelope-sized messages, one publisher and one consumer at once), and the document
   server's rate of single-document writes (inserts and `_id` updates, 8 writers).
2. The case path: cases submitted through the gateway (16 clients, automatically decided item)
   for a fixed time, counting accepted and decided cases and the submit latency (closed loop:
   as fast as it goes); then open loop, at fixed arrival rates that rise step by step, the highest
   rate it sustains *at the SLOs* (submit p99 <= 300 ms, errors <= 0.1%; latency counted from
   when a request was due, so a backlog counts).
3. The share: broker messages and document writes per case (counted in this run: messages from
   the RabbitMQ management API, writes from the spans), times the case rate, over the ceilings.

    make bench                              # 20 s per part
    python -m loadtests.bench_ceiling --seconds 60

4. `--sustain RATE` instead (`make bench-sustain RATE=8 DURATION=600`): one open-loop run at that
   rate for `--seconds`, judged by every objective: submit p99, errors, and, from the timestamps
   the system stores for every case of the run, submission to decision and to the applicant's
   notification of it (p95 <= 2 s). Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pymongo
import requests
from kombu import Connection, Exchange, Queue

from infra import system
from loadtests import slo
from loadtests.bench_tracing import (
    ALLOWANCE,
    FORM,
    applicants,
    decided_count,
    drive,
    wait_decided,
    warmed_applicants,
)
from loadtests.bench_tracing import rate as cases_per_second
from loadtests.own_system import own_system
from tests.support import MGMT_AUTH, MGMT_URL, MONGO_URI, create_vhost, delete_vhost

ENVELOPE = (
    json.dumps(
        {
            "event_id": "0" * 32,
            "type": "case.submitted.v1",
            "occurred_at": "2026-11-26T02:00:00Z",
            "producer": "intake",
            "payload": {"case_no": "620524MZ-20261126-000001", "form": {"bank_account": "6222020200112233445"}},
        }
    ).encode()
    * 2
)  # about 700 bytes, like our events


def broker_ceiling(seconds: float) -> float:
    """Messages per second published with confirms (persistent) and consumed with acks, concurrently."""
    vhost = create_vhost("yiwang-ceiling")
    uri = f"amqp://guest:guest@127.0.0.1:{os.environ.get('YIWANG_AMQP_PORT', '5672')}/{vhost}"
    exchange = Exchange("ceiling", type="topic", durable=True)
    queue = Queue("ceiling", exchange, routing_key="#", durable=True)
    published, consumed = [0], [0]
    done = threading.Event()

    def consume() -> None:
        with Connection(uri) as conn:

            def on_message(message: object) -> None:  # raw: no decoding, as our consumers' cost is not the point
                message.ack()  # type: ignore[attr-defined]
                consumed[0] += 1

            with conn.Consumer(queue, on_message=on_message, prefetch_count=100):
                while not (done.is_set() and consumed[0] >= published[0]):
                    try:
                        conn.drain_events(timeout=1)
                    except TimeoutError:
                        continue

    try:
        with Connection(uri, transport_options={"confirm_publish": True}) as conn:
            queue(conn.default_channel).declare()
            consumer = threading.Thread(target=consume)
            consumer.start()
            producer = conn.Producer(serializer=None)
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                producer.publish(
                    ENVELOPE, exchange=exchange, routing_key="x", delivery_mode=2, content_type="application/json"
                )
                published[0] += 1
            done.set()
            consumer.join(timeout=120)
            elapsed = time.monotonic() - started
        return consumed[0] / elapsed
    finally:
        delete_vhost(vhost)


def docserver_ceiling(seconds: float, writers: int = 8) -> dict[str, float]:
    client = pymongo.MongoClient(MONGO_URI)
    db = client[f"ceiling{uuid.uuid4().hex[:6]}"]
    doc = {"payload": "x" * 1500, "status": "submitted", "version": 1}
    counts = {"insert": 0, "update": 0}
    lock = threading.Lock()

    def write(kind: str, stop_at: float, n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            key = f"{n}-{i}"
            if kind == "insert":
                db.docs.insert_one({"_id": key, **doc})
            else:
                db.docs.update_one({"_id": f"{n}-{i % 50}"}, {"$inc": {"version": 1}})
            i += 1
        with lock:
            counts[kind] += i

    try:
        rates = {}
        for kind in ("insert", "update"):
            stop_at = time.monotonic() + seconds / 2
            threads = [threading.Thread(target=write, args=(kind, stop_at, n)) for n in range(writers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rates[kind] = counts[kind] / (seconds / 2)
        return rates
    finally:
        client.drop_database(db.name)


def entry_update_ms(sizes: tuple[int, ...] = (100, 1_000, 10_000), updates: int = 30) -> dict[int, float]:
    """Milliseconds to set one entry in a document of n entries (one writer): the cost of every
    read-model and index update, which FerretDB pays in proportion to the whole document."""
    client = pymongo.MongoClient(MONGO_URI)
    db = client[f"entries{uuid.uuid4().hex[:6]}"]
    costs = {}
    try:
        for size in sizes:
            db.docs.insert_one({"_id": size, "cases": {f"620524GA-20261127-{n:06d}": True for n in range(size)}})
            started = time.perf_counter()
            for n in range(updates):
                db.docs.update_one({"_id": size}, {"$set": {f"cases.X-{n:06d}": True}})
            costs[size] = (time.perf_counter() - started) / updates * 1000
        return costs
    finally:
        client.drop_database(db.name)


def broker_messages(vhost: str) -> tuple[int, int]:
    """(published, delivered to consumers) in the vhost so far: an event goes to every queue bound
    to it (case.submitted.v1 to approval and notification), so deliveries outnumber publishes."""
    overview = requests.get(f"{MGMT_URL}/vhosts/{requests.utils.quote(vhost, safe='')}", auth=MGMT_AUTH, timeout=5)
    stats = overview.json().get("message_stats", {})
    return int(stats.get("publish", 0)), int(stats.get("deliver_get", 0))


def writes_in_spans(span_dir: Path) -> int:
    writes = 0
    for path in span_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            statement = json.loads(line).get("attributes", {}).get("db.statement") or ""
            # As pymongo names them (findAndModify): compared in lower case, or those go uncounted.
            if statement.lower() in ("insert", "update", "findandmodify", "delete"):
                writes += 1
    return writes


SUBMIT_P99_MS, MAX_ERROR_RATIO = 300.0, 0.001


def at_rate(base: str, tokens: list[str], rate: float, seconds: float) -> dict:
    """Submit `rate` cases a second for `seconds`, whatever the answers take (open loop); the
    applicants take turns, so each gets an equal share of the cases."""
    import queue

    due: queue.Queue = queue.Queue()
    latencies: list[float] = []
    sent_at: list[float] = []  # each latency's due moment, for the run's course by minute
    accepted: list[str] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        session = requests.Session()
        while (item := due.get()) is not None:
            when, token = item
            headers = {"Authorization": f"Bearer {token}"}
            try:
                response = session.post(
                    f"{base}/api/v1/cases",
                    json={"item_code": ALLOWANCE, "form": FORM},
                    headers=headers,
                    timeout=30,
                )
                ok = response.status_code == 201
            except requests.RequestException:
                ok = False
            with lock:
                if ok:
                    accepted.append(response.json()["case_no"])
                latencies.append(time.monotonic() - when)
                sent_at.append(when)
                errors[0] += not ok

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for thread in threads:
        thread.start()
    started, count = time.monotonic(), int(rate * seconds)
    for n in range(count):
        when = started + n / rate
        time.sleep(max(0.0, when - time.monotonic()))
        due.put((when, tokens[n % len(tokens)]))
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()
    ordered = sorted(latencies) or [0.0]
    p99 = nearest_rank(ordered, 0.99) * 1000
    return {
        "rate": rate,
        "requests": count,
        "errors": errors[0],
        "p99_ms": p99,
        "p50_ms": statistics.median(ordered) * 1000,
        "accepted": accepted,
        "by_minute": by_minute(started, sent_at, latencies),
    }


def by_minute(started: float, sent_at: list[float], latencies: list[float]) -> list[dict[str, float]]:
    """Submit latency per minute of a run (by when each was due): a slow period shows as its minutes."""
    minutes: dict[int, list[float]] = {}
    for when, latency in zip(sent_at, latencies, strict=True):
        minutes.setdefault(int((when - started) // 60), []).append(latency)
    return [
        {
            "minute": minute,
            "p50_ms": statistics.median(values) * 1000,
            "p99_ms": nearest_rank(sorted(values), 0.99) * 1000,
        }
        for minute, values in sorted(minutes.items())
    ]


def nearest_rank(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of sorted values: at least `share` of them are at or below it."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def sustained_at_slos(
    base: str, tokens: list[str], seconds: float, mongo: pymongo.MongoClient, prefix: str
) -> tuple[float, list[dict]]:
    """The highest rate whose step met every objective: submit p99 and errors, and its cases
    decided and notified within 2 s at p95 (a case not decided or told by then counts as missed)."""
    steps, best = [], 0.0
    for rate in (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 25, 30, 40, 50, 70, 100):
        step = at_rate(base, tokens, rate, seconds)
        time.sleep(3)  # the step's last cases: decided and told within 2 s, or missed
        times = decided_and_notified(mongo, prefix, step["accepted"])
        step["decided_p95_s"] = percentile(times["decided"], 0.95)
        step["notified_p95_s"] = percentile(times["notified"], 0.95)
        steps.append(step)
        if (
            step["p99_ms"] > SUBMIT_P99_MS
            or step["errors"] > MAX_ERROR_RATIO * step["requests"]
            or step["decided_p95_s"] > 2.0
            or step["notified_p95_s"] > 2.0
        ):
            break
        best = rate
    return best, steps


def case_path(seconds: float, clients: int, span_dir: Path) -> dict:
    span_dir.mkdir(parents=True, exist_ok=True)
    env = {"YIWANG_SPAN_DIR": str(span_dir), "YIWANG_LOGIN_ADDRESS_LIMIT": "10000"}
    with own_system("bench", system.RUN_DIR / "bench-ceiling", **env) as own:
        mongo = pymongo.MongoClient(MONGO_URI)
        tokens = warmed_applicants(own.base_url, clients)
        time.sleep(3)
        for path in span_dir.glob("*.jsonl"):
            path.unlink()  # count only what the measured cases cause
        published_before, delivered_before = broker_messages(own.vhost)
        decided_before = decided_count(mongo, own.db_prefix)  # the warm-up's cases
        result = drive(own.base_url, tokens, seconds)
        wait_decided(mongo, own.db_prefix, decided_before + result["accepted"])
        time.sleep(5)  # deliveries and span export
        published, delivered = broker_messages(own.vhost)
        result["published"], result["delivered"] = published - published_before, delivered - delivered_before
        result["writes"] = writes_in_spans(span_dir)
        timed = pymongo.MongoClient(MONGO_URI, tz_aware=True)
        result["at_slos"], result["steps"] = sustained_at_slos(own.base_url, tokens, seconds, timed, own.db_prefix)
        return result


def decided_and_notified(mongo: pymongo.MongoClient, prefix: str, case_nos: list[str]) -> dict[str, Any]:
    """Seconds from submission to decision and to the decision's notification, per accepted case,
    from the stores of intake and notification. A case not decided, or not told, counts as
    infinitely late (it is not left out: a percentile over the others would hide it)."""
    cases = mongo[f"{prefix}_intake"].cases
    notes = mongo[f"{prefix}_notification"].notifications
    wanted = list(dict.fromkeys(case_nos))
    submitted, decided = {}, {}
    for case in cases.find({"_id": {"$in": wanted}}, {"submitted_at": 1, "decision": 1}):
        submitted[case["_id"]] = case["submitted_at"]
        if case.get("decision"):
            decided[case["_id"]] = (_moment(case["decision"]["decided_at"]) - case["submitted_at"]).total_seconds()
    told = {"case.approved.v1", "case.rejected.v1"}
    notified = {}
    for note in notes.find({"case_no": {"$in": wanted}}, {"case_no": 1, "type": 1, "created_at": 1}):
        if note.get("type") in told and note["case_no"] in submitted:
            notified[note["case_no"]] = (_moment(note["created_at"]) - submitted[note["case_no"]]).total_seconds()
    late = float("inf")
    return {
        "decided": [decided.get(no, late) for no in wanted],
        "notified": [notified.get(no, late) for no in wanted],
        "undecided": sum(no not in decided for no in wanted),
        "untold": sum(no not in notified for no in wanted),
        "missing": len(set(wanted) - set(submitted)),
    }


def _moment(value: datetime | str) -> datetime:
    """A stored time: a BSON date, or ISO text inside a contract dumped as JSON (a decision)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def sustain(rate: float, seconds: float, clients: int) -> int:
    """One open-loop run at `rate` for `seconds`, judged by every objective; 1 when one is missed.
    `clients` applicants share the cases: a real peak hour has many applicants with a few cases
    each, and a few with thousands would measure their growing lists instead."""
    env = {"YIWANG_LOGIN_ADDRESS_LIMIT": "10000"}
    with own_system("bench", system.RUN_DIR / "bench-sustain", **env) as own:
        mongo = pymongo.MongoClient(MONGO_URI, tz_aware=True)
        tokens = applicants(own.base_url, clients)
        step = at_rate(own.base_url, tokens, rate, seconds)
        time.sleep(10)  # the last cases' decisions and notifications
        times = decided_and_notified(mongo, own.db_prefix, step["accepted"])
    decided_p95 = percentile(times["decided"], 0.95)
    notified_p95 = percentile(times["notified"], 0.95)
    verdicts = {
        f"submit p99 {step['p99_ms']:.0f} ms <= {SUBMIT_P99_MS:.0f} ms": step["p99_ms"] <= SUBMIT_P99_MS,
        f"errors {step['errors']} of {step['requests']} <= 0.1%": step["errors"] <= MAX_ERROR_RATIO * step["requests"],
        f"decided p95 {decided_p95:.2f} s <= 2 s ({times['undecided']} of {len(times['decided'])} not decided)": (
            decided_p95 <= 2.0
        ),
        f"notified p95 {notified_p95:.2f} s <= 2 s ({times['untold']} of {len(times['notified'])} not told)": (
            notified_p95 <= 2.0
        ),
        f"every accepted case stored ({times['missing']} missing)": times["missing"] == 0,
    }
    print(
        f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(
        f"{rate:g} cases/s for {seconds:.0f} s ({clients} applicants): {step['requests']} submitted, "
        f"p50 {step['p50_ms']:.0f} ms, p99 {step['p99_ms']:.0f} ms; decided p50 "
        f"{percentile(times['decided'], 0.5):.2f} s, notified p50 {percentile(times['notified'], 0.5):.2f} s"
    )
    for verdict, met in verdicts.items():
        print(f"  {'met ' if met else 'MISSED'}  {verdict}")
    if len(step["by_minute"]) > 1:
        course = ", ".join(f"{m['minute'] + 1}: {m['p50_ms']:.0f}/{m['p99_ms']:.0f}" for m in step["by_minute"])
        print(f"submit p50/p99 ms by minute: {course}")
    return 0 if all(verdicts.values()) else 1


def percentile(values: list[float], share: float) -> float:
    """As the load test's, with no value at all counting as missed."""
    found = slo.percentile(values, share)
    return float("inf") if found is None else found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sustain", type=float, metavar="RATE", help="one run at RATE cases/s, judged by the SLOs")
    args = parser.parse_args()
    if args.sustain:
        raise SystemExit(sustain(args.sustain, args.seconds, args.clients))
    broker = broker_ceiling(args.seconds)
    docs = docserver_ceiling(args.seconds)
    entries = entry_update_ms()
    path = case_path(args.seconds, args.clients, system.RUN_DIR / "bench-ceiling-spans")
    rate = cases_per_second(path)
    per_case_published = path["published"] / max(1, path["accepted"])
    per_case_delivered = path["delivered"] / max(1, path["accepted"])
    # The ceiling publishes and consumes each message once: a case's broker work is the mean of both.
    per_case_messages = (per_case_published + per_case_delivered) / 2
    per_case_writes = path["writes"] / max(1, path["accepted"])
    ordered = sorted(path["latencies"]) or [0.0]
    print(
        f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(f"ceiling: broker {broker:,.0f} messages/s (persistent, confirmed, consumed with acks)")
    print(f"ceiling: document server {docs['insert']:,.0f} inserts/s, {docs['update']:,.0f} _id updates/s (8 writers)")
    print(
        "document server: one entry set in a document of "
        + " / ".join(f"{size:,}" for size in entries)
        + " entries: "
        + " / ".join(f"{ms:.1f}" for ms in entries.values())
        + " ms"
    )
    print(
        f"case path: {rate:.1f} cases/s accepted over {args.seconds:.0f} s with {args.clients} clients "
        f"({path['accepted']} accepted, {path['errors']} errors), submit p50 "
        f"{statistics.median(ordered) * 1000:.0f} ms, p99 {nearest_rank(ordered, 0.99) * 1000:.0f} ms"
    )
    print(
        f"per case: {per_case_published:.1f} broker messages published, {per_case_delivered:.1f} delivered, "
        f"{per_case_writes:.1f} document writes"
    )
    for step in path["steps"]:
        print(
            f"  open loop {step['rate']:5.1f} cases/s: p50 {step['p50_ms']:6.0f} ms, p99 {step['p99_ms']:6.0f} ms, "
            f"{step['errors']} errors of {step['requests']}; decided p95 {step['decided_p95_s']:.2f} s, "
            f"notified p95 {step['notified_p95_s']:.2f} s"
        )
    at_slos = path["at_slos"]
    print(
        f"highest step at the SLOs (submit p99 <= {SUBMIT_P99_MS:.0f} ms, errors <= 0.1%, decided and notified "
        f"p95 <= 2 s, in {args.seconds:.0f} s steps): {at_slos:.0f} cases/s; a step is not a sustained run: "
        f"`make bench-sustain RATE={at_slos:.0f}` holds it for 10 minutes"
    )
    for label, cases_per_s in (("at the SLOs", at_slos), ("closed loop", rate)):
        print(
            f"share of the ceiling {label} ({cases_per_s:.1f} cases/s): broker "
            f"{cases_per_s * per_case_messages / broker:.1%}, document server "
            f"{cases_per_s * per_case_writes / docs['update']:.1%} (of its _id-update rate)"
        )


if __name__ == "__main__":
    main()
