"""The processes `make run` starts: how many of each service (YIWANG_PROCESSES), their ports
and niceness, and a start that a crash spoils."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra import system


def test_one_process_of_each_unless_named() -> None:
    assert system.process_counts("") == dict.fromkeys(system.PROCESSES, 1)
    counts = system.process_counts(" intake=2, notification=3 ")
    assert counts["intake"] == 2 and counts["notification"] == 3
    assert {name: n for name, n in counts.items() if name not in ("intake", "notification")} == dict.fromkeys(
        set(system.PROCESSES) - {"intake", "notification"}, 1
    )


@pytest.mark.parametrize("setting", ["intake", "intake=0", "intake=x", "billing=2", "intake=-1"])
def test_a_setting_that_is_not_service_equals_count_is_refused(setting: str) -> None:
    with pytest.raises(ValueError, match="YIWANG_PROCESSES"):
        system.process_counts(setting)


def test_extra_processes_get_metrics_ports_after_the_default_six() -> None:
    ports = system._metrics_ports({"YIWANG_METRICS_BASE_PORT": "9100"}, ["intake-2", "notification-2"])
    assert [ports[name] for name in system.PROCESSES] == list(range(9100, 9100 + len(system.PROCESSES)))
    assert ports["intake-2"] == 9100 + len(system.PROCESSES)
    assert ports["notification-2"] == 9101 + len(system.PROCESSES)


def test_named_processes_and_their_extras_run_niced() -> None:
    commands = {"notification": ["nameko", "run"], "intake": ["nameko", "run"]}
    niced = system.with_extras(system.niced(commands, "notification=10, intake=0"), ["notification-2"])
    assert niced["notification"] == niced["notification-2"] == ["nice", "-n", "10", "nameko", "run"]
    assert niced["intake"] == ["nameko", "run"]
    assert system.niced(commands, "") == commands


@pytest.mark.parametrize("setting", ["notification", "notification=20", "notification=-5", "billing=5", "intake=x"])
def test_a_niceness_that_is_not_process_equals_0_to_19_is_refused(setting: str) -> None:
    with pytest.raises(ValueError, match="YIWANG_NICE"):
        system.niced({"notification": ["x"], "intake": ["y"]}, setting)


def test_a_niced_process_keeps_its_pid_and_runs_at_that_niceness(tmp_path) -> None:
    run = system.System(base_url="", log_dir=tmp_path)
    command = [sys.executable, "-c", "import time; time.sleep(30)"]
    run.commands = system.niced({"notification": command}, "notification=7")
    child = system.spawn(run, "notification")
    try:
        system_nice = os.getpriority(os.PRIO_PROCESS, 0)
        deadline = time.monotonic() + 10
        # Until `nice` has exec'd the command in the same process (before: the fork's, then nice's).
        expected = "\0".join(command).encode() + b"\0"
        while Path(f"/proc/{child.pid}/cmdline").read_bytes() != expected:
            assert time.monotonic() < deadline, "nice never ran the command"
            time.sleep(0.05)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, system_nice + 7)
    finally:
        child.kill()
        child.wait()


def test_a_process_that_dies_while_starting_is_named_with_the_end_of_its_log(tmp_path) -> None:
    run = system.System(base_url="http://127.0.0.1:9", log_dir=tmp_path)
    said = "; ".join(f"print('line {n}')" for n in range(60))
    script = f"import sys; {said}; sys.stdout.flush(); raise SystemExit('approval: no broker')"
    run.commands = {"approval": [sys.executable, "-c", script]}
    system.spawn(run, "approval").wait(timeout=30)
    with pytest.raises(RuntimeError) as failure:
        system.wait_ready(run, timeout=10)
    message = str(failure.value)
    assert "approval exited with 1" in message
    assert "approval: no broker" in message and "line 59" in message
    assert "line 10\n" not in message  # the end of the log, not all of it


def test_ports_for_our_processes_lie_below_the_ephemeral_range_and_are_free() -> None:
    low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {system.free_port() for _ in range(20)}
    assert all(port < low for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_never_picked(monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setattr(system, "LISTEN_PORTS", range(busy, busy + 1))
        with pytest.raises(OSError, match="no free port"):
            system.free_port()


def _stand_in_start(tmp_path: Path, crashes: int) -> tuple[Callable[..., system.System], int]:
    """A `start` whose one process ("gateway") crashes on its first `crashes` starts, then answers
    /readyz."""
    port, starts = system.free_port(), tmp_path / "starts"
    script = f"""
import http.server, pathlib, sys
starts = pathlib.Path({str(starts)!r})
n = len(starts.read_text()) if starts.exists() else 0
starts.write_text("x" * (n + 1))
if n < {crashes}:
    print("crash number", n + 1, flush=True)
    sys.exit(3)
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{{}}")
http.server.HTTPServer(("127.0.0.1", {port}), Ready).serve_forever()
"""

    def start(env: object = None, log_dir: object = None) -> system.System:
        run = system.System(base_url=f"http://127.0.0.1:{port}", log_dir=tmp_path)
        run.commands = {"gateway": [sys.executable, "-c", script]}
        system.spawn(run, "gateway")
        return run

    return start, port


def test_a_start_that_a_crash_spoils_is_done_once_more_with_a_warning(tmp_path, monkeypatch) -> None:
    start, _port = _stand_in_start(tmp_path, crashes=1)
    monkeypatch.setattr(system, "start", start)
    with pytest.warns(UserWarning, match=r"(?s)gateway exited with 3.*crash number 1"):
        running = system.start_ready(timeout=30)
    try:
        assert running.processes["gateway"].poll() is None
    finally:
        system.stop(running)


def test_a_system_that_crashes_on_both_starts_fails_with_the_end_of_the_log(tmp_path, monkeypatch) -> None:
    start, _port = _stand_in_start(tmp_path, crashes=2)
    monkeypatch.setattr(system, "start", start)
    with pytest.warns(UserWarning), pytest.raises(system.ProcessDied, match=r"(?s)exited with 3.*crash number 2"):
        system.start_ready(timeout=30)


def _service_like() -> subprocess.Popen:
    """A process as `spawn` starts one: in the checkout, with YIWANG_SERVICE."""
    env = {**os.environ, "YIWANG_SERVICE": "intake"}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=system.ROOT, env=env)


def test_a_second_run_refuses_while_the_first_ones_processes_run(tmp_path, monkeypatch, capsys) -> None:
    child = _service_like()
    try:
        pid_file = tmp_path / "system.pids"
        pid_file.write_text(str(child.pid))
        monkeypatch.setattr(system, "PID_FILE", pid_file)
        monkeypatch.setattr(system, "start", lambda: pytest.fail("started beside a running system"))
        assert system.run() == 1
        assert "already running" in capsys.readouterr().err
        assert pid_file.read_text() == str(child.pid)  # the first run's record is kept for `make stop`
    finally:
        child.kill()
        child.wait()


def test_a_pid_that_is_not_ours_any_more_is_neither_running_nor_stopped(tmp_path, monkeypatch) -> None:
    # After a reboot or a crash, a recorded pid may be gone or belong to anything: pid 1, or this
    # test's own process (in the checkout, but no service).
    pid_file = tmp_path / "system.pids"
    pid_file.write_text(f"1\n999999999\n{os.getpid()}")
    monkeypatch.setattr(system, "PID_FILE", pid_file)
    assert system._recorded_pids() == []
    killed = []
    monkeypatch.setattr(system.os, "kill", lambda pid, sig: killed.append(pid))
    assert system.stop_background() == 0
    assert killed == [] and not pid_file.exists()


def test_stop_ends_the_recorded_processes_and_waits_for_them(tmp_path, monkeypatch) -> None:
    child = _service_like()
    pid_file = tmp_path / "system.pids"
    pid_file.write_text(str(child.pid))
    monkeypatch.setattr(system, "PID_FILE", pid_file)
    ours = system._ours
    monkeypatch.setattr(system, "_ours", lambda pid: child.poll() is None and ours(pid))  # reaped as it ends
    assert system.stop_background() == 0
    assert child.wait(timeout=5) == -15 and not pid_file.exists()


# --- the local document server's Unix socket --------------------------------------------------


def _listening_unix_socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    return server


def test_services_use_the_local_document_servers_socket(tmp_path: Path) -> None:
    with _listening_unix_socket(tmp_path / "docserver-27999.sock"):
        env = {"YIWANG_STATE_DIR": str(tmp_path), "YIWANG_MONGO_PORT": "27999"}
        system._local_store_socket(env)
    assert env["YIWANG_MONGO_SOCKET"] == str(tmp_path / "docserver-27999.sock")


def test_a_socket_nobody_listens_on_is_passed_over(tmp_path: Path) -> None:
    # A server killed outright leaves its socket file; connecting to it is refused.
    _listening_unix_socket(tmp_path / "docserver-27999.sock").close()
    assert (tmp_path / "docserver-27999.sock").is_socket()
    env = {"YIWANG_STATE_DIR": str(tmp_path), "YIWANG_MONGO_PORT": "27999"}
    system._local_store_socket(env)
    assert "YIWANG_MONGO_SOCKET" not in env


@pytest.mark.parametrize(
    "setting",
    [
        {"YIWANG_MONGO_SOCKET": ""},  # TCP, asked for
        {"YIWANG_MONGO_SOCKET": "/elsewhere.sock"},
        {"YIWANG_MONGO_HOST": "mongo"},  # another machine
        {"YIWANG_MONGO_PORT": "28000"},  # another server (a proxy in front of this one, say)
    ],
)
def test_the_socket_is_not_used_when_the_settings_say_otherwise(tmp_path: Path, setting: dict[str, str]) -> None:
    with _listening_unix_socket(tmp_path / "docserver-27999.sock"):
        env = {"YIWANG_STATE_DIR": str(tmp_path), "YIWANG_MONGO_PORT": "27999", **setting}
        system._local_store_socket(env)
    assert env.get("YIWANG_MONGO_SOCKET") == setting.get("YIWANG_MONGO_SOCKET")
