"""Audits of a ledger that cannot be written: an archive, an auditor's read-only mount.

The directory and the file are made truly read-only: as root (who ignores permission
bits) with the immutable attribute (`chattr +i`, which binds root too), otherwise with
chmod. Every reading command must work there without creating a -wal or -shm file or
changing a byte, and a writing command must fail with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from flchain_plugin import entries as E
from flchain_plugin.cli import cli
from flchain_plugin.commit import commit, log_signer
from flchain_plugin.ledger import Ledger
from flchain_plugin.store import StoreError


def entry(i: int) -> E.Entry:
    return E.Dataset(dataset="sha256:" + f"{i:064x}", owner=f"o{i}", scheme="salted-v1")


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make `paths` read-only for this process, root included; undo afterwards."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root ignores permission bits and chattr is not installed")
        done = []
        try:
            for p in paths:
                r = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True)
                if r.returncode != 0:
                    pytest.skip(f"chattr +i is not supported here: {r.stderr.strip()}")
                done.append(p)
            yield
        finally:
            for p in reversed(done):
                subprocess.run(["chattr", "-i", str(p)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in paths}
        try:
            for p in paths:
                p.chmod(0o555 if p.is_dir() else 0o444)
            yield
        finally:
            for p, m in modes.items():
                p.chmod(m)


def make_archive(directory: Path) -> Path:
    directory.mkdir()
    path = directory / "archive.db"
    with Ledger(path, origin="example.com/archive") as led:
        signer = log_signer(led)
        led.pin_verifier(signer.verifier)
        for b in range(3):
            commit(led, [entry(10 * b + i) for i in range(4)], signer=signer)
    assert not Path(f"{path}-wal").exists()  # closed cleanly, as archived
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


READING = [
    ["head"], ["info"], ["log"], ["show", "0"], ["prove", "3"], ["consistency", "4"], ["verify"],
]


def test_every_reading_command_works_on_a_read_only_ledger(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "ro")
    before = digest(path)
    runner = CliRunner()
    with read_only(path, path.parent):
        with pytest.raises(OSError):  # really read-only, for this user too
            (path.parent / "probe").write_text("x")
        with pytest.raises(StoreError):  # as the ledger was opened before: read-write, WAL
            Ledger(path, create=False)
        for args in READING:
            r = runner.invoke(cli, ["--ledger", str(path), *args, "--json"])
            assert r.exit_code == 0, (args, r.stderr, r.output)
            json.loads(r.stdout)
        assert json.loads(runner.invoke(cli, ["--ledger", str(path), "verify", "--json"]).stdout)[
            "verifier_source"] == "pinned"
        r = runner.invoke(cli, ["--ledger", str(path), "append"],
                          input=json.dumps(entry(99).to_json()) + "\n")
        assert r.exit_code != 0 and r.stderr.count("\n") == 1, r.stderr
        assert "read-only" in r.stderr or "readonly" in r.stderr, r.stderr
        assert "Traceback" not in r.output
    assert sorted(p.name for p in path.parent.iterdir()) == ["archive.db", "archive.db.key"]
    assert digest(path) == before


def test_the_flchain_command_verifies_a_read_only_archive(tmp_path: Path) -> None:
    """The installed command in its own process, as an auditor runs it."""
    path = make_archive(tmp_path / "ro")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with read_only(path, path.parent):
        r = subprocess.run([sys.executable, "-m", "flchain_plugin.cli", "--ledger", str(path),
                            "verify", "--json"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["size"] == 12 and doc["head_signed"]


def test_the_python_api_opens_read_only_and_refuses_writes(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "ro")
    with read_only(path, path.parent), Ledger(path, read_only=True) as led:
        assert led.verify().ok and led.size == 12 and led[11].index == 11
        led.inclusion_proof(5).verify()
        led.consistency_proof(4).verify()
        with pytest.raises(StoreError, match="read-only"):
            led.append([entry(99)])
    with Ledger(path, read_only=True) as led:  # a writable directory: mode=ro, no WAL switch
        assert led.size == 12
        with pytest.raises(StoreError, match="read-only"):
            led.append([entry(99)])


def test_a_wal_without_its_shm_in_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    """Committed batches still in the -wal cannot be read there: refused, never skipped."""
    src = tmp_path / "live.db"
    with Ledger(src, origin="example.com/live") as led:
        led.append([entry(0)])
        holder = sqlite3.connect(src)  # keeps the -wal from being folded in on close
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        led.append([entry(1)])
        archive = tmp_path / "archive"
        archive.mkdir()
        shutil.copyfile(src, archive / "live.db")
        shutil.copyfile(f"{src}-wal", archive / "live.db-wal")
    holder.close()
    path = archive / "live.db"
    assert Path(f"{path}-wal").stat().st_size > 0
    with read_only(path, Path(f"{path}-wal"), archive):
        r = CliRunner().invoke(cli, ["--ledger", str(path), "verify"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "-wal" in r.stderr and "-shm" in r.stderr
    with Ledger(path, create=False) as led:  # writable again: SQLite replays the -wal
        assert led.size == 2 and led.verify().ok
