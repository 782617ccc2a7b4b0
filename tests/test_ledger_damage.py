"""A damaged SQLite file: every page of a real ledger overwritten in turn.

Whatever page is hit (a B-tree interior page, an entry's leaf page, the schema, the
digest index), reading and verifying end either in a named Problem or in one StoreError
line that says what to do: never another exception, never a traceback, in this process
and in verify's worker processes alike.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flchain_plugin import entries as E
from flchain_plugin.cli import cli
from flchain_plugin.ledger import Ledger
from flchain_plugin.ledger_audit import verify_ledger
from flchain_plugin.store import StoreError

ENTRIES, BATCH = 3000, 300


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A cleanly closed ledger; its page size and page count."""
    path = tmp_path_factory.mktemp("damage") / "healthy.db"
    with Ledger(path, origin="example.com/damage") as led:
        for b in range(0, ENTRIES, BATCH):
            led.append([E.Credit(run="r", round=b, node=f"n{i}", rule="equal", amount=i * 7)
                        for i in range(b, b + BATCH)])
    assert not Path(f"{path}-wal").exists()
    with sqlite3.connect(path) as c:
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        pages = c.execute("PRAGMA page_count").fetchone()[0]
    c.close()
    assert pages > 10
    return path, page_size, pages


def damaged(healthy: tuple[Path, int, int], tmp_path: Path, page: int) -> Path:
    """A copy of the ledger with page `page` (1-based) overwritten by seeded noise."""
    path, page_size, _ = healthy
    out = tmp_path / f"page{page}.db"
    shutil.copyfile(path, out)
    noise = random.Random(page).randbytes(page_size)
    with open(out, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(noise)
    return out


def outcome(path: Path, **verify_kw: int) -> str:
    """'ok', 'problem: ...' or 'store: ...'; any other exception fails the test."""
    try:
        with Ledger(path, create=False) as led:
            report = verify_ledger(led, **verify_kw)
    except StoreError as e:
        text = str(e)
        assert "\n" not in text and ("restore it from a backup" in text or
                                     "not a flchain ledger" in text), text
        return f"store: {text}"
    return "ok" if report.ok else f"problem: {report.problem}"


def test_every_damaged_page_ends_in_a_problem_or_a_store_error(healthy: tuple[Path, int, int],
                                                               tmp_path: Path) -> None:
    path, _, pages = healthy
    assert outcome(path) == "ok"  # the undamaged file verifies: what follows is the damage
    seen = {outcome(damaged(healthy, tmp_path, p)).split(":")[0] for p in range(1, pages + 1)}
    assert "store" in seen  # damage SQLite itself notices


def test_damaged_pages_in_verify_workers(healthy: tuple[Path, int, int], tmp_path: Path) -> None:
    """Entries are read by worker processes: their damage is the parent's StoreError."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("verify uses worker processes only with two or more cores")
    _, _, pages = healthy
    results = [outcome(damaged(healthy, tmp_path, p), parallel_min=100)
               for p in range(2, pages + 1, 2)]
    from_workers = [r for r in results if r.startswith("store: verify worker for entries")]
    assert from_workers, results


@pytest.mark.parametrize("args", [["verify"], ["log"], ["head"], ["info"], ["show", "2999"],
                                  ["prove", "1500"]])
def test_commands_on_a_damaged_file_say_one_line(healthy: tuple[Path, int, int], tmp_path: Path,
                                                 args: list[str]) -> None:
    _, _, pages = healthy
    runner = CliRunner()
    codes = set()
    for page in range(1, pages + 1):
        path = damaged(healthy, tmp_path, page)
        r = runner.invoke(cli, ["--ledger", str(path), *args], catch_exceptions=False)
        codes.add(r.exit_code)
        if r.exit_code:
            err = r.stderr.strip()
            assert err.startswith("flchain: error: ") and "\n" not in err, (page, err)
    assert codes <= {0, 1, 2} and codes & {1, 2}


def test_the_flchain_command_on_a_damaged_file(healthy: tuple[Path, int, int],
                                               tmp_path: Path) -> None:
    """In its own process: exit status and one line, no traceback, for every page."""
    _, _, pages = healthy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    failures = 0
    for page in range(1, pages + 1, 3):
        path = damaged(healthy, tmp_path, page)
        r = subprocess.run([sys.executable, "-m", "flchain_plugin.cli", "--ledger", str(path),
                            "verify"], capture_output=True, text=True, env=env, timeout=120)
        assert "Traceback" not in r.stderr, r.stderr
        if r.returncode:
            failures += 1
            assert r.returncode in (1, 2) and r.stderr.strip().count("\n") == 0, r.stderr
    assert failures
