"""The ancestry of a model version, read from the ledger alone (no framework needed).

One core walk serves every integration. Which entry types record a model, and where
their parent is, is declared on the entry types (`Entry.MODEL`, `PARENTS`, `NAMED_BY`);
`producer` picks the entry that made a digest and `walk` follows parents back, each parent
recorded before the entry that names it. Flower (`lineage` here, `flchain lineage`),
MLflow (`flchain_plugin.mlflow.verify.lineage`) and Lightning (`checkpoint_lineage`) call
these and only format what they return, so they agree on every graph.

`lineage` formats the walk for a federated run: each version with the rounds that made or
kept it, the updates it was aggregated from (its `inputs`), the replies refused in the
same batch with their reasons, the datasets the accepted clients committed to,
evaluations, rollbacks and whether the weights are still in the blob store. Batches are
found from tree heads, so a round's refusals are exactly those committed with it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import entries as E
from .digest import parse_digest
from .ledger import Ledger, LoggedEntry
from .statement import verify_update

MAX_VERSIONS = 100_000


class LineageError(ValueError):
    """The digest is not in the ledger, or the ledger cannot be read; says what to do."""


# -- the core walk ------------------------------------------------------------------------


class EntryReader(Protocol):
    """What the walk reads: a Ledger, or a view of one pinned to a tree head."""

    def find(self, digest: str, type: str | None = None) -> list[LoggedEntry]: ...


def recorded_as(entry: E.Entry) -> tuple[str, ...]:
    """The digests under which `entry` records a model (its `MODEL`, then `NAMED_BY`)."""
    names = ((entry.MODEL,) if entry.MODEL else ()) + entry.NAMED_BY
    return tuple(d for n in names if (d := getattr(entry, n)) is not None)


def parents_of(entry: E.Entry) -> tuple[str, ...]:
    """What the model `entry` records was made from; () for an origin. A parent that is the
    record itself (a round that kept its model) is no parent."""
    value = getattr(entry, entry.PARENTS) if entry.PARENTS else None
    given = value if isinstance(value, list) else [] if value is None else [value]
    own = recorded_as(entry)
    return tuple(dict.fromkeys(p for p in given if p not in own))


def records(reader: EntryReader, digest: str, before: int | None = None) -> list[LoggedEntry]:
    """Entries recorded before index `before` that record `digest`, oldest first."""
    return [le for le in reader.find(digest)
            if (before is None or le.index < before) and digest in recorded_as(le.entry)]


def producer(reader: EntryReader, digest: str, before: int | None = None) -> LoggedEntry | None:
    """The entry that made `digest`, as seen from `before` (the index of the entry naming it
    as parent): the latest one before it that derives the weights from a parent (the same
    weights saved twice, top-k and last, are one model, and the nearer save is the one a
    resume read); failing that, the earliest that records them (an origin: a run's initial
    model; a later rollback, kept round or MLflow logging of them only refers back)."""
    found = records(reader, digest, before)
    derived = [le for le in found if parents_of(le.entry)]
    if derived:
        return derived[-1]
    return found[0] if found else None


@dataclass(frozen=True)
class Link:
    """One model on the way back: its digest, the entry that made it (None: no entry
    before its child records it) and the parents that entry names."""

    model: str
    entry: LoggedEntry | None
    parents: tuple[str, ...]


@dataclass(frozen=True)
class Walk:
    """Links from the start back to an origin, and what broke the chain, if anything."""

    links: tuple[Link, ...]
    problems: tuple[str, ...]


def walk(
    reader: EntryReader,
    digest: str,
    *,
    before: int | None = None,
    follow: Callable[[LoggedEntry], bool] | None = None,
    max_links: int = MAX_VERSIONS,
) -> Walk:
    """From `digest` back along each producer's first parent (a model has one; MLflow's
    extra parents are its own view's business). Each parent must be recorded before the
    entry naming it, so the walk moves strictly back in the log and cannot loop. It stops
    at an origin, at a parent no entry records, after a link `follow` declines, or after
    `max_links`."""
    links: list[Link] = []
    problems: list[str] = []
    cur: str | None = digest
    child: LoggedEntry | None = None
    while cur is not None and len(links) < max_links:
        le = producer(reader, cur, before)
        if le is None:
            links.append(Link(cur, None, ()))
            if child is not None:
                problems.append(f"parent {cur} of entry {child.index} is not recorded before it")
            break
        parents = parents_of(le.entry)
        links.append(Link(cur, le, parents))
        if follow is not None and not follow(le):
            break
        cur, before, child = (parents[0] if parents else None), le.index, le
    return Walk(tuple(links), tuple(problems))


# -- Flower's view of the walk --------------------------------------------------------------


@dataclass(frozen=True)
class UpdateInfo:
    """An accepted client update that went into a version."""

    index: int
    node: str
    update: str
    num_examples: int
    dataset: str | None
    metrics: dict[str, Any]
    signature: bool | None  # True verified, False bad, None recorded unsigned

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "node": self.node, "update": self.update,
                "num_examples": self.num_examples, "dataset": self.dataset,
                "metrics": self.metrics, "signature": self.signature}


@dataclass(frozen=True)
class RejectionInfo:
    """A reply refused in the round that made (or kept) a version."""

    index: int
    node: str
    reason: str
    detail: str
    update: str | None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "node": self.node, "reason": self.reason,
                "detail": self.detail, "update": self.update}


@dataclass(frozen=True)
class Round:
    """One round that produced a version (`kept` False) or left it unchanged (`kept` True)."""

    run: str
    round: int
    index: int
    kept: bool
    aggregator: str
    updates: tuple[UpdateInfo, ...]
    rejected: tuple[RejectionInfo, ...]
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "round": self.round, "index": self.index, "kept": self.kept,
                "aggregator": self.aggregator, "metrics": self.metrics,
                "updates": [u.to_json() for u in self.updates],
                "rejected": [r.to_json() for r in self.rejected]}


@dataclass(frozen=True)
class Version:
    """A model version and how it came to be.

    `source` names the producing entry's type (`producer`'s choice): "model" (a federated
    round), "run" (a run's initial model), "update", "rollback", "checkpoint" (Lightning),
    "mlflow", or "unknown" (named, but recorded by no entry before its child).
    """

    model: str
    source: str
    index: int | None
    parent: str | None
    rounds: tuple[Round, ...] = ()
    runs: tuple[str, ...] = ()
    rollbacks: tuple[dict[str, Any], ...] = ()
    evaluations: tuple[dict[str, Any], ...] = ()
    blob: str = "unknown"  # "stored", "missing", "erased", "unknown" (no blob store given)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def producer(self) -> Round | None:
        """The round that made this version, when a round's `model` entry is its producer."""
        return next((r for r in self.rounds if r.index == self.index), None)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "source": self.source, "index": self.index,
                "parent": self.parent, "runs": list(self.runs),
                "rounds": [r.to_json() for r in self.rounds],
                "rollbacks": list(self.rollbacks), "evaluations": list(self.evaluations),
                "blob": self.blob, "detail": self.detail}


@dataclass(frozen=True)
class Lineage:
    """The ancestry of `model`: versions newest first, the datasets behind it, and any
    inconsistency found in the recorded lineage (`problems`)."""

    model: str
    versions: tuple[Version, ...]
    datasets: tuple[dict[str, Any], ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def accepted_updates(self) -> list[UpdateInfo]:
        """Every update aggregated into this model, over all its ancestor rounds."""
        return [u for v in self.versions for r in v.rounds if not r.kept for u in r.updates]

    def rejections(self) -> list[RejectionInfo]:
        return [x for v in self.versions for r in v.rounds for x in r.rejected]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "ok": self.ok, "problems": list(self.problems),
                "versions": [v.to_json() for v in self.versions],
                "datasets": list(self.datasets)}

    def to_dot(self) -> str:
        """Graphviz DOT: versions as boxes, accepted updates as ellipses, refusals in red."""
        out = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="monospace"];']
        for v in self.versions:
            label = f"{_short(v.model)}\n{v.source}"
            if v.producer is not None:
                label += f" round {v.producer.round}"
            if v.blob in ("erased", "missing"):
                label += f"\nweights {v.blob}"
            out.append(f"  {_q(v.model)} [shape=box,label={_q(label)}];")
            if v.parent and v.parent != v.model:
                out.append(f"  {_q(v.parent)} -> {_q(v.model)} [style=bold];")
            for r in v.rounds:
                for u in r.updates:
                    uid = f"u{u.index}"
                    label = f"node {u.node}\n{_short(u.update)}"
                    out.append(f"  {uid} [shape=ellipse,label={_q(label)}];")
                    out.append(f"  {uid} -> {_q(v.model)};")
                    if u.dataset:
                        out.append(f"  {_q(u.dataset)} [shape=cylinder,"
                                   f"label={_q(_short(u.dataset))}];")
                        out.append(f"  {_q(u.dataset)} -> {uid} [style=dotted];")
                for x in r.rejected:
                    xid = f"r{x.index}"
                    label = f"node {x.node}\n{x.reason} (round {r.round})"
                    out.append(f"  {xid} [shape=octagon,color=red,fontcolor=red,"
                               f"label={_q(label)}];")
                    out.append(f"  {xid} -> {_q(v.model)} [color=red,style=dashed,arrowhead=tee];")
        out.append("}")
        return "\n".join(out) + "\n"


def _q(s: str) -> str:
    """A DOT string literal (label newlines are the two characters backslash-n)."""
    return '"' + s.replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(digest: str) -> str:
    return digest[7:19] if digest.startswith("sha256:") else digest


class _Batches:
    """Batch boundaries from the ledger's tree heads (one head per appended batch)."""

    def __init__(self, ledger: Ledger):
        self.sizes = [h.size for h in ledger.heads()]

    def range_of(self, index: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.sizes, index)
        end = self.sizes[i] if i < len(self.sizes) else index + 1
        start = self.sizes[i - 1] if i > 0 else 0
        return start, end


class _Reader:
    def __init__(self, ledger: Ledger, blobs: Any, verify_signatures: bool):
        self.led = ledger
        self.blobs = blobs
        self.verify = verify_signatures
        self.batches = _Batches(ledger)
        self.problems: list[str] = []

    def about(self, digest: str) -> list[LoggedEntry]:
        return self.led.find(digest)

    def round_of(self, le: LoggedEntry) -> Round:
        m = le.entry
        assert isinstance(m, E.Model)
        kept = m.parent == m.model and not m.inputs
        updates = []
        for i in m.inputs:
            try:
                u = self.led.get(i)
            except IndexError:
                self.problems.append(f"model entry {le.index}: input {i} is beyond the ledger")
                continue
            ue = u.entry
            if not isinstance(ue, E.Update) or ue.run != m.run or ue.round != m.round:
                self.problems.append(
                    f"model entry {le.index}: input {i} is not an update of run {m.run} "
                    f"round {m.round}"
                )
                continue
            sig = verify_update(ue) if self.verify else None
            if sig is False:
                self.problems.append(f"update entry {i}: its signature does not verify")
            if ue.parent != m.parent:
                self.problems.append(
                    f"update entry {i}: trained from {ue.parent}, not the round's parent "
                    f"{m.parent}"
                )
            updates.append(UpdateInfo(i, ue.node, ue.update, ue.num_examples, ue.dataset,
                                      ue.metrics, sig))
        rejected = []
        start, end = self.batches.range_of(le.index)
        for x in self.led.iter_entries(start, end, type="rejected"):
            r = x.entry
            assert isinstance(r, E.Rejected)
            if r.run == m.run and r.round == m.round:
                rejected.append(RejectionInfo(x.index, r.node, r.reason, r.detail, r.update))
        return Round(m.run, m.round, le.index, kept, m.aggregator, tuple(updates),
                     tuple(rejected), dict(m.metrics))

    def version(self, link: Link) -> Version:
        digest = link.model
        about = self.about(digest)
        rounds, runs, rollbacks, evals = [], [], [], []
        erased = False
        for le in about:
            e = le.entry
            if isinstance(e, E.Model) and e.model == digest:
                rounds.append(self.round_of(le))
            elif isinstance(e, E.Run):
                runs.append(e.run)
            elif isinstance(e, E.Rollback):
                rollbacks.append({"index": le.index, "previous": e.previous, "reason": e.reason,
                                  "run": e.run})
            elif isinstance(e, E.Evaluation):
                evals.append({"index": le.index, "run": e.run, "round": e.round,
                              "source": e.source, "metrics": e.metrics})
            elif isinstance(e, E.Erasure):
                erased = True
        made = link.entry
        index = made.index if made else (about[0].index if about else None)
        blob = "unknown"
        if erased:
            blob = "erased"
        elif self.blobs is not None:
            blob = "stored" if self.blobs.has(digest) else "missing"
        return Version(digest, made.entry.TYPE if made else "unknown", index,
                       link.parents[0] if link.parents else None,
                       tuple(sorted(rounds, key=lambda r: r.index)), tuple(dict.fromkeys(runs)),
                       tuple(rollbacks), tuple(evals), blob, _detail(made.entry) if made else {})


def _detail(e: E.Entry) -> dict[str, Any]:
    """What a version's producing entry adds to its row, by type."""
    if isinstance(e, E.TrainingCheckpoint):
        return {"name": e.name, "epoch": e.epoch, "step": e.step, "file": e.file}
    if isinstance(e, E.Mlflow):
        return {"kind": e.kind, "model_id": e.model_id, "name": e.name, "version": e.version}
    if isinstance(e, E.Run):
        return {"strategy": e.strategy}
    if isinstance(e, E.Update):
        return {"run": e.run, "round": e.round, "node": e.node}
    return {}


def lineage(
    ledger: Ledger,
    model: str,
    *,
    blobs: Any = None,
    verify_signatures: bool = True,
    max_versions: int = MAX_VERSIONS,
) -> Lineage:
    """The ancestry of `model` (a model digest) as recorded in `ledger`: the core `walk`,
    each link formatted as a Version with its rounds, refusals and datasets.

    `blobs` (a BlobStore) adds whether each version's weights are still stored. Raises
    LineageError if the ledger has no entry about `model`.
    """
    parse_digest(model)
    reader = _Reader(ledger, blobs, verify_signatures)
    path = walk(ledger, model, max_links=max_versions)
    versions = [reader.version(link) for link in path.links]
    if versions[0].index is None:
        raise LineageError(
            f"{model} is not in the ledger: no entry names it (check the digest with "
            "`flchain log`, or the --ledger path)"
        )
    reader.problems.extend(path.problems)
    datasets: dict[str, dict[str, Any]] = {}
    for v in versions:
        for r in v.rounds:
            if r.kept:
                continue
            for u in r.updates:
                if u.dataset:
                    d = datasets.setdefault(u.dataset, {"dataset": u.dataset, "nodes": [],
                                                        "entries": []})
                    if u.node not in d["nodes"]:
                        d["nodes"].append(u.node)
    for ds, d in datasets.items():
        for le in ledger.find(ds, type="dataset"):
            e = le.entry
            assert isinstance(e, E.Dataset)
            d["entries"].append({"index": le.index, "owner": e.owner, "scheme": e.scheme,
                                 "examples": e.examples, "name": e.name})
    return Lineage(model, tuple(versions), tuple(datasets.values()), tuple(reader.problems))


def latest_model(ledger: Ledger, run: str | None = None) -> str | None:
    """The newest model digest the ledger recorded (optionally within `run`): the global
    model a rollback moves away from."""
    newest: tuple[int, str] | None = None
    for t in ("model", "rollback", "run"):
        for le in ledger.iter_entries(type=t, reverse=True):
            e = le.entry
            if run is not None and getattr(e, "run", None) != run:
                continue
            digest = getattr(e, "model", None)
            if digest and (newest is None or le.index > newest[0]):
                newest = (le.index, digest)
            break
    return newest[1] if newest else None
