"""bench/bench_quorum.py runs with `--quick` and reports every figure it promises.

Only the shape of the output is asserted, never a speed (see test_bench_smoke.py).
"""

from __future__ import annotations

import pytest
from test_bench_smoke import BENCH, check_results, json_line, run

pytest.importorskip("flwr.simulation")
pytest.importorskip("flchain_plugin.witness_http", reason="the witness server (branch witness)")

pytestmark = pytest.mark.timeout(300)


def test_quorum_bench_quick() -> None:
    doc = json_line(run(str(BENCH / "bench_quorum.py"), "--quick", "--json"))
    results = check_results(doc, "quorum", {"quorum_round", "quorum_round_added",
                                            "quorum_gather"},
                            differences=frozenset({"quorum_round_added"}))
    assert results["quorum_round"]["baseline_name"] == "the same round without witnesses"
    assert results["quorum_gather"]["unit"] == "ms"
