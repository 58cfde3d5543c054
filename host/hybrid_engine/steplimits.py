"""How long a failed step waits before its next attempt, and how many steps run at once.

Plain values the user's config sets (service.py builds them) and the executor reads; kept
apart so the executor's file holds only what shares its in-flight table.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


# A provider's Retry-After past this is a spent quota that a retry will not outwait; honoured,
# a hint of years (an HTTP date in 9999) left the step queued for good and its due time
# past what a date can show.
HINT_CAP_S = 900.0


@dataclass
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, error_count: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, never shorter than the provider's hint."""
        backoff = min(self.cap_s, self.base_s * (2 ** max(0, error_count - 1)))
        jittered = backoff / 2 + random.random() * backoff / 2
        return max(jittered, min(HINT_CAP_S, retry_after or 0.0))


@dataclass
class Limits:
    concurrency: int = 16
    per_action: dict[str, int] = field(default_factory=dict)
    per_provider: dict[str, int] = field(default_factory=dict)


__all__ = ["HINT_CAP_S", "Limits", "RetryPolicy"]
