"""The three case studies in examples/ run end to end (`--smoke`) and show what they claim.

Each runs once per module as its own process, as a user would run it (a real Flower
simulation, a real MLflow `flchain+sqlite` store on the same ledger); the tests then read
the ledger, the MLflow store and the prediction log it left, not only its exit status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr.simulation")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from flchain_plugin import entries as E
from flchain_plugin.blobs import BlobStore
from flchain_plugin.ledger import Ledger
from flchain_plugin.lineage import lineage
from flchain_plugin.replay import replay

pytestmark = [pytest.mark.flower, pytest.mark.xdist_group("flower"), pytest.mark.timeout(600)]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(script: str, out: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(out), *args,
                           "--json"], capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"summary": json.loads(proc.stdout.strip().splitlines()[-1]), "stdout": proc.stdout}


def check_report(case: dict[str, Any], names: set[str]) -> None:
    """The run ended with the audit report: written, passing, naming every partner."""
    page = Path(case["summary"]["report"])
    assert page == case["out"] / "report.html" and "audit report written" in case["stdout"]
    html = page.read_text()
    assert "<svg" in html and all(name in html for name in names)
    with Ledger(case["out"] / "ledger.db", create=False) as led:  # kept updates: replayable
        replayed = replay(led, BlobStore.beside(led))  # type: ignore[arg-type]
    assert replayed.ok and replayed.rounds
    assert {r.status for r in replayed.rounds} == {"ok"}, replayed.to_json()


def names_by_node(led: Ledger, run: str) -> dict[str, str]:
    return {le.entry.node: le.entry.key.split("+", 1)[0]
            for le in led.iter_entries(type="member") if le.entry.run == run}


@pytest.fixture(scope="module")
def healthcare(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("healthcare")
    return {"out": out, **run_example("healthcare/hospitals.py", out, "--smoke")}


@pytest.fixture(scope="module")
def finance(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("finance")
    return {"out": out, **run_example("finance/banks.py", out, "--smoke")}


@pytest.fixture(scope="module")
def supply_chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("supply-chain")
    return {"out": out, **run_example("supply-chain/forecast.py", out, "--smoke")}


# -- healthcare ---------------------------------------------------------------------------


def test_healthcare_ledger_verifies_and_names_every_hospital(healthcare: dict[str, Any]):
    s = healthcare["summary"]
    assert s["ok"]
    with Ledger(healthcare["out"] / "ledger.db", create=False) as led:
        assert led.verify().ok
        lin = lineage(led, s["model"])
        names = names_by_node(led, s["run"])
    assert lin.ok
    contributors = {names[u.node] for u in lin.accepted_updates()}
    assert contributors == {"st-anne", "riverside", "northgate", "lakeview"}
    assert len(lin.datasets) == 4  # each hospital committed to its records
    for text in ("flchain lineage", "lineage consistent", " = lakeview"):
        assert text in healthcare["stdout"]
    check_report(healthcare, contributors)


def test_healthcare_drift_is_on_the_ledger_as_signed_metrics(healthcare: dict[str, Any]):
    rounds = healthcare["summary"]["rounds"]
    # smoke: drift from round 2; every hospital's signed metrics are recorded each round
    for r in ("1", "2", "3"):
        hs = rounds[r]["hospitals"]
        assert set(hs) == {"st-anne", "riverside", "northgate", "lakeview"}
        assert all(h["accepted"] for h in hs.values())  # the drift passes the norm bound
        assert all(0.0 <= h["acc_before"] <= 1.0 and h["norm"] > 0 for h in hs.values())
    assert rounds["3"]["external_acc"] > rounds["0"]["external_acc"]


def test_healthcare_model_registered_in_mlflow_and_loaded_verified(healthcare: dict[str, Any]):
    s = healthcare["summary"]
    m = s["mlflow"]
    assert m["uri"] == "models:/breast-cancer-triage/1" and m["status"] == "ok"
    assert m["same_weights"]  # the weights that loaded are the Flower run's final model
    assert m["loaded_acc"] == pytest.approx(s["rounds"]["3"]["external_acc"])
    with Ledger(healthcare["out"] / "ledger.db", create=False) as led:
        versions = [le for le in led.iter_entries(type="mlflow")
                    if le.entry.kind == "model_version"]
    assert [(le.index, v.name, v.version, v.model, v.files) for le in versions
            for v in [le.entry]] == [(m["entry"], "breast-cancer-triage", "1", s["model"],
                                      m["files"])]


# -- finance ------------------------------------------------------------------------------


def test_finance_boosted_update_refused_out_of_bounds(finance: dict[str, Any]):
    s = finance["summary"]
    assert s["ok"]
    with Ledger(finance["out"] / "ledger.db", create=False) as led:
        assert led.verify().ok
        names = names_by_node(led, s["run"])
        refused = [(le.entry.round, names[le.entry.node], le.entry.reason)
                   for le in led.iter_entries(type="rejected")]
        lin = lineage(led, s["model"])
    assert refused == [(2, "ember-bank", "out_of_bounds")]  # smoke: boosted in round 2
    assert "norm_bound" in s["rounds"]["2"]["banks"]["ember-bank"]["detail"]
    assert lin.ok and len(lin.rejections()) == 1
    check_report(finance, set(names.values()))


def test_finance_credits_show_who_helped_and_replay(finance: dict[str, Any]):
    s = finance["summary"]
    assert s["replay"]["ok"] and s["replay"]["credits"] > 0
    balances = s["credits"]["balances"]
    honest = ("aurora-bank", "bayside-credit", "crest-savings", "delta-trust")
    rounds = s["rounds"]
    for r in ("1", "2", "3"):  # 1,000 tokens a round, paid out in full
        assert sum(sum(b["credits"].values()) for b in rounds[r]["banks"].values()) == 1000
    assert sum(rounds["2"]["banks"]["ember-bank"]["credits"].values()) == 0  # refused
    assert all(balances[b] > balances.get("ember-bank", 0) for b in honest)
    quality = s["credits"]["by_rule"]["ember-bank"]
    assert sum(v for k, v in quality.items() if k.startswith("quality")) == 0
    with Ledger(finance["out"] / "ledger.db", create=False) as led:
        recorded = sum(le.entry.amount for le in led.iter_entries(type="credit"))
    assert recorded == sum(balances.values()) == 3000


def test_finance_label_flipping_is_not_caught_by_the_norm_bound(finance: dict[str, Any]):
    """What the README says honestly: flipped labels make an update of ordinary size."""
    rounds = finance["summary"]["rounds"]
    assert rounds["1"]["banks"]["ember-bank"]["accepted"]
    assert rounds["3"]["banks"]["ember-bank"]["accepted"]
    assert all(len(rounds[r]["banks"]) == 5 for r in ("1", "2", "3"))
    assert rounds["3"]["test"]["fraud_recall"] > 0.5


# -- supply chain -------------------------------------------------------------------------


def test_supply_chain_every_prediction_traces_to_the_partners(supply_chain: dict[str, Any]):
    s = supply_chain["summary"]
    assert s["ok"] and s["model_uri"] == "models:/demand-forecaster/1"
    log = [json.loads(x) for x in (supply_chain["out"] / "predictions.jsonl").read_text()
           .splitlines()]
    assert [r["partner"] for r in log] == ["north-dc", "harbor-retail", "valley-grocers",
                                           "summit-outlet"]
    partners = sorted(r["partner"] for r in log)
    for t in s["traces"]:
        assert t["lineage_ok"]
        assert t["prediction"]["model"] == s["model"]  # the served weights = Flower's model
        assert t["mlflow"]["weights"] == s["model"] and t["mlflow"]["version"] == "1"
        assert t["partners"] == partners and sorted(t["final_round_partners"]) == partners
        assert t["round"]["round"] == 3 and t["rounds"] == 3
    with Ledger(supply_chain["out"] / "ledger.db", create=False) as led:
        assert led.verify().ok
        entry = led.get(log[0]["mlflow_entry"]).entry
        assert isinstance(entry, E.Mlflow) and entry.files == log[0]["mlflow_files"]


def test_supply_chain_trace_command_and_cli_lineage(supply_chain: dict[str, Any]):
    out = supply_chain["out"]
    proc = subprocess.run([sys.executable, str(EXAMPLES / "supply-chain" / "forecast.py"),
                           "--out", str(out), "--trace", "2", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    t = json.loads(proc.stdout)
    assert t["prediction"]["partner"] == "valley-grocers" and len(t["partners"]) == 4
    lin = subprocess.run([sys.executable, "-m", "flchain_plugin.cli", "--ledger",
                          str(out / "ledger.db"), "lineage", t["prediction"]["model"], "--json"],
                         capture_output=True, text=True, timeout=120)
    assert lin.returncode == 0, lin.stderr
    doc = json.loads(lin.stdout)
    nodes = {u["node"] for v in doc["versions"] for r in v["rounds"] for u in r["updates"]}
    assert len(nodes) == 4 and doc["ok"]
    check_report(supply_chain, set(t["partners"]))


def test_supply_chain_tampered_model_is_not_served(supply_chain: dict[str, Any]):
    """A registered model whose weights file is replaced is refused before it loads."""
    import mlflow

    from flchain_plugin.mlflow import TamperedModelError, load_model

    out = supply_chain["out"]
    weights = list((out / "mlartifacts").rglob("model.pth"))
    assert len(weights) == 1
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(f"flchain+sqlite:///{out}/mlflow.db"
                            f"?flchain_ledger={out / 'ledger.db'}")
    original = weights[0].read_bytes()
    try:
        weights[0].write_bytes(original[:-8] + b"\0" * 8)
        with pytest.raises(TamperedModelError, match=r"model\.pth"):
            load_model("models:/demand-forecaster/1", flavor="pytorch")
    finally:
        weights[0].write_bytes(original)
        mlflow.set_tracking_uri(None)
        mp.undo()
