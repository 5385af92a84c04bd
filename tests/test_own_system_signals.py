"""A benchmark's own system is stopped when the run is killed (SIGTERM from `kill` or `timeout`),
not only on Ctrl-C: Python's default for SIGTERM skipped the `finally` that stops it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from loadtests.own_system import terminate_as_exit


def test_sigterm_ends_the_run_through_its_finally_blocks() -> None:
    cleaned_up = []
    with pytest.raises(SystemExit) as exited, terminate_as_exit():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        finally:
            cleaned_up.append(True)
    assert exited.value.code == 128 + signal.SIGTERM
    assert cleaned_up == [True]


def test_the_previous_handler_is_back_afterwards() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with terminate_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
