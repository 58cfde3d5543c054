"""How an amount of US dollars reads, everywhere a person sees one.

The one rule (extension/lib/format.js `usd` and `usdBudget` follow it to the letter; both
are checked against the same table, tests/data/money_cases.json):

    no figure (None, nan, inf)  "unknown"      a price the host does not know is never $0
    exactly 0                   "$0"           a free step: a local model, nothing spent
    from one cent up            "$1.23"        cents, as money is read anywhere else
    under one cent              "$0.00013"     two significant digits, trailing zeros dropped
                                               ("$0.001", not "$0.001000"): model calls cost
                                               fractions of a cent, and two digits tell them apart
    under $0.000001, above 0    "<$0.000001"   a call that cost something never reads $0
    below zero                  "-" + the rule for its size ("-$0.05": a budget overspent)

Rounding is half away from zero on the amount's exact binary value, which is what
JavaScript's toFixed/toPrecision do, so both sides give the same digits.

A budget (an amount a person typed) reads in cents when it is whole cents ("$0.50",
"$5.00"), otherwise with just the digits it has ("$0.125", "$0.005").
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

_CENT = Decimal("0.01")
_FLOOR = 0.000001


def _figure(amount: float | None) -> bool:
    return amount is not None and not isinstance(amount, bool) and math.isfinite(amount)


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def _two_digits(amount: float) -> Decimal:
    exact = Decimal(amount)
    quantum = Decimal(1).scaleb(exact.adjusted() - 1)
    return exact.quantize(quantum, rounding=ROUND_HALF_UP)


def usd(amount: float | None) -> str:
    """An amount spent or bounded, by the rule above."""
    if not _figure(amount):
        return "unknown"
    if amount < 0:
        return "-" + usd(-amount)
    if amount == 0:
        return "$0"
    if amount < _FLOOR:
        return "<$0.000001"
    small = _two_digits(amount) if amount < 0.01 else None
    if small is not None and small < _CENT:
        return "$" + _trim(format(small, "f"))
    return "$" + format(Decimal(amount).quantize(_CENT, rounding=ROUND_HALF_UP), "f")


def usd_budget(amount: float | None) -> str:
    """A budget: in cents when it is whole cents, else with the digits it has."""
    if not _figure(amount) or amount == 0:
        return usd(amount)
    if amount < 0:
        return "-" + usd_budget(-amount)
    if amount < _FLOOR:
        return usd(amount)
    if abs(amount * 100 - round(amount * 100)) < 1e-9:
        return f"${round(amount * 100) / 100:.2f}"
    return "$" + _trim(f"{amount:.6f}")


__all__ = ["usd", "usd_budget"]
