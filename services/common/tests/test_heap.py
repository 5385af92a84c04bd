"""The heap a service builds at start is frozen once it has settled, and not after a stop."""

from __future__ import annotations

import gc

import eventlet
import pytest

from services.common import heap
from services.common.heap import FrozenStartupHeap


@pytest.fixture
def soon(monkeypatch):
    monkeypatch.setattr(heap, "SETTLE_SECONDS", 0.01)
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_startup_heap_is_frozen_once_start_has_settled(soon):
    built_at_start = {"schema": ["a", "b"]}
    provider = FrozenStartupHeap()
    provider.start()
    assert gc.get_freeze_count() == 0  # not while the other extensions may still be starting
    eventlet.sleep(0.1)
    assert gc.get_freeze_count() > 0
    assert all(tracked is not built_at_start for tracked in gc.get_objects())  # out of the collector's sight


@pytest.mark.parametrize("end", ["stop", "kill"])
def test_a_container_ended_before_it_settled_freezes_nothing(soon, end):
    provider = FrozenStartupHeap()
    provider.start()
    getattr(provider, end)()
    eventlet.sleep(0.1)
    assert gc.get_freeze_count() == 0
