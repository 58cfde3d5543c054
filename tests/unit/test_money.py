"""The one money rule (hybrid_engine/money.py) as people read it in the CLI and in messages.

tests/data/money_cases.json is the table; test_extension_modules.py checks the popup's
twin (extension/lib/format.js) against the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_engine.money import usd, usd_budget

CASES = json.loads((Path(__file__).resolve().parents[1] / "data" / "money_cases.json").read_text())["cases"]


@pytest.mark.parametrize(("amount", "spent", "budget"), CASES)
def test_money_reads_as_the_shared_table_says(amount, spent, budget):
    assert (usd(amount), usd_budget(amount)) == (spent, budget)


@pytest.mark.parametrize("amount", [None, float("nan"), float("inf")])
def test_an_amount_that_is_no_figure_reads_unknown(amount):
    assert usd(amount) == "unknown"


def test_an_amount_under_a_cent_reads_with_two_significant_digits():
    assert usd(0.000127) == "$0.00013"
    assert usd(0.001) == "$0.001"


def test_an_amount_from_a_cent_up_reads_in_cents():
    assert usd(1.0) == "$1.00"
    assert usd(0.0412) == "$0.04"
