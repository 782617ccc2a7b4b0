"""Largest-remainder rounding: exact shares of a budget to integer token units.

The one rounding rule of credits. Each key's exact quota (a Fraction; quotas sum to the
budget) is floored; the units left over (fewer than the number of keys) go one each to
the keys with the largest fractional remainders; equal remainders go in ascending key
order. Integers and Fractions only: no float ever touches an amount, so the same quotas
give the same amounts on every machine, and the amounts sum to the budget exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import TypeVar

K = TypeVar("K")


def largest_remainder(budget: int, quotas: Mapping[K, Fraction]) -> dict[K, int]:
    """Integer amounts summing to `budget`, each the floor or the ceiling of its quota.

    `quotas` must be non-negative and sum to `budget` exactly; keys must be mutually
    comparable (the tie-break sorts them)."""
    if type(budget) is not int or budget < 0:
        raise ValueError(f"budget: want a non-negative integer, got {budget!r}")
    if any(q < 0 for q in quotas.values()):
        raise ValueError("quotas: a quota is negative")
    if sum(quotas.values(), Fraction(0)) != budget:
        raise ValueError(f"quotas: they sum to {sum(quotas.values(), Fraction(0))}, "
                         f"not the budget {budget}")
    amounts = {k: math.floor(q) for k, q in quotas.items()}
    left = budget - sum(amounts.values())
    # Largest remainder first; equal remainders in ascending key order.
    order = sorted(quotas, key=lambda k: (-(quotas[k] - amounts[k]), k))  # type: ignore[type-var]
    for k in order[:left]:
        amounts[k] += 1
    return amounts
