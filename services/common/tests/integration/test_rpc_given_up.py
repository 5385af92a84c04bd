"""A call its caller gave up on, against the real broker: it is no longer waited for, and a service
that was away does not run it on its return (its caller was told it failed)."""

from __future__ import annotations

import eventlet
from nameko.standalone.rpc import ServiceRpcClient

from services.common.errors import Unavailable
from services.common.rpc import ServiceRpc, call, rpc

touched: list[str] = []


class Away:
    name = "away"

    @rpc
    def touch(self, what: str) -> None:
        touched.append(what)


class Caller:
    name = "caller"
    # The test's own short expiry; every ServiceRpc has REQUEST_EXPIRY (test_rpc checks it).
    away = ServiceRpc("away", expiration=0.5)

    @rpc
    def ask(self, what: str) -> int:
        """Calls filed for a reply once the call was given up (-1: it was answered)."""
        try:
            call(self.away.touch, what, timeout=0.2)
        except Unavailable:
            return len(self.away.register_for_reply.__self__.pending)
        return -1


def test_a_request_given_up_is_forgotten_and_never_run_later(container_factory, rabbit_config):
    touched.clear()
    away = container_factory(Away)
    away.start()
    away.stop()  # its queue stays (durable), with no one consuming it
    container_factory(Caller).start()
    with ServiceRpcClient("caller") as caller:
        assert caller.ask("first") == 0
        assert caller.ask("second") == 0  # not 1: the first is no longer waited for
    eventlet.sleep(1)  # past their expiry (the management API's counts lag: not waited on)
    container_factory(Away).start()  # back: nothing of what its callers gave up on runs now
    eventlet.sleep(1)
    assert touched == []
