"""Replay's edges without a simulation: the aggregator registry, keep_updates' arguments,
and rounds that cannot be recomputed, each with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.serverapp.strategy import Bulyan, FedAvg, FedAvgM, FedTrimmedAvg

from flchain_plugin import entries as E
from flchain_plugin.blobs import BlobStore
from flchain_plugin.digest import model_digest
from flchain_plugin.flower import LedgerStrategy
from flchain_plugin.flower.aggregators import aggregation_record, rebuild
from flchain_plugin.ledger import Ledger
from flchain_plugin.replay import KeptUpdate, NotReplayable, replay


def test_rebuild_restores_the_recorded_parameters():
    agg = rebuild(aggregation_record(FedAvgM(server_learning_rate=0.5, server_momentum=0.8)))
    s = agg.strategy
    assert isinstance(s, FedAvgM) and (s.server_learning_rate, s.server_momentum) == (0.5, 0.8)
    assert s.server_opt is True
    assert rebuild(aggregation_record(FedTrimmedAvg(beta=0.3))).strategy.beta == 0.3


def test_rebuild_refuses_what_it_does_not_know():
    with pytest.raises(NotReplayable, match=r"Bulyan.*not one replay can rebuild"):
        rebuild(aggregation_record(Bulyan()))
    with pytest.raises(NotReplayable, match="not one replay can rebuild"):
        rebuild({"strategy": [{"class": "os.system", "params": {}}]})
    with pytest.raises(NotReplayable, match="names no strategy"):
        rebuild({"strategy": []})


def test_fedavg_rebuilt_matches_a_weighted_mean():
    rng = np.random.default_rng(0)
    parent = {"w": rng.standard_normal(5).astype(np.float32)}
    ups = [KeptUpdate(i, str(i), "", {"w": parent["w"] + np.float32(i)}, {"num-examples": n}, n)
           for i, n in enumerate([1, 3])]
    got = rebuild(aggregation_record(FedAvg())).aggregate(1, parent, ups)
    assert got is not None and np.allclose(got["w"], parent["w"] + 0.75)


def test_keep_updates_is_validated(tmp_path: Path):
    with pytest.raises(ValueError, match="keep_updates must be True or False"):
        LedgerStrategy(FedAvg(), ledger=tmp_path / "a.db", keep_updates="yes")  # type: ignore
    with pytest.raises(ValueError, match="keep_updates=True needs a blob store"):
        LedgerStrategy(FedAvg(), ledger=tmp_path / "b.db", blobs=False, keep_updates=True)
    s = LedgerStrategy(FedAvg(), ledger=tmp_path / "c.db", keep_updates=True)
    assert s.vault is not None and s.vault.root == tmp_path / "c.db.blobs"


def _log(led: Ledger, aggregation: dict | None) -> str:
    parent = model_digest({"w": np.zeros(2, np.float32)})
    u = model_digest({"w": np.ones(2, np.float32)})
    led.append([E.Run(run="r", strategy="FedAvg", config=parent, model=parent,
                      aggregation=aggregation)])
    led.append([E.Update(run="r", round=1, node="5", update=u, parent=parent, num_examples=1,
                         metrics={}, dataset=None, nonce="", key=None, signature=None)])
    led.append([E.Model(run="r", round=1, model=u, parent=parent, inputs=[1],
                        aggregator="FedAvg")])
    return u


def test_rounds_that_cannot_be_recomputed_say_why(tmp_path: Path):
    with Ledger(tmp_path / "a.db") as led:
        _log(led, None)
        (r,) = replay(led, BlobStore(tmp_path / "blobs")).rounds
    assert r.status == "not_replayable" and "keep_updates=True" in r.detail
    with Ledger(tmp_path / "b.db") as led:
        _log(led, {"strategy": [{"class": "x.Custom", "params": {}}], "updates": "kept"})
        rep = replay(led, BlobStore(tmp_path / "blobs"))
    assert rep.rounds[0].status == "missing" and rep.first_problem is rep.rounds[0]
    assert not rep.ok and "not kept" in rep.rounds[0].detail
