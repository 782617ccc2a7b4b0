"""bench/bench_postgres.py runs and reports every figure it promises (`--quick`, against
the test server through $FLCHAIN_BENCH_POSTGRES). Only the shape is asserted, never a
speed: speed is judged by the full benchmark, outside the test suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_postgres.py"

pytestmark = pytest.mark.timeout(300)


def test_postgres_bench_quick(postgres_server: str) -> None:
    env = {**os.environ, "FLCHAIN_BENCH_POSTGRES": postgres_server}
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--json"], env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, lines
    doc = json.loads(lines[0])
    assert doc["bench"] == "postgres" and doc["quick"] is True
    results = doc["results"]
    assert set(results) == {"append_1_writer", "append_4_writers", "plain_copy",
                            "inclusion_generate", "consistency_generate"}
    for key in ("append_1_writer", "append_4_writers"):
        r = results[key]
        assert r["unit"] == "entries/s" and r["value"] > 0
        assert r["baseline"] == results["plain_copy"]["value"] > 0
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline"])
    for key in ("inclusion_generate", "consistency_generate"):
        assert results[key]["unit"] == "ms" and results[key]["value"] > 0
    assert all(r["passed"] is None for r in results.values()), "quick judges nothing"
    assert doc["params"]["entries"] == 8000 and doc["params"]["writers"] == 4
