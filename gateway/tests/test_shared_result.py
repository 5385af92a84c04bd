"""Anonymous reads share one result per process (readiness probes, the key set, the departments)."""

from __future__ import annotations

import eventlet
import pytest

from gateway.shared_result import SharedResult


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_result_is_reused_while_fresh_and_checked_again_after():
    clock, checks = Clock(), []
    shared = SharedResult(fresh_for=1.0, clock=clock)
    check = lambda: checks.append(clock.now) or len(checks)  # noqa: E731
    assert shared.result(check) == 1
    clock.now += 0.9
    assert shared.result(check) == 1 and len(checks) == 1
    clock.now += 0.2
    assert shared.result(check) == 2


def test_probes_during_a_check_get_the_last_result_at_once():
    clock, release = Clock(), eventlet.event.Event()
    shared = SharedResult(fresh_for=1.0, clock=clock)
    shared.result(lambda: "ready")
    clock.now += 5
    slow = eventlet.spawn(shared.result, lambda: release.wait())  # a service that does not answer
    eventlet.sleep(0)
    answers = [shared.result(lambda: pytest.fail("a second check ran at once")) for _ in range(10)]
    assert answers == ["ready"] * 10
    release.send("not ready")
    assert slow.wait() == "not ready" and shared.result(lambda: "unused") == "not ready"


def test_the_first_probes_wait_for_the_one_check():
    release, checks = eventlet.event.Event(), []
    shared = SharedResult(fresh_for=1.0, clock=Clock())

    def check():
        checks.append(1)
        return release.wait()

    probes = [eventlet.spawn(shared.result, check) for _ in range(5)]
    eventlet.sleep(0)
    release.send("ready")
    assert [p.wait() for p in probes] == ["ready"] * 5 and len(checks) == 1


def test_when_the_call_fails_its_waiters_share_the_failure_instead_of_each_calling_in_turn():
    # A service away: each waiter calling again after the one before failed waited as long again,
    # the tenth ten times over, holding the gateway's workers.
    shared, release, calls = SharedResult(fresh_for=1.0, clock=Clock()), eventlet.event.Event(), []

    def failing():
        calls.append(1)
        release.wait()
        raise RuntimeError("the service did not answer")

    first = eventlet.spawn(shared.result, failing)
    eventlet.sleep(0)
    waiting = [eventlet.spawn(shared.result, failing) for _ in range(5)]
    eventlet.sleep(0)
    release.send(None)
    raised = []
    for caller in (first, *waiting):
        with pytest.raises(RuntimeError, match="did not answer") as error:
            caller.wait()
        raised.append(error.value)
    assert len(calls) == 1
    assert len({id(error) for error in raised}) == len(raised)  # a copy each: no frames gathered
    assert shared.result(lambda: "ready") == "ready"  # a failure is not kept: the next caller calls


def test_when_the_computing_greenthread_is_killed_a_waiter_computes_itself():
    shared, release = SharedResult(fresh_for=1.0, clock=Clock()), eventlet.event.Event()
    first = eventlet.spawn(shared.result, lambda: release.wait())
    eventlet.sleep(0)
    waiting = eventlet.spawn(shared.result, lambda: "ready")
    eventlet.sleep(0)
    first.kill()
    assert waiting.wait() == "ready"
    assert shared.result(lambda: pytest.fail("computed again")) == "ready"  # its result is kept


def test_after_forget_a_caller_does_not_wait_for_a_computation_begun_before():
    # The process rotated the key while a fetch of the key set was under way: that fetch's answer
    # is the old set, and callers after the rotation must get the new one at once.
    shared, release = SharedResult(fresh_for=1.0, clock=Clock()), eventlet.event.Event()
    before = eventlet.spawn(shared.result, lambda: release.wait())
    eventlet.sleep(0)
    shared.forget()
    assert shared.result(lambda: "k1 k2") == "k1 k2"
    release.send("k1")
    assert before.wait() == "k1"  # its own caller gets what it asked for
    assert shared.result(lambda: pytest.fail("computed again")) == "k1 k2"


def test_a_result_too_old_is_not_served_while_a_check_runs_but_awaited():
    # A check stuck for long must not keep answering "ready" from long ago.
    clock, release = Clock(), eventlet.event.Event()
    shared = SharedResult(fresh_for=1.0, stale_after=10.0, clock=clock)
    shared.result(lambda: "ready")
    clock.now += 11
    slow = eventlet.spawn(shared.result, lambda: release.wait())
    eventlet.sleep(0)
    probe = eventlet.spawn(shared.result, lambda: pytest.fail("a second check ran at once"))
    eventlet.sleep(0)
    assert not probe.dead  # waiting for the running check
    release.send("not ready")
    assert probe.wait() == slow.wait() == "not ready"


def test_a_forgotten_result_is_computed_again_and_one_computed_before_is_not_kept():
    clock, release = Clock(), eventlet.event.Event()
    shared = SharedResult(fresh_for=1.0, clock=clock)
    shared.result(lambda: "k1")
    shared.forget()
    assert shared.result(lambda: "k1 k2") == "k1 k2"  # fresh a moment ago, yet computed again
    clock.now += 5
    before = eventlet.spawn(shared.result, lambda: release.wait())  # began before the change
    eventlet.sleep(0)
    shared.forget()
    release.send("k1 k2")
    assert before.wait() == "k1 k2"  # its caller gets it ...
    assert shared.result(lambda: "k1 k2 k3") == "k1 k2 k3"  # ... but it is not served as fresh


def test_a_check_that_never_ends_is_cut_short_by_the_gateway():
    from nameko.testing.services import worker_factory

    from gateway import service as gateway_service
    from gateway.service import SERVICES, Gateway

    gateway = worker_factory(Gateway, readiness=SharedResult())
    gateway._ping = lambda name: eventlet.sleep(3600)  # a publish stuck before the ping's own wait
    original, gateway_service.PING_TIMEOUT = gateway_service.PING_TIMEOUT, 0.05
    try:
        checks = gateway._check_services()
    finally:
        gateway_service.PING_TIMEOUT = original
    assert set(checks) == set(SERVICES) and all("did not answer" in why for why in checks.values())
