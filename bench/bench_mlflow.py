"""The MLflow plugin flag's cost against MLflow's own sqlite store and one SHA-256 pass.

Two SQLite tracking stores in one process: `sqlite:///plain.db` and
`flchain+sqlite:///flchain.db`. Verifying costs at least one SHA-256 pass over the model's
files, which the plain store never makes, so issue 13 measures the plugin's extra time
against one such pass over the same files, timed in the same run:
- verified load of a 200 MB model: extra time over the plain load <= 1.25x one SHA-256
  pass. Plain: `mlflow.pyfunc.load_model("models:/name/v")`, which on a local store loads
  the stored directory in place. Plugin: `flchain_plugin.mlflow.load_model`, which copies
  the files into a private directory while hashing them, checks them against the ledger,
  then loads that copy. The model is a pyfunc whose 200 MB of float32 weights are an
  artifact read back in `load_context`.
- registration of that model: extra time of `register_model` <= 1.1x one SHA-256 pass (the
  plugin re-hashes the files from storage and checks them against the ledger).
- 100 x `MlflowClient.create_model_version` of one small logged model (nothing to hash):
  at most 3 ms extra per version (median).
Runs are interleaved and medians taken; the SHA-256 pass is timed once per run over the
stored model directory (page cache warm, as for the loads). The full cycle with
`log_model` is reported beside it for context.

    python bench/bench_mlflow.py            # 200 MB, median of 5; 100 versions
    python bench/bench_mlflow.py --quick    # 8 MB, 2 runs, 10 versions: proves it works
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np
from run_all import Result, report

MB = 1_000_000


def _quiet() -> None:
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _model_class() -> Any:
    import mlflow

    class Weights(mlflow.pyfunc.PythonModel):  # no annotations: MLflow would read them
        def load_context(self, context):
            self.w = np.fromfile(context.artifacts["weights"], dtype="<f4")

        def predict(self, context, model_input):
            return [float(self.w[: len(model_input)].sum())]

    return Weights


class Store:
    """One tracking store (plain or flchain) with its own experiment directory."""

    def __init__(self, kind: str, root: Path):
        import mlflow

        self.kind = kind
        self.root = root / kind
        self.root.mkdir(parents=True)
        prefix = "flchain+" if kind == "flchain" else ""
        self.uri = f"{prefix}sqlite:///{self.root}/{kind}.db"
        mlflow.set_tracking_uri(self.uri)
        self.experiment = mlflow.create_experiment(kind, artifact_location=str(self.root / "art"))

    def use(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(experiment_id=self.experiment)

    def log(self, weights: Path | None) -> tuple[str, float]:
        import mlflow

        self.use()
        model = _model_class()()
        t0 = time.perf_counter()
        with mlflow.start_run():
            mlflow.log_params({"lr": "0.01", "epochs": "3"})
            mlflow.log_metric("loss", 0.1)
            info = mlflow.pyfunc.log_model(
                name="m", python_model=model, pip_requirements=["numpy"],
                artifacts={"weights": str(weights)} if weights else None)
        return info.model_id, time.perf_counter() - t0

    def register(self, model_id: str, name: str) -> tuple[str, float]:
        import mlflow

        self.use()
        t0 = time.perf_counter()
        mv = mlflow.register_model(f"models:/{model_id}", name)
        return str(mv.version), time.perf_counter() - t0

    def load(self, name: str, version: str, scratch: Path) -> float:
        import mlflow

        from flchain_plugin.mlflow import load_model

        self.use()
        uri = f"models:/{name}/{version}"
        t0 = time.perf_counter()
        if self.kind == "flchain":
            model = load_model(uri, dst_path=str(scratch))
        else:
            model = mlflow.pyfunc.load_model(uri)
        took = time.perf_counter() - t0
        assert model.predict([1, 2])[0] == model.predict([1, 2])[0]
        return took


def sha256_pass(directory: Path) -> float:
    """Seconds for one single-threaded SHA-256 pass over every file under `directory`."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    t0 = time.perf_counter()
    for path in files:
        with open(path, "rb") as f:
            hashlib.file_digest(f, "sha256")
    return time.perf_counter() - t0


def verified_copy(directory: Path, scratch: Path) -> float:
    """Seconds for the verified copy alone: what the plugin's load adds before loading."""
    from flchain_plugin.mlflow.commitment import copy_model_files

    scratch.mkdir()
    t0 = time.perf_counter()
    copy_model_files(directory, scratch)
    took = time.perf_counter() - t0
    shutil.rmtree(scratch)
    return took


def big_model(stores: dict[str, Store], root: Path, mb: int, runs: int
              ) -> dict[str, dict[str, float]]:
    import mlflow

    weights = root / "weights.bin"
    rng = np.random.default_rng(0)
    rng.standard_normal(mb * MB // 4, dtype=np.float32).tofile(weights)

    out: dict[str, dict[str, list[float]]] = {k: {"log": [], "register": [], "load": []}
                                              for k in stores}
    ids = {}
    for k, s in stores.items():
        ids[k], took = s.log(weights)
        out[k]["log"].append(took)
    stores["flchain"].use()
    stored = Path(mlflow.MlflowClient().get_logged_model(ids["flchain"]).artifact_location)
    shas: list[float] = []
    copies: list[float] = []
    for r in range(runs + 1):  # run 0 warms caches and imports, and is not counted
        order = list(stores) if r % 2 == 0 else list(reversed(stores))
        sha = sha256_pass(stored)
        copy = verified_copy(stored, root / f"copy-{r}")
        for k in order:
            s = stores[k]
            version, reg = s.register(ids[k], f"big-{k}")
            scratch = root / f"scratch-{k}-{r}"
            load = s.load(f"big-{k}", version, scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            if r:
                out[k]["register"].append(reg)
                out[k]["load"].append(load)
        if r:
            shas.append(sha)
            copies.append(copy)
    med = {k: {p: statistics.median(v) for p, v in parts.items()} for k, parts in out.items()}
    med["sha256"] = {"pass": statistics.median(shas), "copy": statistics.median(copies)}
    return med


def many_versions(stores: dict[str, Store], n: int) -> dict[str, float]:
    """Median seconds per create_model_version. Calls alternate between the two stores one
    by one, so bursts of machine load (fsync stalls from other work) hit both alike."""
    import mlflow

    clients = {}
    for k, s in stores.items():
        model_id, _ = s.log(None)
        client = mlflow.MlflowClient(tracking_uri=s.uri, registry_uri=s.uri)
        client.create_registered_model(f"many-{k}")
        client.create_model_version(f"many-{k}", f"models:/{model_id}", model_id=model_id)
        clients[k] = (client, model_id)
    times: dict[str, list[float]] = {k: [] for k in stores}
    for r in range(n):
        for k in (list(stores) if r % 2 == 0 else list(reversed(stores))):
            stores[k].use()
            client, model_id = clients[k]
            t0 = time.perf_counter()
            client.create_model_version(f"many-{k}", f"models:/{model_id}", model_id=model_id,
                                        tags={"stage": "candidate"})
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def ledger_append(root: Path, n: int) -> tuple[float, float]:
    """Median seconds per durable one-entry append of an `mlflow` entry (the ledger's own
    cost), and per plugin commit of one (identity check, append, signed checkpoint)."""
    from flchain_plugin import entries as E
    from flchain_plugin.commit import log_signer
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.mlflow.identity import Commitments, commit_once

    def entry(i: int) -> E.Mlflow:
        return E.Mlflow(kind="model_version", model_id="m-x", name="x", version=str(i),
                        files=E.Digest("sha256:" + "ab" * 32))

    appends, commits = [], []
    with Ledger(root / "append-only.db") as led, Ledger(root / "commit-once.db") as once:
        signer = log_signer(once)
        index = Commitments(once)  # as a store keeps it
        for i in range(n):
            t0 = time.perf_counter()
            led.append([entry(i)])
            t1 = time.perf_counter()
            commit_once(once, entry(i), signer, index)
            commits.append(time.perf_counter() - t1)
            appends.append(t1 - t0)
    return statistics.median(appends), statistics.median(commits)


@click.command()
@click.option("--mb", default=200, show_default=True, help="Model size in MB (float32).")
@click.option("--runs", default=5, show_default=True, help="Timed register+load runs (median).")
@click.option("--versions", default=100, show_default=True, help="create_model_version calls.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the stores go (default: a temporary directory, removed after).")
@click.option("--quick", is_flag=True, help="8 MB, 2 runs, 10 versions: judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(mb: int, runs: int, versions: int, workdir: Path | None, quick: bool,
         as_json: bool) -> None:
    """flchain+sqlite vs sqlite: register + load of a big model, many model versions."""
    if quick:
        mb, runs, versions = 8, 2, 10
    if mb < 1 or runs < 1 or versions < 1:
        raise click.BadParameter("--mb, --runs and --versions must be >= 1")
    _quiet()
    import mlflow

    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="bench-mlflow-")
        root = Path(tmp)
    else:
        root = workdir
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
    try:
        stores = {k: Store(k, root) for k in ("plain", "flchain")}
        big = big_model(stores, root, mb, runs)
        per = many_versions(stores, versions)
        append = ledger_append(root, versions)
        from flchain_plugin.ledger import Ledger

        with Ledger(stores["flchain"].root / "flchain.db.flchain.db", create=False) as led:
            ledger_ok, ledger_size = led.verify().ok, led.size
    finally:
        mlflow.set_tracking_uri(None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    judged = not quick
    p, f = big["plain"], big["flchain"]
    sha = big["sha256"]["pass"]
    load_extra, reg_extra = f["load"] - p["load"], f["register"] - p["register"]
    rl_plain, rl_fl = p["register"] + p["load"], f["register"] + f["load"]
    cycle_plain, cycle_fl = p["log"] + rl_plain, f["log"] + rl_fl
    extra_ms = (per["flchain"] - per["plain"]) * 1e3
    results = [
        Result("load_extra", f"verified load, {mb} MB: extra time over the plain load",
               load_extra, "s", baseline=sha, baseline_name="one SHA-256 pass, same files",
               ratio=load_extra / sha, target="extra ≤ 1.25× one SHA-256 pass (ratio ≤ 1.25)",
               passed=(load_extra <= 1.25 * sha) if judged else None),
        Result("register_extra", f"register_model, {mb} MB: extra time (re-hash from storage)",
               reg_extra, "s", baseline=sha, baseline_name="one SHA-256 pass, same files",
               ratio=reg_extra / sha, target="extra ≤ 1.1× one SHA-256 pass (ratio ≤ 1.1)",
               passed=(reg_extra <= 1.10 * sha) if judged else None),
        Result("create_model_version_extra", "create_model_version, nothing to hash: extra "
               "per version (median)", extra_ms, "ms", baseline=per["plain"] * 1e3,
               baseline_name="sqlite:/// create_model_version", ratio=None,
               target="≤ 3 ms per version",
               passed=(extra_ms <= 3.0) if judged else None),
        Result("register_load", f"register + load, {mb} MB model (flchain+sqlite; context, "
               "issue 4's ≤ 10% target withdrawn by issue 13)", rl_fl, "s",
               baseline=rl_plain, baseline_name="sqlite:/// register + load",
               ratio=rl_plain / rl_fl),
        Result("register", f"register_model, {mb} MB (re-hash from storage + check)",
               f["register"], "s", baseline=p["register"], baseline_name="sqlite:/// register",
               ratio=p["register"] / f["register"]),
        Result("load", f"load, {mb} MB (private copy hashed as written, verify, deserialize)",
               f["load"], "s", baseline=p["load"],
               baseline_name="sqlite:/// pyfunc.load_model in place",
               ratio=p["load"] / f["load"]),
        Result("log_register_load", f"log_model + register + load, {mb} MB", cycle_fl, "s",
               baseline=cycle_plain, baseline_name="sqlite:/// same cycle",
               ratio=cycle_plain / cycle_fl),
        Result("sha256_file", f"one SHA-256 pass over the {mb} MB model's files (the unit "
               "of the targets above)", sha, "s"),
        Result("verified_copy", "of the load's extra: the private copy, copied in the kernel "
               "and hashed from the copy on a second thread", big["sha256"]["copy"], "s",
               baseline=sha, baseline_name="one SHA-256 pass", ratio=big["sha256"]["copy"] / sha),
        Result("ledger_append", "of which: one durable ledger append (fsync; context)",
               append[0] * 1e3, "ms"),
        Result("commit_once", "of which: one plugin commit (identity check, append, signed "
               "checkpoint in one transaction, one fsync; context)", append[1] * 1e3, "ms"),
        Result("create_model_version", f"create_model_version × {versions} (flchain+sqlite)",
               per["flchain"] * 1e3, "ms", baseline=per["plain"] * 1e3,
               baseline_name="sqlite:/// create_model_version",
               ratio=per["plain"] / per["flchain"]),
    ]
    report("mlflow", results, as_json=as_json, quick=quick,
           params={"model_mb": mb, "runs": runs, "versions": versions,
                   "ledger_entries": ledger_size, "ledger_verify_ok": ledger_ok,
                   "cpus": os.cpu_count()},
           notes=[f"median of {runs} interleaved runs after one warm-up; files in page cache; "
                  "create_model_version: median per call, calls alternating between the stores",
                  "plain load reads the stored directory in place; the plugin copies it into a "
                  "private directory, hashing each buffer as it is written, so the bytes it "
                  "verifies are the bytes it loads",
                  "extra-time ratios are extra / one SHA-256 pass: lower is better",
                  f"log_model: plain {p['log']:.2f} s, flchain {f['log']:.2f} s "
                  "(one call each; the plugin hashes the files at finalize)"])


if __name__ == "__main__":
    main()
