"""What only the PostgreSQL store has to show (the store-neutral suites run on both stores
through `ledger_at`): readers never wait for a writer, writers queue on the advisory lock,
the server ledger's key convention, read-only opening, one-line errors, and tampering by
whoever holds the database, planted with psycopg as such a party would."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from flwr.serverapp.strategy import FedAvg

from flchain_plugin import entries as E
from flchain_plugin.commit import LOG_KEY_ENV, commit, log_signer, open_ledger
from flchain_plugin.flower import LedgerStrategy
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import KeyFileError
from flchain_plugin.store import StoreError
from flchain_plugin.store.postgres import PostgresStore
from flchain_plugin.store.url import redact

FLCHAIN = str(Path(__import__("sys").executable).with_name("flchain"))


def dg(label: object) -> str:
    return "sha256:" + hashlib.sha256(str(label).encode()).hexdigest()


def batch(n: int, start: int = 0) -> list[E.Entry]:
    return [E.Erasure(blob=dg(i), reason=f"r{i}") for i in range(start, start + n)]


def test_readers_never_wait_and_writers_queue(postgres_url: str) -> None:
    """A batch left uncommitted inside the write lock: another connection reads the last
    committed tree at once, and a second writer waits for the commit, then extends it."""
    writer = Ledger(postgres_url)
    writer.append(batch(3))
    holder = PostgresStore(postgres_url)
    reader = Ledger(postgres_url, create=False)
    second = Ledger(postgres_url, create=False)
    appended: list[int] = []
    with holder.writer() as w:
        head = w.head()
        assert head is not None and head.size == 3
        started = time.perf_counter()
        assert reader.size == 3 and reader.verify().ok  # not blocked by the open write
        assert time.perf_counter() - started < 5
        t = threading.Thread(target=lambda: appended.append(second.append(batch(2, 3)).size))
        t.start()
        time.sleep(0.5)
        assert appended == []  # the second writer is queued on the lock
    t.join(timeout=30)
    assert appended == [5] and reader.size == 5 and reader.verify().ok
    for led in (writer, reader, second):
        led.close()
    holder.close()


def test_an_empty_database_is_no_ledger(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="no ledger in this database; create one with"):
        Ledger(postgres_url, create=False)
    with pytest.raises(StoreError, match="no ledger"):
        Ledger(postgres_url, read_only=True)
    with psycopg.connect(postgres_url) as c:  # nothing was created by looking
        assert c.execute("SELECT to_regclass('meta')").fetchone() == (None,)


def test_another_schema_version_is_refused(postgres_url: str) -> None:
    Ledger(postgres_url).close()
    with psycopg.connect(postgres_url) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="ledger schema '99', want '1'"):
        Ledger(postgres_url)


def test_read_only_reads_and_refuses_writes(postgres_url: str) -> None:
    with Ledger(postgres_url) as led:
        led.append(batch(4))
    with Ledger(postgres_url, read_only=True) as ro:
        assert ro.size == 4 and ro.verify().ok
        ro.inclusion_proof(2).verify()
        with pytest.raises(StoreError, match="opened read-only"):
            ro.append(batch(1, 4))
        assert ro.size == 4


def test_unreachable_servers_and_bad_urls_are_one_line(postgres_server: str) -> None:
    down = "postgresql://flchain:s3cret@127.0.0.1:1/ledger"
    with pytest.raises(StoreError, match="cannot reach the PostgreSQL ledger") as e:
        Ledger(down)
    assert "s3cret" not in str(e.value) and redact(down) in str(e.value)
    with pytest.raises(StoreError, match=r"cannot reach|not a usable"):
        Ledger("postgresql://127.0.0.1:notaport/x")
    for args in (["--ledger", down, "verify"], ["--ledger", down, "--json", "info"]):
        done = subprocess.run([FLCHAIN, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("flchain: error: ") and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "s3cret" not in done.stderr


def test_the_log_key_of_a_server_ledger(postgres_url: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No file to keep a key beside: $FLCHAIN_LOG_KEY names it (created on first use, then
    the same key for every writer), else a clear error; `signer=` always wins."""
    monkeypatch.delenv(LOG_KEY_ENV, raising=False)
    led = open_ledger(postgres_url)
    with pytest.raises(KeyFileError, match=f"no file to keep its checkpoint key.*{LOG_KEY_ENV}"):
        log_signer(led)
    with pytest.raises(KeyFileError):
        LedgerStrategy(FedAvg(), postgres_url)
    key = tmp_path / "log.key"
    monkeypatch.setenv(LOG_KEY_ENV, str(key))
    first = log_signer(led)
    assert key.exists() and first.name == led.origin
    assert log_signer(open_ledger(postgres_url)).verifier.vkey == first.verifier.vkey
    strategy = LedgerStrategy(FedAvg(), postgres_url, blobs=tmp_path / "blobs")
    assert isinstance(strategy.ledger.store, PostgresStore)
    assert strategy.signer.verifier.vkey == first.verifier.vkey
    done = commit(led, batch(2), built_for=0, signer=first)
    assert done.checkpoint is not None and led.verify(verifier=first.verifier).ok


def test_the_flchain_command_on_a_server_ledger(postgres_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOG_KEY_ENV, raising=False)
    run: Callable[..., subprocess.CompletedProcess[str]] = lambda *a: subprocess.run(  # noqa: E731
        [FLCHAIN, "--ledger", postgres_url, *a], capture_output=True, text=True, timeout=60)
    done = run("init")
    assert done.returncode == 2 and LOG_KEY_ENV in done.stderr
    monkeypatch.setenv(LOG_KEY_ENV, str(tmp_path / "log.key"))
    assert run("init", "--origin", "example.com/pg").returncode == 0
    assert (tmp_path / "log.key").exists()
    assert "already holds a ledger" in run("init").stderr
    line = E.Erasure(blob=dg(1), reason="x").encode().decode()
    source = tmp_path / "e.jsonl"
    source.write_text(line + "\n")
    assert run("append", str(source)).returncode == 0
    signed = run("checkpoint", "sign", "--key", str(tmp_path / "log.key"))
    assert signed.returncode == 0, signed.stderr
    done = run("--json", "verify")
    assert done.returncode == 0, done.stderr
    assert '"size": 1' in done.stdout



def test_a_database_error_after_opening_is_bad_input_not_a_failed_check(
        postgres_url: str) -> None:
    """A server ledger that opens but cannot be read (a table dropped under it) ends with
    exit 2 and one line, as an unreadable SQLite file does; exit 1 means "does not verify"."""
    with Ledger(postgres_url, origin="example.com/gone") as led:
        led.append(batch(3))
    with psycopg.connect(postgres_url) as c:
        c.execute("DROP TABLE nodes")
    done = subprocess.run([FLCHAIN, "--ledger", postgres_url, "prove", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr

# -- tampering by whoever holds the database ------------------------------------------------


@pytest.fixture
def tampered(postgres_url: str) -> Callable[[str], str]:
    """A signed ledger of 300 entries in 7 batches; `tampered(sql)` runs `sql` on it as a
    database superuser would and returns the first problem `verify` names."""
    with Ledger(postgres_url, origin="example.com/t") as led:
        from flchain_plugin.notes import generate_key

        key = generate_key(led.origin)
        for b, n in enumerate((1, 40, 59, 100, 3, 64, 33)):
            led.append(batch(n, b * 1000), signer=key)
        assert led.verify(verifier=key.verifier).ok

    def edit(sql: str) -> str:
        with psycopg.connect(postgres_url) as c:
            c.execute(sql)  # type: ignore[arg-type]
        with Ledger(postgres_url, create=False) as led:
            report = led.verify(verifier=key.verifier)
        assert report.problem is not None, sql
        return str(report.problem)

    return edit


@pytest.mark.parametrize(("sql", "named"), [
    ("UPDATE entries SET data = overlay(data placing '\\x21'::bytea from 20 for 1) "
     "WHERE idx = 57", "57"),
    ("UPDATE entries SET leaf = overlay(leaf placing '\\x00'::bytea from 1 for 1) "
     "WHERE idx = 120", "120"),
    ("DELETE FROM entries WHERE idx = 250", "250"),
    ("UPDATE nodes SET hash = overlay(hash placing '\\x00'::bytea from 3 for 1) "
     "WHERE id = (SELECT min(id) FROM nodes)", "node level 4 index 0"),
    ("INSERT INTO nodes (id, hash) VALUES ((9::bigint << 40) | 7, '\\x00'::bytea)",
     "level 9 index 7: row outside"),
    ("INSERT INTO entries VALUES (-5, 'erasure', '\\x00'::bytea, '\\x00'::bytea)", "-5"),
    ("DELETE FROM heads WHERE size = (SELECT max(size) FROM heads)", "tree head was removed"),
    ("UPDATE heads SET root = sha256(root) WHERE size = 100", "100"),
    ("DELETE FROM refs WHERE idx = 99", "99"),
    ("INSERT INTO entries VALUES (300, 'erasure', '\\x00'::bytea, '\\x00'::bytea)", "300"),
    ("INSERT INTO heads VALUES (0, '\\x00'::bytea, 0)", "size 0"),
    ("INSERT INTO refs VALUES (1, 400)", "400"),
    ("INSERT INTO checkpoints (id, size, note) VALUES (-1, 1, 'x')", "-1"),
    ("UPDATE checkpoints SET note = replace(note, E'\\n300\\n', E'\\n299\\n')",
     "checkpoint at size 300"),
])
def test_tampering_is_named(tampered: Callable[[str], str], sql: str, named: str) -> None:
    assert named in tampered(sql)


def test_a_consistent_rollback_is_caught_only_by_a_checkpoint_held_elsewhere(
        postgres_url: str) -> None:
    """What the README says a superuser can do: cut the log back to an earlier batch, with
    every row after it. The database alone still verifies; the checkpoint a client kept
    from before no longer matches it."""
    from flchain_plugin.notes import generate_key

    with Ledger(postgres_url, origin="example.com/r") as led:
        key = generate_key(led.origin)
        for n in (50, 150, 100):
            led.append(batch(n, led.size), signer=key)
        held = led.latest_checkpoint()
        assert held is not None
    cut = 200
    with psycopg.connect(postgres_url) as c:
        for sql in ("DELETE FROM entries WHERE idx >= %(n)s", "DELETE FROM refs WHERE idx >= %(n)s",
                    "DELETE FROM heads WHERE size > %(n)s",
                    "DELETE FROM checkpoints WHERE size > %(n)s",
                    "DELETE FROM nodes WHERE ((id & 1099511627775) + 1) "
                    "* (1::bigint << (id >> 40)::int) > %(n)s"):
            c.execute(sql, {"n": cut})  # type: ignore[arg-type]
    with Ledger(postgres_url, create=False) as led:
        assert led.size == cut and led.verify(verifier=key.verifier).ok
        with pytest.raises(ValueError, match="does not match this ledger"):
            led.add_checkpoint_note(held, key.verifier)


def test_a_proof_over_a_deleted_leaf_row_says_the_ledger_is_damaged(postgres_url: str) -> None:
    """The leaf and the path of an inclusion proof are read in one query: a leaf row gone
    from the database is still a damaged ledger, never a proof with a hole in it."""
    with Ledger(postgres_url) as led:
        led.append(batch(40))
        proof = led.inclusion_proof(17)
        assert proof.leaf_hash == led.store.nodes([17])[17]
        proof.verify()
    with psycopg.connect(postgres_url) as c:
        c.execute("DELETE FROM entries WHERE idx = 17")
    with Ledger(postgres_url, create=False) as led:
        with pytest.raises(StoreError, match="ledger is damaged"):
            led.inclusion_proof(17)
        led.inclusion_proof(39).verify()  # a path clear of the deleted row
