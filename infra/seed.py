"""`make seed`: ask a running system to create the first admin and the starter catalog (idempotent)."""

from __future__ import annotations

import eventlet

eventlet.monkey_patch()

from nameko import config  # noqa: E402
from nameko.cli.utils.config import setup_config  # noqa: E402
from nameko.standalone.rpc import ClusterRpcClient  # noqa: E402

from infra.system import ROOT  # noqa: E402

SEED_TIMEOUT = 60  # seconds; the catalog's seeding writes every starter item


def main() -> None:
    with open(ROOT / "config.yml") as fh:
        setup_config(fh)
    # A timeout: with the services stopped the calls would wait for an answer for ever.
    with ClusterRpcClient(uri=config["AMQP_URI"], timeout=SEED_TIMEOUT) as cluster:
        admin = cluster.identity.ensure_admin()
        cluster.catalog.seed()
    print(f"seeded: admin user '{admin}' and the starter catalog")


if __name__ == "__main__":
    main()
