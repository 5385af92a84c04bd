"""How many processes `make run` starts of each service (YIWANG_PROCESSES), and their ports."""

from __future__ import annotations

import os
import sys
import time
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
