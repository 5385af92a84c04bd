"""CPU per case, by process: drives the case path (closed loop, like `make bench`) through a system
of its own and divides each process's CPU time (from /proc, the asynchronous work each case causes
included: it waits until every case is decided and every SMS sent and its receipt read) by the
cases accepted. Settings in the environment (YIWANG_MAX_WORKERS, YIWANG_PROCESSES,
...) reach the system it starts.

    python -m loadtests.bench_cpu --seconds 15 --clients 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import pymongo
import requests
from prometheus_client.parser import text_string_to_metric_families

from infra import system
from loadtests.bench_tracing import decided_count, drive, rate, wait_decided, warmed_applicants
from loadtests.own_system import own_system
from tests.support import MONGO_URI

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


SHARED = (
    ("document server", "yiwang-docserver-[0-9a-f]+ --listen"),
    ("rabbitmq", "beam.smp"),
    # The local trace viewer, when it runs: the system sends it every span (infra/system.py).
    ("trace viewer", "zipkin-server-.*[.]jar"),
)


def shared_processes() -> dict[str, int]:
    """The document server, RabbitMQ and the trace viewer, which every system on this machine shares."""
    found = {}
    for name, pattern in SHARED:
        pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        if pids:
            found[name] = int(pids[0])
    return found


def store_commands(metrics_ports: dict[str, int]) -> dict[tuple[str, str, str], float]:
    """Commands each process has sent to the document server so far: (process, command, collection)."""
    counts: dict[tuple[str, str, str], float] = {}
    for name, port in metrics_ports.items():
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "yiwang_store_commands_total":
                    counts[(name, sample.labels["command"], sample.labels["collection"])] = sample.value
    return counts


def wait_delivered(client: pymongo.MongoClient, prefix: str, timeout: float = 180) -> int:
    """Let the deliveries finish too (SMS sent, receipts read), so that their CPU is part of each
    case's; returns how many are still queued (0 unless `timeout` ran out). Asks whether one entry
    is left, not how many: the document server answers a count by reading and decoding the whole
    queue, and its CPU is what this measures (until 28 November a count twice a second cost it
    about a second of CPU in 20 s)."""
    queue = client[f"{prefix}_notification"]["delivery_queue"]
    deadline = time.monotonic() + timeout
    while (left := queue.find_one({}, {"_id": 1})) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    return 0 if left is None else queue.count_documents({})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with own_system("bench", system.RUN_DIR / "bench-cpu", YIWANG_LOGIN_ADDRESS_LIMIT="10000") as own:
        mongo = pymongo.MongoClient(MONGO_URI)
        tokens = warmed_applicants(own.base_url, args.clients)
        time.sleep(3)
        pids = {name: proc.pid for name, proc in own.running.processes.items()} | shared_processes()
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        decided_before = decided_count(mongo, own.db_prefix)
        commands_before = store_commands(own.running.metrics_ports)
        started = time.monotonic()
        result = drive(own.base_url, tokens, args.seconds)
        decided = wait_decided(mongo, own.db_prefix, decided_before + result["accepted"]) - decided_before
        undelivered = wait_delivered(mongo, own.db_prefix)
        elapsed = time.monotonic() - started
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        commands = store_commands(own.running.metrics_ports)
    cases = max(1, result["accepted"])
    ordered = sorted(result["latencies"]) or [0.0]
    print(
        f"\n{rate(result):.1f} cases/s accepted ({result['in_time']} in {result['seconds']:.0f} s, "
        f"{result['errors']} errors), "
        + ("all decided" if decided >= result["accepted"] else f"only {decided} of {result['accepted']} decided")
        + f" after {elapsed:.0f} s; submit p50 "
        f"{statistics.median(ordered) * 1000:.0f} ms, p99 {ordered[int(0.99 * (len(ordered) - 1))] * 1000:.0f} ms"
    )
    print("every SMS sent and its receipt read" if not undelivered else f"{undelivered} deliveries still queued")
    spent = {name: after[name] - before[name] for name in pids}
    print(f"CPU per case (ms), {sum(spent.values()) / elapsed:.0%} of one core on average over {elapsed:.0f} s:")
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {name:18s} {1000 * seconds / cases:7.1f}")
    sent = {key: count - commands_before.get(key, 0) for key, count in commands.items()}
    sent = {key: count for key, count in sent.items() if count > 0}
    print(f"Document server commands per case: {sum(sent.values()) / cases:.1f}")
    for (process, command, collection), count in sorted(sent.items(), key=lambda item: -item[1]):
        print(f"  {process:14s} {command:14s} {collection:22s} {count / cases:6.2f}")


if __name__ == "__main__":
    main()
