"""LedgerStrategy composed with other strategies, mods, a tampering server and a resume.

One real Flower simulation (five SuperNodes) whose ServerApp runs five phases on one ledger:
Krum; client-side DP clipping (fixedclipping_mod inside signing_mod); server-side DP
clipping (which clips replies in place: the ledger must hold what clients sent); a server
that alters the global model after recording it (every client's mod must refuse it); and a
resume from a Krum round's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr.simulation")
pytest.importorskip("sklearn")

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Krum,
    Strategy,
)
from flwr.simulation import run_simulation
from test_flower_sim import RecordingGrid, backend, data, net, node_map

from flchain_plugin.flower import LedgerStrategy, signing_mod
from flchain_plugin.flower.arrays import arrayrecord_digest, record_to_numpy
from flchain_plugin.ledger import Ledger
from flchain_plugin.lineage import lineage

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("quiet_flower")]

NODES = 5
CLIP = 0.05


def sgd(state: dict[str, Any], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Minibatch SGD with fresh randomness, so no two updates are ever identical."""
    torch.set_num_threads(1)
    m = net()
    m.load_state_dict(state)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    rng = np.random.default_rng()
    for _ in range(5):
        idx = rng.choice(len(x), size=16, replace=False)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(torch.from_numpy(x[idx])),
                                          torch.from_numpy(y[idx])).backward()
        opt.step()
    return m.state_dict()


def clip_if_asked(msg: Message, ctx: Context, call_next: Any) -> Message:
    """Flower's fixedclipping_mod, in the rounds whose server asks for clipping."""
    if "clipping_norm" in msg.content["config"]:
        return fixedclipping_mod(msg, ctx, call_next)
    return call_next(msg, ctx)


def client_app(out: Path, keys: Path, server_key: str) -> ClientApp:
    app = ClientApp(mods=[signing_mod(keys, server_key=server_key)])

    @app.train(mods=[clip_if_asked])
    def fit(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        (out / "nodes").mkdir(exist_ok=True)
        (out / "nodes" / str(pid)).write_text(str(ctx.node_id))
        x, y = data(pid, NODES)
        sd = sgd(msg.content["arrays"].to_torch_state_dict(), x, y)
        return Message(RecordDict({"arrays": ArrayRecord(sd), "metrics": MetricRecord(
            {"num-examples": len(x)})}), reply_to=msg)

    return app


class TamperingServer(Strategy):
    """A compromised server: alters the global model after the ledger recorded it.

    Round 1 only changes the arrays; round 2 also announces the altered digest.
    """

    def __init__(self, strategy: Strategy):
        self.strategy = strategy

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        msgs = list(self.strategy.configure_train(server_round, arrays, config, grid))
        for m in msgs:
            c = m.content
            bad = ArrayRecord({k: Array(v.numpy() + np.float32(1e-3))
                               for k, v in c["arrays"].items()})
            cfg = c["config"]
            if server_round == 2:
                cfg["flchain-model"] = arrayrecord_digest(bad)
            m.content = RecordDict({"arrays": bad, "config": cfg})
        return msgs

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, *args: Any) -> Any:
        return self.strategy.configure_evaluate(*args)

    def aggregate_evaluate(self, *args: Any) -> Any:
        return self.strategy.aggregate_evaluate(*args)

    def summary(self) -> None:
        self.strategy.summary()


def norm(a: ArrayRecord, b: ArrayRecord) -> float:
    x, y = record_to_numpy(a), record_to_numpy(b)
    return float(np.sqrt(sum(float(((x[k] - y[k]) ** 2).sum()) for k in x)))


def server_app(ledger: Path, result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        rec = RecordingGrid(grid)
        led = Ledger(ledger)
        opts = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": NODES}
        start = ArrayRecord(net().state_dict())

        # A: Krum picks one accepted update as the model, unchanged
        krum = LedgerStrategy(Krum(num_malicious_nodes=1, **opts), ledger=led)
        krum.start(rec, start, num_rounds=2)
        result["krum_replies"] = [[arrayrecord_digest(next(iter(r.content.array_records
                                                                 .values())))
                                   for r in replies] for replies in rec.train_replies]
        result["krum_plain"] = [
            arrayrecord_digest(Krum(num_malicious_nodes=1).aggregate_train(i, replies)[0])
            for i, replies in enumerate(rec.train_replies, 1)]

        # B: client-side DP, clipping inside the signature
        rec.train_replies.clear()
        dp = LedgerStrategy(DifferentialPrivacyClientSideFixedClipping(
            FedAvg(**opts), noise_multiplier=0.1, clipping_norm=CLIP,
            num_sampled_clients=NODES), ledger=led)
        before = {}

        def keep(rnd: int, arrays: ArrayRecord) -> None:
            before[rnd] = arrays

        dp.start(rec, start, num_rounds=2, evaluate_fn=keep)
        result["dp_norms"] = [norm(next(iter(r.content.array_records.values())), before[i])
                              for i, replies in enumerate(rec.train_replies)
                              for r in replies]

        # C: server-side DP clips replies in place; the ledger keeps what was sent
        rec.train_replies.clear()
        sdp = LedgerStrategy(DifferentialPrivacyServerSideFixedClipping(
            FedAvg(**opts), noise_multiplier=0.0, clipping_norm=CLIP,
            num_sampled_clients=NODES), ledger=led)
        sdp.start(rec, start, num_rounds=1)
        result["sdp_sent"] = sorted(arrayrecord_digest(next(iter(r.content.array_records
                                                                  .values())))
                                    for r in rec.train_replies[0])
        result["sdp_model"] = sdp.global_model

        # D: the server alters the model after recording it
        tamper = LedgerStrategy(FedAvg(**opts), ledger=led)
        TamperingServer(tamper).start(rec, start, num_rounds=2)
        result["tamper_run_model"] = tamper.global_model

        # E: resume from Krum's round-1 model (start() is given another model)
        krum1 = next(le.entry.model for le in led.iter_entries(type="model")
                     if le.entry.round == 1)
        resumed = LedgerStrategy(FedAvg(**opts), ledger=led, resume_from=krum1)
        resumed.start(rec, start, num_rounds=1)
        result.update(krum1=krum1, resumed_model=resumed.global_model, run=krum.run_id,
                      phases=[krum.global_model, dp.global_model, sdp.global_model,
                              tamper.global_model, resumed.global_model])
        led.close()

    return app


def test_composition_tamper_and_resume(tmp_path: Path):
    ledger = tmp_path / "ledger.db"
    from flchain_plugin.flower.keys import ledger_key

    vkey = ledger_key(ledger).verifier_key
    result: dict[str, Any] = {}
    run_simulation(server_app=server_app(ledger, result),
                   client_app=client_app(tmp_path, tmp_path / "keys", vkey),
                   num_supernodes=NODES, backend_config=backend(tmp_path))
    assert "phases" in result, "the ServerApp did not finish"
    assert len(node_map(tmp_path)) == NODES
    with Ledger(ledger, create=False) as led:
        assert led.verify().ok
        runs = [le.entry for le in led.iter_entries(type="run")]
        assert [r.strategy for r in runs] == [
            "Krum", "DifferentialPrivacyClientSideFixedClipping(FedAvg)",
            "DifferentialPrivacyServerSideFixedClipping(FedAvg)", "FedAvg", "FedAvg"]
        models = [le.entry for le in led.iter_entries(type="model")]
        rejected = [le.entry for le in led.iter_entries(type="rejected")]
        by_phase = [models[0:2], models[2:4], models[4:5], models[5:7], models[7:8]]

        # A: Krum's model is one of the round's accepted updates, as Krum alone picks it
        for rnd, m in enumerate(by_phase[0], 1):
            ups = {led.get(i).entry.update for i in m.inputs}
            assert len(m.inputs) == NODES and m.model in ups
            assert m.model == result["krum_plain"][rnd - 1]
            assert set(result["krum_replies"][rnd - 1]) == ups

        # B: with fixedclipping_mod inside signing_mod every clipped update verifies
        for m in by_phase[1]:
            assert len(m.inputs) == NODES and m.model != m.parent
        assert len(result["dp_norms"]) == 2 * NODES
        assert max(result["dp_norms"]) <= CLIP * (1 + 1e-4)

        # C: the ledger holds the bytes clients sent, not the in-place clipped ones
        (sdp_model,) = by_phase[2]
        assert sorted(led.get(i).entry.update for i in sdp_model.inputs) == result["sdp_sent"]
        assert sdp_model.model == result["sdp_model"]

        # D: every client refused the altered model; the global model stayed as recorded
        for rnd, m in enumerate(by_phase[3], 1):
            assert m.inputs == [] and m.model == m.parent == by_phase[3][0].parent
            assert "no reply passed verification" in m.metrics["kept"]
            refusals = [r for r in rejected if r.round == rnd and r.parent == m.parent
                        and r.reason == "client_error"]
            assert len(refusals) == NODES
            want = "global model digest mismatch" if rnd == 1 else "does not record model"
            assert all(want in r.detail and "code 6" in r.detail for r in refusals)
        assert result["tamper_run_model"] == by_phase[3][0].parent

        # E: the resumed run restarted from Krum's round-1 model, recorded as a rollback
        (rollback,) = [le.entry for le in led.iter_entries(type="rollback")]
        assert rollback.model == result["krum1"] and rollback.reason == "resume_from"
        assert rollback.previous == by_phase[3][-1].model
        (resumed,) = by_phase[4]
        assert resumed.parent == result["krum1"] and len(resumed.inputs) == NODES
        lin = lineage(led, result["resumed_model"])
        assert lin.ok, lin.problems
        assert [v.model for v in lin.versions][:2] == [resumed.model, result["krum1"]]
        assert lin.versions[1].rollbacks and lin.versions[1].producer.aggregator == "Krum"
        assert lin.versions[-1].source == "run"
