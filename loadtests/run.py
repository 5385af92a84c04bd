"""`make loadtest`: run the Locust suite headless and keep its results.

    python -m loadtests.run [--shape peak|soak|spike|none] [--users 50] [--duration 180] [--host URL]

Without --host it starts a system of its own (own vhost, databases and ports, like the
benchmarks) and stops it afterwards. Results go to loadtests/results/<time>/: Locust's CSV files
and HTML report, and summary.md/summary.json with the SLO verdict (loadtests/slo.py). The exit
code is Locust's: non-zero when an objective was missed.

Larger machines: run Locust distributed, one master and a worker per core. Every process needs
YIWANG_ADMIN_PASSWORD, the system's first admin's (reviewers and supervisors are created through
the admin API), and the same YIWANG_LOAD_SHAPE. With a shape, users and duration come from
YIWANG_LOAD_USERS and YIWANG_LOAD_DURATION (Locust ignores -u/-r/-t when a shape is loaded):
    export YIWANG_ADMIN_PASSWORD=... YIWANG_LOAD_SHAPE=peak YIWANG_LOAD_USERS=2000 YIWANG_LOAD_DURATION=600
    locust -f loadtests/locustfile.py --master --headless --expect-workers 8 --stop-timeout 60 --host URL
    locust -f loadtests/locustfile.py --worker --master-host MASTER      # on each worker machine
With YIWANG_LOAD_SHAPE=none, -u/-r/-t on the master apply. The workers send their 秒批
submissions to the master, which alone judges the objectives and writes the summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 60  # longer than any request of the suite may take (the users' timeout)


def locust(host: str, shape: str, users: int, duration: int, results: Path, extra_env: dict[str, str]) -> int:
    results.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).with_name("locust")),
        "-f",
        str(ROOT / "loadtests" / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "--csv",
        str(results / "stats"),
        "--html",
        str(results / "report.html"),
        "--only-summary",
        # Users stopped (a shape's decline, the run's end) finish the request they are in: killed
        # at once, it was never counted, and those are the slowest, when the system is loaded most.
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
    ]
    if shape == "none":
        command += ["-u", str(users), "-r", str(max(1, users // 4)), "-t", f"{duration}s"]
    env = {
        **os.environ,
        **extra_env,
        "PYTHONPATH": str(ROOT),
        "YIWANG_LOAD_SHAPE": shape,
        "YIWANG_LOAD_USERS": str(users),
        "YIWANG_LOAD_DURATION": str(duration),
        "YIWANG_LOAD_RESULTS": str(results),
    }
    return subprocess.call(command, cwd=ROOT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="peak", choices=["peak", "soak", "spike", "none"])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--duration", type=int, default=180, help="seconds")
    parser.add_argument("--host", default="")
    args = parser.parse_args()
    results = ROOT / "loadtests" / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    print(f"load test: {args.shape}, up to {args.users} users, {args.duration} s; results in {results}")
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    if args.host:
        return locust(args.host, args.shape, args.users, args.duration, results, {})

    from loadtests.own_system import own_system

    # Locust stands in for the portal's load balancer: each simulated user has its own address.
    with own_system("load", results / "logs", YIWANG_TRUSTED_PROXIES="127.0.0.1") as own:
        return locust(own.base_url, args.shape, args.users, args.duration, results, {})


if __name__ == "__main__":
    sys.exit(main())
