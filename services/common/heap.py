"""The heap a service process builds at start, kept out of Python's cyclic garbage collector.

Under load a full collection took about 0.1 s per process (`gc.callbacks` timing it during
`make bench-cpu`), holding every request of that process meanwhile, and the collector took a
tenth of the services' CPU. Most of what a full collection walked is what the process built at
start (modules, pydantic schemas, the search dictionary, templates, clients), which lives as long
as the process. Frozen (`gc.freeze`), it is no longer scanned; what is made later is collected as
before, and reference counting still frees whatever the freeze holds once it goes out of use (only
cycles among it would stay, and start leaves none worth a collection: it is collected first).
"""

from __future__ import annotations

import gc
import logging

import eventlet
from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)

# The heap is frozen this long after the container's start began: its extensions start together,
# and what they build (clients, caches, the search dictionary) is frozen with the rest.
SETTLE_SECONDS = 5.0


def freeze_startup_heap() -> int:
    """Collect what start left behind, then freeze what lives; returns how many objects froze."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class FrozenStartupHeap(DependencyProvider):
    """Declare once per service class: freezes the heap SETTLE_SECONDS after the start."""

    def start(self) -> None:
        self._freezer = eventlet.spawn_after(SETTLE_SECONDS, self._freeze)

    def _freeze(self) -> None:
        log.info("startup heap frozen", extra={"objects": freeze_startup_heap()})

    def stop(self) -> None:
        freezer = getattr(self, "_freezer", None)
        if freezer is not None:
            freezer.cancel()

    kill = stop
