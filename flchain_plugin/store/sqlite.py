"""The embedded default store: one SQLite file, WAL, synchronous=FULL.

One writer at a time (BEGIN IMMEDIATE takes SQLite's write lock, so a second process
waits instead of forking the tree); readers see the last committed batch while a write
is under way. A crash at any instant leaves the file as of its last committed batch.

Read-only opening (audits of an archive or a read-only mount) never changes the journal
mode and never writes: the file is opened with SQLite's `mode=ro`, or `immutable=1` when
its directory is not writable and no `-wal` file is beside it (SQLite could not create the
`-shm` index it needs, and with no `-wal` there is nothing it would read from one). A
`-wal` left beside a file in a read-only directory without its `-shm` holds committed
batches SQLite cannot read there: that is refused, never silently read without them.

Any SQLite error (a damaged page, a locked or read-only file) leaves this module as a
StoreError whose one line says what to do.

Layout, chosen for append speed (rows and pages written per batch are the cost): an entry
row carries its leaf hash; `nodes` holds the subtrees the ledger chooses to keep; the
digest index is log-structured: new keys are appended to the unindexed `refs_recent`
(sequential pages, scanned by `find`) and merged into the indexed `refs` in one sorted
pass every REFS_MERGE_ROWS rows, inside the batch's own transaction. Random inserts into
one large index cost four times the append rate.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import KEY_COLUMNS, EntryRow, HeadRow, StoreError, key_gaps, node_key, ref_key

_LEVEL1 = node_key(1, 0)

SCHEMA_VERSION = "2"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, type TEXT NOT NULL,
                                    leaf BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS refs (digest INTEGER NOT NULL, idx INTEGER NOT NULL,
                                 PRIMARY KEY (digest, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refs_recent (digest INTEGER NOT NULL, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS heads (size INTEGER PRIMARY KEY, root BLOB NOT NULL,
                                  ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (id INTEGER PRIMARY KEY, size INTEGER NOT NULL,
                                        note TEXT NOT NULL);
"""


REFS_MERGE_ROWS = 65_536

# IN (...) lists longer than this are split; SQLite's default limit is 32766 variables.
_MAX_VARS = 900



def store_error(path: Path, e: sqlite3.Error) -> StoreError:
    """One line that says what went wrong with the file and what to do about it: the one
    reading of SQLite's errors, for the store and for the `flchain` command alike."""
    text = str(e) or type(e).__name__
    if isinstance(e, sqlite3.IntegrityError):
        return StoreError(f"{path}: a stored row is in the way of this write ({text}): the file "
                          "holds a row outside its tree; run `flchain verify` to name it")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path}: the ledger is read-only here ({text}); this command writes "
                          "to it: run it where the file and its directory are writable")
    if "locked" in text or "busy" in text:
        return StoreError(f"{path}: another process holds the ledger's lock ({text}); "
                          "try again when it is done")
    if "unable to open" in text:
        return StoreError(f"{path}: cannot open the ledger ({text}); check that its directory "
                          "exists and is readable (and writable, to create or append)")
    return StoreError(f"{path}: the ledger file is damaged ({text}); restore it from a backup "
                      "or a mirror, and keep the damaged copy for `flchain verify` to examine")


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise store_error(path, e) from e


def _read_only_uri(path: Path) -> str:
    """A `file:` URI opening `path` read-only (see the module docstring for `immutable`)."""
    quoted = urllib.parse.quote(str(path.resolve()))
    directory_writable = os.access(path.parent, os.W_OK)
    if directory_writable:
        return f"file:{quoted}?mode=ro"
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if wal.exists() and wal.stat().st_size > 0:
        if shm.exists():
            return f"file:{quoted}?mode=ro"
        raise StoreError(
            f"{path}: its -wal file holds committed batches that SQLite cannot read in a "
            "read-only directory without the -shm file: copy the ledger with its -wal to a "
            "writable directory, or let its writer close it cleanly before archiving"
        )
    return f"file:{quoted}?mode=ro&immutable=1"


class _SqliteWriter:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def head(self) -> HeadRow | None:
        return _head(self._conn)

    def entry_count(self) -> int:
        return _entry_count(self._conn)

    def nodes(self, keys: Sequence[int]) -> dict[int, bytes]:
        return _nodes(self._conn, keys)

    def put(
        self,
        entries: Sequence[tuple[int, str, bytes, bytes]],
        refs: Sequence[tuple[bytes, int]],
        nodes: Sequence[tuple[int, bytes]],
        head: HeadRow,
        checkpoint: str | None = None,
    ) -> None:
        c = self._conn
        c.executemany("INSERT INTO entries (idx, type, leaf, data) VALUES (?, ?, ?, ?)", entries)
        if refs:
            c.executemany(
                "INSERT INTO refs_recent (digest, idx) VALUES (?, ?)",
                list(dict.fromkeys((ref_key(d), i) for d, i in refs)),
            )
            first = entries[0][0]
            if first // REFS_MERGE_ROWS != (head.size - 1) // REFS_MERGE_ROWS:
                c.execute(
                    "INSERT OR IGNORE INTO refs SELECT digest, idx FROM refs_recent "
                    "ORDER BY digest, idx"
                )
                c.execute("DELETE FROM refs_recent")
        if nodes:
            c.executemany("INSERT INTO nodes (id, hash) VALUES (?, ?)", nodes)
        c.execute(
            "INSERT INTO heads (size, root, ts) VALUES (?, ?, ?)",
            (head.size, head.root, head.timestamp),
        )
        if checkpoint is not None:
            c.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)",
                      (head.size, checkpoint))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _blob(value: object) -> bytes:
    """A BLOB column's bytes. A file edited by hand may hold TEXT or a number there (SQL's
    replace() turns a BLOB into TEXT): such a value is read as its bytes, or as no bytes,
    so verification reports the row as changed instead of crashing on it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return b""


def _head(conn: sqlite3.Connection) -> HeadRow | None:
    row = conn.execute("SELECT size, root, ts FROM heads ORDER BY size DESC LIMIT 1").fetchone()
    return HeadRow(row[0], _blob(row[1]), row[2]) if row else None


def _entry_count(conn: sqlite3.Connection) -> int:
    # Indices are dense from 0 in an undamaged store; MAX(rowid) is one B-tree descent.
    row = conn.execute("SELECT MAX(idx) FROM entries").fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def _nodes(conn: sqlite3.Connection, keys: Sequence[int]) -> dict[int, bytes]:
    """Stored hashes by node key; level-0 keys read the leaf column of `entries`."""
    out: dict[int, bytes] = {}
    keys = list(dict.fromkeys(keys))
    leaves = [k for k in keys if k < _LEVEL1]
    inner = [k for k in keys if k >= _LEVEL1]
    for table, col, part_keys in (("entries", "idx, leaf", leaves), ("nodes", "id, hash", inner)):
        key_col = col.split(",")[0]
        for i in range(0, len(part_keys), _MAX_VARS):
            part = part_keys[i : i + _MAX_VARS]
            marks = ",".join("?" * len(part))
            sql = f"SELECT {col} FROM {table} WHERE {key_col} IN ({marks})"
            for k, h in conn.execute(sql, part):
                out[k] = _blob(h)
    return out


class SqliteStore:
    """A ledger store in one SQLite file. Thread-safe within a process; safe across
    processes through SQLite's own locking."""

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        timeout: float = 120.0,
        read_only: bool = False,
    ):
        """`read_only`: open for reading only (an archive, an auditor's mount); implies
        not `create`. Every write then fails with a StoreError saying so."""
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        create = create and not read_only
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no ledger here; create one with `flchain init`")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if read_only:
                self._conn = sqlite3.connect(
                    _read_only_uri(self.path), uri=True, timeout=timeout,
                    isolation_level=None, check_same_thread=False,
                )
            else:
                self._conn = sqlite3.connect(
                    str(self.path), timeout=timeout, isolation_level=None,
                    check_same_thread=False,
                )
            # TEXT a hand edit left in a BLOB column may not be UTF-8: read it losslessly.
            self._conn.text_factory = _text
            schema = self._setup(create, timeout)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a flchain ledger, or damaged ({e})") from e
        except sqlite3.Error as e:
            raise store_error(self.path, e) from e
        if schema != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: ledger schema {schema!r}, want {SCHEMA_VERSION!r}")

    def _setup(self, create: bool, timeout: float) -> str | None:
        """Pragmas and schema. Switching a new file to WAL ignores busy_timeout, so a
        concurrent creator's lock is waited out here."""
        c = self._conn
        deadline = time.monotonic() + timeout
        while True:
            try:
                c.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                if self.read_only:  # the file's own journal mode, unchanged
                    return self._schema_version()
                c.execute("PRAGMA page_size = 16384")  # only takes effect on a new file
                mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
                c.execute("PRAGMA synchronous = FULL")
                if create:  # idempotent, so concurrent creators agree
                    c.executescript(_SCHEMA)
                    c.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                        (SCHEMA_VERSION,),
                    )
                return self._schema_version()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _schema_version(self) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        return row[0] if row else None

    @contextmanager
    def writer(self) -> Iterator[_SqliteWriter]:
        with self._lock, _sqlite_errors(self.path):
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteWriter(c)
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with self._lock, _sqlite_errors(self.path):
            return self._conn.execute(sql, args).fetchall()

    def head(self) -> HeadRow | None:
        with self._lock, _sqlite_errors(self.path):
            return _head(self._conn)

    def heads(self) -> Iterator[HeadRow]:
        rows = self._read("SELECT size, root, ts FROM heads ORDER BY size")
        return (HeadRow(s, _blob(r), t) for s, r, t in rows)

    def entry(self, index: int) -> EntryRow | None:
        rows = self._read("SELECT idx, type, data, leaf FROM entries WHERE idx = ?", (index,))
        return (
            EntryRow(rows[0][0], rows[0][1], _blob(rows[0][2]), _blob(rows[0][3])) if rows else None
        )

    def entries(
        self, start: int, end: int, type: str | None = None, reverse: bool = False
    ) -> Iterator[EntryRow]:
        """Entries with start <= index < end (newest first with `reverse`), read in pages
        so memory stays flat and a reader that stops early reads little."""
        page = 10_000
        sql = "SELECT idx, type, data, leaf FROM entries WHERE idx >= ? AND idx < ?"
        if type is not None:
            sql += " AND type = ?"
        sql += " ORDER BY idx DESC" if reverse else " ORDER BY idx"
        lo, hi = start, end
        while lo < hi:
            a, b = (max(lo, hi - page), hi) if reverse else (lo, min(hi, lo + page))
            args: list[object] = [a, b] if type is None else [a, b, type]
            for i, t, d, lf in self._read(sql, args):
                yield EntryRow(i, t, _blob(d), _blob(lf))
            lo, hi = (lo, a) if reverse else (b, hi)

    def entry_count(self) -> int:
        with self._lock, _sqlite_errors(self.path):
            return _entry_count(self._conn)

    def ref_rows(self) -> Iterator[tuple[int, int]]:
        last: tuple[int, int] | None = None
        while True:
            if last is None:
                rows = self._read("SELECT digest, idx FROM refs ORDER BY digest, idx LIMIT 50000")
            else:
                rows = self._read(
                    "SELECT digest, idx FROM refs WHERE (digest, idx) > (?, ?) "
                    "ORDER BY digest, idx LIMIT 50000",
                    last,
                )
            yield from rows
            if len(rows) < 50000:
                break
            last = rows[-1]
        # At most REFS_MERGE_ROWS plus one batch: read in one go.
        yield from self._read("SELECT digest, idx FROM refs_recent")

    def find(self, digest: bytes) -> list[int]:
        key = ref_key(digest)
        rows = self._read(
            "SELECT idx FROM refs WHERE digest = ? UNION SELECT idx FROM refs_recent "
            "WHERE digest = ? ORDER BY idx",
            (key, key),
        )
        return [r[0] for r in rows]

    def nodes(self, keys: Sequence[int]) -> dict[int, bytes]:
        with self._lock, _sqlite_errors(self.path):
            return _nodes(self._conn, keys)

    def first_key_outside(self, table: str, allowed: Sequence[tuple[int, int]]) -> int | None:
        col = KEY_COLUMNS[table]
        for a, b in key_gaps(allowed):
            rows = self._read(
                f"SELECT {col} FROM {table} WHERE {col} >= ? AND {col} <= ? ORDER BY {col} "
                "LIMIT 1", (a, b - 1))
            if rows:
                return int(rows[0][0])
        return None

    def level(self, level: int, start: int = 0) -> Iterator[tuple[int, bytes]]:
        if level == 0:
            sql = "SELECT idx, leaf FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx LIMIT ?"
            lo, hi = start, _LEVEL1
        else:
            sql = "SELECT id, hash FROM nodes WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
            lo, hi = node_key(level, start), node_key(level + 1, 0)
        page = 50_000
        mask = (1 << 40) - 1
        while True:
            rows = self._read(sql, (lo, hi, page))
            for k, h in rows:
                yield k & mask, _blob(h)
            if len(rows) < page:
                return
            lo = rows[-1][0] + 1

    def meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def meta_items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self._read("SELECT key, value FROM meta ORDER BY key")]

    def set_meta(self, key: str, value: str, *, replace: bool = True) -> None:
        verb = "REPLACE" if replace else "IGNORE"
        with self.writer():  # the writer already reads SQLite's errors
            self._conn.execute(
                f"INSERT OR {verb} INTO meta (key, value) VALUES (?, ?)", (key, value)
            )

    def add_checkpoint(self, size: int, note: str) -> None:
        with self.writer():  # the writer already reads SQLite's errors
            self._conn.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (size, note))

    def checkpoints(self, last: int | None = None) -> list[tuple[int, str]]:
        if last is None:
            return [(s, n) for s, n in self._read("SELECT size, note FROM checkpoints ORDER BY id")]
        rows = self._read("SELECT size, note FROM checkpoints ORDER BY id DESC LIMIT ?", (last,))
        return [(s, n) for s, n in reversed(rows)]

    def checkpoint_sizes(self, last: int) -> list[int]:
        rows = self._read("SELECT size FROM checkpoints GROUP BY size ORDER BY MAX(id) DESC "
                          "LIMIT ?", (last,))
        return [s for (s,) in reversed(rows)]

    def close(self) -> None:
        with self._lock, _sqlite_errors(self.path):
            self._conn.close()
