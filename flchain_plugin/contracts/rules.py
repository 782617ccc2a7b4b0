"""Credit rules: named, versioned, deterministic scores of a round's contributions.

A rule reads only a round's `RoundFacts` and gives each node a non-negative exact score
(a Fraction) with the basis to show for it; `Contracts` turns scores into integer awards.
Its identity is the digest of its canonical `{name, version, params}`: what the `run`
entry records and what a replay must reproduce. A rule's arithmetic may change only
with a new VERSION (an old run replays with the version it recorded).

To write a custom rule: subclass `Rule`, set NAME and VERSION, implement `params`
(canonical JSON: ints, strings, lists, objects; Fractions as "p/q" strings),
`from_params` and `scores`; pass the class to `replay_credits(..., rules=[MyRule])`.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Any, ClassVar

from ..digest import json_digest
from ..entries import REJECT_REASONS, Reason
from .facts import RoundFacts

Score = tuple[Fraction, dict[str, Any]]
"""A node's score under a rule (>= 0) and the basis recorded with its award."""


def parse_fraction(value: object, name: str, low: Fraction, high: Fraction | None) -> Fraction:
    """A Fraction from an int or a "p/q" string (how params write them), in [low, high]."""
    if isinstance(value, Fraction):
        f = value
    elif type(value) is int or (type(value) is str and value.strip() == value):
        try:
            f = Fraction(value)  # type: ignore[arg-type]
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name}: {value!r} is not a fraction like '9/10'") from None
    else:
        raise ValueError(f"{name}: want an int, a Fraction or a 'p/q' string, got {value!r}")
    if f < low or (high is not None and f > high):
        raise ValueError(f"{name}: {f} outside [{low}, {'inf' if high is None else high}]")
    return f


class Rule:
    """Base of every credit rule (see module docstring)."""

    NAME: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    NEEDS_ARRAYS: ClassVar[bool] = False  # quality rules evaluate models

    @property
    def label(self) -> str:
        """The `rule` field of this rule's credit entries: unique within a contract."""
        return self.NAME

    def params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **context: Any) -> Rule:
        """The rule a run recorded. `context` carries what the log cannot (a quality
        rule's validation set); rules that need none ignore it."""
        return cls(**params)

    def describe(self) -> dict[str, Any]:
        return {"name": self.NAME, "version": self.VERSION, "params": self.params()}

    @property
    def identity(self) -> str:
        """The digest of `{name, version, params}`, recorded in the run entry."""
        return json_digest(self.describe())

    def scores(self, facts: RoundFacts) -> dict[str, Score]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params()})"


class Quantity(Rule):
    """Rewards data: a node's score is the examples it claims, capped at `cap`.

    The policy's `max_examples` already refuses a larger claim, so with a policy cap set
    every accepted claim is within it; `cap` bounds it further for credits only."""

    NAME = "quantity"

    def __init__(self, cap: int | None = None):
        if cap is not None and (type(cap) is not int or cap < 1):
            raise ValueError(f"cap: want a positive integer or None, got {cap!r}")
        self.cap = cap

    def params(self) -> dict[str, Any]:
        return {"cap": self.cap}

    def scores(self, facts: RoundFacts) -> dict[str, Score]:
        out = {}
        for c in facts.accepted:
            counted = c.examples if self.cap is None else min(c.examples, self.cap)
            out[c.node] = (Fraction(max(counted, 0)), {"examples": c.examples})
        return out


class Timeliness(Rule):
    """Rewards being early: the k-th accepted update to arrive (k = 0 first) scores
    `decay`**k. Arrival order is the order the server received replies in, which the
    batch keeps; a client cannot claim it."""

    NAME = "timeliness"

    def __init__(self, decay: Fraction | int | str = Fraction(9, 10)):
        self.decay = parse_fraction(decay, "decay", Fraction(0), Fraction(1))
        if self.decay == 0:
            raise ValueError("decay: 0 would award the first arrival only; want (0, 1]")

    def params(self) -> dict[str, Any]:
        return {"decay": str(self.decay)}

    def scores(self, facts: RoundFacts) -> dict[str, Score]:
        return {c.node: (self.decay ** c.position, {"position": c.position})
                for c in facts.accepted}


# A refusal that shows intent (a forged, replayed, altered or boosted update) forfeits
# everything; one that can be an honest bug halves; a client crash costs nothing.
DEFAULT_FACTORS: Mapping[str, Fraction] = MappingProxyType({
    **{r: Fraction(0) for r in REJECT_REASONS},
    Reason.MALFORMED.value: Fraction(1, 2),
    Reason.NON_FINITE.value: Fraction(1, 2),
    Reason.WRONG_ROUND.value: Fraction(1, 2),
    Reason.STALE_PARENT.value: Fraction(1, 2),
    Reason.NOT_POST_QUANTUM.value: Fraction(1, 2),
    Reason.CLIENT_ERROR.value: Fraction(1),
})


class Penalties(Rule):
    """Penalties for refused updates, by reason. Amounts never go below zero: a node
    refused for reason R in round t has its score under every other rule multiplied by
    `factors[R]` (0 forfeits, 1/2 halves) in rounds t+1 .. t+`rounds` (the smallest factor
    when several refusals apply); what it forfeits goes to the other contributors of
    those rounds, so the budget is still paid out in full. In round t itself a refused
    node has no accepted update and earns nothing. Each refusal and each reduced award
    is recorded as a credit entry of amount 0 under this rule."""

    NAME = "penalty"

    def __init__(self, factors: Mapping[str, Fraction | int | str] | None = None,
                 rounds: int = 3):
        given = DEFAULT_FACTORS if factors is None else factors
        if not isinstance(given, Mapping):
            raise ValueError(f"factors: want a mapping reason -> factor, got {given!r}")
        unknown = set(given) - REJECT_REASONS
        if unknown:
            raise ValueError(f"factors: {sorted(unknown)} are not reason codes "
                             f"({sorted(REJECT_REASONS)})")
        self.factors = {r: parse_fraction(f, f"factors[{r!r}]", Fraction(0), Fraction(1))
                        for r, f in sorted(given.items())}
        if type(rounds) is not int or not 0 <= rounds <= 10_000:
            raise ValueError(f"rounds: want an integer in [0, 10000], got {rounds!r}")
        self.rounds = rounds

    def params(self) -> dict[str, Any]:
        return {"factors": {r: str(f) for r, f in self.factors.items()}, "rounds": self.rounds}

    def scores(self, facts: RoundFacts) -> dict[str, Score]:
        """Not a share of the budget: see `multipliers`."""
        return {}

    def multipliers(self, facts: RoundFacts) -> dict[str, tuple[Fraction, list[Any]]]:
        """Nodes whose scores this round are reduced: (factor, [[round, reason], ...])."""
        out: dict[str, tuple[Fraction, list[Any]]] = {}
        for r in facts.earlier:
            if facts.round - self.rounds <= r.round < facts.round:
                f = self.factors.get(r.reason, Fraction(1))
                if f < 1:
                    old, why = out.get(r.node, (Fraction(1), []))
                    out[r.node] = (min(old, f), [*why, [r.round, r.reason]])
        return out
