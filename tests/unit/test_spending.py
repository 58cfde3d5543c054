"""spending.daily_spend: local days, every day present, split by provider and workflow."""

from __future__ import annotations

from datetime import datetime, timedelta

from hybrid_engine.spending import DELETED_WORKFLOW, daily_spend


class Rows:
    def __init__(self, rows):
        self.rows = rows
        self.since = None

    def spend_rows_since(self, since):
        self.since = since
        return [r for r in self.rows if r[0] >= since]


NOW = datetime(2026, 3, 15, 12, 0).astimezone()


def at(days_ago: int, hour: int = 10) -> float:
    return (datetime(2026, 3, 15, hour).astimezone() - timedelta(days=days_ago)).timestamp()


def test_every_day_is_listed_oldest_first_even_without_spend():
    days = daily_spend(Rows([]), 30, NOW)
    assert len(days) == 30 and days[0]["date"] == "2026-02-14" and days[-1]["date"] == "2026-03-15"
    assert all(d["total"] == 0 and d["by_provider"] == {} for d in days)


def test_a_day_is_split_by_provider_and_by_workflow():
    store = Rows([(at(0), "openai", "digest", 0.01, 0, 1), (at(0, 11), "deepseek", "digest", 0.002, 0, 1),
                  (at(0, 12), "openai", "notes", 0.003, 1, 1), (at(2), "openai", None, 0.5, 0, 1)])
    days = daily_spend(store, 30, NOW)
    today, two_ago = days[-1], days[-3]
    assert today["total"] == 0.015 and today["estimated"] == 0.003
    assert today["by_provider"] == {"deepseek": 0.002, "openai": 0.013}
    assert today["by_workflow"] == {"digest": 0.012, "notes": 0.003}
    assert two_ago["by_workflow"] == {DELETED_WORKFLOW: 0.5}


def test_an_unpriced_step_is_counted_never_added_as_zero():
    days = daily_spend(Rows([(at(1), "openai", "digest", None, 0, 0)]), 7, NOW)
    assert days[-2]["unpriced_steps"] == 1 and days[-2]["total"] == 0 and days[-2]["by_provider"] == {}


def test_spend_before_the_window_is_left_out():
    store = Rows([(at(30), "openai", "digest", 1.0, 0, 1)])
    days = daily_spend(store, 30, NOW)
    assert sum(d["total"] for d in days) == 0
    assert store.since == datetime(2026, 2, 14).astimezone().timestamp()
