"""examples/flower-app, the standard Flower app: `flwr run .` on Flower's local simulation
(a detached SuperLink in simulation mode, stopped at the end), its run-config parsing, the
node keys signing_mod takes from the run config and node_config, and the 1,000-client
benchmark at small scale (bench/bench_scale.py --quick: the suite never runs 1,000).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flower_federation import free_port, program
from flwr.app import Context, RecordDict
from test_bench_smoke import check_results, json_line

from flchain_plugin.commit import ledger_path
from flchain_plugin.flower.keys import client_key
from flchain_plugin.flower.mod import SigningMod
from flchain_plugin.flower.policy import MedianNormBound
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import generate_key, load_private_key, save_private_key

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "flower-app"
sys.path.insert(0, str(APP))

from flchain_app import server_app  # noqa: E402
from flchain_app.client_app import keys_dir  # noqa: E402

pytestmark = pytest.mark.timeout(420)


def _env(home: Path) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "FLWR_HOME": str(home),
            "PYTHONPATH": str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            # the app's dependencies are this environment's: no `uv sync` per run
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
            "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
            "FLWR_DISABLE_UPDATE_CHECK": "1"}


def _stop_local_superlink(home: Path) -> None:
    """The detached SuperLink `flwr run` started (its log file is under `home`) and the
    SuperExec it started (named by its parent's pid)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "flower-superlink" in cmd and str(home) in cmd:
                found.append(int(d.name))
    for pid in found:
        os.kill(pid, 15)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`flwr run . --stream` of the app: 3 simulated SuperNodes, 2 rounds."""
    root = tmp_path_factory.mktemp("flower-app")
    home = root / "flwr"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    env = _env(home)
    try:
        done = subprocess.run(
            [program("flwr"), "run", str(APP), "--stream",
             "--federation-config", "num-supernodes=3",
             "-c", f'data-dir="{root / "data"}" num-server-rounds=2 examples-per-client=32'],
            capture_output=True, text=True, env=env, timeout=360, cwd=APP)
        run_id = re.search(r"Successfully started run (\d+)", done.stdout)
        assert run_id, done.stdout[-3000:] + done.stderr[-3000:]
        listed = subprocess.run([program("flwr"), "list", "local", "--run-id",
                                 run_id.group(1), "--format", "json"],
                                capture_output=True, text=True, env=env, timeout=120)
        yield {"root": root, "data": root / "data", "out": done.stdout,
               "runs": json.loads(listed.stdout)["runs"], "run": run_id.group(1)}
    finally:
        _stop_local_superlink(home)


def test_flwr_run_on_the_simulation_engine_records_and_verifies(simulated: dict[str, Any]):
    (row,) = simulated["runs"]
    assert row["status"] == "finished:completed", simulated["out"][-3000:]
    data = simulated["data"]
    with Ledger(data / "ledger.db", create=False) as led:
        assert led.verify().ok
        (run,) = [le.entry for le in led.iter_entries(type="run")]
        models = [le.entry for le in led.iter_entries(type="model")]
        members = {le.entry.key for le in led.iter_entries(type="member")}
        assert not list(led.iter_entries(type="rejected"))
    assert run.run == simulated["run"]
    assert [(m.round, len(m.inputs)) for m in models] == [(1, 3), (2, 3)]
    # the simulation fallback: keys-dir/client-<partition-id>.key, created on first use
    assert members == {client_key(data / "keys", p, create=False).verifier_key
                       for p in range(3)}


# -- the run config ----------------------------------------------------------------------------


def _config(tmp: Path, **changes: Any) -> dict[str, Any]:
    import tomllib

    with open(APP / "pyproject.toml", "rb") as f:
        cfg = dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])
    return {**cfg, "data-dir": str(tmp), **changes}


def test_the_run_config_sets_ledger_policy_and_keys(tmp_path: Path):
    keys = [generate_key(f"c{i}").verifier_key for i in range(2)]
    (tmp_path / "allowed.txt").write_text("# the consortium\n" + "\n".join(keys) + "\n")
    with Ledger(tmp_path / "ledger.db") as led:  # the operator's key, kept elsewhere
        save_private_key(generate_key(led.origin), tmp_path / "log.key", None)
    strategy = server_app.strategy(_config(
        tmp_path, **{"policy-allowed-keys": "allowed.txt", "policy-max-update-norm": "2.5",
                     "policy-max-examples": 100, "blobs": "none",
                     "ledger-key": str(tmp_path / "log.key")}))
    assert ledger_path(strategy.ledger) == tmp_path / "ledger.db"
    assert strategy.policy.allowed_keys == frozenset(keys)
    assert strategy.policy.max_update_norm == 2.5 and strategy.policy.max_examples == 100
    assert strategy.blobs is None and not (tmp_path / "ledger.db.key").exists()
    assert strategy.verifier_key == load_private_key(tmp_path / "log.key").verifier_key
    default = server_app.strategy(_config(tmp_path / "d"))
    assert isinstance(default.policy.max_update_norm, MedianNormBound)
    assert default.policy.allowed_keys is None


def test_the_ledger_may_be_a_postgresql_url(tmp_path: Path, postgres_url: str):
    with Ledger(postgres_url) as led:
        save_private_key(generate_key(led.origin), tmp_path / "log.key", None)
    strategy = server_app.strategy(_config(tmp_path, ledger=postgres_url,
                                           **{"ledger-key": "log.key", "blobs": "blobs"}))
    assert ledger_path(strategy.ledger) is None  # a server ledger, no file
    assert strategy.ledger.origin == load_private_key(tmp_path / "log.key").name
    assert strategy.blobs is not None and strategy.blobs.root == tmp_path / "blobs"
    strategy.ledger.close()


@pytest.mark.parametrize("key,value,named", [
    ("policy-max-update-norm", "big", "policy-max-update-norm"),
    ("ledger", "", "ledger"),
])
def test_a_bad_run_config_value_names_its_key(tmp_path: Path, key: str, value: Any, named: str):
    with pytest.raises(ValueError, match=named):
        server_app.strategy(_config(tmp_path, **{key: value}))


# -- the node's key -------------------------------------------------------------------------


def _ctx(node_config: dict[str, Any], run_config: dict[str, Any]) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(),
                   run_config=run_config)


def test_a_supernode_signs_with_the_key_its_node_config_names(tmp_path: Path):
    key = generate_key("n0")
    save_private_key(key, tmp_path / "n0.key", None)
    mod = SigningMod(keys_dir)
    run_config = _config(tmp_path / "sim")
    got = mod.signer(_ctx({"partition-id": 0, "flchain-key": str(tmp_path / "n0.key")},
                          run_config))
    assert got.verifier_key == key.verifier_key
    assert not (tmp_path / "sim" / "keys").exists()  # the fallback was not used
    # simulation: no flchain-key, the run config's keys-dir holds client-<partition-id>.key
    sim = mod.signer(_ctx({"partition-id": 4, "num-partitions": 5}, run_config))
    assert sim.verifier_key == client_key(tmp_path / "sim" / "keys", 4,
                                          create=False).verifier_key


def test_a_missing_node_key_is_never_created(tmp_path: Path):
    mod = SigningMod(keys_dir)
    missing = tmp_path / "nope.key"
    with pytest.raises(ValueError, match="flchain keygen"):
        mod.signer(_ctx({"partition-id": 0, "flchain-key": str(missing)},
                        _config(tmp_path)))
    assert not missing.exists()


# -- the 1,000-client benchmark, at small scale ----------------------------------------------


def test_bench_scale_quick(tmp_path: Path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_scale.py"), "--quick",
                           "--json"], capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path))
    doc = json_line(done)
    results = check_results(doc, "scale", {"scale_round_plain", "scale_round_ledger",
                                           "scale_added_per_round", "scale_added_per_client",
                                           "scale_share_no_engine"},
                            differences=frozenset({"scale_added_per_round",
                                                   "scale_added_per_client",
                                                   "scale_share_no_engine"}))
    assert doc["params"]["clients"] == 10
    assert results["scale_round_ledger"]["baseline"] == results["scale_round_plain"]["value"]
