"""The local calendar periods that spend and budgets count over."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from hybrid_engine import clock


@pytest.fixture
def new_york(monkeypatch):
    """A local time zone with daylight saving (it starts on 8 March 2026)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_today_starts_at_local_midnight(new_york):
    day, _ = clock.period_starts(datetime(2026, 3, 15, 13, 45))
    assert datetime.fromtimestamp(day) == datetime(2026, 3, 15)


def test_this_month_starts_at_local_midnight_of_the_first_across_a_daylight_saving_change(new_york):
    _, month = clock.period_starts(datetime(2026, 3, 15, 13, 45))
    assert datetime.fromtimestamp(month) == datetime(2026, 3, 1)
