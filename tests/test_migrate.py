"""`flchain migrate`: a SQLite ledger copied to PostgreSQL and back is the same log (same
roots at every stored size, checkpoints and pinned key included); an interrupted copy is
resumed; a destination holding any other log is refused with nothing written."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flchain_plugin import entries as E
from flchain_plugin.ledger import Ledger
from flchain_plugin.migrate import CopyDiffers, NotAPrefix, migrate
from flchain_plugin.notes import generate_key

FLCHAIN = str(Path(sys.executable).with_name("flchain"))
BATCHES = (1, 7, 64, 3, 200, 1, 31)


def dg(label: object) -> str:
    return "sha256:" + hashlib.sha256(str(label).encode()).hexdigest()


def batch(n: int, start: int) -> list[E.Entry]:
    return [E.Erasure(blob=dg(i), reason=f"r{i % 7}") for i in range(start, start + n)]


def signed_ledger(path: Path, batches: tuple[int, ...] = BATCHES) -> Ledger:
    led = Ledger(path, origin="example.com/migrate")
    key = generate_key(led.origin)
    led.pin_verifier(key.verifier)
    for n in batches:
        led.append(batch(n, led.size), signer=key)
    led.sign_checkpoint(key, size=led.heads()[2].size)  # a second note of an older size
    return led


def same_log(a: Ledger, b: Ledger) -> None:
    assert [(h.size, h.root) for h in a.heads()] == [(h.size, h.root) for h in b.heads()]
    assert [e.data for e in a.iter_entries()] == [e.data for e in b.iter_entries()]
    assert a.store.checkpoints() == b.store.checkpoints()
    assert a.pinned_verifier == b.pinned_verifier and a.origin == b.origin
    assert b.verify().ok and b.verify().checkpoints == len(a.store.checkpoints())


def test_round_trip_sqlite_postgres_sqlite(tmp_path: Path, postgres_url: str) -> None:
    src = signed_ledger(tmp_path / "src.db")
    with Ledger(postgres_url, origin=src.origin) as pg:
        done = migrate(src, pg)
        assert (done.size, done.heads, done.copied_heads) == (src.size, len(BATCHES),
                                                               len(BATCHES))
        assert done.copied_checkpoints == len(BATCHES) + 1 and done.root == src.head().root
        same_log(src, pg)
        with Ledger(tmp_path / "back.db", origin=pg.origin) as back:
            migrate(pg, back)
            same_log(src, back)
            for h in src.heads():  # a proof from the copy checks against the source's root
                p = back.inclusion_proof(h.size - 1, h.size)
                assert p.root == h.root
                p.verify()
    src.close()


def test_an_interrupted_copy_is_resumed(tmp_path: Path, postgres_url: str) -> None:
    src = signed_ledger(tmp_path / "src.db", BATCHES[:4])
    with Ledger(postgres_url, origin=src.origin) as pg:
        migrate(src, pg)
        key = generate_key(src.origin)  # not the pinned key: verify must name its notes
        for n in BATCHES[4:]:
            src.append(batch(n, src.size))
        done = migrate(src, pg)
        assert done.copied_heads == len(BATCHES) - 4 and done.copied_checkpoints == 0
        same_log(src, pg)
        again = migrate(src, pg)  # nothing left to copy
        assert (again.copied_entries, again.copied_heads) == (0, 0)
        src.sign_checkpoint(key)
        with pytest.raises(CopyDiffers, match="checkpoint"):
            migrate(src, pg)  # the copied note does not verify under the pinned key
    src.close()


def test_another_log_is_refused_and_nothing_written(tmp_path: Path, postgres_url: str) -> None:
    src = signed_ledger(tmp_path / "src.db")
    with Ledger(postgres_url, origin=src.origin) as other:
        other.append(batch(8, 1))  # same origin, other entries
        head = other.head()
        with pytest.raises(NotAPrefix, match="tree heads differ"):
            migrate(src, other)
        assert other.head() == head and other.store.checkpoints() == []
    longer = signed_ledger(tmp_path / "longer.db", (*BATCHES, 5))
    with Ledger(tmp_path / "copy.db", origin=src.origin) as copy:
        migrate(longer, copy)
        with pytest.raises(NotAPrefix, match="only"):
            migrate(src, copy)
    src.close()
    longer.close()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLCHAIN, *args], capture_output=True, text=True, timeout=120)


def test_the_migrate_command(tmp_path: Path, postgres_url: str) -> None:
    signed_ledger(tmp_path / "src.db").close()
    done = run("migrate", str(tmp_path / "src.db"), postgres_url, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["consistent"] and doc["checked_sizes"] == len(BATCHES)
    assert doc["copied_entries"] == sum(BATCHES) and doc["destination"] == postgres_url
    human = run("migrate", postgres_url, str(tmp_path / "back.db"))
    assert human.returncode == 0 and "all equal" in human.stdout
    assert run("--ledger", str(tmp_path / "back.db"), "verify").returncode == 0
    assert run("init", "--ledger", str(tmp_path / "x.db")).returncode == 0
    for args, says in (([str(tmp_path / "x.db"), postgres_url], "holds another ledger"),
                       ([str(tmp_path / "src.db"), str(tmp_path / "src.db")], "same ledger"),
                       ([str(tmp_path / "none.db"), postgres_url], "no ledger at")):
        bad = run("migrate", *args)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr
