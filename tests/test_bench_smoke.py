"""The benchmark scripts run and report every figure they promise.

Each core benchmark runs with `--quick` (tiny sizes) as its own process, exactly as
`bench/run_all.py` runs it. Only the shape of the output is asserted, never a speed:
speed is judged by the full benchmarks, on purpose outside the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
RESULT_FIELDS = {"key", "name", "value", "unit", "baseline", "baseline_name", "ratio",
                 "target", "passed"}

pytestmark = pytest.mark.timeout(300)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=240, cwd=cwd)


def json_line(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line, got {len(lines)}"
    return json.loads(lines[0])


def check_results(doc: dict[str, Any], bench: str, keys: set[str],
                  differences: frozenset[str] = frozenset()) -> dict[str, Any]:
    """`differences`: figures that are a difference of two timings, which a quick run on a
    busy machine may well find negative."""
    assert doc["bench"] == bench and doc["quick"] is True
    results = doc["results"]
    assert keys <= set(results), f"missing {sorted(keys - set(results))}"
    for key, r in results.items():
        assert set(r) == RESULT_FIELDS and r["key"] == key
        assert isinstance(r["value"], (int, float)), r
        assert key in differences or r["value"] > 0, r
        if r["baseline"] is not None:
            assert r["baseline"] > 0 and (key in differences or r["ratio"] > 0), r
        assert r["passed"] is None, "a quick run must not judge targets"
    return results


def test_digest_bench_quick() -> None:
    doc = json_line(run(str(BENCH / "bench_digest.py"), "--quick", "--json"))
    results = check_results(doc, "digest",
                            {"digest_threads1", "digest_threads2", "sha256_one_pass"})
    for key in ("digest_threads1", "digest_threads2"):
        assert results[key]["unit"] == "GB/s"
        assert results[key]["baseline"] == results["sha256_one_pass"]["value"]
        assert results[key]["target"]
    assert doc["params"]["model_mib"] == 8


def test_ledger_bench_quick_reuses_its_workdir(tmp_path: Path) -> None:
    doc = json_line(run(str(BENCH / "bench_ledger.py"), "--quick", "--json",
                        "--workdir", str(tmp_path)))
    results = check_results(doc, "ledger", {
        "append", "append_with_construction", "raw_sqlite", "inclusion_generate",
        "inclusion_verify", "consistency_generate", "consistency_verify", "verify"})
    params = doc["params"]
    assert params["entries"] == 5000 and params["verify_ok"] is True
    assert params["same_root"] is True and params["same_proofs"] is True
    assert set(params["entry_bytes_by_type"]) == {"update", "dataset"}
    assert results["append"]["baseline"] == results["raw_sqlite"]["value"]
    assert "pymerkle" in results["inclusion_generate"]["baseline_name"]
    assert (tmp_path / "ledger-5000.db").exists()

    # Proofs and verify alone reuse the cached ledger and pymerkle tree: nothing is built.
    again = json_line(run(str(BENCH / "bench_ledger.py"), "--quick", "--json",
                          "--workdir", str(tmp_path), "--only", "proofs,verify"))
    assert "append" not in again["results"] and "pymerkle_build" not in again["results"]
    assert {"inclusion_generate", "verify"} <= set(again["results"])


def test_tiles_bench_quick() -> None:
    doc = json_line(run(str(BENCH / "bench_tiles.py"), "--quick", "--json"))
    results = check_results(doc, "tiles", {"export", "export_rate", "incremental_export",
                                           "unchanged_export", "durable_write"})
    assert results["export"]["baseline_name"].startswith("verify of the same 100,000")
    assert results["incremental_export"]["target"] == "≤ 50 ms"
    assert results["incremental_export"]["unit"] == "ms"
    params = doc["params"]
    assert params["entries"] == 100_000 and params["checkpoints"] == 100
    assert params["verify_ok"] is True and params["increment_tiles"] > 0


def test_flower_bench_quick_times_both_kinds_and_the_work() -> None:
    pytest.importorskip("flwr")
    doc = json_line(run(str(BENCH / "bench_flower.py"), "--quick", "--json"))
    results = check_results(doc, "flower", {"aggregate_overhead_vs_sha256", "e2e_round",
                                            "e2e_run", "work_round_added", "work_share",
                                            "work_client_added_per_message"},
                            differences=frozenset(k for k in doc["results"]
                                                  if k.startswith(("work_", "aggregate_over"))))
    for key in ("e2e_round", "e2e_run"):
        assert results[key]["baseline_name"] == "plain FedAvg + no mods"
        assert results[key]["target"].startswith("≤ 1.05×")
    assert results["work_share"]["unit"] == "%" and doc["params"]["pauses"] is True


def test_pq_bench_quick() -> None:
    doc = json_line(run(str(BENCH / "bench_pq.py"), "--quick", "--json"))
    results = check_results(doc, "pq", {"sign", "verify", "cosign", "round10"})
    for r in results.values():
        assert r["baseline_name"] == "Ed25519" and r["name"].endswith("ML-DSA-44")
    assert any("ML-DSA-44 1312 B" in n for n in doc["notes"])
    assert any("ML-DSA-44 2420 B" in n for n in doc["notes"])


def test_ledger_bench_refuses_unknown_part() -> None:
    proc = run(str(BENCH / "bench_ledger.py"), "--quick", "--only", "proofs,nonsense")
    assert proc.returncode == 2 and "nonsense" in proc.stderr


def test_run_all_discovers_every_bench_script() -> None:
    listed = json_line(run(str(BENCH / "run_all.py"), "--list", "--json"))
    assert listed["benchmarks"] == sorted(p.name for p in BENCH.glob("bench_*.py"))
    assert {"bench_digest.py", "bench_ledger.py"} <= set(listed["benchmarks"])


def test_run_all_collects_json_lines() -> None:
    doc = json_line(run(str(BENCH / "run_all.py"), "--quick", "--json", "digest", "ledger"))
    assert doc["quick"] is True
    by_script = {b["script"]: b for b in doc["benchmarks"]}
    assert set(by_script) == {"bench_digest.py", "bench_ledger.py"}
    for b in by_script.values():
        assert b["error"] is None and b["doc"]["results"]
    assert by_script["bench_ledger.py"]["doc"]["bench"] == "ledger"


def test_run_all_names_a_missing_benchmark() -> None:
    proc = run(str(BENCH / "run_all.py"), "--quick", "nosuchthing")
    assert proc.returncode == 2 and "bench_nosuchthing.py" in proc.stderr
