"""A witness that cosigns with Ed25519 `cosignature/v1` and ML-DSA-44 `subtree/v1` (type
0x06, tlog-cosignature v1.1), end to end: `flchain witness serve` with both keys, the quorum
client gathering from it, and the auditor's `flchain checkpoint verify --quorum K`.

One witness is one name whatever keys it signs with: two valid cosignatures from it count
once toward a quorum, and a client that knows only its post-quantum key counts it too.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from witness_servers import WitnessProcess, witnesses

from flchain_plugin import entries as E
from flchain_plugin import notes
from flchain_plugin.cli import cli
from flchain_plugin.commit import ledger_path
from flchain_plugin.ledger import Ledger
from flchain_plugin.quorum import Quorum, Witnesses, verify_quorum

ORIGIN = "pq.test/log"


def start_pq_witness(directory: Path, name: str, log_vkey: str) -> tuple[WitnessProcess, str]:
    """A witness process with an Ed25519 and an ML-DSA-44 cosigning key of one name:
    (the process, its ML-DSA-44 verifier key)."""
    ed, pq = directory / f"{name}.ed.key", directory / f"{name}.pq.key"
    notes.save_private_key(notes.generate_cosignature_key(name), ed, None)
    pq_signer = notes.generate_subtree_cosignature_key(name)
    notes.save_private_key(pq_signer, pq, None)
    cmd = [sys.executable, "-m", "flchain_plugin.cli", "witness", "serve", "--key", str(ed),
           "--key", str(pq), "--log", log_vkey, "--state", str(directory / f"{name}.db"),
           "--port", "0", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else b""  # type: ignore[union-attr]
    if not line:
        proc.kill()
        raise RuntimeError(proc.stderr.read().decode(errors="replace"))  # type: ignore[union-attr]
    doc = json.loads(line)
    assert pq_signer.verifier_key in doc["verifiers"]
    return WitnessProcess(name, doc["url"], doc["verifiers"][0], directory, proc), \
        pq_signer.verifier_key


def test_a_post_quantum_witness_in_a_quorum(tmp_path: Path) -> None:
    log = notes.generate_key(ORIGIN)
    pq_proc, pq_vkey = start_pq_witness(tmp_path, "wpq.test", log.verifier_key)
    try:
        with witnesses(tmp_path / "ed", ["w1.test", "w2.test"], [log.verifier_key]) as eds, \
                Ledger(tmp_path / "log.db", origin=ORIGIN) as led:
            led.append([E.Erasure(blob=f"sha256:{i:064x}", reason="r") for i in range(5)])
            endpoints = ((pq_proc.url, (pq_proc.vkey, pq_vkey)), *((w.url, w.vkey) for w in eds))
            q = Quorum(Witnesses(endpoints, 3))
            try:
                note = q.gather(led, led.sign_checkpoint(log), log.verifier)
            finally:
                q.close()
            lines = [ln for ln in note.splitlines() if ln.startswith("— wpq.test ")]
            assert len(lines) == 2  # Ed25519 and ML-DSA-44, one witness
            opened = notes.open_note(note, [log.verifier, notes.Verifier.parse(pq_vkey)])
            assert opened.signed_by(notes.Verifier.parse(pq_vkey))
            keys = [pq_proc.vkey, pq_vkey, *(w.vkey for w in eds)]
            assert verify_quorum(note, log.verifier, keys, 3).cosigners == (
                "w1.test", "w2.test", "wpq.test")
            # Known only by its post-quantum key, the witness still counts, once.
            only_pq = [pq_vkey, *(w.vkey for w in eds)]
            assert len(verify_quorum(note, log.verifier, only_pq, 3).cosigners) == 3
            # Two keys of one witness are not two witnesses.
            with pytest.raises(ValueError, match=r"in \[1, 1\] \(the witnesses\)"):
                verify_quorum(note, log.verifier, [pq_proc.vkey, pq_vkey], 2)
            _audit(tmp_path, led, note, log, keys)
    finally:
        pq_proc.stop()


def _without(note: str, name: str) -> str:
    return "".join(ln for ln in note.splitlines(keepends=True)
                   if not ln.startswith(f"— {name} "))


def _audit(tmp_path: Path, led: Ledger, note: str, log: notes.Signer, keys: list[str]) -> None:
    """`flchain checkpoint verify --quorum K`: the auditor counts as clients do."""
    path = tmp_path / "cp.note"
    base = ["--ledger", str(ledger_path(led)), "--json", "checkpoint", "verify", "--key-verifier",
            log.verifier_key, *(a for k in keys for a in ("--witness-verifier", k))]
    path.write_text(note)
    ok = CliRunner().invoke(cli, [*base, str(path), "--quorum", "3"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"], ok.output
    path.write_text(_without(_without(note, "w1.test"), "w2.test"))
    short = CliRunner().invoke(cli, [*base, str(path), "--quorum", "2"])
    assert short.exit_code == 1 and "is not witnessed" in short.stderr, short.output
    too_many = CliRunner().invoke(cli, [*base, str(path), "--quorum", "4"])
    assert too_many.exit_code == 2 and "more than the 3 witness" in too_many.stderr
