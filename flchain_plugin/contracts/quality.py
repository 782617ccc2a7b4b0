"""Quality credits: who improved the server's validation metric, by leave-one-out or
GTG-Shapley (Liu et al., "GTG-Shapley: Efficient and Accurate Participant Contribution
Evaluation in Federated Learning", ACM TIST 2022).

The server holds a validation set, committed by digest in the run entry. The value of a
set S of the round's accepted updates is v(S) = metric(model_S) - metric(previous global
model), where model_S is rebuilt from the updates alone as FedAvg would aggregate S
(the examples-weighted mean of S's tensors; model_empty = the previous model): no
retraining, only evaluations (gradient-based reconstruction). Metrics are rounded to
integer micro-units before any arithmetic, so a replay on another machine whose float
evaluation differs in the last bits still recomputes the same awards.

- leave-one-out: phi_i = v(N) - v(N minus i); n + 1 evaluations.
- GTG-Shapley: Monte-Carlo permutations, the first position cycling through the clients
  (guided sampling), with within-round truncation (once v(N) - v(prefix) is within
  `epsilon`, the rest of a permutation adds 0 and is not evaluated), between-round
  truncation (|v(N) - v(empty)| < epsilon: every phi is 0), subsets cached, and at most
  `max_evaluations` evaluations a round (a permutation the bound would cut short is
  dropped whole). It stops early once a full permutation moves no estimate by more than
  `tolerance` * |v(N) - v(empty)| (after at least one permutation per client). The
  permutations come from SHA-256 of (run, round, rule identity): a replay draws the same.
- exact Shapley (for tests and benchmarks): every subset, 2^n evaluations.

The score is max(0, phi_i): an update that made the model worse earns nothing here.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..digest import model_digest
from .facts import RoundArrays, RoundFacts
from .rules import Rule, Score, parse_fraction

METRIC_UNITS = 10**6
"""Metrics are compared in integer millionths (see module docstring)."""

Arrays = Mapping[str, Any]
Metric = Callable[[Arrays, Mapping[str, np.ndarray]], float]


@dataclass(frozen=True)
class Validation:
    """A server-held validation set and the metric of a model on it (higher is better,
    e.g. accuracy or minus the loss). Its digest is the model digest of `data`, computed
    here, never declared: an auditor's copy must hash to what the run recorded."""

    data: Mapping[str, np.ndarray]
    metric: Metric

    @property
    def digest(self) -> str:
        return model_digest(dict(self.data))

    def evaluate(self, model: Arrays) -> int:
        """The metric of `model` in integer micro-units."""
        try:
            value = float(self.metric(model, self.data))
        except Exception as e:  # the user's metric: name it, whatever it raised
            raise ValueError(f"validation metric raised {type(e).__name__}: {e}") from e
        if not math.isfinite(value):
            raise ValueError(f"validation metric returned {value}: want a finite number")
        return round(value * METRIC_UNITS)


def subset_model(previous: Arrays, updates: list[tuple[Arrays, int]]) -> dict[str, np.ndarray]:
    """The model FedAvg would make of `updates` ((tensors, examples) pairs): the
    examples-weighted mean, in float64 then cast back; `previous` for an empty set."""
    if not updates:
        return {k: np.asarray(v) for k, v in previous.items()}
    total = sum(w for _, w in updates) or len(updates)
    out = {}
    for name, prev in previous.items():
        acc = np.zeros(np.shape(prev), dtype=np.float64)
        for arrays, w in updates:
            acc += np.asarray(arrays[name], dtype=np.float64) * ((w or 1) / total)
        out[name] = acc.astype(np.asarray(prev).dtype)
    return out


class Utility:
    """v(S) for subsets of a round's updates (by index), cached, evaluations counted."""

    def __init__(self, validation: Validation, arrays: RoundArrays,
                 parts: list[tuple[str, int]]):
        self.validation, self.arrays = validation, arrays
        self.parts = [(arrays.updates[digest], examples) for digest, examples in parts]
        self.cache: dict[frozenset[int], int] = {}
        self.evaluations = 0

    def __call__(self, subset: frozenset[int]) -> int:
        if subset not in self.cache:
            model = subset_model(self.arrays.previous, [self.parts[i] for i in sorted(subset)])
            self.cache[subset] = self.validation.evaluate(model)
            self.evaluations += 1
        return self.cache[subset] - self.cache[frozenset()] if subset else 0

    def base(self) -> None:
        """Evaluate the previous model first: every value is relative to it."""
        self(frozenset())


def leave_one_out(v: Callable[[frozenset[int]], int], n: int) -> list[Fraction]:
    everyone = frozenset(range(n))
    return [Fraction(v(everyone) - v(everyone - {i})) for i in range(n)]


def exact_shapley(v: Callable[[frozenset[int]], int], n: int) -> list[Fraction]:
    """Shapley values by every subset (2^n evaluations): the reference GTG approximates."""
    phi = [Fraction(0)] * n
    fact = math.factorial
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = Fraction(fact(size) * fact(n - size - 1), fact(n))
            for s in itertools.combinations(others, size):
                fs = frozenset(s)
                phi[i] += w * (v(fs | {i}) - v(fs))
    return phi


def permutation(seed: bytes, k: int, n: int) -> list[int]:
    """The k-th sampled order of n clients: first client k mod n (guided sampling), the
    rest shuffled by Fisher-Yates drawing from SHA-256(seed, k, step)."""
    first = k % n
    rest = [i for i in range(n) if i != first]
    for j in range(len(rest) - 1, 0, -1):
        h = hashlib.sha256(seed + k.to_bytes(8, "big") + j.to_bytes(8, "big")).digest()
        r = int.from_bytes(h[:8], "big") % (j + 1)
        rest[j], rest[r] = rest[r], rest[j]
    return [first, *rest]


@dataclass(frozen=True)
class GtgBounds:
    """GTG-Shapley's knobs, in metric micro-units where they are metric values."""

    epsilon: int
    tolerance: Fraction
    max_evaluations: int


def _walk(v: Utility, order: list[int], total: int, eps: int, budget: int
          ) -> list[int] | None:
    """Marginal contributions along one permutation with within-round truncation; None
    if the evaluation bound would be exceeded before it completes."""
    prefix: frozenset[int] = frozenset()
    before, marg = 0, [0] * len(order)
    for i in order:
        if abs(total - before) < eps:
            continue  # truncated: the rest adds nothing
        prefix = prefix | {i}
        if prefix not in v.cache and v.evaluations >= budget:
            return None
        value = v(prefix)
        marg[i], before = value - before, value
    return marg


def gtg_shapley(v: Utility, n: int, seed: bytes, b: GtgBounds) -> list[Fraction]:
    """GTG-Shapley estimates (see module docstring)."""
    total = v(frozenset(range(n)))
    if abs(total) < b.epsilon or n == 0:
        return [Fraction(0)] * n
    sums, k = [0] * n, 0
    while True:
        marg = _walk(v, permutation(seed, k, n), total, b.epsilon, b.max_evaluations)
        if marg is None:
            break
        old = [Fraction(s, k) for s in sums] if k else None
        sums, k = [s + m for s, m in zip(sums, marg, strict=True)], k + 1
        if old is not None and k >= n and max(
                abs(Fraction(s, k) - o) for s, o in zip(sums, old, strict=True)
        ) <= b.tolerance * abs(total):
            break
    return [Fraction(s, k) if k else Fraction(0) for s in sums]


class Quality(Rule):
    """Rewards improving the server's validation metric (see module docstring).

    `method`: "loo" or "gtg-shapley"; `validation`: the server's Validation (its digest
    is a param: recorded in the run entry); `epsilon`: truncation threshold in metric
    units; `max_evaluations`: GTG-Shapley's bound per round (default 10n + 2: on 8 clients under
    a third of exact Shapley's 2^8 evaluations, within 4-11% of it; see bench_credits)."""

    NAME = "quality"
    NEEDS_ARRAYS = True
    METHODS = ("loo", "gtg-shapley")

    def __init__(self, validation: Validation, method: str = "gtg-shapley", *,
                 epsilon: Fraction | int | str = Fraction(1, 1000),
                 tolerance: Fraction | int | str = Fraction(1, 20),
                 max_evaluations: int | None = None, digest: str | None = None):
        if method not in self.METHODS:
            raise ValueError(f"method: want one of {self.METHODS}, got {method!r}")
        if not isinstance(validation, Validation):
            raise ValueError(f"validation: want a contracts.Validation, got {validation!r}")
        self.method, self.validation = method, validation
        self.epsilon = parse_fraction(epsilon, "epsilon", Fraction(0), None)
        self.tolerance = parse_fraction(tolerance, "tolerance", Fraction(0), None)
        if max_evaluations is not None and (type(max_evaluations) is not int
                                            or max_evaluations < 2):
            raise ValueError(f"max_evaluations: want an integer >= 2 or None, "
                             f"got {max_evaluations!r}")
        self.max_evaluations = max_evaluations
        self.digest = validation.digest
        if digest is not None and digest != self.digest:
            raise ValueError(f"validation: the set given hashes to {self.digest}, the run "
                             f"committed {digest}: not the validation set the run used")

    @property
    def label(self) -> str:
        return f"quality-{self.method}"

    def params(self) -> dict[str, Any]:
        return {"method": self.method, "validation": self.digest, "epsilon": str(self.epsilon),
                "tolerance": str(self.tolerance), "max_evaluations": self.max_evaluations}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **context: Any) -> Rule:
        validation = context.get("validation")
        if validation is None:
            raise ValueError(f"quality rule: the run committed validation set "
                             f"{params.get('validation')}; name its evaluator with "
                             "--validation MODULE:FUNC")
        p = dict(params)
        return cls(validation, p.pop("method"), digest=p.pop("validation"), **p)

    def values(self, facts: RoundFacts) -> tuple[list[Fraction], int]:
        """Each accepted update's phi (in micro-units), in arrival order, and the number
        of evaluations it took."""
        if facts.arrays is None:
            raise ValueError(f"round {facts.round}: quality rule {self.label} needs the "
                             "round's update arrays and previous model")
        parts = [(c.update, c.examples) for c in facts.accepted]
        # Clients in a canonical order (by node) so that arrival order changes nothing.
        order = sorted(range(len(parts)), key=lambda i: facts.accepted[i].node)
        v = Utility(self.validation, facts.arrays, [parts[i] for i in order])
        v.base()
        n = len(parts)
        eps = math.ceil(self.epsilon * METRIC_UNITS)
        if self.method == "loo":
            phi = leave_one_out(v, n)
        else:
            seed = hashlib.sha256(f"{facts.run}\0{facts.round}\0{self.identity}".encode()).digest()
            bound = self.max_evaluations or 10 * n + 2
            phi = gtg_shapley(v, n, seed, GtgBounds(eps, self.tolerance, bound))
        out = [Fraction(0)] * n
        for pos, i in enumerate(order):
            out[i] = phi[pos]
        return out, v.evaluations

    def scores(self, facts: RoundFacts) -> dict[str, Score]:
        if not facts.accepted:
            return {}
        phi, evaluations = self.values(facts)
        return {c.node: (max(p, Fraction(0)), {"phi": str(p), "evaluations": evaluations})
                for c, p in zip(facts.accepted, phi, strict=True)}
