"""The Lightning examples and benchmark run end to end and show what they claim.

Each runs as its own process, as a user would run it: the standalone example with the
`pytorch_lightning` Trainer, the Flower ClientApp example in a real Flower simulation
(ServerApp with LedgerStrategy, ClientApps with signing_mod and LedgerCallback), and the
benchmark with `--quick` (output shape only; speed is judged by the full run).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flchain_plugin.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.lightning, pytest.mark.timeout(300)]


def json_line(*args: str, cwd: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=280, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_standalone_example_resumes_verified_and_refuses_tampered(tmp_path: Path) -> None:
    out = tmp_path / "run"
    doc = json_line(str(ROOT / "examples" / "lightning_ledger.py"), "--out", str(out),
                    "--package", "pytorch_lightning", "--epochs", "2", "--json", cwd=tmp_path)
    assert doc["ok"] and doc["verify"]
    assert "not in the ledger" in doc["refused_tampered"]
    assert doc["signed_size"] == doc["entries"]  # every batch signed, the last one too
    assert doc["verifier_key"].split("+")[0].startswith("flchain.local/")
    assert [d["name"] for d in doc["datasets"]] == ["train", "val"]
    chain = doc["lineage"]
    assert chain[-1]["parent"] is None
    assert all(a["parent"] == b["model"] for a, b in itertools.pairwise(chain))
    assert max(c["step"] for c in chain) > min(c["step"] for c in chain)  # spans the resume


@pytest.mark.flower
def test_flower_client_example_signs_the_callbacks_digests(tmp_path: Path) -> None:
    out = tmp_path / "fl"
    doc = json_line(str(ROOT / "examples" / "flower_lightning_client.py"), "--out", str(out),
                    "--rounds", "2", "--clients", "2", "--json", cwd=tmp_path)
    assert doc["ok"] and doc["verify"]
    ups = doc["updates"]
    assert sorted((u["round"], u["client"]) for u in ups) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(u["signed"] and u["parent_is_global_model"] for u in ups)
    with Ledger(out / "ledger.db", create=False) as led:
        recorded = {e.entry.dataset for e in led.iter_entries(type="dataset")}
    assert {u["dataset"] for u in ups} <= recorded


def test_bench_quick_reports_the_overhead_ratio(tmp_path: Path) -> None:
    doc = json_line(str(ROOT / "bench" / "bench_lightning.py"), "--quick", "--json",
                    cwd=ROOT / "bench")
    assert doc["bench"] == "lightning" and doc["quick"] is True
    res = doc["results"]
    assert {"save_overhead", "save_plain", "save_ledger", "load_verified"} <= set(res)
    assert res["save_overhead"]["target"] and res["save_overhead"]["passed"] is None
    assert doc["params"]["last_recorded"] is True and doc["params"]["entries"] >= 4
