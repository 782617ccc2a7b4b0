"""`LedgerStrategy(anchor=AnchorConfig(chain, every=2), contracts=...)` in a real Flower run on the
in-process EVM: every second round's checkpoint is anchored after its commit, the credits
of the rounds since the last anchor are minted (one transaction a round), and the chain
then agrees with the ledger: every anchored root, every minted round, every balance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr.simulation")
pytest.importorskip("sklearn")
pytest.importorskip("eth_tester")

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from test_flower_sim import backend, data, local_train, net

from flchain_plugin import entries as E
from flchain_plugin.anchor import (
    AnchorConfig,
    anchor_checkpoint,
    anchors,
    balances_on_chain,
    round_credits,
    verify_anchors,
    verify_mints,
)
from flchain_plugin.chain.client import Chain
from flchain_plugin.commit import commit, log_signer
from flchain_plugin.contracts import Contracts, Quantity, Timeliness
from flchain_plugin.flower import LedgerStrategy, signing_mod
from flchain_plugin.ledger import Ledger

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("quiet_flower")]

NODES = 3
ROUNDS = 3


def client_app(keys: Path) -> ClientApp:
    app = ClientApp(mods=[signing_mod(keys)])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        x, y = data(pid, NODES)
        x, y = x[: 40 + 60 * pid], y[: 40 + 60 * pid]  # different data sizes
        sd, _ = local_train(msg.content["arrays"].to_torch_state_dict(), x, y)
        return Message(RecordDict({"arrays": ArrayRecord(sd), "metrics": MetricRecord(
            {"num-examples": len(x)})}), reply_to=msg)

    return app


def server_app(ledger: Ledger, chain: Chain, result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        inner = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=NODES)
        strategy = LedgerStrategy(inner, ledger=ledger, anchor=AnchorConfig(chain, every=2),
                                  contracts=Contracts([Quantity(), Timeliness()], budget=1000))
        strategy.start(grid, ArrayRecord(net().state_dict()), num_rounds=ROUNDS)
        result["run"] = strategy.run_id

    return app


def test_flower_run_anchors_every_second_round_and_mints(tmp_path: Path) -> None:
    chain = Chain.tester()
    chain.deploy()
    ledger = Ledger(tmp_path / "ledger.db", create=True)
    result: dict[str, Any] = {}
    run_simulation(server_app=server_app(ledger, chain, result),
                   client_app=client_app(tmp_path / "keys"), num_supernodes=NODES,
                   backend_config=backend(tmp_path))
    assert result, "the ServerApp did not finish"

    recorded = anchors(ledger)
    assert len(recorded) == 1  # after round 2 only
    _, entry = recorded[0]
    assert [(m["run"], m["round"]) for m in entry.minted or []] == [
        (result["run"], 1), (result["run"], 2)]
    models = {e.entry.round: e.index for e in ledger.iter_entries(type="model")}
    assert models[2] < entry.size <= models[3]  # the checkpoint of round 2's batch

    credits = round_credits(ledger)
    assert sorted(r for _, r in credits) == [1, 2, 3]
    for awards in credits.values():  # the budget is conserved exactly, every round
        assert sum(awards.values()) == 1000 and len(set(awards.values())) == NODES
    updates = {e.entry.node for e in ledger.iter_entries(type="update")}
    assert set(credits[(result["run"], 1)]) == updates

    # round 3 is minted by the operator's next anchor
    anchor_checkpoint(ledger, chain, mint=True)
    report = verify_anchors(ledger, chain)
    assert report.ok and len(report.anchored) == 2, report.problems
    mints = verify_mints(ledger, chain)
    assert mints.ok and mints.rounds == ROUNDS, mints.problems
    totals: dict[str, int] = {}
    for awards in credits.values():
        for node, amount in awards.items():
            totals[node] = totals.get(node, 0) + amount
    assert balances_on_chain(chain, totals) == totals
    assert ledger.verify().problem is None


def test_anchor_must_be_an_anchor_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^anchor must be a flchain_plugin\.anchor\.AnchorConfig"):
        LedgerStrategy(FedAvg(), ledger=tmp_path / "l.db", anchor="tester")  # type: ignore[arg-type]


def test_a_failing_chain_is_logged_and_the_run_goes_on(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """An anchor the contract refuses (here: its witness quorum is unmet) leaves the ledger
    as it was and is logged; the round stays committed."""
    chain = Chain.tester()
    chain.deploy(quorum=2)
    ledger = Ledger(tmp_path / "l.db", create=True)
    commit(ledger, [E.Erasure(blob="sha256:" + "ab" * 32, reason="x")],
           signer=log_signer(ledger))
    strategy = LedgerStrategy(FedAvg(), ledger=ledger, anchor=AnchorConfig(chain))
    size = ledger.size
    with caplog.at_level("ERROR", logger="flchain.flower"):
        strategy._anchor()
    assert ledger.size == size and anchors(ledger) == []
    assert "could not anchor" in caplog.text and "too few witness cosignatures" in caplog.text
