"""Fixtures shared by several test modules."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
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


# -- PostgreSQL (tests/postgres_server.py) ---------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The base URL of a real PostgreSQL server: $FLCHAIN_TEST_POSTGRES, else a throwaway
    cluster this test process starts (stopped at exit). Skips with how to install when
    there is none, fails instead under CI=true."""
    from postgres_server import PostgresUnavailable, server_url

    try:
        return server_url()
    except PostgresUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {e}")
        pytest.skip(str(e))


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh empty database for one test (dropped after it): its URL."""
    from postgres_server import drop_database, new_database

    url = new_database(postgres_server)
    yield url
    drop_database(url, postgres_server)


STORES = ("sqlite", "postgres")
"""The stores every store/ledger test runs against."""


@pytest.fixture(params=STORES)
def ledger_at(request: pytest.FixtureRequest, tmp_path: Path
              ) -> Iterator[Callable[[str], str | Path]]:
    """`ledger_at(name)`: where the ledger `name` of this test lives, on each store in turn:
    `tmp_path / name` on SQLite, a fresh database (one per name) on PostgreSQL."""
    if request.param == "sqlite":
        yield lambda name: tmp_path / name
        return
    from postgres_server import drop_database, new_database

    base = request.getfixturevalue("postgres_server")
    made: dict[str, str] = {}

    def at(name: str) -> str:
        if name not in made:
            made[name] = new_database(base)
        return made[name]

    yield at
    for url in made.values():
        drop_database(url, base)
