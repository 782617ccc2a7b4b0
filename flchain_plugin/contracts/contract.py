"""Contracts: credit rules composed with weights over a round budget of integer tokens.

Per round: each scoring rule gives every node a score; penalties multiply the scores of
recently refused nodes; a rule whose scores are all zero drops out. Rule r of weight w_r
then owns the exact share w_r / W of the budget (W: the weights of the rules still in),
split over nodes in proportion to their scores, so node i's exact quota under rule r is

    budget * w_r * s_ri / (W * sum_j s_rj)          (Fractions: no float, no drift)

and `rounding.apportion` (largest remainder) turns the quotas of all (node, rule) pairs
at once into integer amounts that sum to the budget exactly (ties: ascending (node, rule
position)).
A round where every rule scores zero (nothing accepted) awards nothing: the budget of
that round is not issued. One credit entry is written per (node, rule) with a non-zero
amount, plus amount-0 entries recording each refusal and each penalised award.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from .. import entries as E
from ..digest import json_digest
from .facts import RoundFacts
from .quality import Quality
from .rounding import apportion
from .rules import Penalties, Quantity, Rule, Timeliness

BUILTIN_RULES: tuple[type[Rule], ...] = (Quantity, Timeliness, Quality, Penalties)
MAX_BUDGET = 2**53 - 1


def _weighted(item: Rule | tuple[Rule, int]) -> tuple[Rule, int]:
    rule, weight = (item, 1) if isinstance(item, Rule) else item
    if not isinstance(rule, Rule):
        raise ValueError(f"rules: want a Rule or (Rule, weight), got {item!r}")
    if type(weight) is not int or not 1 <= weight <= 10**6:
        raise ValueError(f"rules: weight of {rule.label} must be an integer in [1, 10^6], "
                         f"got {weight!r}")
    return rule, weight


class Contracts:
    """The credit rules of a run and the tokens each round pays (see module docstring).

    `rules`: Rules or (Rule, weight) pairs (weight 1 by default); labels must be unique.
    `budget`: tokens paid out per round, a positive integer."""

    def __init__(self, rules: Sequence[Rule | tuple[Rule, int]], budget: int):
        if isinstance(rules, (Rule, str, bytes)) or not isinstance(rules, Sequence):
            raise ValueError(f"rules: want a list of rules, got {rules!r}")
        self.rules = [_weighted(r) for r in rules]
        labels = [r.label for r, _ in self.rules]
        if len(set(labels)) != len(labels):
            raise ValueError(f"rules: labels {labels} repeat; each rule once")
        if not any(not isinstance(r, Penalties) for r, _ in self.rules):
            raise ValueError("rules: no rule that scores contributions (quantity, "
                             "timeliness, quality or a custom one)")
        if type(budget) is not int or not 1 <= budget <= MAX_BUDGET:
            raise ValueError(f"budget: want a positive integer below 2^53, got {budget!r}")
        self.budget = budget

    @property
    def needs_arrays(self) -> bool:
        """A rule evaluates models: the server must keep the round's update tensors."""
        return any(r.NEEDS_ARRAYS for r, _ in self.rules)

    @property
    def window(self) -> int:
        """How many earlier rounds' refusals the penalties look back at."""
        return max((r.rounds for r, _ in self.rules if isinstance(r, Penalties)), default=0)

    def describe(self) -> dict[str, Any]:
        """What the run entry records: budget, each rule's identity and weight, and the
        digest of all of it."""
        body = {"budget": self.budget,
                "rules": [{**r.describe(), "weight": w, "id": r.identity} for r, w in self.rules]}
        return {**body, "id": json_digest(body)}

    @classmethod
    def from_run(cls, recorded: Mapping[str, Any], *, rules: Iterable[type[Rule]] = (),
                 **context: Any) -> Contracts:
        """The contracts a run entry recorded, rebuilt (custom rule classes in `rules`;
        `context`, e.g. validation=, for rules that need what the log cannot hold).
        Refuses if any rebuilt rule's identity differs from the recorded one."""
        try:
            return cls._rebuild(recorded, tuple(rules), context)
        except (TypeError, KeyError, AttributeError) as e:  # a record no version wrote
            raise ValueError(f"contracts {recorded.get('id')!r}: malformed record ({e})") from None

    @classmethod
    def _rebuild(cls, recorded: Mapping[str, Any], rules: tuple[type[Rule], ...],
                 context: Mapping[str, Any]) -> Contracts:
        known = {(c.NAME, c.VERSION): c for c in (*BUILTIN_RULES, *rules)}
        built: list[tuple[Rule, int]] = []
        for d in recorded.get("rules", []):
            cls_ = known.get((d.get("name"), d.get("version")))
            if cls_ is None:
                raise ValueError(f"rule {d.get('name')!r} version {d.get('version')!r} is not "
                                 "known here: pass its class (replay_credits(rules=[...]))")
            rule = cls_.from_params(d.get("params", {}), **context)
            if rule.identity != d.get("id"):
                raise ValueError(f"rule {rule.label}: rebuilt identity {rule.identity} is not "
                                 f"the recorded {d.get('id')}")
            built.append((rule, d.get("weight")))  # type: ignore[arg-type]
        out = cls(built, recorded.get("budget"))  # type: ignore[arg-type]
        if out.describe() != dict(recorded):
            raise ValueError(f"contracts {recorded.get('id')}: the record does not rebuild "
                             "to itself; it was altered or written by another version")
        return out

    # -- one round ------------------------------------------------------------------------

    def _penalties(self, facts: RoundFacts) -> dict[str, tuple[Fraction, list[Any]]]:
        out: dict[str, tuple[Fraction, list[Any]]] = {}
        for rule, _ in self.rules:
            if isinstance(rule, Penalties):
                for node, (f, why) in rule.multipliers(facts).items():
                    old, before = out.get(node, (Fraction(1), []))
                    out[node] = (min(old, f), before + why)
        return out

    def quotas(self, facts: RoundFacts) -> tuple[
            dict[tuple[str, int], int], int, dict[tuple[str, int], dict[str, Any]]]:
        """Exact quotas by (node, rule position), as integer numerators over one common
        denominator (module docstring's formula, brought to integers so that 100 clients'
        shares cost no gcd each), and each one's basis."""
        cut = self._penalties(facts)
        scored: list[tuple[int, int, dict[str, int], int]] = []
        bases: dict[tuple[str, int], dict[str, Any]] = {}
        for pos, (rule, w) in enumerate(self.rules):
            if isinstance(rule, Penalties):
                continue
            raw = {}
            for node, (s, basis) in rule.scores(facts).items():
                if s < 0:
                    raise ValueError(f"rule {rule.label} scored {node} {s}: scores are >= 0")
                raw[node] = Fraction(s) * cut.get(node, (Fraction(1), None))[0]
                bases[(node, pos)] = basis
            scale = math.lcm(*(f.denominator for f in raw.values())) if raw else 1
            ints = {node: f.numerator * (scale // f.denominator) for node, f in raw.items()}
            total = sum(ints.values())
            if total > 0:
                scored.append((pos, w, ints, total))
        weights = sum(w for _, w, _, _ in scored)
        common = math.lcm(*(t for _, _, _, t in scored)) if scored else 1
        shares = {(node, pos): self.budget * w * v * (common // total)
                  for pos, w, ints, total in scored for node, v in ints.items()}
        return shares, weights * common, bases

    def credits(self, facts: RoundFacts) -> list[E.Credit]:
        """The round's credit entries, in rule order, then arrival order (refused nodes
        in batch order)."""
        shares, denominator, bases = self.quotas(facts)
        amounts = apportion(self.budget, shares, denominator) if shares else {}
        arrival = {c.node: c.position for c in facts.accepted}
        out = []
        for node, pos in sorted(amounts, key=lambda k: (k[1], arrival.get(k[0], 0), k[0])):
            if amounts[(node, pos)]:
                out.append(E.Credit(run=facts.run, round=facts.round, node=node,
                                    rule=self.rules[pos][0].label, amount=amounts[(node, pos)],
                                    basis=bases[(node, pos)]))
        out += self._penalty_records(facts, set(arrival))
        return out

    def _penalty_records(self, facts: RoundFacts, accepted: set[str]) -> list[E.Credit]:
        label = next((r.label for r, _ in self.rules if isinstance(r, Penalties)), None)
        if label is None:
            return []
        out = [E.Credit(run=facts.run, round=facts.round, node=r.node, rule=label, amount=0,
                        basis={"refused": r.reason}) for r in facts.refused]
        for node, (f, why) in sorted(self._penalties(facts).items()):
            if node in accepted:
                out.append(E.Credit(run=facts.run, round=facts.round, node=node, rule=label,
                                    amount=0, basis={"factor": str(f), "refusals": why}))
        return out
