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


def apportion(budget: int, shares: Mapping[K, int], denominator: int) -> dict[K, int]:
    """Largest remainder on exact quotas `shares[k] / denominator` (integers: the fast
    form, no gcd per quota). The shares must be non-negative and sum to
    `budget * denominator`; keys mutually comparable (the tie-break sorts them)."""
    if type(budget) is not int or budget < 0:
        raise ValueError(f"budget: want a non-negative integer, got {budget!r}")
    if denominator < 1:
        raise ValueError(f"denominator: want a positive integer, got {denominator}")
    if any(v < 0 for v in shares.values()):
        raise ValueError("quotas: a quota is negative")
    total = sum(shares.values())
    if total != budget * denominator:
        raise ValueError(f"quotas: they sum to {Fraction(total, denominator)}, not the "
                         f"budget {budget}")
    split = {k: divmod(v, denominator) for k, v in shares.items()}
    amounts = {k: q for k, (q, _) in split.items()}
    left = budget - sum(amounts.values())
    # Largest remainder first; equal remainders in ascending key order.
    order = sorted(split, key=lambda k: (-split[k][1], k))  # type: ignore[type-var]
    for k in order[:left]:
        amounts[k] += 1
    return amounts


def largest_remainder(budget: int, quotas: Mapping[K, Fraction]) -> dict[K, int]:
    """Integer amounts summing to `budget`, each the floor or the ceiling of its quota.

    `quotas` must be non-negative and sum to `budget` exactly; keys must be mutually
    comparable (the tie-break sorts them)."""
    common = math.lcm(*(Fraction(q).denominator for q in quotas.values())) if quotas else 1
    return apportion(budget, {k: int(Fraction(q) * common) for k, q in quotas.items()}, common)
