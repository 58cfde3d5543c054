"""How an amount of US dollars reads, everywhere a person sees one.

The one rule (extension/lib/format.js `usd` and `usdBudget` follow it to the letter, and
tests/unit/test_money.py runs both on the same figures):

    no figure (None, nan, inf)  "unknown"      a price the host does not know is never $0
    exactly 0                   "$0"           a free step: a local model, nothing spent
    at least one cent           "$1.2345"      four decimals
    under one cent              "$0.000123"    six decimals: model calls cost fractions of a cent
    under $0.000001, above 0    "<$0.000001"   a call that cost something never reads $0
    below zero                  "-" + the rule for its size ("-$0.0500": a budget overspent)

A budget (an amount a person typed) reads in cents when it is whole cents ("$0.50",
"$5.00"), otherwise by the rule above.
"""

from __future__ import annotations

import math


def _figure(amount: float | None) -> bool:
    return amount is not None and not isinstance(amount, bool) and math.isfinite(amount)


def usd(amount: float | None) -> str:
    """An amount spent or bounded, by the rule above."""
    if not _figure(amount):
        return "unknown"
    if amount < 0:
        return "-" + usd(-amount)
    if amount == 0:
        return "$0"
    if amount >= 0.01:
        return f"${amount:.4f}"
    text = f"{amount:.6f}"
    return "<$0.000001" if text == "0.000000" else f"${text}"


def usd_budget(amount: float | None) -> str:
    """A budget: in cents when it is whole cents, else as `usd`."""
    if not _figure(amount) or abs(amount * 100 - round(amount * 100)) >= 1e-9:
        return usd(amount)
    return f"-${-amount:.2f}" if amount < 0 else f"${amount:.2f}"


__all__ = ["usd", "usd_budget"]
