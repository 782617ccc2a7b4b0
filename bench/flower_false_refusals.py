"""How often the default norm bound refuses an honest client, and whether it catches a boost.

    python bench/flower_false_refusals.py            # 10 seeds x 10 rounds per split
    python bench/flower_false_refusals.py --quick    # 2 seeds x 5 rounds

The task is the README's (examples/federated_demo.py: a torch MLP on scikit-learn's
breast-cancer data, 25 local SGD steps a round). FedAvg rounds run in this process with
honest clients only, on two splits:

- `dirichlet`: 10 clients, class proportions drawn from Dirichlet(alpha = 0.1) per client
  (the usual strongly non-IID split; each client keeps at least 2 examples);
- `demo`: the demo's own split (6 clients, every 6th example).

Each round, every client's update norm is computed with `verification.update_norm` and the
round's bound with `MedianNormBound` (LedgerStrategy's default), exactly as the wrapper
does. Printed per split: the false-refusal rate (honest updates above the bound), the
largest honest norm as a multiple of the round's median, and the share of "one client
scales its update by 10" cases (each client in turn, in every round) that are refused.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flchain_plugin.verification import MedianNormBound, update_norm  # noqa: E402


def load_demo() -> Any:
    spec = importlib.util.spec_from_file_location("federated_demo",
                                                  ROOT / "examples" / "federated_demo.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dirichlet_split(y: np.ndarray, clients: int, alpha: float, seed: int,
                    min_size: int = 2) -> list[np.ndarray]:
    """Indices of each client's examples: per class, proportions ~ Dirichlet(alpha)."""
    rng = np.random.default_rng(seed)
    while True:
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k] += chunk.tolist()
        if min(len(p) for p in parts) >= min_size:
            return [np.array(sorted(p)) for p in parts]


def fedavg_rounds(demo: Any, shards: list[tuple[np.ndarray, np.ndarray]], rounds: int,
                  bound: MedianNormBound) -> list[list[float]]:
    """Update norms of every client in every round of an honest FedAvg run."""
    torch.manual_seed(demo.SEED)
    net = demo.model()
    glob = {k: v.detach().clone() for k, v in net.state_dict().items()}
    out: list[list[float]] = []
    for _ in range(rounds):
        states, weights, norms = [], [], []
        parent = {k: v.numpy() for k, v in glob.items()}
        for x, y in shards:
            net.load_state_dict(glob)
            demo.train(net, x, y)
            sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
            norms.append(update_norm({k: v.numpy() for k, v in sd.items()}, parent))
            states.append(sd)
            weights.append(len(x))
        total = sum(weights)
        glob = {k: sum(s[k] * (w / total) for s, w in zip(states, weights, strict=True))
                for k in glob}
        out.append(norms)
    return out


def score(rounds: list[list[float]], bound: MedianNormBound) -> dict[str, float]:
    honest = refused = boosts = caught = 0
    worst = 0.0
    for norms in rounds:
        limit = bound.bound(norms)
        med = statistics.median(n for n in norms if n > 0)
        worst = max(worst, max(norms) / med)
        honest += len(norms)
        refused += sum(1 for n in norms if limit is not None and n > limit)
        for i in range(len(norms)):
            boosted = list(norms)
            boosted[i] *= 10
            b = bound.bound(boosted)
            boosts += 1
            caught += int(b is not None and boosted[i] > b)
    return {"honest": honest, "refused": refused, "rate": refused / honest,
            "worst": worst, "boosts": boosts, "caught": caught / boosts}


@click.command()
@click.option("--seeds", default=10, show_default=True, help="Dirichlet splits drawn.")
@click.option("--rounds", default=10, show_default=True, help="FedAvg rounds per split.")
@click.option("--alpha", default=0.1, show_default=True, help="Dirichlet concentration.")
@click.option("--quick", is_flag=True, help="2 seeds x 5 rounds: a smoke run.")
def main(seeds: int, rounds: int, alpha: float, quick: bool) -> None:
    """Print the default norm bound's false-refusal rate on non-IID splits and the demo's."""
    if quick:
        seeds, rounds = 2, 5
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    demo = load_demo()
    bound = MedianNormBound()
    x, y = demo.dataset(0, 1)  # the whole training split, standardised
    dirichlet: list[list[float]] = []
    for seed in range(seeds):
        shards = [(x[ix], y[ix]) for ix in dirichlet_split(y, 10, alpha, seed)]
        dirichlet += fedavg_rounds(demo, shards, rounds, bound)
    demo_split = fedavg_rounds(demo, [demo.dataset(p, 6) for p in range(6)], rounds, bound)
    splits = ((f"dirichlet alpha={alpha}, 10 clients, {seeds} splits x {rounds} rounds",
               dirichlet), (f"demo split, 6 clients, {rounds} rounds", demo_split))
    print(f"default bound: {bound.factor:g} x the median of the round's non-zero update "
          f"norms (at least {bound.min_updates})")
    for name, norms in splits:
        res = score(norms, bound)
        print(f"{name}: false refusals {res['refused']}/{res['honest']} = "
              f"{res['rate']:.2%}; largest honest norm {res['worst']:.2f} x the round's "
              f"median; 10x boosts refused {res['caught']:.1%} of {res['boosts']}")
    print("other factors (false refusals / 10x boosts refused):")
    for factor in (3.0, 4.0, 5.0, 6.0, 8.0):
        other = MedianNormBound(factor=factor)
        cells = [score(norms, other) for _, norms in splits]
        print(f"  {factor:g} x median: " + "; ".join(
            f"{n.split(',')[0]} {c['rate']:.2%} / {c['caught']:.1%}"
            for (n, _), c in zip(splits, cells, strict=True)))

if __name__ == "__main__":
    main()
