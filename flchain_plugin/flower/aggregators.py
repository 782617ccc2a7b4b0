"""Flower's own aggregation code, rebuilt from a run entry, for `flchain_plugin.replay`.

Bit-exact replay is easiest by not reimplementing anything: the run entry records the
strategy chain's class names and scalar parameters (`aggregation_record`), and `rebuild`
constructs the very Flower strategies again from a closed registry (a ledger never makes
this module import a class it does not list), restores their parameters, and calls their
`aggregate_train` on the kept updates in the order the `model` entry records. Server state
a strategy carries across rounds (FedAvgM's momentum) lives in the rebuilt object, as it
did in the original run; the global model a strategy remembers from `configure_train`
(FedAvgM, the server-side DP wrapper) is set to the round's parent before each round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from ..replay import KeptUpdate, NotReplayable
from .arrays import record_to_numpy
from .run import config_json

LEAVES: tuple[type[Strategy], ...] = (FedAvg, FedProx, FedAvgM, FedMedian, FedTrimmedAvg,
                                      Krum, MultiKrum)
"""Strategies rebuilt as `cls()` with their recorded parameters set."""

WRAPPERS: tuple[type[Strategy], ...] = (DifferentialPrivacyServerSideFixedClipping,
                                        DifferentialPrivacyClientSideFixedClipping)
"""Strategies that wrap another (`cls(inner, noise_multiplier, clipping_norm, clients)`)."""

REGISTRY: dict[str, type[Strategy]] = {
    f"{c.__module__}.{c.__qualname__}": c for c in (*LEAVES, *WRAPPERS)}
"""Every class replay may rebuild, by the name the run entry records."""

_SCALARS = (str, bool, int, float, type(None))


def aggregation_record(strategy: Strategy) -> dict[str, Any]:
    """What a run entry's `aggregation` holds: the chain (outermost first) of classes and
    scalar parameters, the same chain the run's `config` digest commits to."""
    return {"strategy": config_json(strategy, ConfigRecord())["strategy"], "updates": "kept"}


def _restore(strategy: Strategy, params: Mapping[str, Any]) -> Strategy:
    for name, value in params.items():
        if name.startswith("_") or not hasattr(strategy, name):
            continue
        if isinstance(getattr(strategy, name), _SCALARS) and isinstance(value, _SCALARS):
            setattr(strategy, name, value)
    return strategy


def _build(link: Mapping[str, Any], inner: Strategy | None) -> tuple[Strategy, float]:
    """The strategy a chain link records, and the std of the DP noise it adds (0: none),
    which replay cannot redraw: the link is rebuilt noise-free, to recompute the clipped
    aggregate that the noise was added to."""
    name = link.get("class")
    params = link.get("params")
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None or not isinstance(params, dict):
        raise NotReplayable(f"aggregator {name!r} is not one replay can rebuild (known: "
                            f"{', '.join(sorted(c.__name__ for c in REGISTRY.values()))})")
    if cls not in WRAPPERS:
        return _restore(cls(), params), 0.0
    if inner is None:
        raise NotReplayable(f"{cls.__name__} is recorded without the strategy it wraps")
    try:
        noise = float(params["noise_multiplier"])
        std = noise * float(params["clipping_norm"]) / int(params["num_sampled_clients"])
        built = cls(inner, noise_multiplier=0.0,  # type: ignore[call-arg]
                    clipping_norm=params["clipping_norm"],
                    num_sampled_clients=params["num_sampled_clients"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise NotReplayable(f"{cls.__name__}: recorded parameters do not rebuild it: "
                            f"{e}") from None
    return _restore(built, {**params, "noise_multiplier": 0.0}), std


class _Reply:
    """What a strategy's `aggregate_train` reads of a reply Message (a Message cannot be
    built outside a Flower runtime): its content, that it has no error, its source node."""

    class _Meta:
        def __init__(self, node: int) -> None:
            self.src_node_id = node

    def __init__(self, content: RecordDict, node: int) -> None:
        self.content = content
        self.metadata = _Reply._Meta(node)

    def has_error(self) -> bool:
        return False

    def has_content(self) -> bool:
        return True


class FlowerAggregator:
    """A rebuilt Flower strategy chain that aggregates kept updates as the run did;
    `noise_std` > 0: the run added DP noise of that std to what `aggregate` recomputes."""

    def __init__(self, strategy: Strategy, noise_std: float = 0.0) -> None:
        self.strategy = strategy
        self.noise_std = noise_std

    def _chain(self) -> list[Strategy]:
        out, s = [], self.strategy
        while isinstance(s, Strategy):
            out.append(s)
            s = getattr(s, "strategy", None)
        return out

    def aggregate(self, server_round: int, parent: Mapping[str, np.ndarray],
                  updates: Sequence[KeptUpdate]) -> dict[str, np.ndarray] | None:
        """The chain's `aggregate_train` on `updates`, in order; None if it made no model."""
        for s in self._chain():  # what configure_train left there: the model sent
            if hasattr(s, "current_arrays"):
                s.current_arrays = ArrayRecord({k: Array(np.asarray(v)) for k, v in parent.items()})
        weight_key = next((s.weighted_by_key for s in self._chain()
                           if hasattr(s, "weighted_by_key")), "num-examples")
        replies = [_Reply(RecordDict({
            "arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in u.tensors.items()}),
            "metrics": MetricRecord(_metrics(u, weight_key))}), i + 2)
            for i, u in enumerate(updates)]
        arrays, _ = self.strategy.aggregate_train(server_round, replies)  # type: ignore[arg-type]
        return None if arrays is None else record_to_numpy(arrays)


def _metrics(u: KeptUpdate, weight_key: str) -> dict[str, Any]:
    """The reply's numeric metrics as recorded, and the weight the strategy reads."""
    out: dict[str, Any] = {k: v for k, v in u.metrics.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.setdefault(weight_key, u.num_examples)
    return out


def rebuild(aggregation: Mapping[str, Any]) -> FlowerAggregator:
    """The aggregator a run entry's `aggregation` describes (NotReplayable says why not)."""
    chain = aggregation.get("strategy")
    if not isinstance(chain, list) or not chain:
        raise NotReplayable("the run entry's aggregation names no strategy")
    built: Strategy | None = None
    noise = 0.0
    for link in reversed(chain):
        if not isinstance(link, dict):
            raise NotReplayable("the run entry's aggregation chain is malformed")
        built, std = _build(link, built)
        noise = max(noise, std)
    assert built is not None
    return FlowerAggregator(built, noise)
