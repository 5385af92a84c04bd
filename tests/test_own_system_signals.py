"""A benchmark's own system is stopped when the run is killed (SIGTERM from `kill` or `timeout`),
not only on Ctrl-C: Python's default for SIGTERM skipped the `finally` that stops it. Checked in
a child process, so that a handler that is missing kills the child and not the test run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from loadtests.own_system import terminate_as_exit

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import os, signal, time
from loadtests.own_system import terminate_as_exit
try:
    with terminate_as_exit():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        finally:
            print("stopped its system", flush=True)
finally:
    print("handler restored:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
"""


def test_sigterm_ends_the_run_through_its_finally_blocks() -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == 128 + signal.SIGTERM, child.stderr
    assert child.stdout.splitlines() == ["stopped its system", "handler restored: True"]


def test_the_previous_handler_is_back_afterwards() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with terminate_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
