"""Benchmark: the three hot reads and a submission with many cases in the store, over HTTP through the gateway.

    make bench-cases                      # 1,000,000 cases (default)
    python -m loadtests.bench_case_reads --cases 50000 --requests 20

Starts its own system (own vhost, databases and port), bulk-loads synthetic cases straight into
intake's database (spread over 2,000 applicants and the seeded departments), registers one
applicant and one reviewer whose cases are among them, then times "my cases"
(`GET /api/v1/cases`), "a case by number" (`GET /api/v1/cases/{no}`), "the reviewer's task list"
(`GET /api/v1/review/tasks`) and a submission (`POST /api/v1/cases`, decided automatically), and
prints p50/p95 of each with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta

import psutil
import pymongo
import requests

from infra import system
from loadtests import slo
from loadtests.bench_tracing import ALLOWANCE, FORM
from services.common.monthly_lists import month_of
from services.identity.first_admin import first_admin_password
from services.intake.storage import VIEW_FIELDS, deadline_bucket
from services.intake.task_board import slot_of
from tests.support import MONGO_URI, citizen, create_vhost, delete_vhost, free_port

DEPARTMENT = "620524GA"
ITEM = {"item_code": "62052400GA-QR-0001", "item_name": "居民身份证换领", "department_code": DEPARTMENT}
SUBMISSION = {"item_code": ALLOWANCE, "form": FORM}
STATUSES = ["submitted", "accepted", "resubmitted", "approved", "rejected", "withdrawn"]


def synthetic_case(n: int, k: int, applicant: str, department: str, now: datetime) -> dict:
    """Case n, the k-th of its department: status and deadline vary within every department."""
    case_no = f"{department}-BENCH-{n:08d}"
    submitted = now - timedelta(minutes=n % 500_000)
    status = STATUSES[k % len(STATUSES)]
    return {
        "_id": case_no,
        "case_no": case_no,
        "item_code": ITEM["item_code"],
        "item_version": 1,
        "item_name": ITEM["item_name"],
        "department_code": department,
        "applicant": {"user_id": applicant, "name": "压测申请人"},
        "status": status,
        "form": {"reason": "expired"},
        "materials": [],
        "submitted_at": submitted,
        "deadline": (date(2026, 12, 1) + timedelta(days=(k // len(STATUSES)) % 60)).isoformat(),
        "deadline_provisional": False,
        "timeline": [{"status": "submitted", "at": submitted, "by": applicant, "comment": None}],
        "decision": None,
        "review_explanation": [],
        "certificate_id": None,
        "evaluation": None,
        "applied_events": [],
        "version": 1,
        "awaiting_review": status in ("submitted", "accepted", "resubmitted"),
        "idempotency_key": f"none:{case_no}",
        "outbox": {},
    }


def load(db, total: int, me: str, departments: list[str]) -> None:
    """Cases plus the read models and deadline index intake keeps beside them (what IntakeStore.sync_views
    writes)."""
    now, batch, started = datetime.now(UTC), [], time.monotonic()
    mine: dict[str, dict] = defaultdict(dict)
    tasks: dict[str, dict] = defaultdict(dict)
    watched: dict[str, dict] = defaultdict(dict)
    days: dict[str, int] = defaultdict(int)
    for n in range(total):
        # Every 2000th case is the benchmark applicant's; the reviewer's department gets its share.
        applicant = me if n % 2000 == 0 else f"bench-user-{n % 2000}"
        case = synthetic_case(n, n // len(departments), applicant, departments[n % len(departments)], now)
        batch.append(case)
        entry = {field: case[field] for field in VIEW_FIELDS}
        mine[applicant][case["case_no"]] = entry
        if case["awaiting_review"]:
            tasks[f"{case['department_code']}/{slot_of(entry)}"][case["case_no"]] = entry
            watched[deadline_bucket(case["deadline"], case["case_no"])][case["case_no"]] = case["version"]
            days[case["deadline"]] += 1
        if len(batch) == 10_000:
            db.cases.insert_many(batch, ordered=False)
            batch.clear()
            print(f"  loaded {n + 1:,} cases ({(n + 1) / (time.monotonic() - started):,.0f}/s)", flush=True)
    if batch:
        db.cases.insert_many(batch, ordered=False)
    # "My cases": one document per applicant and month, and the applicant's counts per month.
    months: dict[str, dict] = defaultdict(dict)
    for user, cases in mine.items():
        for case_no, entry in cases.items():
            months[f"{user}/{month_of(entry['submitted_at'])}"][case_no] = entry
    db.applicant_case_months.insert_many([{"_id": key, "items": i} for key, i in months.items()], ordered=False)
    counts: dict[str, dict] = defaultdict(dict)
    for key, items in months.items():
        user, month = key.rsplit("/", 1)
        counts[user][month] = len(items)
    db.applicant_case_counts.insert_many([{"_id": u, "months": m} for u, m in counts.items()], ordered=False)
    # The task board: one document per department and deadline day, a summary per department.
    db.department_tasks.insert_many([{"_id": key, "tasks": t, "rev": 1} for key, t in tasks.items()], ordered=False)
    summaries: dict[str, dict] = defaultdict(dict)
    for key, day_tasks in tasks.items():
        department, slot = key.split("/", 1)
        summaries[department][slot] = {"rev": 1, "counts": dict(Counter(t["status"] for t in day_tasks.values()))}
    db.department_task_days.insert_many([{"_id": d, "days": days} for d, days in summaries.items()], ordered=False)
    pointers = [
        {"_id": no, "version": t["version"], "slot": key.split("/", 1)[1], "leaving": []}
        for key, day_tasks in tasks.items()
        for no, t in day_tasks.items()
    ]
    for start in range(0, len(pointers), 10_000):
        db.task_pointers.insert_many(pointers[start : start + 10_000], ordered=False)
    db.deadline_index.insert_many([{"_id": key, "cases": c} for key, c in watched.items()], ordered=False)
    db.deadline_index.insert_one({"_id": "days", "days": days})


def idle_server_cpu(seconds: float = 60) -> float:
    """CPU share (1.0 = one core) the document server spends while nobody calls the system:
    what the services' timers (outbox relays, the deadline check) cost with this many cases."""
    server = next(p for p in psutil.process_iter(["name"]) if p.info["name"].startswith("yiwang-docserver"))
    before = sum(server.cpu_times()[:2])
    time.sleep(seconds)
    return (sum(server.cpu_times()[:2]) - before) / seconds


def log_in(base: str, username: str, password: str) -> str:
    response = requests.post(f"{base}/api/v1/auth/login", json={"username": username, "password": password}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def timed(session: requests.Session, url: str, headers: dict, count: int, body: dict | None = None) -> list[float]:
    """GET `url` `count` times, or POST `body` when given."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        if body is None:
            response = session.get(url, headers=headers, timeout=600)
        else:
            response = session.post(url, json=body, headers=headers, timeout=600)
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()

    vhost, prefix, port = create_vhost("yiwang-bench"), f"bench{uuid.uuid4().hex[:6]}", "8099"
    env = {
        "YIWANG_RABBIT_VHOST": vhost,
        "YIWANG_DB_PREFIX": prefix,
        "YIWANG_HTTP_PORT": port,
        "YIWANG_SMS_PORT": str(free_port()),
        "YIWANG_SMTP_PORT": str(free_port()),
    }
    running = system.start(env, log_dir=system.RUN_DIR / "bench-logs")
    client = pymongo.MongoClient(MONGO_URI)
    try:
        system.wait_ready(running, timeout=180)
        base = running.base_url
        person = citizen()
        me = requests.post(f"{base}/api/v1/auth/register", json=person, timeout=30).json()["user_id"]
        departments = [d["code"] for d in requests.get(f"{base}/api/v1/catalog/departments").json()["items"]]

        print(f"loading {args.cases:,} cases into {prefix}_intake ...", flush=True)
        started = time.monotonic()
        load(client[f"{prefix}_intake"], args.cases, me, departments)
        load_seconds = time.monotonic() - started
        mine = f"{departments[0]}-BENCH-{0:08d}"
        idle_cpu = idle_server_cpu()
        # Log in only now: a long load outlives a 15-minute access token.
        token = log_in(base, person["id_number"], person["password"])
        admin = log_in(base, "admin", first_admin_password())
        staff = {
            "username": "benchreviewer",
            "name": "审核员",
            "password": "bench-reviewer-1",
            "roles": ["reviewer"],
            "department_code": DEPARTMENT,
        }
        requests.post(
            f"{base}/api/v1/admin/staff", json=staff, headers={"Authorization": f"Bearer {admin}"}
        ).raise_for_status()
        reviewer = log_in(base, "benchreviewer", "bench-reviewer-1")

        session = requests.Session()
        results = {
            "my cases": timed(session, f"{base}/api/v1/cases", {"Authorization": f"Bearer {token}"}, args.requests),
            "case by number": timed(
                session, f"{base}/api/v1/cases/{mine}", {"Authorization": f"Bearer {token}"}, args.requests
            ),
            "reviewer tasks": timed(
                session, f"{base}/api/v1/review/tasks", {"Authorization": f"Bearer {reviewer}"}, args.requests
            ),
            # A write among them: what a submission costs with this many cases stored.
            "submit (秒批)": timed(
                session, f"{base}/api/v1/cases", {"Authorization": f"Bearer {token}"}, args.requests, SUBMISSION
            ),
        }
        print(f"\ncase reads with {args.cases:,} cases in the store, {args.requests} requests each, one client")
        print(
            f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
            f"python {platform.python_version()}"
        )
        print(
            f"document server: {client.server_info().get('version')} at {MONGO_URI}; "
            f"load {args.cases / load_seconds:,.0f} cases/s"
        )
        print(f"  document server busy while idle (timers only): {idle_cpu:.0%} of a core, over 60 s")
        for name, values in results.items():
            p50, p95, mean = slo.percentile(values, 0.5), slo.percentile(values, 0.95), statistics.fmean(values)
            print(f"  {name:15s} p50 {p50:9.1f} ms   p95 {p95:9.1f} ms   mean {mean:9.1f} ms")
    finally:
        system.stop(running)
        delete_vhost(vhost)
        for name in client.list_database_names():
            if name.startswith(f"{prefix}_"):
                client.drop_database(name)


if __name__ == "__main__":
    main()
