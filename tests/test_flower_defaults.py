"""Flower's safe defaults on the real simulation engine (ServerApp + ClientApps over Ray).

- `LedgerStrategy(FedAvg(...))` with no policy refuses a client that scales its update by
  10 (model replacement) as `out_of_bounds`, and no honest client;
- a run whose every reply is refused returns the kept global model from `start()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr.simulation")
pytest.importorskip("sklearn")

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from test_flower_sim import backend, data, local_train, net, node_map

from flchain_plugin import entries as E
from flchain_plugin.flower import LedgerStrategy, signing_mod
from flchain_plugin.flower.arrays import arrayrecord_digest
from flchain_plugin.ledger import Ledger

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("quiet_flower")]

NODES = 5
BOOSTER = 4


def client_app(out: Path, keys: Path | None) -> ClientApp:
    """Honest clients on a strided split; the last one scales its update by 10."""
    mods = [signing_mod(keys)] if keys is not None else []
    app = ClientApp(mods=mods)

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        (out / "nodes").mkdir(exist_ok=True)
        (out / "nodes" / str(pid)).write_text(str(ctx.node_id))
        start = msg.content["arrays"].to_torch_state_dict()
        x, y = data(pid, NODES)
        sd, _loss = local_train(start, x, y)
        if pid == BOOSTER:
            sd = {k: start[k] + 10.0 * (v - start[k]) for k, v in sd.items()}
        return Message(RecordDict({"arrays": ArrayRecord(sd), "metrics": MetricRecord(
            {"num-examples": len(x)})}), reply_to=msg)

    return app


def server_app(ledger: Path, rounds: int, result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = LedgerStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                                         min_available_nodes=NODES), ledger=ledger)
        initial = ArrayRecord(net().state_dict())
        res = strategy.start(grid, initial, num_rounds=rounds)
        result.update(initial=arrayrecord_digest(initial), model=strategy.global_model,
                      arrays=arrayrecord_digest(res.arrays) if len(res.arrays) else None)

    return app


def simulate(tmp: Path, rounds: int, signing: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    run_simulation(server_app=server_app(tmp / "ledger.db", rounds, result),
                   client_app=client_app(tmp, tmp / "keys" if signing else None),
                   num_supernodes=NODES, backend_config=backend(tmp))
    assert result, "the ServerApp did not finish"
    return result


def test_a_boosted_update_is_refused_out_of_the_box(tmp_path: Path):
    result = simulate(tmp_path, rounds=2, signing=True)
    partition = node_map(tmp_path)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        assert led.verify().ok
        entries = [le.entry for le in led.iter_entries()]
        run = next(e for e in entries if isinstance(e, E.Run))
        assert run.policy["max_update_norm"] == {
            "rule": "factor x median of the round's non-zero update norms", "factor": 5.0,
            "min_updates": 3}
        refused = {(e.round, partition[e.node]): e for e in entries if isinstance(e, E.Rejected)}
        assert set(refused) == {(1, BOOSTER), (2, BOOSTER)}
        for e in refused.values():
            assert e.reason == "out_of_bounds"
            assert e.detail.startswith("norm_bound: update norm ")
            assert "5 x the median of this round's 5 non-zero update norms" in e.detail
        accepted = {(e.round, partition[e.node]) for e in entries if isinstance(e, E.Update)}
        assert accepted == {(r, p) for r in (1, 2) for p in range(NODES) if p != BOOSTER}
    assert result["arrays"] == result["model"] != result["initial"]


def test_a_run_whose_every_reply_is_refused_returns_the_kept_model(tmp_path: Path):
    result = simulate(tmp_path, rounds=2, signing=False)  # no signing_mod: all unsigned
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        assert led.verify().ok
        reasons = {le.entry.reason for le in led.iter_entries(type="rejected")}
        assert reasons == {"unsigned"}
        assert len(list(led.iter_entries(type="rejected"))) == 2 * NODES
        models = [le.entry for le in led.iter_entries(type="model")]
        assert [m.metrics for m in models] == [{"kept": "no reply passed verification"}] * 2
    assert result["arrays"] == result["model"] == result["initial"]
