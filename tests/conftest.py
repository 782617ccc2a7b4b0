"""Fixtures shared by several test modules."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mlflow_store(directory: Path, experiment: str) -> Iterator[tuple[str, str]]:
    """A real `flchain+sqlite` MLflow tracking store in `directory`, set as the tracking
    URI with an experiment of its own; yields (uri, experiment id) and restores MLflow's
    global state (tracking URI, MLFLOW_EXPERIMENT_ID) afterwards."""
    import mlflow

    uri = f"flchain+sqlite:///{directory}/mlflow.db"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mp.delenv("FLCHAIN_LEDGER", raising=False)
    mp.delenv("FLCHAIN_MLFLOW_MODE", raising=False)
    mp.setenv("MLFLOW_EXPERIMENT_ID", "")  # set_experiment writes it; undo() restores
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment(experiment, artifact_location=str(directory / "artifacts"))
        mlflow.set_experiment(experiment_id=exp)
        yield uri, exp
    finally:
        mlflow.set_tracking_uri(None)
        mp.undo()


@pytest.fixture
def quiet_flower() -> Iterator[None]:
    """Flower's INFO logs and Ray's warnings, out of the way of the test output."""
    logging.getLogger("flwr").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
