"""LedgerStrategy: wrap any Flower strategy so every update is verified and logged.

The wrapper sits outermost, in the style of Flower's DP wrappers: it holds `self.strategy`,
does not override `start` (so `start` calls the wrapper's methods), and delegates. Per round:

- `configure_train`/`configure_evaluate` give every message its own content whose single
  ConfigRecord also carries the announcement (protocol.py): run, round, the global model's
  digest, the latest signed checkpoint and the inclusion proof of the entry recording it.
- `aggregate_train` hashes every reply before anything else touches it (inner strategies
  change replies in place), runs the lineage checks in the order ARCHITECTURE.md lists,
  hands only accepted replies to the wrapped strategy, and commits the round as one batch:
  new members and datasets, `update` and `rejected` entries, then the `model` entry whose
  `inputs` are the updates' leaf indices. A signed checkpoint follows every batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from .. import entries as E
from ..blobs import BlobStore
from ..canonical import json_value
from ..commit import commit, log_signer, open_ledger
from ..digest import PARALLEL_MIN_BYTES, DigestError, json_digest
from ..ledger import Ledger
from ..lineage import latest_model
from ..notes import Signer
from ..statement import SignedStatement, StatementError
from .arrays import TensorView, numpy_to_record, record_to_numpy, record_views, views_digest
from .policy import Policy
from .protocol import STATEMENT_RECORD, Announcement, json_safe, read_statement, reply_metrics

log = logging.getLogger("flchain.flower")


UNCONFIRMED_KEPT = 8
"""Checkpoint sizes offered to a node since its last clean reply that announcements keep
proving consistency from; a node that missed more replies in a row than this may be left
without a proof from the size it pinned, and its signing_mod then refuses."""


class Refused(Exception):
    """A reply failed a lineage check: `reason` is one of E.REJECT_REASONS."""

    def __init__(self, reason: str, detail: str, update: str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.update = reason, detail, update


@dataclass
class _Sent:
    """What one node was sent this round."""

    digest: str
    views: dict[str, TensorView]


@dataclass
class _Run:
    """Everything the wrapper remembers about the run it is serving."""

    run: str
    model: str
    record: ArrayRecord
    entry_index: int
    entry: bytes
    views: dict[str, TensorView] | None = None
    members: dict[str, str] = field(default_factory=dict)
    seen_updates: set[str] = field(default_factory=set)
    seen_nonces: set[str] = field(default_factory=set)
    datasets: set[str] = field(default_factory=set)
    sent: dict[int, _Sent] = field(default_factory=dict)
    sent_msgs: list[Message] = field(default_factory=list)

    def global_views(self) -> dict[str, TensorView]:
        if self.views is None:
            self.views = record_views(self.record)
        return self.views


def describe(strategy: Strategy) -> str:
    """`Outer(Inner(...))` along `.strategy` attributes: the aggregator's name."""
    name = type(strategy).__name__
    inner = getattr(strategy, "strategy", None)
    return f"{name}({describe(inner)})" if isinstance(inner, Strategy) else name


def _scalars(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in sorted(vars(obj).items()):
        if k.startswith("_"):
            continue
        if v is None or isinstance(v, (str, bool, int, float)):
            out[k] = json_value(v)
    return out


def _config_json(strategy: Strategy, config: ConfigRecord) -> dict[str, Any]:
    chain: list[dict[str, Any]] = []
    s: Any = strategy
    while isinstance(s, Strategy):
        chain.append({"class": f"{type(s).__module__}.{type(s).__qualname__}",
                      "params": _scalars(s)})
        s = getattr(s, "strategy", None)
    return {"strategy": chain, "config": json_safe(dict(config))}


def _finite(arr: np.ndarray) -> bool:
    """All values finite. A BLAS dot product is one fast pass with no temporary; it is
    non-finite iff some value is, or the squares overflow (then check value by value)."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return True
    flat = arr.reshape(-1)
    if (arr.dtype.kind == "f" and arr.dtype.itemsize >= 4
            and math.isfinite(float(np.dot(flat, flat)))):
        return True
    return bool(np.isfinite(flat).all())


@dataclass(frozen=True)
class _Prepared:
    """What can be computed from a reply alone, before the ordered checks: parsed arrays,
    their digest and the first non-finite tensor. Computed for all replies at once on a
    thread pool (hashlib and BLAS release the GIL)."""

    count: int = 0  # ArrayRecords in the reply
    nbytes: int = 0
    views: dict[str, TensorView] | None = None
    digest: str | None = None
    error: str | None = None
    non_finite: str | None = None


def _parse(reply: Message, max_bytes: int | None) -> _Prepared | None:
    """Parse a reply's arrays (in the calling thread: numpy parses `.npy` headers with
    `ast`, which CPython < 3.11.8 cannot run on two threads at once)."""
    if reply.has_error():
        return None
    records = reply.content.array_records
    if len(records) != 1:
        return _Prepared(count=len(records))
    record = next(iter(records.values()))
    nbytes = sum(len(a.data) for a in record.values())
    if max_bytes is not None and nbytes > max_bytes:
        return _Prepared(count=1, nbytes=nbytes)
    try:
        return _Prepared(count=1, nbytes=nbytes, views=record_views(record))
    except DigestError as e:
        return _Prepared(count=1, nbytes=nbytes, error=str(e))


def _hash(prep: _Prepared | None) -> _Prepared | None:
    """Digest and finiteness of parsed arrays (thread-safe: hashlib and BLAS only)."""
    if prep is None or prep.views is None:
        return prep
    try:
        digest = views_digest(prep.views, threads=1)
        bad = next((n for n, v in prep.views.items() if not _finite(v.numpy())), None)
    except (DigestError, ValueError, TypeError) as e:  # whatever a client sent: malformed
        return dataclasses.replace(prep, views=None, error=str(e))
    return dataclasses.replace(prep, digest=digest, non_finite=bad)


class LedgerStrategy(Strategy):
    """Record, verify and commit every update of a Flower run (see module docstring).

    Parameters
    ----------
    strategy : the strategy to wrap (FedAvg, Krum, a DP wrapper...). Keep LedgerStrategy
        outermost: strategies that clip or pop arrays change replies before they aggregate.
    ledger : a Ledger or the path of its SQLite file (created if missing).
    policy : what is enforced (flchain_plugin.flower.Policy); the defaults are the safe ones.
    signer : the checkpoint key, named after the ledger's origin: a notes.Signer or a key
        file path. None: `<ledger file>.key`, created on first use (an in-memory key for
        ledgers without a file). Clients check checkpoints against `verifier_key`.
    blobs : where global models are kept for rollback: a BlobStore or directory. None:
        `<ledger file>.blobs/`. False: keep no weights.
    resume_from : a recorded model digest to restart from (its weights must be in `blobs`);
        the run records a `rollback` entry and sends that model whatever `start` was given.
    """

    def __init__(
        self,
        strategy: Strategy,
        ledger: Ledger | str | os.PathLike[str],
        *,
        policy: Policy | None = None,
        signer: Signer | str | os.PathLike[str] | None = None,
        blobs: BlobStore | str | os.PathLike[str] | bool | None = None,
        resume_from: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(strategy, Strategy):
            raise ValueError(f"strategy must be a flwr Strategy, got {type(strategy).__name__}")
        if isinstance(strategy, LedgerStrategy):
            raise ValueError("strategy is already a LedgerStrategy: wrap the inner strategy once")
        self.strategy = strategy
        self.ledger = open_ledger(ledger)
        policy = Policy() if policy is None else policy
        if not isinstance(policy, Policy):
            raise ValueError(f"policy must be a flchain_plugin.flower.Policy, got {policy!r}")
        self.policy = policy
        self.signer = log_signer(self.ledger, signer)
        if blobs is None or blobs is True:
            self.blobs: BlobStore | None = BlobStore.beside(self.ledger)
        elif blobs is False:
            self.blobs = None
        elif isinstance(blobs, BlobStore):
            self.blobs = blobs
        elif isinstance(blobs, (str, os.PathLike)):
            self.blobs = BlobStore(blobs)
        else:
            raise ValueError(f"blobs must be a BlobStore, a directory or False, got {blobs!r}")
        self.resume_from = resume_from
        if resume_from is not None:
            try:
                E.check_digest(resume_from, "resume_from")
            except E.EntryError as e:
                raise ValueError(str(e)) from None
            if self.blobs is None or not self.blobs.has(resume_from):
                raise ValueError(
                    f"resume_from: no stored weights for {resume_from} in {self.blobs}; "
                    "pass the blobs directory the run stored them in"
                )
            if not self.ledger.find(resume_from):
                raise ValueError(f"resume_from: {resume_from} is not recorded in the ledger")
        self._run: _Run | None = None
        self._io: ThreadPoolExecutor | None = None  # writes blobs while the batch commits
        self._pending_evals: list[tuple[int, str, dict[str, Any]]] = []
        self._pending: list[E.Entry] = []  # federated evaluations awaiting the central one
        self._central = False  # an evaluate_fn wrapper exists: it commits evaluations
        self._checkpoint: str | None = None
        self._checkpoint_size = 0
        # node id -> the checkpoint sizes its signing_mod may have pinned: the one it last
        # confirmed (a reply without error) and those offered since (a reply that was lost,
        # or an error after the mod had pinned). Announcements prove consistency from each.
        self._confirmed: dict[int, int] = {}
        self._unconfirmed: dict[int, list[int]] = {}
        self._resumed: list[int] = []  # a restarted run: sizes any node may have pinned

    # -- keys ----------------------------------------------------------------------------

    @property
    def verifier_key(self) -> str:
        """The server's verifier key, for clients' `signing_mod(server_key=...)`."""
        return self.signer.verifier_key

    # -- committing ----------------------------------------------------------------------

    def _commit(self, batch: list[E.Entry], built_for: int | None = None) -> int:
        """Append one batch (after any pending evaluations) and sign a checkpoint of it;
        returns the index of `batch`'s first entry. `built_for`: the ledger size the batch's
        leaf indices (a model's `inputs`) were computed against."""
        batch = self._pending + batch
        pending, self._pending = len(self._pending), []
        done = commit(self.ledger, batch, built_for=built_for, signer=self.signer)
        self._checkpoint = done.checkpoint
        self._checkpoint_size = done.head.size
        return done.first + pending

    def _store(self, record: ArrayRecord, digest: str) -> None:
        if self.blobs is not None:
            self.blobs.put(record_to_numpy(record), digest=digest)

    # -- the run -------------------------------------------------------------------------

    def _ensure_run(self, grid: Grid, arrays: ArrayRecord, config: ConfigRecord) -> _Run:
        run_id = str(grid.run.run_id)
        if self._run is not None and self._run.run == run_id:
            return self._run
        if self.resume_from is not None:
            record = numpy_to_record(self.blobs.get(self.resume_from))  # type: ignore[union-attr]
            digest = self.resume_from
        else:
            record, digest = arrays, views_digest(record_views(arrays))
        run_entry = E.Run(run=run_id, strategy=describe(self.strategy),
                          config=json_digest(_config_json(self.strategy, config)), model=digest,
                          policy=self.policy.to_json())
        batch: list[E.Entry] = [run_entry]
        if self.resume_from is not None:
            batch.append(E.Rollback(model=digest, previous=latest_model(self.ledger),
                                    reason="resume_from", run=run_id))
        for rnd, source, metrics in self._pending_evals:
            batch.append(E.Evaluation(run=run_id, round=rnd, model=digest, metrics=metrics,
                                      source=source))
        self._pending_evals.clear()
        self._store(record, digest)
        first = self._commit(batch)
        st = _Run(run_id, digest, record, first, run_entry.encode())
        self._load_history(st)
        if st.members or st.seen_updates:  # this run's server restarted: its clients
            # pinned checkpoints this process never announced; prove from the latest ones
            self._resumed = self.ledger.checkpoint_sizes(UNCONFIRMED_KEPT + 1)
        self._run = st
        log.info("flchain: run %s recorded in %s (entry %d), model %s", run_id,
                 self.ledger.origin, first, digest)
        return st

    def _load_history(self, st: _Run) -> None:
        """Members, nonces and updates already recorded for this run (a restarted server)."""
        for le in self.ledger.iter_entries(type="member"):
            e = le.entry
            if isinstance(e, E.Member) and e.run == st.run:
                st.members[e.node] = e.key
        for le in self.ledger.iter_entries(type="update"):
            e = le.entry
            if isinstance(e, E.Update) and e.run == st.run:
                st.seen_updates.add(e.update)
                if e.nonce:
                    st.seen_nonces.add(e.nonce)
                if e.dataset:
                    st.datasets.add(e.dataset)

    def _current(self, st: _Run, arrays: ArrayRecord) -> ArrayRecord:
        """The recorded global model. `start` may hold another one (its initial arrays when
        resuming, or after a refused round): the recorded one is what is sent."""
        if arrays is st.record:
            return arrays
        try:
            digest = views_digest(record_views(arrays))
        except DigestError:
            digest = None
        if digest == st.model:
            st.record, st.views = arrays, None
            return arrays
        log.warning("flchain: start() holds model %s, not the recorded global model %s; "
                    "sending the recorded one", digest, st.model)
        return st.record

    # -- announcing ----------------------------------------------------------------------

    def _announce(self, st: _Run, server_round: int, messages: Iterable[Message]) -> list[Message]:
        out = list(messages)
        st.sent, st.sent_msgs = {}, out
        digests: dict[int, tuple[str, dict[str, TensorView]]] = {}
        consistency: dict[int, tuple[bytes, ...]] = {}  # proofs from a size to the latest
        vkey = self.verifier_key
        proof: tuple[bytes, ...] | None = None
        for msg in out:
            content = msg.content
            records = content.array_records
            config_name = next(iter(content.config_records), None)
            new = RecordDict()
            for name, rec in content.items():
                new[name] = ConfigRecord(dict(rec)) if name == config_name else rec
            if config_name is None:
                config_name = "config"
                new[config_name] = ConfigRecord()
            if len(records) == 1:
                record = next(iter(records.values()))
                if id(record) not in digests:
                    if record is st.record:
                        digests[id(record)] = (st.model, st.global_views())
                    else:
                        views = record_views(record)
                        digests[id(record)] = (views_digest(views), views)
                digest, views = digests[id(record)]
                st.sent[msg.metadata.dst_node_id] = _Sent(digest, views)
                entry = index = None
                if digest == st.model:
                    if proof is None:
                        proof = self.ledger.inclusion_proof(
                            st.entry_index, self._checkpoint_size).hashes
                    entry, index = st.entry, st.entry_index
                else:
                    log.warning("flchain: the model sent to node %s (%s) is not the recorded "
                                "global model; its client will refuse it",
                                msg.metadata.dst_node_id, digest)
                node = msg.metadata.dst_node_id
                pinned = self._unconfirmed.setdefault(node, list(self._resumed))
                sizes = sorted({n for n in (self._confirmed.get(node, 0), *pinned)
                                if 0 < n < self._checkpoint_size})
                for n in sizes:
                    if n not in consistency:
                        consistency[n] = self.ledger.consistency_proof(
                            n, self._checkpoint_size).hashes
                Announcement(st.run, server_round, digest, self._checkpoint, entry, index,
                             proof or (), vkey, self.policy.weight_key,
                             tuple((n, consistency[n]) for n in sizes)).write(new[config_name])
                if self._checkpoint_size not in pinned:
                    pinned.append(self._checkpoint_size)
                    del pinned[:-UNCONFIRMED_KEPT]
            msg.content = new
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Record the run (first round), then announce the global model in each message."""
        st = self._ensure_run(grid, arrays, config)
        arrays = self._current(st, arrays)
        return self._announce(
            st, server_round, self.strategy.configure_train(server_round, arrays, config, grid)
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Announce the global model to evaluating clients too: they check it before use."""
        st = self._ensure_run(grid, arrays, config)
        arrays = self._current(st, arrays)
        msgs = list(self.strategy.configure_evaluate(server_round, arrays, config, grid))
        sent, sent_msgs = st.sent, st.sent_msgs
        try:
            return self._announce(st, server_round, msgs)
        finally:
            st.sent, st.sent_msgs = sent, sent_msgs

    # -- verifying -----------------------------------------------------------------------

    def _node_of(self, st: _Run, reply: Message) -> int:
        src = reply.metadata.src_node_id
        if src in st.sent:
            return src
        rid = reply.metadata.reply_to_message_id
        for m in st.sent_msgs:
            if m.metadata.message_id == rid:
                return m.metadata.dst_node_id
        return src

    def _check(self, st: _Run, server_round: int, reply: Message,
               prep: _Prepared | None) -> E.Update:
        """The lineage checks, in ARCHITECTURE.md's order; raises Refused."""
        node_id = self._node_of(st, reply)
        node = str(node_id)
        sent = st.sent.get(node_id)
        parent = sent.digest if sent else st.model
        pol = self.policy
        if reply.has_error():
            err = reply.error
            raise Refused("client_error", f"error code {err.code}: {err.reason}")
        content = reply.content
        try:
            signed: SignedStatement | None = read_statement(content)
        except StatementError as e:
            raise Refused("bad_signature", f"statement unreadable: {e}") from None
        if signed is None:
            if pol.require_signatures or node in st.members:  # no downgrade once registered
                raise Refused("unsigned", "the reply carries no signed statement: add "
                                          "flchain_plugin.flower.signing_mod to the ClientApp")
        else:
            key = signed.key
            if pol.allowed_keys is not None and key not in pol.allowed_keys:
                raise Refused("unknown_client", f"key {key} is not in the policy's allowed_keys")
            registered = st.members.get(node)
            if registered is not None and registered != key:
                raise Refused("bad_signature",
                              f"signed by key {key}, node {node} registered key {registered}")
            try:
                signed.verify(pol.verifier(key))
            except StatementError as e:
                raise Refused("bad_signature", str(e)) from None
            s = signed.statement
            if s.node != node:
                raise Refused("bad_signature",
                              f"statement is signed for node {s.node}, the reply came from {node}")
            if s.run != st.run:
                raise Refused("wrong_run", f"statement is for run {s.run}, this is run {st.run}")
            if s.round != server_round:
                raise Refused("wrong_round",
                              f"statement is for round {s.round}, this is round {server_round}")
            if s.parent != parent:
                raise Refused("stale_parent",
                              f"trained from {s.parent}, the global model sent was {parent}",
                              s.update)
        assert prep is not None  # error replies were refused above
        if prep.count != 1:
            raise Refused("malformed", f"the reply has {prep.count} ArrayRecords, want 1")
        if pol.max_update_bytes is not None and prep.nbytes > pol.max_update_bytes:
            raise Refused("out_of_bounds", f"update is {prep.nbytes} bytes, policy "
                                           f"max_update_bytes is {pol.max_update_bytes}")
        if prep.error is not None or prep.views is None or prep.digest is None:
            raise Refused("malformed", str(prep.error))
        views, update = prep.views, prep.digest
        metrics = reply_metrics(content)
        if signed is not None:
            s = signed.statement
            if update != s.update:
                raise Refused("digest_mismatch",
                              f"arrays received digest to {update}, the statement signed "
                              f"{s.update}", update)
            if json_safe(metrics) != s.metrics:
                raise Refused("digest_mismatch",
                              "metrics received differ from the signed statement's", update)
            if s.nonce in st.seen_nonces:
                raise Refused("replay", f"nonce {s.nonce} was already used in this run", update)
        # An unchanged model (update == parent) may honestly come from several clients.
        if update in st.seen_updates and update != parent:
            raise Refused("replay", f"update {update} was already sent in this run", update)
        gviews = sent.views if sent else st.global_views()
        if views.keys() != gviews.keys():
            missing = sorted(gviews.keys() - views.keys())[:3]
            extra = sorted(views.keys() - gviews.keys())[:3]
            raise Refused("malformed", f"tensor names differ from the global model "
                                       f"(missing {missing}, unexpected {extra})", update)
        for name, v in views.items():
            if v.signature != gviews[name].signature:
                want = gviews[name].signature
                raise Refused("malformed", f"tensor {name!r} is {v.signature[0]}{list(v.shape)}, "
                                           f"the global model's is {want[0]}{list(want[1])}",
                              update)
        if prep.non_finite is not None:
            raise Refused("non_finite", f"tensor {prep.non_finite!r} has NaN or infinite "
                                        "values", update)
        weight = metrics.get(pol.weight_key) if isinstance(metrics, dict) else None
        if (isinstance(weight, bool) or not isinstance(weight, (int, float))
                or not math.isfinite(weight) or weight <= 0):
            raise Refused("malformed", f"metric {pol.weight_key!r} is {weight!r}, want a "
                                       "positive number", update)
        if pol.max_examples is not None and weight > pol.max_examples:
            raise Refused("out_of_bounds", f"{pol.weight_key} {weight} exceeds policy "
                                           f"max_examples {pol.max_examples}", update)
        if pol.max_update_norm is not None:
            sq = 0.0
            for name, v in views.items():
                if v.dtype.kind in "fc":
                    d = (v.numpy() - gviews[name].numpy()).reshape(-1)
                    sq += float(np.vdot(d, d).real)
            norm = math.sqrt(sq)
            if not norm <= pol.max_update_norm:
                raise Refused("out_of_bounds", f"update norm {norm:.6g} exceeds policy "
                                               f"max_update_norm {pol.max_update_norm}", update)
        if signed is not None and signed.statement.num_examples != int(weight):
            raise Refused("malformed", f"the statement signs num_examples "
                                       f"{signed.statement.num_examples}, the reply weighs "
                                       f"{pol.weight_key}={weight}", update)
        if pol.require_dataset and (signed is None or signed.statement.dataset is None):
            raise Refused("malformed", "the statement has no dataset commitment, which the "
                                       "policy requires", update)
        # Remembered only once every check passed: a refused reply burns nothing.
        st.seen_updates.add(update)
        if signed is not None:
            st.seen_nonces.add(signed.statement.nonce)
        if signed is None:
            n = int(weight) if float(weight).is_integer() else 0
            return E.Update(run=st.run, round=server_round, node=node, update=update,
                            parent=parent, num_examples=n, metrics=json_safe(metrics),
                            dataset=None, nonce="", key=None, signature=None)
        s = signed.statement
        return E.Update(run=s.run, round=s.round, node=s.node, update=s.update, parent=s.parent,
                        num_examples=s.num_examples, metrics=s.metrics, dataset=s.dataset,
                        nonce=s.nonce, key=signed.key, signature=signed.signature_b64)

    def _metric_schema_outliers(self, accepted: list[tuple[Message, E.Update]]) -> set[int]:
        """Replies whose MetricRecord names/keys differ from the most common ones: Flower's
        strategies raise (and stop the ServerApp) on inconsistent replies."""
        groups: dict[tuple, list[int]] = {}
        for i, (msg, _) in enumerate(accepted):
            c = msg.content
            key = tuple(sorted((n, tuple(sorted(r.keys()))) for n, r in c.metric_records.items()))
            groups.setdefault(key, []).append(i)
        if len(groups) <= 1:
            return set()
        best = max(groups.values(), key=lambda ix: (len(ix), -ix[0]))
        return {i for ix in groups.values() if ix is not best for i in ix}

    # -- aggregating ---------------------------------------------------------------------

    def _confirm(self, replies: list[Message]) -> None:
        """A reply without error means its node accepted (and pinned) what it was sent."""
        for r in replies:
            node = r.metadata.src_node_id
            if not r.has_error() and self._unconfirmed.get(node):
                self._confirmed[node] = self._unconfirmed[node][-1]
                self._unconfirmed[node] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Verify each reply, aggregate the accepted ones, commit the round as one batch."""
        st = self._run
        if st is None:
            raise RuntimeError("aggregate_train before configure_train: use strategy.start()")
        replies = list(replies)
        self._confirm(replies)
        accepted: list[tuple[Message, E.Update]] = []
        rejected: list[E.Rejected] = []
        parsed = [_parse(r, self.policy.max_update_bytes) for r in replies]
        workers = min(len(replies), os.cpu_count() or 1, 8)
        if workers > 1 and sum(p.nbytes for p in parsed if p) >= PARALLEL_MIN_BYTES:
            with ThreadPoolExecutor(workers) as pool:
                prepared = list(pool.map(_hash, parsed))
        else:
            prepared = [_hash(p) for p in parsed]
        for reply, prep in zip(replies, prepared, strict=True):
            try:
                accepted.append((reply, self._check(st, server_round, reply, prep)))
            except Refused as r:
                node = str(self._node_of(st, reply))
                sent = st.sent.get(int(node))
                rejected.append(E.Rejected(run=st.run, round=server_round, node=node,
                                           reason=r.reason, detail=r.detail[:2000],
                                           update=r.update,
                                           parent=sent.digest if sent else st.model))
        outliers = self._metric_schema_outliers(accepted)
        if outliers:
            for i in sorted(outliers):
                u = accepted[i][1]
                rejected.append(E.Rejected(run=st.run, round=server_round, node=u.node,
                                           reason="malformed", update=u.update, parent=u.parent,
                                           detail="MetricRecord keys differ from the other "
                                                  "replies'"))
            accepted = [a for i, a in enumerate(accepted) if i not in outliers]

        batch: list[E.Entry] = []
        for _, u in accepted:
            if u.key is not None and u.node not in st.members:
                via = "tofu" if self.policy.trust_on_first_use else "allowlist"
                batch.append(E.Member(run=st.run, node=u.node, key=u.key, via=via))
                st.members[u.node] = u.key
            if u.dataset is not None and u.dataset not in st.datasets:
                batch.append(E.Dataset(dataset=u.dataset, owner=u.node,
                                       scheme="flchain-dataset/v1", examples=u.num_examples))
                st.datasets.add(u.dataset)
        built_for = self.ledger.size
        base = built_for + len(self._pending) + len(batch)
        inputs = list(range(base, base + len(accepted)))
        batch += [u for _, u in accepted]
        batch += rejected

        for msg, _ in accepted:
            if STATEMENT_RECORD in msg.content:
                del msg.content[STATEMENT_RECORD]
        agg_arrays: ArrayRecord | None = None
        agg_metrics: MetricRecord | None = None
        note: dict[str, Any] = {}
        error: BaseException | None = None
        if accepted:
            try:
                agg_arrays, agg_metrics = self.strategy.aggregate_train(
                    server_round, [m for m, _ in accepted]
                )
            except Exception as e:  # recorded, then re-raised
                error = e
                note = {"kept": f"{describe(self.strategy)} raised {type(e).__name__}: {e}"[:500]}
        else:
            note = {"kept": "no reply passed verification"}
        if agg_arrays is None and not note:
            note = {"kept": f"{describe(self.strategy)} returned no model"}
        parent = st.model
        stored: Future[None] | None = None
        if agg_arrays is not None:
            views = record_views(agg_arrays)
            new = views_digest(views)
            if self.blobs is not None:
                if self._io is None:
                    self._io = ThreadPoolExecutor(1, thread_name_prefix="flchain-blobs")
                arrays = {k: v.numpy() for k, v in views.items()}
                stored = self._io.submit(self.blobs.put, arrays, new)
            metrics = json_safe(dict(agg_metrics)) if agg_metrics is not None else {}
            model = E.Model(run=st.run, round=server_round, model=new, parent=parent,
                            inputs=inputs, aggregator=describe(self.strategy), metrics=metrics)
        else:
            views, new = None, parent
            model = E.Model(run=st.run, round=server_round, model=parent, parent=parent,
                            inputs=[], aggregator=describe(self.strategy), metrics=note)
        batch.append(model)
        first = self._commit(batch, built_for)
        if stored is not None:
            try:
                stored.result()
            except (OSError, ValueError) as e:  # the round stays recorded; say what is lost
                log.error("flchain: could not store the weights of model %s in %s (%s): "
                          "rolling back to it will not be possible", new, self.blobs, e)
        # Read back what was logged: a concurrent writer may have shifted the model's inputs.
        st.model, st.entry_index = new, first + len(batch) - 1
        st.entry = self.ledger.get(st.entry_index).data
        if agg_arrays is not None:
            st.record, st.views = agg_arrays, views
        reasons: dict[str, int] = {}
        for r in rejected:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        log.info("flchain: round %d: %d accepted, %d refused %s -> model %s", server_round,
                 len(accepted), len(rejected), reasons, new)
        if error is not None:
            raise error
        return agg_arrays, agg_metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegate, then record the metrics of the global model they evaluated.

        With a wrapped `evaluate_fn` (called right after), both evaluations of the round
        are committed as one batch; otherwise now.
        """
        replies = list(replies)
        self._confirm(replies)
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        st = self._run
        if metrics is not None and st is not None:
            entry = E.Evaluation(run=st.run, round=server_round, model=st.model,
                                 metrics=json_safe(dict(metrics)), source="federated")
            if self._central:
                self._pending.append(entry)
            else:
                self._commit([entry])
        return metrics

    def evaluate_fn(
        self, fn: Callable[[int, ArrayRecord], MetricRecord | None]
    ) -> Callable[[int, ArrayRecord], MetricRecord | None]:
        """Wrap a centralised `evaluate_fn` for `start` so its results are recorded too."""
        self._central = True

        def recorded(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            res = fn(server_round, arrays)
            st = self._run
            metrics = json_safe(dict(res)) if res is not None else None
            if st is None:
                if metrics is not None:
                    self._pending_evals.append((server_round, "central", metrics))
            else:
                batch = []
                if metrics is not None:
                    model = (st.model if arrays is st.record
                             else views_digest(record_views(arrays)))
                    batch.append(E.Evaluation(run=st.run, round=server_round, model=model,
                                              metrics=metrics, source="central"))
                if self._pending or batch:
                    self._commit(batch)
            return res

        return recorded

    def summary(self) -> None:
        """The wrapped strategy's summary, then the ledger and policy in force."""
        self.strategy.summary()
        log.info("flchain: ledger %s (%d entries), policy %s, checkpoint key %s",
                 self.ledger.origin, self.ledger.size, self.policy.to_json(), self.verifier_key)

    # -- introspection -------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return self._run.run if self._run else None

    @property
    def global_model(self) -> str | None:
        """Digest of the current global model (None before the run starts)."""
        return self._run.model if self._run else None

    @property
    def latest_checkpoint(self) -> str | None:
        return self._checkpoint
