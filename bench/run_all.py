"""Run every `bench/bench_*.py` script and gather their figures into one table.

Each script runs in its own process (a benchmark's memory and threads must not colour the
next one's figures) and prints, with `--json`, one JSON line in the format `Result` and
`report` below define. Scripts import them with `from run_all import Result, report`
(the script's own folder is on `sys.path` when run as `python bench/bench_x.py`).

    python bench/run_all.py                  # every benchmark, full sizes (minutes)
    python bench/run_all.py --quick          # every benchmark, tiny sizes (a smoke run)
    python bench/run_all.py digest ledger    # only bench_digest.py and bench_ledger.py
    python bench/run_all.py --workdir DIR    # keep reusable files (the big ledger) in DIR
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Result:
    """One figure: what was measured, the baseline measured beside it in the same run,
    their ratio (oriented so that higher is better) and the issue's target.

    `passed` is None for figures given for context, which have no target.
    """

    key: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None
    target: str | None = None
    passed: bool | None = None


def median_seconds(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median wall time of each function, interleaved run by run so drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up: page in the memory, start thread pools once
        fn()
    for r in range(runs):
        order = list(fns)
        order = order[r % len(order):] + order[: r % len(order)]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def fmt(value: float | None, unit: str = "") -> str:
    """A figure with three significant digits and its unit."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit in ("s", "ms", "µs") and value:
        scaled = value * {"s": 1.0, "ms": 1e-3, "µs": 1e-6}[unit]
        for u, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
            if abs(scaled) >= f or u == "ns":
                value, unit = scaled / f, u
                break
    if value and abs(value) >= 1e4:
        text = f"{value:,.0f}"
    elif value and abs(value) < 1e-2:
        text = f"{value:.2e}"
    else:
        digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
        text = f"{value:.{digits}f}"
    return f"{text} {unit}".strip()


def console(stderr: bool = False) -> Console:
    """A console as wide as the table needs when output is not a terminal (CI logs)."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=160)


def table(title: str, results: Sequence[Result]) -> Table:
    t = Table(title=title, title_justify="left")
    for col, justify in (("benchmark", "left"), ("measured", "right"), ("baseline (same run)",
                         "right"), ("ratio", "right"), ("target", "left"), ("", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        base = f"{fmt(r.baseline, r.unit)}  {r.baseline_name or ''}" if r.baseline else ""
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: ""}[r.passed]
        t.add_row(r.name, fmt(r.value, r.unit), base.strip(),
                  f"{fmt(r.ratio)}×" if r.ratio is not None else "", r.target or "", mark)
    return t


def report(bench: str, results: Sequence[Result], *, as_json: bool, quick: bool,
           params: dict[str, Any] | None = None, notes: Sequence[str] = ()) -> None:
    """Print one JSON line (`--json`) or a rich table with the notes below it."""
    doc = {
        "bench": bench,
        "quick": quick,
        # Other work on the machine skews absolute figures; ratios to a same-run baseline
        # much less. The load average says how busy the machine was.
        "params": {**(params or {}), "loadavg_1m": round(os.getloadavg()[0], 2)},
        "results": {r.key: asdict(r) for r in results},
        "notes": list(notes),
    }
    if as_json:
        print(json.dumps(doc), flush=True)
        return
    out = console()
    out.print(table(f"{bench}{' (quick: sizes too small to judge targets)' if quick else ''}",
                        results))
    for line in notes:
        out.print(f"  • {line}")
    out.print(f"  • load average (1 min) at the end: {doc['params']['loadavg_1m']}")


def discover(names: Sequence[str] = ()) -> list[Path]:
    """Every bench_*.py next to this file, or those named (`digest` = bench_digest.py)."""
    found = sorted(BENCH_DIR.glob("bench_*.py"))
    if not names:
        return found
    by_name = {p.stem.removeprefix("bench_"): p for p in found}
    unknown = [n for n in names if n.removeprefix("bench_") not in by_name]
    if unknown:
        raise click.BadParameter(
            f"no bench/bench_{unknown[0]}.py; present: {', '.join(sorted(by_name))}",
            param_hint="NAMES")
    return [by_name[n.removeprefix("bench_")] for n in names]


@dataclass(frozen=True)
class Outcome:
    script: str
    seconds: float
    doc: dict[str, Any] | None
    error: str | None


def run_one(script: Path, quick: bool, timeout: float) -> Outcome:
    """Run one script with `--json`; its stderr (progress) passes through to ours."""
    cmd = [sys.executable, str(script), "--json"] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome(script.name, time.perf_counter() - t0, None, f"timed out after {timeout:.0f} s")
    seconds = time.perf_counter() - t0
    doc = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                doc = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if proc.returncode != 0:
        return Outcome(script.name, seconds, doc, f"exit status {proc.returncode}")
    if doc is None:
        return Outcome(script.name, seconds, None, "printed no JSON line with --json")
    return Outcome(script.name, seconds, doc, None)


def as_results(doc: dict[str, Any]) -> list[Result]:
    """Results from a script's JSON line; keys this version does not know are ignored."""
    out = []
    fields = set(Result.__dataclass_fields__)
    for key, r in (doc.get("results") or {}).items():
        if isinstance(r, dict) and "value" in r:
            out.append(Result(**{"key": key, "name": key, "unit": "",
                                 **{k: v for k, v in r.items() if k in fields}}))
    return out


@click.command()
@click.argument("names", nargs=-1)
@click.option("--quick", is_flag=True, help="Tiny sizes: proves the scripts run, judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line holding every script's line.")
@click.option("--list", "list_only", is_flag=True, help="List the benchmarks found and exit.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds per script.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where scripts keep files worth reusing between runs (the 10^6-entry "
                   "ledger); passed on as FLCHAIN_BENCH_WORKDIR.")
def main(names: tuple[str, ...], quick: bool, as_json: bool, list_only: bool,
         timeout: float, workdir: Path | None) -> None:
    """Run the benchmarks in bench/ (all, or NAMES such as `digest ledger`)."""
    if workdir is not None:
        os.environ["FLCHAIN_BENCH_WORKDIR"] = str(workdir.resolve())
    scripts = discover(names)
    if list_only:
        if as_json:
            print(json.dumps({"benchmarks": [p.name for p in scripts]}))
        else:
            for p in scripts:
                print(p.name)
        return
    err = console(stderr=True)
    outcomes = []
    for script in scripts:
        err.print(f"[bold]running {script.name}[/]{' --quick' if quick else ''}")
        outcomes.append(run_one(script, quick, timeout))
    failed = [o for o in outcomes if o.error]
    if as_json:
        print(json.dumps({"quick": quick, "benchmarks": [asdict(o) for o in outcomes]}))
    else:
        con = console()
        rows: list[Result] = []
        for o in outcomes:
            if o.doc is not None:
                bench = o.doc.get("bench", o.script)
                rows += [Result(**{**asdict(r), "name": f"{bench}: {r.name}"})
                         for r in as_results(o.doc)]
        con.print(table("all benchmarks" + (" (quick)" if quick else ""), rows))
        for o in outcomes:
            for line in (o.doc or {}).get("notes", []):
                con.print(f"  • {o.script}: {line}")
            load = ((o.doc or {}).get("params") or {}).get("loadavg_1m")
            if load is not None:
                con.print(f"  • {o.script}: load average (1 min) at the end: {load}, "
                          f"{o.seconds:.0f} s")
        for o in failed:
            con.print(f"[red]{o.script} failed: {o.error}[/]")
        missed = [r for r in rows if r.passed is False]
        con.print(f"{len(outcomes)} scripts, {len(failed)} failed; "
                      f"{sum(r.passed is True for r in rows)} targets met, {len(missed)} missed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
