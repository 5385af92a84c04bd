"""`python -m infra.topology`: declare every service's event queues (with their retry and
dead-letter queues) before any process starts; idempotent.

Each process declares its handlers' queues as it starts. Until the consuming one has, an event
is routed to no queue: the broker confirms it and drops it. On a broker that never ran the system
(a new vhost, the first `make run`, a new stack) intake could so publish a submission before
approval ever declared its queue. `infra.system` runs this first; a container deployment runs it
once before the services (see README, "Containers")."""

from __future__ import annotations

import importlib

import eventlet

eventlet.monkey_patch()  # the services' modules are imported as `nameko run` imports them

from nameko import config  # noqa: E402
from nameko.cli.utils.config import setup_config  # noqa: E402

from infra.system import PROCESSES, ROOT  # noqa: E402
from services.common.consuming import declare_event_queues  # noqa: E402


def main() -> None:
    with open(ROOT / "config.yml") as fh:
        setup_config(fh)
    services = [getattr(importlib.import_module(module), name) for module, name in map(_split, PROCESSES.values())]
    declared = declare_event_queues(services, config["AMQP_URI"])
    print(f"topology: the queues of {len(declared)} event handlers declared")


def _split(target: str) -> tuple[str, str]:
    module, _, name = target.partition(":")
    return module, name


if __name__ == "__main__":
    main()
