"""bench/bench_mlflow.py runs and reports every figure it promises (--quick: judges nothing).

Only the shape of the output is asserted, never a speed; speed is judged by the full
benchmark, outside the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(300)]

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_mlflow_bench_quick(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "bench_mlflow.py"), "--quick", "--json",
                           "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=280, cwd=BENCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line, got {lines[:3]}"
    doc = json.loads(lines[0])
    assert doc["bench"] == "mlflow" and doc["quick"] is True
    results = doc["results"]
    assert {"load_extra", "register_extra", "register_load", "register", "load",
            "log_register_load", "sha256_file", "create_model_version_extra", "ledger_append",
            "create_model_version"} <= set(results)
    # Issue 13's three targets, each printed beside its ratio (judged only at full size).
    for key in ("load_extra", "register_extra", "create_model_version_extra"):
        assert results[key]["target"] and results[key]["passed"] is None
    for key in ("load_extra", "register_extra"):  # extra time against one SHA-256 pass
        r = results[key]
        assert r["baseline"] == results["sha256_file"]["value"] > 0
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline"])
    assert results["register_load"]["baseline"] > 0
    params = doc["params"]
    assert params["model_mb"] == 8 and params["versions"] == 10
    assert params["ledger_verify_ok"] is True
    # Every logged model and version of the plugin's store is in its ledger: the big model
    # and its warm-up + timed versions, the small model, its first version and the rest.
    assert params["ledger_entries"] == 1 + (params["runs"] + 1) + 1 + 1 + params["versions"]
