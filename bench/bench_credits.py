"""Credit rules for 100 clients a round against the round's aggregation (issue 15).

Baseline: FedAvg's aggregation of the same round, the examples-weighted mean of the 100
updates of a 1M-parameter model (bench_flower's size) (`contracts.quality.subset_model`, float64 as FedAvg
does), timed in the same run. Figures: `Contracts.credits` for the quantity rule, the
timeliness rule, and the quality rule's own work by metric (leave-one-out attribution,
shares and rounding, without its model evaluations), each as a share of the aggregation
(target <= 5%). The evaluations quality rules add (each one rebuilds a subset model and
runs the server's metric) are printed separately: leave-one-out's n + 1 and GTG-Shapley's
(bounded at 10n + 2), with their time per round, and GTG-Shapley's error against exact
Shapley on 8 clients (2^8 evaluations).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import click
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_all import Result, median_seconds, report

from flchain_plugin.contracts import (
    Contracts,
    Contribution,
    Penalties,
    Quality,
    Quantity,
    Refusal,
    RoundArrays,
    RoundFacts,
    Timeliness,
    Validation,
    exact_shapley,
)
from flchain_plugin.contracts import quality as quality_module
from flchain_plugin.contracts.quality import Utility, subset_model
from flchain_plugin.digest import model_digest

SHAPES = {"w1": (784, 1280), "b1": (1280,), "w2": (1280, 10), "b2": (10,)}  # 1.02M, as bench_flower
QUICK_SHAPES = {"w1": (64, 16), "b1": (16,), "w2": (16, 10), "b2": (10,)}


def metric(model: Any, d: Any) -> float:
    """Accuracy-like metric of a 2-layer network on a 256-sample validation batch."""
    h = np.maximum(d["x"] @ model["w1"] + model["b1"], 0)
    logits = h @ model["w2"] + model["b2"]
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return float(np.log(p[np.arange(len(d["y"])), d["y"]] + 1e-9).mean())


def round_of(n: int, seed: int = 0, shapes: dict[str, tuple[int, ...]] = SHAPES
             ) -> tuple[Validation, RoundFacts, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    true = {k: (rng.normal(size=s) * 0.05).astype(np.float32) for k, s in shapes.items()}
    prev = {k: v + (rng.normal(size=v.shape) * 0.05).astype(np.float32) for k, v in true.items()}
    updates, acc = {}, []
    for i in range(n):  # half way to the true model, each client with its own noise
        noise = 0.02 * (1 + i % 5)
        u = {k: (v + (true[k] - v) / 2 + rng.normal(size=v.shape) * noise).astype(np.float32)
             for k, v in prev.items()}
        d = model_digest(u)
        updates[d] = u
        acc.append(Contribution(f"node-{i:04d}", int(rng.integers(50, 500)), i, d))
    refused = tuple(Refusal(f"bad-{i}", "bad_signature", 7) for i in range(n // 20))
    x = rng.normal(size=(256, shapes["w1"][0])).astype(np.float32)
    y = (np.maximum(x @ true["w1"] + true["b1"], 0) @ true["w2"] + true["b2"]).argmax(1)
    val = Validation({"x": x, "y": y}, metric)  # labelled by the true model
    return val, RoundFacts("bench", 7, tuple(acc), refused, arrays=RoundArrays(prev, updates)), prev


class EvalClock:
    """Times the evaluations quality rules make (subset rebuild + metric), to report them
    apart from the rule's own work."""

    def __init__(self) -> None:
        self.seconds, self.count = 0.0, 0

    def __enter__(self) -> EvalClock:
        self._orig = quality_module.subset_model

        def timed(*a: Any) -> Any:
            t = time.perf_counter()
            out = self._orig(*a)
            self.seconds += time.perf_counter() - t
            return out

        self._evaluate = Validation.evaluate

        def evaluate(v: Validation, model: Any) -> int:
            t = time.perf_counter()
            out = self._evaluate(v, model)
            self.seconds += time.perf_counter() - t
            self.count += 1
            return out

        quality_module.subset_model = timed  # type: ignore[assignment]
        Validation.evaluate = evaluate  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        quality_module.subset_model = self._orig  # type: ignore[assignment]
        Validation.evaluate = self._evaluate  # type: ignore[method-assign]


def share(key: str, name: str, seconds: float, aggregation: float, quick: bool) -> Result:
    pct = 100 * seconds / aggregation
    return Result(key=key, name=name, value=seconds * 1e3, unit="ms",
                  baseline=aggregation * 1e3, baseline_name="aggregation of the round",
                  ratio=5.0 / pct if pct else None, target="≤ 5% of aggregation",
                  passed=None if quick else pct <= 5.0)


def context(key: str, name: str, seconds: float, aggregation: float) -> Result:
    """A figure without a target; ratio = aggregation time / its time."""
    return Result(key=key, name=name, value=seconds * 1e3, unit="ms", baseline=aggregation * 1e3,
                  baseline_name="aggregation of the round", ratio=aggregation / seconds)


def quality_work(val: Validation, facts: RoundFacts, method: str, runs: int
                 ) -> tuple[float, float, int]:
    """Median (total, evaluation) seconds of a quality rule's round, and evaluations."""
    c = Contracts([Quality(val, method)], 10**6)
    totals, evals, count = [], [], 0
    for _ in range(runs):
        with EvalClock() as clock:
            t = time.perf_counter()
            c.credits(facts)
            totals.append(time.perf_counter() - t)
        evals.append(clock.seconds)
        count = clock.count
    order = sorted(range(runs), key=lambda i: totals[i] - evals[i])
    mid = order[runs // 2]
    return totals[mid], evals[mid], count


def gtg_error(seed: int, shapes: dict[str, tuple[int, ...]]) -> tuple[float, int]:
    """GTG-Shapley's largest error on 8 clients, relative to sum |exact Shapley|."""
    val, facts, _ = round_of(8, seed, shapes)
    facts = dataclasses.replace(facts, accepted=facts.accepted[:8])
    phi, evals = Quality(val).values(facts)
    order = sorted(range(8), key=lambda i: facts.accepted[i].node)
    v = Utility(val, facts.arrays, [(facts.accepted[i].update, facts.accepted[i].examples)  # type: ignore[arg-type]
                                    for i in order])
    v.base()
    exact_sorted = exact_shapley(v, 8)
    exact = [Fraction(0)] * 8
    for pos, i in enumerate(order):
        exact[i] = exact_sorted[pos]
    total = sum(abs(x) for x in exact) or Fraction(1)
    return float(max(abs(a - b) for a, b in zip(phi, exact, strict=True)) / total), evals


@click.command()
@click.option("--clients", default=100, show_default=True)
@click.option("--runs", default=15, show_default=True, help="Timed runs; the median is kept.")
@click.option("--quick", is_flag=True, help="10 clients of a small model, 3 runs: a smoke run, "
              "judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(clients: int, runs: int, quick: bool, as_json: bool) -> None:
    shapes = SHAPES
    if quick:
        clients, runs, shapes = 10, 3, QUICK_SHAPES
    val, facts, prev = round_of(clients, 0, shapes)
    parts = [(facts.arrays.updates[c.update], c.examples) for c in facts.accepted]  # type: ignore[union-attr]
    simple: dict[str, Callable[[], object]] = {
        "aggregation": lambda: subset_model(prev, parts),
        "quantity": lambda: Contracts([Quantity()], 10**6).credits(facts),
        "timeliness": lambda: Contracts([Timeliness()], 10**6).credits(facts),
        "composed": lambda: Contracts([Quantity(), Timeliness(), Penalties()],
                                      10**6).credits(facts),
    }
    t = median_seconds(simple, runs)
    agg = t["aggregation"]
    loo_total, loo_eval, loo_n = quality_work(val, facts, "loo", max(1, runs // 5))
    gtg_total, _, gtg_n = quality_work(val, facts, "gtg-shapley", 1)
    errors = [gtg_error(s, shapes) for s in range(1 if quick else 3)]
    results = [
        share("quantity", f"quantity rule, {clients} clients", t["quantity"], agg, quick),
        share("timeliness", f"timeliness rule, {clients} clients", t["timeliness"], agg, quick),
        share("quality_metric", "quality by metric (leave-one-out attribution, shares, "
              "rounding; evaluations apart)", loo_total - loo_eval, agg, quick),
        context("composed", "quantity + timeliness + penalties", t["composed"], agg),
        context("loo_evaluations", f"leave-one-out: {loo_n} evaluations a round", loo_eval,
                agg),
        context("gtg_evaluations", f"GTG-Shapley: {gtg_n} evaluations a round (bound "
                f"{10 * clients + 2})", gtg_total, agg),
        Result(key="gtg_error_8", name="GTG-Shapley error vs exact Shapley, 8 clients "
               f"({errors[0][1]} vs 256 evaluations)", value=max(e for e, _ in errors),
               unit="max |err| / sum |phi|"),
    ]
    report("credits", results, as_json=as_json, quick=quick,
           params={"clients": clients, "runs": runs, "parameters": sum(
               int(np.prod(s)) for s in shapes.values())},
           notes=["aggregation: the examples-weighted mean of the round's updates (FedAvg)",
                  "quality evaluations are each a subset-model rebuild (one aggregation) "
                  "plus the server's metric: their count, not the rules, sets their cost",
                  f"GTG-Shapley errors over {len(errors)} seeds: "
                  + ", ".join(f"{e:.3f}" for e, _ in errors)])


if __name__ == "__main__":
    main()
