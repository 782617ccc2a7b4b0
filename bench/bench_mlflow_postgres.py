"""The MLflow plugin flag on PostgreSQL: what `flchain+postgresql` adds per model version.

Two tracking stores in one process on one PostgreSQL server, each in its own database:
`postgresql+psycopg://…/plain` and `flchain+postgresql+psycopg://…/flchain`, whose ledger
lives in that database's `flchain` schema (the default). Figures:
- `create_model_version` of a small logged model (nothing to hash): the plugin's extra
  time per version, median, calls alternating between the stores (as bench_mlflow.py
  measures it on SQLite; issue 13's target there: <= 3 ms);
- one plugin commit on the PostgreSQL ledger (identity check, append, signed checkpoint in
  one advisory-locked transaction), from 1 writer process and from 4 writer processes at
  once on the same ledger (median per commit as each writer sees it: the lock queues them).

The server is `$FLCHAIN_BENCH_POSTGRES` when set, else a throwaway durable cluster (fsync
on) started by tests/postgres_server.py (`bench_postgres.server`).

    python bench/bench_mlflow_postgres.py           # 200 versions, 200 commits per writer
    python bench/bench_mlflow_postgres.py --quick   # 10 and 10: proves it works
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import click
from bench_mlflow import Store, _quiet, many_versions
from bench_postgres import server  # the one way a bench gets its PostgreSQL server
from postgres_server import new_database
from run_all import Result, report

ROOT = Path(__file__).resolve().parents[1]


class PostgresStore(Store):
    """A tracking store (plain or flchain) in a database of its own on one server."""

    def __init__(self, kind: str, root: Path, url: str):
        import mlflow

        self.kind = kind
        self.root = root / kind
        self.root.mkdir(parents=True)
        prefix = "flchain+" if kind == "flchain" else ""
        self.uri = prefix + url.replace("postgresql://", "postgresql+psycopg://", 1)
        mlflow.set_tracking_uri(self.uri)
        self.experiment = mlflow.create_experiment(kind, artifact_location=str(self.root / "art"))


_WRITER = textwrap.dedent("""
    import json, statistics, sys, time
    from pathlib import Path
    from flchain_plugin import entries as E
    from flchain_plugin.commit import log_signer
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.mlflow.identity import Commitments, commit_once
    url, me, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    led = Ledger(url)
    signer, index = log_signer(led), Commitments(led)
    while not go.exists():
        time.sleep(0.005)
    times = []
    for i in range(n):
        e = E.Mlflow(kind="model_version", model_id="m-" + me, name="w" + me, version=str(i),
                     files=E.Digest("sha256:" + "ab" * 32))
        t0 = time.perf_counter()
        commit_once(led, e, signer, index)
        times.append(time.perf_counter() - t0)
    print(json.dumps(times))
""")


def commits(url: str, writers: int, n: int, key: Path) -> tuple[float, float]:
    """(median seconds per commit_once as each writer sees it, commits per second overall)
    with `writers` processes committing `n` entries each to the ledger at `url`."""
    go = key.with_name(f"go-{writers}")
    env = {**os.environ, "FLCHAIN_LOG_KEY": str(key), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, str(w), str(n), str(go)],
                              env=env, stdout=subprocess.PIPE, text=True)
             for w in range(writers)]
    time.sleep(2.0)  # connected and waiting
    t0 = time.perf_counter()
    go.touch()
    times: list[float] = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise click.ClickException(f"writer process exited {p.returncode}")
        times += json.loads(out)
    return statistics.median(times), writers * n / (time.perf_counter() - t0)


def measure(base: str, root: Path, versions: int, per_writer: int) -> dict[str, float]:
    stores = {k: PostgresStore(k, root, new_database(base)) for k in ("plain", "flchain")}
    per = many_versions(stores, versions)
    one = commits(new_database(base), 1, per_writer, root / "one.key")
    four = commits(new_database(base), 4, per_writer, root / "four.key")
    return {"plain": per["plain"], "flchain": per["flchain"], "commit1": one[0],
            "rate1": one[1], "commit4": four[0], "rate4": four[1]}


@click.command()
@click.option("--versions", default=200, show_default=True, help="create_model_version calls.")
@click.option("--commits", "per_writer", default=200, show_default=True,
              help="Ledger commits per writer process.")
@click.option("--quick", is_flag=True, help="10 versions, 10 commits: judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(versions: int, per_writer: int, quick: bool, as_json: bool) -> None:
    """flchain+postgresql vs postgresql: per model version, per ledger commit."""
    if quick:
        versions, per_writer = 10, 10
    if versions < 1 or per_writer < 1:
        raise click.BadParameter("--versions and --commits must be >= 1")
    _quiet()
    import mlflow

    with tempfile.TemporaryDirectory(prefix="bench-mlflow-pg-") as tmp, server() as base:
        os.environ["FLCHAIN_LOG_KEY"] = str(Path(tmp) / "store.key")
        try:
            m = measure(base, Path(tmp), versions, per_writer)
        finally:
            mlflow.set_tracking_uri(None)
    extra_ms = (m["flchain"] - m["plain"]) * 1e3
    results = [
        Result("create_model_version_extra", "create_model_version on PostgreSQL, nothing to "
               "hash: extra per version (median)", extra_ms, "ms",
               baseline=m["plain"] * 1e3, baseline_name="postgresql:// create_model_version",
               target="≤ 3 ms per version (issue 13's target on SQLite)",
               passed=None if quick else extra_ms <= 3.0),
        Result("create_model_version", f"create_model_version × {versions} "
               "(flchain+postgresql)", m["flchain"] * 1e3, "ms", baseline=m["plain"] * 1e3,
               baseline_name="postgresql:// create_model_version",
               ratio=m["plain"] / m["flchain"]),
        Result("commit_once_1", "one plugin commit on the PostgreSQL ledger, 1 writer "
               "(median; context)", m["commit1"] * 1e3, "ms"),
        Result("commit_once_4", "one plugin commit, 4 writer processes at once (median per "
               "writer; the lock queues them)", m["commit4"] * 1e3, "ms",
               baseline=m["commit1"] * 1e3, baseline_name="1 writer",
               ratio=m["commit1"] / m["commit4"]),
        Result("commit_rate_4", "commits per second, 4 writers on one ledger", m["rate4"],
               "commits/s", baseline=m["rate1"], baseline_name="1 writer",
               ratio=m["rate4"] / m["rate1"]),
    ]
    report("mlflow_postgres", results, as_json=as_json, quick=quick,
           params={"versions": versions, "commits_per_writer": per_writer,
                   "cpus": os.cpu_count()},
           notes=["create_model_version: median per call, calls alternating between the "
                  "stores; each store in its own database of one server",
                  "a commit is an identity check, one append and a signed checkpoint in one "
                  "transaction under the ledger's advisory lock (one WAL flush)"])


if __name__ == "__main__":
    main()
