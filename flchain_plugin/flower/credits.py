"""LedgerStrategy's side of credit contracts: the round's facts and tensors in, the
round's `credit` entries out (the rules themselves are `flchain_plugin.contracts`).

Quality rules evaluate models rebuilt from the round's updates, so their tensors are
taken (read-only views over the bytes received) before the wrapped strategy aggregates
(inner strategies pop or swap arrays) and stored in the blob store by digest, where
`flchain credits --replay` finds them with the previous global model (already stored for
rollback).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from typing import Any

from flwr.app import Message

from .. import entries as E
from ..blobs import BlobStore
from ..contracts import Contracts, RefusalHistory, RoundArrays, round_facts
from ..ledger import Ledger
from ..verification import Verdict
from .arrays import record_to_numpy
from .run import RunState

log = logging.getLogger("flchain.flower")


class RoundCredits:
    """Computes each round's credits for one LedgerStrategy (see module docstring)."""

    def __init__(self, contracts: Contracts, blobs: BlobStore | None, ledger: Ledger):
        if not isinstance(contracts, Contracts):
            raise ValueError(f"contracts must be a flchain_plugin.contracts.Contracts, "
                             f"got {contracts!r}")
        if contracts.needs_arrays and blobs is None:
            raise ValueError("contracts: a quality rule needs blobs (updates are kept for "
                             "`flchain credits --replay`); do not pass blobs=False")
        self.contracts, self.blobs, self.ledger = contracts, blobs, ledger
        self._history = RefusalHistory(contracts.window)
        self._run: str | None = None
        self._arrays: RoundArrays | None = None  # kept by `keep` for the round's `entries`

    def keep(self, st: RunState, replies: list[Message], verdicts: list[Verdict]) -> None:
        """Take (and store) the accepted updates' tensors, for quality rules only."""
        if not self.contracts.needs_arrays:
            return
        assert self.blobs is not None
        updates: dict[str, Any] = {}
        for msg, v in zip(replies, verdicts, strict=True):
            if v.accepted and v.facts.update is not None:
                arrays = record_to_numpy(next(iter(msg.content.array_records.values())))
                # verification just digested these very bytes: store them under that name
                # rather than hash every update again (replay re-digests what it reads)
                self.blobs.put(arrays, digest=v.facts.update)
                updates[v.facts.update] = arrays
        self._arrays = RoundArrays({k: t.numpy() for k, t in st.global_views().items()},
                                   updates)

    def _load_history(self, run: str, before: int) -> None:
        """A restarted server: refusals this run recorded before, for penalties."""
        self._run, self._history = run, RefusalHistory(self.contracts.window)
        if not self.contracts.window:
            return
        rounds: dict[int, list[E.Entry]] = defaultdict(list)
        for le in self.ledger.iter_entries(type="rejected"):
            e = le.entry
            if isinstance(e, E.Rejected) and e.run == run and e.round < before:
                rounds[e.round].append(e)
        for rnd in sorted(rounds):
            self._history.add(round_facts(run, rnd, rounds[rnd]))

    def entries(self, st: RunState, server_round: int, batch: list[E.Entry]) -> list[E.Credit]:
        """The round's credit entries, from the batch about to be committed. A rule that
        fails (a user's evaluate raising) is logged and the round pays nothing: replay
        then names the awards due."""
        if self._run != st.run:
            self._load_history(st.run, server_round)
        facts = round_facts(st.run, server_round, batch, self._history.before(server_round))
        arrays, self._arrays = self._arrays, None
        if facts.accepted and arrays is not None:
            facts = replace(facts, arrays=arrays)
        self._history.add(facts)
        try:
            return self.contracts.credits(facts)
        except Exception as e:  # the round is committed either way
            log.error("flchain: round %d: credits not computed (%s: %s)", server_round,
                      type(e).__name__, e)
            return []
