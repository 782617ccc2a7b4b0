"""bench/bench_credits.py runs in quick mode and reports every figure (no speed asserted)."""

from __future__ import annotations

from test_bench_smoke import BENCH, check_results, json_line, run


def test_credits_bench_quick() -> None:
    doc = json_line(run(str(BENCH / "bench_credits.py"), "--quick", "--json"))
    check_results(doc, "credits", {"quantity", "timeliness", "quality_metric", "composed",
                                   "loo_evaluations", "gtg_evaluations", "gtg_error_8"},
                  differences=frozenset({"quality_metric"}))  # total minus evaluations
    assert doc["params"]["clients"] == 10
    assert 0 <= doc["results"]["gtg_error_8"]["value"] < 1
