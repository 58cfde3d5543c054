"""The one money rule (hybrid_engine/money.py) as people read it in the CLI and in messages."""

from __future__ import annotations

import pytest

from hybrid_engine.money import usd, usd_budget


@pytest.mark.parametrize("amount", [None, float("nan"), float("inf")])
def test_an_amount_that_is_no_figure_reads_unknown(amount):
    assert usd(amount) == "unknown"


def test_exactly_nothing_reads_zero_dollars():
    assert usd(0) == "$0"


@pytest.mark.parametrize("amount", [1e-12, 4e-7])
def test_a_positive_amount_too_small_for_six_decimals_never_reads_zero(amount):
    assert usd(amount) == "<$0.000001"


def test_an_amount_under_a_cent_reads_with_six_decimals():
    assert usd(0.000123) == "$0.000123"
    assert usd(0.005) == "$0.005000"


def test_an_amount_from_a_cent_up_reads_with_four_decimals():
    assert usd(0.01) == "$0.0100"
    assert usd(1.23456) == "$1.2346"


def test_a_negative_amount_reads_as_its_size_after_a_minus():
    assert usd(-0.05) == "-$0.0500"


def test_a_budget_in_whole_cents_reads_in_cents_and_any_other_by_the_rule():
    assert usd_budget(0.5) == "$0.50"
    assert usd_budget(5) == "$5.00"
    assert usd_budget(0.005) == "$0.005000"
