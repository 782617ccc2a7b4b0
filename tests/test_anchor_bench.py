"""bench/bench_gas.py runs (`--quick`) and reports its figures; gas, unlike time, is
deterministic, so the quick run also shows one anchor costing less than ten updates."""

from __future__ import annotations

import pytest
from test_bench_smoke import BENCH, check_results, json_line, run

pytest.importorskip("eth_tester")

pytestmark = pytest.mark.timeout(300)


def test_gas_bench_quick() -> None:
    doc = json_line(run(str(BENCH / "bench_gas.py"), "--quick", "--json"))
    results = check_results(doc, "gas", {"anchor_mint_10", "anchor_only_10", "ratio_grows"})
    assert results["anchor_only_10"]["unit"] == "gas"
    assert results["anchor_only_10"]["value"] < results["anchor_only_10"]["baseline"]
    assert results["anchor_mint_10"]["baseline"] == results["anchor_only_10"]["baseline"]
    assert doc["params"]["clients"] == [10]
