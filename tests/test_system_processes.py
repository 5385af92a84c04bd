"""How many processes `make run` starts of each service (YIWANG_PROCESSES), and their ports."""

from __future__ import annotations

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
