"""Benchmark: what tracing costs the case path. In one run, starts the whole system twice — tracing
on (batched export to the local Zipkin when it runs, as `make run` does) and tracing off
(`YIWANG_TRACING=off`) — drives the same submission load through the gateway each time, and
prints both throughputs and their ratio (goal: tracing costs at most 5%).

    make bench-tracing                    # 30 s per mode, 16 clients
    python -m loadtests.bench_tracing --seconds 60 --clients 32
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time

import pymongo
import requests

from infra import system
from loadtests.own_system import own_system
from tests.support import MONGO_URI, citizen

ALLOWANCE = "62052400MZ-GF-0001"  # 高龄津贴申领: decided automatically (秒批)
FORM = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}


def applicants(base: str, count: int) -> list[str]:
    tokens = []
    for _ in range(count):
        person = citizen()
        requests.post(f"{base}/api/v1/auth/register", json=person, timeout=30).raise_for_status()
        login = {"username": person["id_number"], "password": person["password"]}
        tokens.append(requests.post(f"{base}/api/v1/auth/login", json=login, timeout=30).json()["access_token"])
    return tokens


def drive(base: str, tokens: list[str], seconds: float) -> dict:
    """Each client submits cases back to back for `seconds`; returns counts, latencies and
    `in_time`, the cases accepted by the end of `seconds` (the rate's: a request under way at the
    end, answered late, does not stretch the divisor). Every answer's latency is kept, a failure's
    too, and a timeout's; a connection refused or reset is an error without a latency (it fails at
    once, and would pull the percentiles down) and its client waits a moment before going on. Such
    errors ended their client before, unseen, and the run reported 0 errors."""
    latencies: list[float] = []
    accepted, in_time, errors = [0], [0], [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(token: str) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {token}"}
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                response = session.post(
                    f"{base}/api/v1/cases", json={"item_code": ALLOWANCE, "form": FORM}, headers=headers, timeout=30
                )
                ok, latency = response.status_code == 201, time.perf_counter() - started
            except requests.Timeout:
                ok, latency = False, time.perf_counter() - started
            except requests.RequestException:
                ok, latency = False, None
            with lock:
                if latency is not None:
                    latencies.append(latency)
                accepted[0] += ok
                in_time[0] += ok and time.monotonic() <= stop_at
                errors[0] += not ok
            if latency is None:
                time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "accepted": accepted[0],
        "in_time": in_time[0],
        "errors": errors[0],
        "latencies": latencies,
        "seconds": seconds,
    }


def decided_count(client: pymongo.MongoClient, prefix: str) -> int:
    return client[f"{prefix}_intake"].cases.count_documents({"status": "approved"})


def wait_decided(client: pymongo.MongoClient, prefix: str, count: int, timeout: float = 120) -> int:
    """Let the asynchronous part (approval, notification) catch up: wait until `count` cases are
    decided, or `timeout` seconds; returns how many are (fewer is for the caller to say)."""
    deadline = time.monotonic() + timeout
    while (decided := decided_count(client, prefix)) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return decided


def rate(result: dict) -> float:
    """Cases accepted per second of the drive (those answered by its end)."""
    return result["in_time"] / result["seconds"]


def warmed_applicants(base: str, count: int) -> list[str]:
    """`applicants`, then a few seconds of cases from two of them: first calls open connections and pools."""
    tokens = applicants(base, count)
    drive(base, tokens[:2], 3)
    return tokens


def run_mode(tracing: str, seconds: float, clients: int) -> dict:
    log_dir = system.RUN_DIR / f"bench-tracing-{tracing}"
    with own_system("bench", log_dir, YIWANG_TRACING=tracing, YIWANG_LOGIN_ADDRESS_LIMIT="10000") as own:
        mongo = pymongo.MongoClient(MONGO_URI)
        tokens = warmed_applicants(own.base_url, clients)
        time.sleep(3)  # the warm-up's cases decided before counting (as make bench does)
        before = decided_count(mongo, own.db_prefix)
        result = drive(own.base_url, tokens, seconds)
        result["decided"] = wait_decided(mongo, own.db_prefix, before + result["accepted"]) - before
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    results = {mode: run_mode(mode, args.seconds, args.clients) for mode in ("on", "off")}
    print(f"\ncase submissions through the gateway, {args.clients} clients, {args.seconds:.0f} s per mode")
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    for mode, r in results.items():
        ordered = sorted(r["latencies"]) or [0.0]
        p95 = ordered[int(0.95 * (len(ordered) - 1))] * 1000
        print(
            f"  tracing {mode:3s}: {rate(r):7.1f} cases/s accepted "
            f"({r['accepted']} accepted, {r['errors']} errors, {r['decided']} decided), "
            f"submit p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95:.0f} ms"
        )
    on, off = rate(results["on"]), rate(results["off"])
    if off:
        print(f"  throughput with tracing / without: {on / off:.3f} (tracing costs {100 * (1 - on / off):.1f}%)")


if __name__ == "__main__":
    main()
