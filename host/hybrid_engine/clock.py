"""Time in the two forms the store keeps (epoch seconds for ordering, ISO 8601 for people),
and the local calendar periods that spend and budgets are counted over."""

from __future__ import annotations

import time
from datetime import datetime, timezone


# Epoch seconds: time.time itself, not a function around it (read several times at every step).
now = time.time


def iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def period_starts(now: datetime | None = None) -> tuple[float, float]:
    """Epoch seconds of the start of the local day and of the local month: a person's "today"
    and "this month" begin at their own midnight, not UTC's."""
    now = (now or datetime.now()).astimezone()
    # Naive local times made aware one by one: each gets its own UTC offset, so the 1st of a
    # month before a daylight-saving change still starts at its own midnight.
    day = datetime(now.year, now.month, now.day).astimezone()
    month = datetime(now.year, now.month, 1).astimezone()
    return day.timestamp(), month.timestamp()
