"""Replay: recompute every round's global model from the committed updates, bit for bit.

A `model` entry says "these updates (leaf indices, in this order), aggregated by this
strategy from this parent, gave this model". With the updates kept
(`LedgerStrategy(keep_updates=True)`, see `vault`) and the run entry's `aggregation`
record, an auditor needs nothing from the operator but the ledger and the blob store:
`replay` rebuilds the aggregator, feeds it the previous model and the decrypted updates
(each re-digested against its `update` entry), and compares the digest of what it computes
with the recorded one. The first round that differs is named, with why.

The core is framework-free: rebuilding a strategy is delegated to an `AggregatorFactory`
(by default `flchain_plugin.flower.aggregators.rebuild`, which calls Flower's own
aggregation code), so the statuses and the walk over the log live here once.

Statuses: "ok" (recomputed digest equals the recorded one), "differs" (it does not, or the
record is inconsistent: a wrong parent, an input that is no update of the round, an altered
kept update), "erased" (an input or the parent was erased: named), "not_replayable" (the
run kept no updates, or its aggregation is not deterministic, e.g. DP noise: the reason is
given, and any kept inputs are still checked), "missing" (an input or parent is absent
from the blob store without an erasure entry).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from . import entries as E
from .blobs import BlobError, BlobStore
from .digest import DigestError, model_digest
from .vault import UpdateVault

STATUSES = ("ok", "differs", "erased", "not_replayable", "missing")


class NotReplayable(Exception):
    """A run's aggregation cannot be recomputed; the message says why."""


@dataclass(frozen=True)
class KeptUpdate:
    """One input of a round as the aggregator receives it."""

    index: int
    node: str
    digest: str
    tensors: Mapping[str, np.ndarray]
    metrics: Mapping[str, Any]
    num_examples: int


class Aggregator(Protocol):
    def aggregate(self, server_round: int, parent: Mapping[str, np.ndarray],
                  updates: Sequence[KeptUpdate]) -> dict[str, np.ndarray] | None: ...


AggregatorFactory = Callable[[Mapping[str, Any]], Aggregator]
"""Builds a run's aggregator from its run entry's `aggregation`; raises NotReplayable."""


@dataclass(frozen=True)
class RoundReplay:
    """The outcome for one `model` entry (`index`), one of STATUSES with why."""

    run: str
    round: int
    status: str
    detail: str
    index: int | None = None
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "round": self.round, "status": self.status,
                "detail": self.detail, "index": self.index, "model": self.model}


@dataclass
class ReplayReport:
    rounds: list[RoundReplay] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No round differs and none lacks an input nobody recorded erasing."""
        return all(r.status not in ("differs", "missing") for r in self.rounds)

    @property
    def first_problem(self) -> RoundReplay | None:
        return next((r for r in self.rounds if r.status in ("differs", "missing")), None)

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.rounds) for s in STATUSES}

    def to_json(self) -> dict[str, Any]:
        first = self.first_problem
        return {"ok": self.ok, "counts": self.counts(),
                "first_problem": first.to_json() if first else None,
                "rounds": [r.to_json() for r in self.rounds]}


def _short(digest: str | None) -> str:
    return f"{digest[:19]}…" if digest else str(digest)


class _Problem(Exception):
    """Ends one round's replay with a status other than ok."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class _Log:
    """What replay reads of the ledger, in one pass."""

    events: list[tuple[int, E.Run | E.Model]] = field(default_factory=list)
    updates: dict[int, E.Update] = field(default_factory=dict)
    erased: dict[str, int] = field(default_factory=dict)

    @property
    def rounds(self) -> int:
        return sum(isinstance(e, E.Model) for _, e in self.events)

    @classmethod
    def read(cls, ledger: Any) -> _Log:
        log = cls()
        for le in ledger.iter_entries():
            e = le.entry
            if isinstance(e, (E.Run, E.Model)):  # a run id may start again (a restart)
                log.events.append((le.index, e))
            elif isinstance(e, E.Update):
                log.updates[le.index] = e
            elif isinstance(e, E.Erasure):
                log.erased.setdefault(e.blob, le.index)
        return log


@dataclass
class _RunState:
    """A run's aggregator (or why there is none) and the model its next round starts from;
    `tensors` None: read the recorded weights from the blob store."""

    aggregator: Aggregator | None
    why: str | None
    model: str
    kept: bool = True
    tensors: Mapping[str, np.ndarray] | None = None


class _Replayer:
    def __init__(self, log: _Log, blobs: BlobStore, vault: UpdateVault,
                 rebuild: AggregatorFactory) -> None:
        self.log, self.blobs, self.vault, self.rebuild = log, blobs, vault, rebuild
        self.states: dict[str, _RunState] = {}
        self.pool = ThreadPoolExecutor(min(8, os.cpu_count() or 1))

    def start(self, entry: E.Run) -> None:
        """A run entry: its aggregator rebuilt, its model the first parent."""
        run = entry.run
        agg, why, kept = None, None, entry.aggregation is not None
        if entry.aggregation is None:
            why = (f"run {run} kept no updates (record it with "
                   "LedgerStrategy(keep_updates=True))")
        else:
            try:
                agg = self.rebuild(entry.aggregation)
            except NotReplayable as e:
                why = str(e)
        self.states[run] = _RunState(agg, why, entry.model, kept=kept)

    def round(self, index: int, m: E.Model) -> RoundReplay:
        st = self.states.get(m.run)
        try:
            if st is None:
                raise _Problem("not_replayable", f"no run entry records run {m.run}")
            detail = self._round(st, m)
            st.model = m.model
            return RoundReplay(m.run, m.round, "ok", detail, index, m.model)
        except _Problem as p:
            if st is not None:  # go on from the recorded model (read from the blob store)
                st.model, st.tensors = m.model, None
            return RoundReplay(m.run, m.round, p.status, p.detail, index, m.model)

    def _round(self, st: _RunState, m: E.Model) -> str:
        if m.parent != st.model:
            raise _Problem("differs", f"its parent {_short(m.parent)} is not the run's model "
                                      f"before it, {_short(st.model)}")
        if not m.inputs:
            if m.model != m.parent:
                raise _Problem("differs", "it records no inputs but a new model")
            return f"no new model (kept: {m.metrics.get('kept', '-')})"
        inputs = [self._input(i, m) for i in m.inputs]
        if not st.kept:
            raise _Problem("not_replayable", str(st.why))
        self._check_erased(inputs)
        if st.aggregator is None:
            kept = self._load(inputs)
            raise _Problem("not_replayable", f"{st.why}; {len(kept)} input(s) checked")
        parent = st.tensors if st.tensors is not None else self._parent(m.parent)
        kept = self._load(inputs)
        try:
            made = st.aggregator.aggregate(m.round, parent, kept)
        except Exception as e:  # whatever the recorded inputs make the aggregator do
            raise _Problem("differs", f"aggregating the recorded inputs raised "
                                      f"{type(e).__name__}: {e}") from None
        if made is None:
            raise _Problem("differs", f"{m.aggregator} makes no model from the recorded inputs")
        noise = getattr(st.aggregator, "noise_std", 0.0)
        if noise:
            raise self._noisy(m, made, noise, len(kept))
        got = model_digest(made)
        if got != m.model:
            raise _Problem("differs", f"{m.aggregator} over the {len(kept)} recorded inputs "
                                      f"gives {got}, the entry records {m.model}")
        st.tensors = made
        return f"{m.aggregator} over {len(kept)} input(s) gives the recorded model bit for bit"

    def _noisy(self, m: E.Model, made: Mapping[str, np.ndarray], std: float,
               n: int) -> _Problem:
        """A round with DP noise: the clipped aggregate is recomputed, and the recorded model
        must differ from it by Gaussian noise of the recorded std (RMS within 20%, or the
        estimate's own spread for tiny models, and no coordinate beyond 8 std), not more."""
        try:
            recorded = self._parent(m.model)
        except _Problem as p:
            return _Problem("not_replayable", f"DP noise (std {std:.3g}): the clipped aggregate "
                                              f"of {n} input(s) was recomputed, but {p.detail}")
        res = np.concatenate([(np.asarray(recorded[k], np.float64) - np.asarray(v, np.float64))
                              .ravel() for k, v in made.items()])
        rms, peak = float(np.sqrt(np.mean(res ** 2))), float(np.max(np.abs(res)))
        tol = max(0.2, 5 / np.sqrt(2 * res.size))
        if abs(rms / std - 1) <= tol and peak <= 8 * std:
            return _Problem("not_replayable", f"DP noise (std {std:.3g}) is drawn at aggregation "
                                              f"and recorded nowhere: the clipped aggregate of "
                                              f"{n} input(s) was recomputed and the recorded "
                                              f"model differs from it by noise of RMS {rms:.3g}, "
                                              "as the run's DP parameters predict")
        return _Problem("differs", f"the recorded model differs from the recomputed clipped "
                                   f"aggregate of {n} input(s) by RMS {rms:.3g} (largest "
                                   f"{peak:.3g}), not by the DP noise of std {std:.3g} the run "
                                   "records")

    def _input(self, i: int, m: E.Model) -> tuple[int, E.Update]:
        u = self.log.updates.get(i)
        if u is None or u.run != m.run or u.round != m.round or u.parent != m.parent:
            raise _Problem("differs", f"input {i} is not an update of run {m.run} round "
                                      f"{m.round} made from {_short(m.parent)}")
        return i, u

    def _check_erased(self, inputs: list[tuple[int, E.Update]]) -> None:
        gone = [f"{u.update} (node {u.node}, entry {i}; erasure entry {self.log.erased[u.update]})"
                for i, u in inputs if u.update in self.log.erased]
        if gone:
            raise _Problem("erased", f"{len(gone)} input(s) erased: " + ", ".join(gone))

    def _load(self, inputs: list[tuple[int, E.Update]]) -> list[KeptUpdate]:
        def one(item: tuple[int, E.Update]) -> KeptUpdate:
            i, u = item
            if not self.vault.has(u.update):
                raise _Problem("missing", f"update {u.update} (node {u.node}, entry {i}) is "
                                          f"not kept in {self.vault.root} and no erasure "
                                          "entry records it")
            try:
                tensors = self.vault.get(u.update)
            except BlobError as e:
                raise _Problem("differs", f"update of node {u.node} (entry {i}): {e}") from None
            return KeptUpdate(i, u.node, u.update, tensors, u.metrics, u.num_examples)

        return list(self.pool.map(one, inputs))

    def _parent(self, digest: str | None) -> Mapping[str, np.ndarray]:
        if digest is None:
            raise _Problem("differs", "the entry names no parent model")
        if digest in self.log.erased:
            raise _Problem("erased", f"its parent model {digest} was erased (erasure entry "
                                     f"{self.log.erased[digest]})")
        if not self.blobs.has(digest):
            raise _Problem("missing", f"the weights of its parent model {digest} are not in "
                                      f"{self.blobs.root}")
        try:
            return self.blobs.get(digest)
        except (BlobError, DigestError) as e:
            raise _Problem("differs", f"parent model: {e}") from None


def _default_factory() -> AggregatorFactory:
    """Flower's aggregation code; without Flower installed, every run is not replayable."""
    try:
        from .flower.aggregators import rebuild
    except ImportError as e:
        missing = e.name

        def unavailable(aggregation: Mapping[str, Any]) -> Aggregator:
            raise NotReplayable(f"Flower is not installed ({missing}): pip install "
                                "'flchain-plugin[flower]' to rebuild its aggregators")
        return unavailable
    return rebuild


def replay(ledger: Any, blobs: BlobStore, *, progress: Callable[[int, int], None] | None = None,
           vault: UpdateVault | None = None,
           rebuild: AggregatorFactory | None = None) -> ReplayReport:
    """Recompute every recorded round of `ledger` (a Ledger, e.g. a mirror) from the
    weights in `blobs` and the kept updates in `vault` (default: the same directory).
    `progress(done, total)` is called after each round."""
    log = _Log.read(ledger)
    r = _Replayer(log, blobs, vault if vault is not None else UpdateVault(blobs.root),
                  rebuild if rebuild is not None else _default_factory())
    report = ReplayReport()
    try:
        total = log.rounds
        for index, e in log.events:
            if isinstance(e, E.Run):
                r.start(e)
                continue
            report.rounds.append(r.round(index, e))
            if progress is not None:
                progress(len(report.rounds), total)
    finally:
        r.pool.shutdown()
    return report
