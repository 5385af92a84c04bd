"""Readiness probes share one check per process.

`/readyz` is anonymous, and each probe asked every service (five RPCs, five database reads); while
one service did not answer, each probe held a gateway worker for the ping's whole wait, so ten
probes at once held every worker. Now a result is reused for a second (`gateway.shared_result`),
and while a check runs, other probes get the last result at once if it is recent, or wait for that
check, which is bounded itself (the gateway's `_check_services`).
"""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider

from gateway.shared_result import SharedResult


class Readiness(DependencyProvider):
    """The process's SharedResult for `/readyz`."""

    def setup(self) -> None:
        self.shared: SharedResult[Any] = SharedResult()

    def get_dependency(self, worker_ctx: Any) -> SharedResult[Any]:
        return self.shared
