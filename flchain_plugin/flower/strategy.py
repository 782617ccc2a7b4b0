"""LedgerStrategy: wrap any Flower strategy so every update is verified and logged.

The wrapper sits outermost, in the style of Flower's DP wrappers: it holds `self.strategy`,
does not override `start` (so `start` calls the wrapper's methods), and delegates. Per round:

- `configure_train`/`configure_evaluate` delegate, then announce the global model in each
  message (announce.py) so clients can check it against the signed log.
- `aggregate_train` verifies every reply (replies.py turns them into facts, hashed before
  anything else touches them; flchain_plugin.verification holds the rules), delegates the
  accepted ones to the wrapped strategy, records the round's entries and commits them as
  one batch with a signed checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from .. import entries as E
from ..blobs import BlobStore
from ..commit import commit, log_pq_signer, log_signer, open_ledger
from ..digest import DigestError, json_digest
from ..ledger import Ledger
from ..lineage import latest_model
from ..notes import Signer
from ..quorum import Quorum, WitnessEndpoint, Witnesses
from ..tiles_export import TilesExportError, export_tiles
from ..vault import UpdateVault
from ..verification import Policy, Round, Verdict, verify_round
from .aggregators import aggregation_record
from .announce import UNCONFIRMED_KEPT, Announcer
from .arrays import numpy_to_record, record_to_numpy, record_views, views_digest
from .kept import keep_accepted
from .protocol import STATEMENT_RECORD, json_safe
from .replies import SentModel, reply_facts
from .run import RunState, config_json, describe

log = logging.getLogger("flchain.flower")

__all__ = ["LedgerStrategy", "describe"]


def _blob_store(ledger: Ledger, blobs: Any) -> BlobStore | None:
    if blobs is None or blobs is True:
        return BlobStore.beside(ledger)
    if blobs is False:
        return None
    if isinstance(blobs, BlobStore):
        return blobs
    if isinstance(blobs, (str, os.PathLike)):
        return BlobStore(blobs)
    raise ValueError(f"blobs must be a BlobStore, a directory or False, got {blobs!r}")


def _resume_from(ledger: Ledger, blobs: BlobStore | None, digest: str | None) -> str | None:
    """`digest` if a run can restart from it: recorded, and its weights stored."""
    if digest is None:
        return None
    try:
        E.check_digest(digest, "resume_from")
    except E.EntryError as e:
        raise ValueError(str(e)) from None
    if blobs is None or not blobs.has(digest):
        raise ValueError(f"resume_from: no stored weights for {digest} in {blobs}; "
                         "pass the blobs directory the run stored them in")
    if not ledger.find(digest):
        raise ValueError(f"resume_from: {digest} is not recorded in the ledger")
    return digest


def _vault(blobs: BlobStore | None, keep_updates: bool) -> UpdateVault | None:
    if not isinstance(keep_updates, bool):
        raise ValueError(f"keep_updates must be True or False, got {keep_updates!r}")
    if not keep_updates:
        return None
    if blobs is None:
        raise ValueError("keep_updates=True needs a blob store: pass blobs=<directory> "
                         "(blobs=False keeps nothing)")
    return UpdateVault(blobs.root)


WitnessesArg = Witnesses | Sequence[WitnessEndpoint | tuple[str, Any] | str] | None


def _quorum(witnesses: WitnessesArg, quorum: int | None) -> Quorum | None:
    """The witnesses to gather each checkpoint's cosignatures from; `quorum` defaults to
    a majority of them."""
    if witnesses is None:
        if quorum is not None:
            raise ValueError("quorum: given without witnesses; pass witnesses=[(url, vkey), ...]")
        return None
    if isinstance(witnesses, Witnesses):
        if quorum is not None and quorum != witnesses.quorum:
            raise ValueError(f"quorum: {quorum!r} differs from witnesses.quorum "
                             f"{witnesses.quorum}; give it once")
        return Quorum(witnesses)
    if isinstance(witnesses, (str, bytes)) or not isinstance(witnesses, Sequence):
        raise ValueError(f"witnesses must be a list of (url, verifier key) or a quorum."
                         f"Witnesses, got {witnesses!r}")
    k = len(witnesses) // 2 + 1 if quorum is None else quorum
    try:
        return Quorum(Witnesses(tuple(witnesses), k))
    except ValueError as e:
        raise ValueError(f"witnesses: {e}") from None


def _tiles_dir(tiles: str | os.PathLike[str] | None) -> Path | None:
    if tiles is None:
        return None
    if not isinstance(tiles, (str, os.PathLike)) or not str(tiles):
        raise ValueError(f"tiles must be a directory path, got {tiles!r}")
    return Path(tiles)


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
    pq_signer : an ML-DSA-44 key (Signer or file, named after the origin) that adds a
        second, post-quantum signature to every checkpoint. None: Ed25519 only.
    blobs : where global models are kept for rollback: a BlobStore or directory. None:
        `<ledger file>.blobs/`. False: keep no weights.
    resume_from : a recorded model digest to restart from (its weights must be in `blobs`);
        the run records a `rollback` entry and sends that model whatever `start` was given.
    witnesses : C2SP tlog-witnesses that must cosign every checkpoint before it is
        announced: `(url, verifier key)` pairs, `"url vkey"` strings, or a
        `flchain_plugin.quorum.Witnesses` (which also sets timeouts, retries and the deadline).
    quorum : how many distinct witnesses must cosign (default: a majority). Fewer by the
        deadline stops the run with QuorumError: no model is announced on an unwitnessed
        checkpoint (the round's entries stay committed).
    tiles : a directory kept a current C2SP tlog-tiles export of the ledger after every
        commit (`flchain_plugin.tiles_export.export_tiles`), to publish on any web server.
    keep_updates : keep every accepted update, encrypted under its own key, in the blob
        store (`flchain_plugin.vault`), and record the aggregator's parameters in the run
        entry, so `flchain audit replay` can recompute every round and `flchain erase`
        can crypto-shred one update. Needs a blob store.
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
        pq_signer: Signer | str | os.PathLike[str] | None = None,
        witnesses: WitnessesArg = None,
        quorum: int | None = None,
        tiles: str | os.PathLike[str] | None = None,
        keep_updates: bool = False,
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
        self.pq_signer = log_pq_signer(self.ledger, pq_signer)
        self.blobs = _blob_store(self.ledger, blobs)
        self.resume_from = _resume_from(self.ledger, self.blobs, resume_from)
        self.quorum = _quorum(witnesses, quorum)
        self.tiles = _tiles_dir(tiles)
        self.vault = _vault(self.blobs, keep_updates)
        self._run: RunState | None = None
        self._io: ThreadPoolExecutor | None = None  # writes blobs while the batch commits
        self._pending_evals: list[tuple[int, str, dict[str, Any]]] = []
        self._pending: list[E.Entry] = []  # federated evaluations awaiting the central one
        self._central = False  # an evaluate_fn wrapper exists: it commits evaluations
        self._storing: tuple[str, Future[str]] | None = None  # weights being written
        self._last_index = -1  # index of the last entry this strategy committed
        self._announcer = Announcer(self.ledger, self.verifier_key, policy.weight_key)

    # -- keys ----------------------------------------------------------------------------

    @property
    def verifier_key(self) -> str:
        """The server's verifier key, for clients' `signing_mod(server_key=...)`."""
        return self.signer.verifier_key

    # -- committing ----------------------------------------------------------------------

    def _commit(self, batch: list[E.Entry], built_for: int | None = None) -> E.Entry:
        """Append one batch (after any pending evaluations) and sign a checkpoint of it;
        returns the batch's last entry as logged (rebased if another writer appended).
        `built_for`: the ledger size the batch's leaf indices (a model's `inputs`) were
        computed against."""
        batch = self._pending + batch
        self._pending = []
        done = commit(self.ledger, batch, built_for=built_for, signer=self.signer,
                      pq_signer=self.pq_signer)
        self._last_index = done.head.size - 1
        note = done.checkpoint
        if self.quorum is not None:  # QuorumError stops the run before anything announces
            note = self.quorum.gather(self.ledger, note, self.signer.verifier)
        self._announcer.signed(note, done.head.size)
        self._publish()
        return done.entries[-1]

    def _publish(self) -> None:
        """Bring the tiles export up to the latest checkpoint; a failure is logged (the
        ledger holds everything; the next commit's export catches up)."""
        if self.tiles is None:
            return
        try:
            export_tiles(self.ledger, self.tiles)
        except (TilesExportError, OSError) as e:
            log.error("flchain: could not export tiles to %s: %s", self.tiles, e)

    def _store(self, arrays: dict[str, Any], digest: str) -> None:
        """Keep a global model's weights for rollback, written on a thread while the round
        goes on (the ledger batch commits, clients evaluate); `_stored` waits for it."""
        if self.blobs is None:
            return
        self._stored()
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="flchain-blobs")
        self._storing = (digest, self._io.submit(self.blobs.put, arrays, digest))

    def _stored(self) -> None:
        """Wait for the weights being written; a failure is logged (the round stays
        recorded), naming what can no longer be rolled back to."""
        if self._storing is None:
            return
        digest, future = self._storing
        self._storing = None
        try:
            future.result()
        except (OSError, ValueError) as e:
            log.error("flchain: could not store the weights of model %s in %s (%s): "
                      "rolling back to it will not be possible", digest, self.blobs, e)

    # -- the run -------------------------------------------------------------------------

    def _ensure_run(self, grid: Grid, arrays: ArrayRecord, config: ConfigRecord) -> RunState:
        run_id = str(grid.run.run_id)
        if self._run is not None and self._run.run == run_id:
            return self._run
        if self.resume_from is not None:
            record = numpy_to_record(self.blobs.get(self.resume_from))  # type: ignore[union-attr]
            digest = self.resume_from
        else:
            record, digest = arrays, views_digest(record_views(arrays))
        run_entry = E.Run(run=run_id, strategy=describe(self.strategy),
                          config=json_digest(config_json(self.strategy, config)), model=digest,
                          policy=self.policy.to_json(),
                          aggregation=aggregation_record(self.strategy) if self.vault else None)
        batch: list[E.Entry] = [run_entry]
        if self.resume_from is not None:
            batch.append(E.Rollback(model=digest, previous=latest_model(self.ledger),
                                    reason="resume_from", run=run_id))
        for rnd, source, metrics in self._pending_evals:
            batch.append(E.Evaluation(run=run_id, round=rnd, model=digest, metrics=metrics,
                                      source=source))
        self._pending_evals.clear()
        if self.blobs is not None:
            self.blobs.put(record_to_numpy(record), digest=digest)
        self._commit(batch)
        first = self._last_index - len(batch) + 1
        st = RunState(run_id, digest, record, first, run_entry.encode())
        st.load_history(self.ledger)
        if st.history.members or st.history.updates:  # this run's server restarted: its
            # clients pinned checkpoints this process never announced; prove from the latest
            self._announcer.resumed = self.ledger.checkpoint_sizes(UNCONFIRMED_KEPT + 1)
        self._run = st
        log.info("flchain: run %s recorded in %s (entry %d), model %s", run_id,
                 self.ledger.origin, first, digest)
        return st

    def _current(self, st: RunState, arrays: ArrayRecord) -> ArrayRecord:
        """The recorded global model. `start` may hold another one (its initial arrays when
        resuming): the recorded one is what is sent."""
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

    # -- configuring ---------------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Record the run (first round), then announce the global model in each message."""
        st = self._ensure_run(grid, arrays, config)
        arrays = self._current(st, arrays)
        return self._announcer.announce(
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
            return self._announcer.announce(st, server_round, msgs)
        finally:
            st.sent, st.sent_msgs = sent, sent_msgs

    # -- aggregating: verify, delegate, record, commit -----------------------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Verify each reply, aggregate the accepted ones, commit the round as one batch.

        When nothing could be aggregated, the kept global model is returned, so that
        `start()`'s Result holds it even if every round was refused."""
        st = self._run
        if st is None:
            raise RuntimeError("aggregate_train before configure_train: use strategy.start()")
        replies = list(replies)
        self._announcer.confirm(replies)
        verdicts = self._verify(st, server_round, replies)
        if self.vault is not None:  # before the wrapped strategy can pop or clip arrays
            keep_accepted(self.vault, replies, verdicts)
        accepted = [m for m, v in zip(replies, verdicts, strict=True) if v.accepted]
        arrays, metrics, kept, error = self._delegate(server_round, accepted)
        batch, built_for = self._record(st, server_round, verdicts, arrays, metrics, kept)
        self._commit_round(st, batch, built_for, arrays)
        if error is not None:
            raise error
        return (arrays if arrays is not None else st.record), metrics

    def _verify(self, st: RunState, server_round: int, replies: list[Message]) -> list[Verdict]:
        def sent_to(reply: Message) -> tuple[int, SentModel]:
            node = st.node_of(reply)
            return node, st.sent_to(node)

        facts = reply_facts(replies, sent_to, self.policy)
        return verify_round(facts, Round(st.run, server_round, self.policy, st.history))

    def _delegate(self, server_round: int, accepted: list[Message]) -> tuple[
        ArrayRecord | None, MetricRecord | None, str | None, Exception | None
    ]:
        """The wrapped strategy's aggregate of the accepted replies (statements removed);
        `kept` says why there is no new model; an inner error is returned to be recorded,
        then raised."""
        for msg in accepted:
            if STATEMENT_RECORD in msg.content:
                del msg.content[STATEMENT_RECORD]
        if not accepted:
            return None, None, "no reply passed verification", None
        try:
            arrays, metrics = self.strategy.aggregate_train(server_round, accepted)
        except Exception as e:  # recorded, then re-raised
            why = f"{describe(self.strategy)} raised {type(e).__name__}: {e}"[:500]
            return None, None, why, e
        if arrays is None:
            return None, metrics, f"{describe(self.strategy)} returned no model", None
        return arrays, metrics, None, None

    def _record(self, st: RunState, server_round: int, verdicts: list[Verdict],
                arrays: ArrayRecord | None, metrics: MetricRecord | None,
                kept: str | None) -> tuple[list[E.Entry], int]:
        """The round's batch: new members and datasets, the accepted `update` entries, the
        `rejected` ones, then the `model` entry whose `inputs` are the updates' leaf
        indices (computed against the ledger size returned)."""
        weight = self.policy.weight_key
        updates = [st.update_entry(v.facts, server_round, v.facts.metrics.get(weight))
                   for v in verdicts if v.accepted]
        via = "tofu" if self.policy.trust_on_first_use else "allowlist"
        batch = st.newcomers(updates, via)
        built_for = self.ledger.size
        base = built_for + len(self._pending) + len(batch)
        inputs = list(range(base, base + len(updates)))
        batch += updates
        batch += [st.rejected_entry(v, server_round) for v in verdicts if not v.accepted]
        aggregator = describe(self.strategy)
        if arrays is None:
            batch.append(E.Model(run=st.run, round=server_round, model=st.model,
                                 parent=st.model, inputs=[], aggregator=aggregator,
                                 metrics={"kept": kept}))
        else:
            batch.append(E.Model(run=st.run, round=server_round,
                                 model=views_digest(record_views(arrays)), parent=st.model,
                                 inputs=inputs, aggregator=aggregator,
                                 metrics=json_safe(dict(metrics)) if metrics is not None else {}))
        return batch, built_for

    def _commit_round(self, st: RunState, batch: list[E.Entry], built_for: int,
                      arrays: ArrayRecord | None) -> None:
        """Commit the batch (the new model's weights stored meanwhile), then make the
        committed model entry the global model the next round announces."""
        model = batch[-1]
        assert isinstance(model, E.Model)
        views = record_views(arrays) if arrays is not None else None
        if views is not None:
            self._store({k: v.numpy() for k, v in views.items()}, model.model)
        logged = self._commit(batch, built_for)
        # What was logged: a concurrent writer may have shifted the model's inputs.
        st.model, st.entry_index, st.entry = model.model, self._last_index, logged.encode()
        if arrays is not None:
            st.record, st.views = arrays, views
        reasons: dict[str, int] = {}
        for e in batch:
            if isinstance(e, E.Rejected):
                reasons[e.reason] = reasons.get(e.reason, 0) + 1
        log.info("flchain: round %d: %d accepted, %d refused %s -> model %s", model.round,
                 len(model.inputs), sum(reasons.values()), reasons, model.model)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegate, then record the metrics of the global model they evaluated.

        With a wrapped `evaluate_fn` (called right after), both evaluations of the round
        are committed as one batch; otherwise now.
        """
        replies = list(replies)
        self._announcer.confirm(replies)
        self._stored()  # the weights were written while clients evaluated
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
        return self._announcer.checkpoint
