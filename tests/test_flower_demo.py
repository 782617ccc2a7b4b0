"""The README's main job: `python examples/federated_demo.py --out DIR` runs a real Flower
simulation on a fresh ledger, verifies it and prints the final model's lineage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr.simulation")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from flchain_plugin import entries as E
from flchain_plugin.ledger import Ledger
from flchain_plugin.lineage import lineage

pytestmark = [pytest.mark.flower, pytest.mark.xdist_group("flower")]

DEMO = Path(__file__).resolve().parents[1] / "examples" / "federated_demo.py"


def test_demo_runs_verifies_and_traces(tmp_path: Path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(DEMO), "--out", str(out), "--rounds", "3",
                           "--clients", "5", "--json"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    # round 1: all 5 aggregated; round 2: the replay refused; round 3: the altered update
    assert summary["ok"] and summary["accepted"] == 13 and summary["refused"] == 2
    for text in ("flchain verify", "OK", "flchain lineage", "replay", "digest_mismatch",
                 "lineage consistent"):
        assert text in proc.stdout
    with Ledger(out / "ledger.db", create=False) as led:
        assert led.verify().ok
        reasons = [le.entry.reason for le in led.iter_entries(type="rejected")]
        assert reasons == ["replay", "digest_mismatch"]
        lin = lineage(led, summary["model"])
        assert lin.ok and len(lin.accepted_updates()) == 13
        assert len(lin.datasets) == 5  # every accepted client committed to its data
        central = [le.entry for le in led.iter_entries(type="evaluation")
                   if isinstance(le.entry, E.Evaluation) and le.entry.source == "central"]
        assert central[-1].metrics["test_acc"] > central[0].metrics["test_acc"]
    assert (out / "lineage.dot").read_text().startswith("digraph")
