"""Waiting for something another process does, in every test that needs to (no fixed sleeps)."""

from __future__ import annotations

import time


# Every timeout in the tests is a guard against hanging, never a bound on speed: it only
# decides how long a broken test takes to say so. A busy 2-core machine has taken 30 s to
# load a 5 MB page in Chromium, so no guard is shorter than this.
GUARD_S = 180.0
GUARD_MS = int(GUARD_S * 1000)


def wait_for(predicate, timeout: float = GUARD_S, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy and return that; fail after `timeout`
    seconds (at least GUARD_S) with an AssertionError naming `what` and the last value seen."""
    timeout = max(timeout, GUARD_S)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
