"""Load shapes for the Locust suite, chosen by environment (so one locustfile serves them all):

    YIWANG_LOAD_SHAPE     peak (default in `make loadtest`) | soak | spike
    YIWANG_LOAD_USERS     the highest number of simulated users [50]
    YIWANG_LOAD_DURATION  seconds [180]

- peak: a province's morning — ramp up over the first 30%, hold for 50%, decline to a third.
- soak: ramp up over the first 10% (at least 10 s), then steady to the end (leaks, slow drift).
- spike: a fifth of the users, all of them at once for the middle 20%, back to a fifth. The
  spike's users register and log in as they arrive, so a burst of sign-ups is part of it (and
  of what the objectives judge).
"""

from __future__ import annotations

import os

from locust import LoadTestShape


def users_at(shape: str, elapsed: float, users: int, duration: float) -> int | None:
    """How many users the shape wants `elapsed` seconds in; None once it is over."""
    if elapsed >= duration:
        return None
    share = elapsed / duration
    if shape == "peak":
        if share < 0.3:
            return max(1, round(users * share / 0.3))
        if share < 0.8:
            return users
        return max(1, round(users * (1 - (share - 0.8) / 0.2 * (2 / 3))))
    if shape == "soak":
        ramp = max(10.0, 0.1 * duration)
        return max(1, round(users * min(1.0, elapsed / ramp)))
    if shape == "spike":
        return users if 0.4 <= share < 0.6 else max(1, users // 5)
    raise ValueError(f"unknown load shape {shape!r} (peak, soak, spike)")


class ConfiguredShape(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()
        self.shape = os.environ.get("YIWANG_LOAD_SHAPE", "peak")
        self.users = int(os.environ.get("YIWANG_LOAD_USERS", "50"))
        self.duration = float(os.environ.get("YIWANG_LOAD_DURATION", "180"))
        users_at(self.shape, 0, self.users, self.duration)  # refuse an unknown shape at once

    def tick(self) -> tuple[int, float] | None:
        wanted = users_at(self.shape, self.get_run_time(), self.users, self.duration)
        if wanted is None:
            return None
        # Spawn rate: a tenth of the peak a second; a spike's users come at once, as it says.
        return wanted, float(self.users) if self.shape == "spike" else max(1.0, self.users / 10)
