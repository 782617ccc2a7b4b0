"""bench/bench_replay.py --quick runs, replays every round it made, and reports its figures
(their shape only: speed is judged by the full benchmark, outside the suite)."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

from test_bench_smoke import BENCH, check_results, json_line, run

pytestmark = pytest.mark.timeout(300)


def test_replay_bench_quick() -> None:
    doc = json_line(run(str(BENCH / "bench_replay.py"), "--quick", "--json"))
    results = check_results(doc, "replay", {"replay", "replay_vs_fedavg", "keep_round"})
    assert doc["params"]["rounds"] == 3 and doc["params"]["clients"] == 4
    assert results["replay"]["target"] == "≤ 1.5× the run's aggregation"
