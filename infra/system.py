"""Start, watch and stop the whole Yiwang system: five services and the gateway, one process each,
plus a local SMS provider and a local mail server unless real ones are configured
(YIWANG_SMS_URL, YIWANG_SMTP_HOST).

`python -m infra.system run` (what `make run` calls) starts them with `nameko run`, waits until
`/readyz` answers 200, and keeps them until Ctrl-C or SIGTERM, then stops them all cleanly.
`python -m infra.system stop` stops a run started in the background. The end-to-end tests use
`start()` / `stop()` directly with their own environment (vhost, database prefix, port).

YIWANG_PROCESSES="intake=2,notification=2" starts more than one process of a service (default one
each): they share the service's queues; the extra ones are named intake-2, intake-3, ... (their
logs, YIWANG_SERVICE) and get metrics ports after the default six. Extra gateway processes share
the HTTP port (SO_REUSEPORT; the kernel spreads the connections).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.generated_secrets import state_dir

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = Path(os.environ.get("YIWANG_RUN_DIR", ROOT / ".run"))
PID_FILE = RUN_DIR / "system.pids"
TOPOLOGY_SECONDS = 60.0  # `infra.topology` imports every service (3 s) and declares its queues
STOP_SECONDS = 25.0  # `make stop` waits this long for the processes to end, then kills them

PROCESSES = {
    "identity": "services.identity.service:IdentityService",
    "catalog": "services.catalog.service:CatalogService",
    "intake": "services.intake.service:IntakeService",
    "approval": "services.approval.service:ApprovalService",
    "notification": "services.notification.service:NotificationService",
    "gateway": "gateway.service:Gateway",
}


@dataclass
class System:
    base_url: str
    log_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    sms_url: str = ""
    metrics_ports: dict[str, int] = field(default_factory=dict)  # Prometheus endpoint of each process
    mail_dir: Path | None = None  # a Maildir of what the local mail server received
    commands: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def _nameko() -> str:
    return str(Path(sys.executable).with_name("nameko"))


def start(env: dict[str, str] | None = None, log_dir: Path | None = None) -> System:
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # A crash in native code (a segfault) leaves the Python stacks of every thread in the log.
    env.setdefault("PYTHONFAULTHANDLER", "1")
    log_dir = log_dir or RUN_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    port = env.get("YIWANG_HTTP_PORT", "8000")
    system = System(base_url=f"http://127.0.0.1:{port}", log_dir=log_dir)
    _trace_viewer(env)
    _local_store_socket(env)
    _declare_event_queues(env, log_dir)
    commands = {**_local_providers(env, system, log_dir)}
    counts = process_counts(env.get("YIWANG_PROCESSES", ""))
    extras = []
    for name, target in PROCESSES.items():
        commands[name] = [_nameko(), "run", "--config", str(ROOT / "config.yml"), target]
        extras += [f"{name}-{n}" for n in range(2, counts[name] + 1)]
    commands = with_extras(niced(commands, env.get("YIWANG_NICE", "")), extras)
    system.metrics_ports = _metrics_ports(env, extras)
    system.commands, system.env = commands, env
    for name in commands:
        spawn(system, name)
    return system


def _declare_event_queues(env: dict[str, str], log_dir: Path) -> None:
    """Every handler's queue exists before any process publishes (`infra.topology`: on a broker
    that never ran the system, an event published before its consumer started would be lost)."""
    command = [sys.executable, "-m", "infra.topology"]
    with open(log_dir / "topology.log", "ab") as log:
        try:
            code = subprocess.run(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=TOPOLOGY_SECONDS
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    if code != 0:  # the broker away, say: the processes wait for it and declare their own
        warnings.warn(f"event queues not declared before the start: see {log_dir / 'topology.log'}", stacklevel=3)


def spawn(system: System, name: str) -> subprocess.Popen:
    """Start (or start again, after a crash or a kill) one process of the system, as `start` did."""
    log = open(system.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
    port = str(system.metrics_ports.get(name, ""))
    system.processes[name] = subprocess.Popen(
        system.commands[name],
        cwd=ROOT,
        env={**system.env, "YIWANG_SERVICE": name, "YIWANG_METRICS_PORT": port},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
    )
    return system.processes[name]


def process_counts(setting: str) -> dict[str, int]:
    """How many processes of each service: "intake=2,notification=2" (YIWANG_PROCESSES); one each
    unless named."""
    counts = dict.fromkeys(PROCESSES, 1)
    for item, name, count in _named_values(setting):
        if name not in PROCESSES or not count.isdigit() or int(count) < 1:
            raise ValueError(
                f"YIWANG_PROCESSES: {item!r} is not <service>=<count>, service one of {', '.join(PROCESSES)}"
            )
        counts[name] = int(count)
    return counts


def process_niceness(setting: str, names: list[str]) -> dict[str, int]:
    """Scheduling niceness by process name: "notification=10,sms-provider=10" (YIWANG_NICE; 0-19).
    Work nobody waits on at the moment (deliveries) can yield the CPU to requests."""
    niceness: dict[str, int] = {}
    for item, name, value in _named_values(setting):
        if name not in names or not value.isdigit() or int(value) > 19:
            raise ValueError(f"YIWANG_NICE: {item!r} is not <process>=<0-19>, process one of {', '.join(names)}")
        niceness[name] = int(value)
    return niceness


def _named_values(setting: str) -> list[tuple[str, str, str]]:
    """(item, name, value) of each `name=value` in a comma-separated setting, stripped."""
    found = []
    for item in filter(None, (part.strip() for part in setting.split(","))):
        name, _, value = item.partition("=")
        found.append((item, name.strip(), value.strip()))
    return found


def niced(commands: dict[str, list[str]], setting: str) -> dict[str, list[str]]:
    """The commands, those named in `setting` run under `nice` (which execs the command: the
    process keeps the pid we watch and signal)."""
    niceness = process_niceness(setting, list(commands))
    return {
        name: ["nice", "-n", str(niceness[name]), *cmd] if niceness.get(name) else cmd for name, cmd in commands.items()
    }


def with_extras(commands: dict[str, list[str]], extras: list[str]) -> dict[str, list[str]]:
    """The commands and each extra process (`intake-2`), which runs as its first one does."""
    return {**commands, **{extra: commands[extra.rsplit("-", 1)[0]] for extra in extras}}


def _metrics_ports(env: dict[str, str], extras: tuple[str, ...] | list[str] = ()) -> dict[str, int]:
    """One Prometheus port per process: YIWANG_METRICS_BASE_PORT [9100] and up, in PROCESSES order,
    then the extra processes of YIWANG_PROCESSES; 0 picks free ports (tests)."""
    base = int(env.get("YIWANG_METRICS_BASE_PORT", "9100"))
    return {name: (base + n if base else free_port()) for n, name in enumerate([*PROCESSES, *extras])}


# Ports a child process will listen on are picked below the kernel's ephemeral range (32768 and up
# on Linux), not by bind(0) within it: between our check and the child's own bind, a connection
# that any process opens meanwhile may be given an ephemeral port as its local one, never these.
LISTEN_PORTS = range(20000, 32768)


def free_port() -> int:
    """A loopback port nobody listens on now, for a process we are about to start."""
    for port in random.sample(LISTEN_PORTS, min(100, len(LISTEN_PORTS))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1}")


def docserver_socket(env: Mapping[str, str]) -> Path:
    """The Unix socket infra/docserver.sh opens beside its pid file for the server on the port."""
    return state_dir(env) / f"docserver-{env.get('YIWANG_MONGO_PORT', '27017')}.sock"


def _local_store_socket(env: dict[str, str]) -> None:
    """Services reach a document server on this machine through its Unix socket (docserver_socket),
    unless YIWANG_MONGO_SOCKET is set (empty: TCP). A command costs the server and the service
    less CPU than over loopback TCP (make bench-cpu: about 5% a case)."""
    if "YIWANG_MONGO_SOCKET" in env or env.get("YIWANG_MONGO_HOST", "127.0.0.1") not in ("127.0.0.1", "localhost"):
        return
    path = docserver_socket(env)
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1)
        probe.connect(str(path))  # a file left by a server killed outright refuses: TCP then
        env["YIWANG_MONGO_SOCKET"] = str(path)


def _trace_viewer(env: dict[str, str]) -> None:
    """Send spans to the local Zipkin (infra/trace_viewer.sh) when it runs and nothing else is chosen."""
    if "OTEL_TRACES_EXPORTER" in env or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    url = viewer_url(env)
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            pass
    except OSError:
        return
    env["OTEL_TRACES_EXPORTER"] = "zipkin"
    env["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] = f"{url}/api/v2/spans"


def viewer_url(env: dict[str, str] | None = None) -> str:
    return f"http://127.0.0.1:{(env or os.environ).get('YIWANG_ZIPKIN_PORT', '9411')}"


def _local_providers(env: dict[str, str], system: System, log_dir: Path) -> dict[str, list[str]]:
    """Commands of the stand-in SMS provider and mail server, for what is not configured; sets the
    addresses the notification service will use in `env`."""
    commands = {}
    if not env.get("YIWANG_SMS_URL"):
        sms_port = env.setdefault("YIWANG_SMS_PORT", "8025")
        env["YIWANG_SMS_URL"] = f"http://127.0.0.1:{sms_port}"
        store = log_dir / f"sms-{sms_port}.jsonl"
        commands["sms-provider"] = [
            sys.executable,
            "-m",
            "infra.sms_provider",
            "--port",
            sms_port,
            "--store",
            str(store),
        ]
    system.sms_url = env["YIWANG_SMS_URL"]
    if not env.get("YIWANG_SMTP_HOST"):
        smtp_port = env.setdefault("YIWANG_SMTP_PORT", "1025")
        env["YIWANG_SMTP_HOST"] = "127.0.0.1"
        system.mail_dir = log_dir / f"mail-{smtp_port}"
        handler = ["-c", "aiosmtpd.handlers.Mailbox", str(system.mail_dir)]
        commands["mail-server"] = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{smtp_port}", *handler]
    return commands


class ProcessDied(RuntimeError):
    """A process of the system exited while it was starting."""


def start_ready(
    env: dict[str, str] | None = None, log_dir: Path | None = None, timeout: float = 180.0, attempts: int = 2
) -> System:
    """Start the system and wait until it is ready. Should a process die while starting, the whole
    system is stopped and started once more, with a warning that carries the end of the dead
    process's log: the test tiers and benchmarks that use this then say why, instead of failing
    every test on a crash that one start hit (the logs keep both starts)."""
    for attempt in range(1, attempts + 1):
        running = start(env, log_dir)
        try:
            wait_ready(running, timeout)
            return running
        except ProcessDied as exc:
            stop(running)
            if attempt == attempts:
                raise
            warnings.warn(f"the system did not start; starting it again: {exc}", stacklevel=2)
        except BaseException:
            stop(running)
            raise
    raise AssertionError("unreachable")


def wait_ready(system: System, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for name, proc in system.processes.items():
            if proc.poll() is not None:
                log = system.log_dir / f"{name}.log"
                raise ProcessDied(f"{name} exited with {proc.returncode}; see {log}; it ends:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{system.base_url}/readyz", timeout=5) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            last = json.loads(exc.read() or b"{}")
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"the system was not ready within {timeout:.0f}s: {last}")


def log_tail(log: Path, lines: int = 40) -> str:
    """The last lines of a process's log, so a failure seen only in CI's output names its cause."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def stop(system: System, timeout: float = 20.0) -> None:
    for proc in system.processes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in system.processes.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _recorded_pids() -> list[int]:
    """The processes the pid file names that still run and are ours (a pid may have been reused by
    anything since, after a reboot or a crash of `make run`)."""
    if not PID_FILE.exists():
        return []
    return [int(pid) for pid in PID_FILE.read_text().split() if _ours(int(pid))]


def _ours(pid: int) -> bool:
    """A process `spawn` started from this checkout: its directory, its YIWANG_SERVICE."""
    try:
        here = os.readlink(f"/proc/{pid}/cwd") == str(ROOT)
        return here and b"\0YIWANG_SERVICE=" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False  # gone, or a zombie


def run() -> int:
    running = _recorded_pids()
    if running:
        print(f"Yiwang is already running (pids {' '.join(map(str, running))}); `make stop` first", file=sys.stderr)
        return 1
    system = start()
    PID_FILE.write_text("\n".join(str(p.pid) for p in system.processes.values()))
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        wait_ready(system)
        print(f"Yiwang is serving at {system.base_url} (logs in {system.log_dir}); Ctrl-C stops it.", flush=True)
        print(f"Traces: {viewer_url()}/zipkin/ (a response's X-Trace-Id opens as {viewer_url()}/zipkin/traces/<id>)")
        while not stopping:
            for name, proc in system.processes.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the rest", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
        return 0
    except Exception as exc:
        print(f"could not start Yiwang: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping Yiwang ...", flush=True)
        stop(system)
        PID_FILE.unlink(missing_ok=True)


def stop_background() -> int:
    if not PID_FILE.exists():
        print("Yiwang is not running (no pid file)")
        return 0
    pids = _recorded_pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS  # then the ports are free for the next `make run`
    while any(_ours(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in [pid for pid in pids if _ours(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)
    print("stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "stop"])
    args = parser.parse_args()
    return run() if args.command == "run" else stop_background()


if __name__ == "__main__":
    sys.exit(main())
