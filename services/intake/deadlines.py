"""What the deadline check does with one watched case: which flags to raise, and whether to stop watching.

Intake watches running cases in a deadline index (see IntakeStore.watch_deadline): entries are
added whenever a case's deadline is (re)set, taken out by the sync that finds the case decided or
paused for a supplement, and removed here when the check finds one stale (a sync that raced
another, a case moved to another deadline) or already flagged overdue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from services.intake.lifecycle import TASK_STATUSES
from services.intake.workdays import next_working_day


@dataclass(frozen=True)
class Due:
    flags: tuple[str, ...]  # "deadline_warned" and/or "overdue", in that order
    done: bool  # the entry can leave the index


def limits(today: date) -> tuple[str, str]:
    """The latest deadlines (ISO days) to warn of and to call overdue on `today`, China's date: a
    reviewer is warned the working day before a deadline, and a case is overdue the day after it
    (the deadline day itself is still on time)."""
    return next_working_day(today).isoformat(), (today - timedelta(days=1)).isoformat()


def due(case: dict[str, Any] | None, day: str, warn_latest: str, overdue_latest: str) -> Due:
    """`day` is the deadline the entry was indexed under; the other two are ISO days: warn when the
    deadline is at most `warn_latest` (the next working day), overdue when at most `overdue_latest`."""
    if case is None or case.get("status") not in TASK_STATUSES or case.get("deadline") != day:
        return Due((), True)  # a stale entry
    flags = []
    if day <= warn_latest and not case.get("deadline_warned"):
        flags.append("deadline_warned")
    if day <= overdue_latest:
        if not case.get("overdue"):
            flags.append("overdue")
        return Due(tuple(flags), True)
    return Due(tuple(flags), False)
