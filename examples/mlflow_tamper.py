"""Log a torch-trained model through the flchain MLflow plugin, tamper with it, watch it refused.

    python examples/mlflow_tamper.py               # works in a temporary directory
    python examples/mlflow_tamper.py --out runs/mlflow_tamper

1. Trains a small torch regressor and logs it with `mlflow.pytorch.log_model` to
   `flchain+sqlite:///…/mlflow.db`; the plugin commits the model's files, its run's
   params/metrics digest and the weights digest (passed with `digest_tags`) to the ledger
   `mlflow.db.flchain.db` beside the database.
2. Registers it as `regressor` version 1 (files re-hashed and checked) and loads it with
   `flchain_plugin.mlflow.load_model`, which verifies a fresh copy before unpickling.
3. Replaces the stored weights file with a booby-trapped pickle (unpickling it would create
   a marker file), the attack of mlflow#3175 and the pickle CVEs.
4. Loading version 1 is refused and names the file; the marker file was never created.
   Registering the tampered model again is refused too. `flchain mlflow verify` says the
   same from the command line.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel


class _Trap:
    """Unpickling this creates `path`: proof that a pickle was (or was not) read."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def train() -> object:
    import torch

    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(256, 1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
    net.final_loss = float(loss)  # type: ignore[assignment]
    return net


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Working directory (default: a new temporary directory).")
def main(out: Path | None) -> None:
    """Log, register, tamper, and see the load refused."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import mlflow
    import torch

    from flchain_plugin.commit import key_path
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.mlflow import TamperedModelError, digest_tags, load_model, verify_model
    from flchain_plugin.notes import load_private_key

    con = Console()
    root = (out or Path(tempfile.mkdtemp(prefix="flchain-mlflow-"))).absolute()
    root.mkdir(parents=True, exist_ok=True)
    uri = f"flchain+sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("flchain-tamper-demo")
    con.print(f"[bold]tracking URI[/] {uri}")

    net = train()
    with mlflow.start_run():
        mlflow.log_params({"lr": 0.05, "steps": 200, "hidden": 16})
        mlflow.log_metric("mse", net.final_loss)  # type: ignore[attr-defined]
        info = mlflow.pytorch.log_model(net, name="regressor", serialization_format="pickle",
                                        pip_requirements=[f"torch=={torch.__version__}"],
                                        tags=digest_tags(net))
    mv = mlflow.register_model(info.model_uri, "regressor")
    # A reader other than the writer pins the log's verifier key, handed out once: loads
    # then trust only checkpoints signed by it, never a ledger re-signed by another key.
    vkey = load_private_key(key_path(root / "mlflow.db.flchain.db")).verifier_key
    ok = verify_model(f"models:/regressor/{mv.version}", verifier=vkey)
    con.print(Panel(f"logged model {info.model_id}\nregistered regressor v{mv.version}\n"
                    f"files {ok.files}\nweights {ok.entry.entry.model}\n"  # type: ignore[attr-defined]
                    f"ledger entry #{ok.entry.index}, covered by a checkpoint of size "
                    f"{ok.size} signed by the pinned key {vkey.split('+')[0]}",
                    title="1-2. logged, committed, registered", expand=False))
    model = load_model(f"models:/regressor/{mv.version}", flavor="pytorch", verifier=vkey)
    con.print(f"verified load: prediction {float(model(torch.ones(1, 4))):.3f}")

    stored = Path(mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location)
    weights = next(p for p in (stored / "data").iterdir() if p.suffix == ".pth")
    marker = root / "PWNED"
    weights.write_bytes(pickle.dumps(_Trap(str(marker))))
    con.print(Panel(f"replaced {weights.relative_to(stored)} with a pickle that would create\n"
                    f"{marker}", title="3. tampered on disk", expand=False))

    try:
        load_model(f"models:/regressor/{mv.version}", flavor="pytorch")
    except TamperedModelError as e:
        con.print(Panel(f"[red]refused:[/] {e}\nmarker created: {marker.exists()}",
                        title="4. load", expand=False))
    else:
        raise SystemExit("the tampered model loaded; this must not happen")
    try:
        mlflow.register_model(info.model_uri, "regressor")
    except mlflow.exceptions.MlflowException as e:
        con.print(Panel(f"[red]refused:[/] {e.message}", title="4. register again",
                        expand=False))
    else:
        raise SystemExit("the tampered model was registered; this must not happen")

    cli = subprocess.run([sys.executable, "-m", "flchain_plugin.cli", "mlflow", "verify",
                          "models:/regressor/1", "--tracking-uri", uri],
                         capture_output=True, text=True)
    con.print(f"$ flchain mlflow verify models:/regressor/1  → exit {cli.returncode}")
    con.print(cli.stderr.strip().splitlines()[-1] if cli.stderr.strip() else cli.stdout)
    with Ledger(root / "mlflow.db.flchain.db", create=False) as led:
        report = led.verify()
        con.print(f"ledger {led.origin}: {led.size} entries, verify ok={report.ok}")
    if marker.exists():
        raise SystemExit("a pickle was read before verification")


if __name__ == "__main__":
    main()
