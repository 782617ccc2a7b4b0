"""The anchoring scenario of test_anchor.py against a real EVM node: anvil (Foundry), from
the npm registry (`bash integrations/evm/install-anvil.sh`), started here on 127.0.0.1 on
a free port. Then the operator's commands, `flchain anchor deploy`, `flchain anchor` and
`flchain anchor verify`, over JSON-RPC. With CI=true a missing anvil is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("web3")

from click.testing import CliRunner
from eth_account import Account
from test_anchor import (
    ROUNDS,
    round_batch,
    scenario_anchor_and_mint,
    scenario_reverts,
    scenario_rewritten_history,
)
from web3 import Web3

from flchain_plugin.chain.client import Chain
from flchain_plugin.cli.root import cli
from flchain_plugin.commit import commit, log_signer
from flchain_plugin.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
INSTALL = "bash integrations/evm/install-anvil.sh"


def anvil_binary() -> str | None:
    local = REPO / "integrations" / "evm" / "node_modules" / ".bin" / "anvil"
    return shutil.which("anvil") or (str(local) if local.exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    binary = anvil_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"anvil is missing: CI must install it ({INSTALL})")
        pytest.skip(f"anvil is not installed: run `{INSTALL}`")
    port = _free_port()
    proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        w3 = Web3(Web3.HTTPProvider(url))
        deadline = time.monotonic() + 30
        while not _answers(w3):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"anvil did not start on {url}: {err[-500:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(w3: Web3) -> bool:
    try:
        return w3.eth.block_number >= 0
    except Exception:  # not listening yet
        return False


@pytest.fixture
def key_file(anvil_url: str, tmp_path: Path) -> Path:
    """A fresh account, funded from anvil's first (unlocked) account; its key in a file."""
    account = Account.create()
    w3 = Web3(Web3.HTTPProvider(anvil_url))
    w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(
        {"from": w3.eth.accounts[0], "to": account.address, "value": 10**20}))
    path = tmp_path / "chain.key"
    path.write_text(account.key.hex() + "\n")
    return path


def test_anchor_scenario_on_anvil(anvil_url: str, key_file: Path, tmp_path: Path) -> None:
    chain = Chain.connect(anvil_url, key_file)
    assert chain.id == f"eip155:{chain.w3.eth.chain_id}"
    led = scenario_anchor_and_mint(chain, tmp_path)
    scenario_reverts(chain, led)
    scenario_rewritten_history(chain, led, tmp_path)


def _run(args: list[str]) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, args, prog_name="flchain")
    return r.exit_code, r.stdout, r.stderr


def test_operator_commands_on_anvil(anvil_url: str, key_file: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = tmp_path / "log.db"
    led = Ledger(ledger, create=True, origin="example.com/anvil-cli")
    commit(led, round_batch(1, ROUNDS[1]), signer=log_signer(led))
    led.close()
    monkeypatch.setenv("FLCHAIN_RPC", anvil_url)
    monkeypatch.setenv("FLCHAIN_CHAIN_KEY", str(key_file))
    code, out, err = _run(["anchor", "deploy", "--json"])
    assert code == 0, err
    dep = json.loads(out)
    monkeypatch.setenv("FLCHAIN_ANCHOR_CONTRACT", dep["anchor_contract"])
    monkeypatch.setenv("FLCHAIN_CREDIT_TOKEN", dep["credit_token"])
    monkeypatch.setenv("FLCHAIN_ANCHOR_FROM_BLOCK", str(dep["block"]))

    code, out, err = _run(["anchor", "--ledger", str(ledger), "--json"])
    assert code == 0, err
    done = json.loads(out)
    assert done["size"] == 1 + 2 * len(ROUNDS[1]) and done["minted"][0]["total"] == 80
    code, out, err = _run(["anchor", "--ledger", str(ledger)])  # anchors the anchor entry
    assert code == 0 and "checkpoint anchored" in out, err

    code, out, err = _run(["anchor", "verify", "--ledger", str(ledger), "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] and [a["size"] for a in doc["anchors"]] == [done["size"], done["size"] + 1]
    assert doc["minted_rounds"] == 1 and doc["minted_total"] == 80
    assert doc["anchor_entries"] == 2 and doc["anchor_entries_elsewhere"] == []

    # the operator rewrites the whole file: same origin, same key, re-signed everywhere
    key = log_signer(Ledger(ledger, create=False))
    forged = tmp_path / "forged.db"
    fl = Ledger(forged, create=True, origin="example.com/anvil-cli")
    commit(fl, round_batch(1, {**ROUNDS[1], "9": 5}), signer=key)
    fl.close()
    code, out, err = _run(["anchor", "verify", "--ledger", str(forged)])
    assert code == 1
    assert err.count("\n") == 1 and "does not verify against the chain" in err
    assert f"size {done['size']} anchored in block" in err and "rewritten" in err

    # a non-growing anchor is refused by the contract: exit 2, one line, nothing recorded
    size = Ledger(ledger, create=False).size
    code, out, err = _run(["anchor", "--ledger", str(ledger), "--no-mint"])
    assert code == 0
    monkeypatch.setenv("FLCHAIN_ANCHOR_FROM_BLOCK", "0")
    code, _, err = _run(["anchor", "--ledger", str(forged)])
    assert code == 2 and "size does not grow" in err and err.count("\n") == 1
    assert Ledger(ledger, create=False).size == size + 1


def test_unreachable_node_is_one_line_exit_2(tmp_path: Path) -> None:
    ledger = tmp_path / "log.db"
    led = Ledger(ledger, create=True, origin="example.com/x")
    commit(led, round_batch(1, ROUNDS[1]), signer=log_signer(led))
    led.close()
    code, _, err = _run(["anchor", "verify", "--ledger", str(ledger), "--rpc",
                         f"http://127.0.0.1:{_free_port()}", "--contract", "0x" + "11" * 20])
    assert code == 2 and "no EVM node answers" in err and err.count("\n") == 1
