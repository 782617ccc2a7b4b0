"""A C2SP tlog-witness (https://c2sp.org/tlog-witness): the add-checkpoint rule with its state.

A witness remembers, per log origin, the latest checkpoint it cosigned, and cosigns a new one
only with a consistency proof from it; so two parties that hold checkpoints of one log
cosigned by the same witness hold views of one history. The signature and proof rules are
`checkpoint.Witness`'s; this module adds what the protocol needs around them: the request
format, the status codes, a state that survives restarts and races, and the evidence a
misbehaving log leaves. It knows nothing of HTTP (see `witness_http`).

Checks, in the spec's order, each answered with its status code:
400 malformed request; 404 unknown origin; 403 no valid signature by a trusted log key;
400 old size > checkpoint size; 409 old size is not the latest cosigned size (body
`<size>\\n`, Content-Type text/x.tlog.size); 422 the consistency proof does not verify
(a proof with old 0, a size-0 checkpoint without the empty root, a second root at one size).
The check of the stored size and the update run in one SQLite `BEGIN IMMEDIATE`
transaction, committed before the answer, so two submissions from one old size cannot both
win, and a cosigned checkpoint is never rolled back (the race the spec describes).
"""

from __future__ import annotations

import base64
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import merkle, notes
from .checkpoint import Checkpoint, CheckpointError, Witness, WitnessError

MAX_PROOF_LINES = 63
"""The spec's limit on consistency proof lines in one request."""
MAX_REQUEST_BYTES = 256 * 1024
"""The largest request read: 63 proof lines and a checkpoint with many (post-quantum,
~3.3 KB) signature lines fit many times over; a larger body is refused unread."""

SIZE_CONTENT_TYPE = "text/x.tlog.size"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

_OLD = re.compile(r"old (0|[1-9][0-9]*)")

FORK = "fork"
"""Two checkpoints signed by the log with one size and two roots: proof the log forked."""
ROLLBACK = "rollback"
"""A signed checkpoint smaller than the cosigned one, submitted as its successor."""
INCONSISTENT = "inconsistent"
"""A signed checkpoint whose consistency proof from the cosigned one does not verify (the
log, or whoever submitted it, showed a tree that does not extend the cosigned one)."""


class RequestError(ValueError):
    """An add-checkpoint body is malformed; the message names the part."""


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request: the old size, a consistency proof, the signed checkpoint."""

    old: int
    proof: tuple[bytes, ...]
    note: str

    def encode(self) -> bytes:
        """The request body (the inverse of `parse`)."""
        lines = [f"old {self.old}"] + [base64.b64encode(h).decode("ascii") for h in self.proof]
        return ("\n".join(lines) + "\n\n" + self.note).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        """Parse a request body strictly; RequestError names the first bad part."""
        if len(body) > MAX_REQUEST_BYTES:
            raise RequestError(f"request has {len(body)} bytes, want at most {MAX_REQUEST_BYTES}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"request is not valid UTF-8 at byte {e.start}") from None
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise RequestError("request has no empty line before the checkpoint")
        if not note:
            raise RequestError("request has no checkpoint after the empty line")
        first, *proof_lines = head.split("\n")
        m = _OLD.fullmatch(first)
        if m is None:
            raise RequestError(
                f"first line {first[:80]!r} is not 'old <size>' (decimal, no leading zeros)"
            )
        old = int(m[1])
        if old > 2**64 - 1:
            raise RequestError(f"old size {old} exceeds 2^64-1")
        if len(proof_lines) > MAX_PROOF_LINES:
            raise RequestError(
                f"request has {len(proof_lines)} proof lines, want at most {MAX_PROOF_LINES}"
            )
        return cls(old, tuple(_proof_hash(line, n) for n, line in enumerate(proof_lines, 2)), note)


def _proof_hash(line: str, n: int) -> bytes:
    try:
        raw = notes.b64decode_strict(line, f"proof line {n}")
    except notes.NoteError as e:
        raise RequestError(str(e)) from None
    if len(raw) != merkle.HASH_SIZE:
        raise RequestError(f"proof line {n} holds {len(raw)} bytes, want {merkle.HASH_SIZE}")
    return raw


@dataclass(frozen=True)
class Response:
    """What the witness answers: an HTTP status, a body and its content type."""

    status: int
    body: bytes
    content_type: str = TEXT_CONTENT_TYPE

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        return cls(status, (" ".join(message.split()) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class Evidence:
    """A checkpoint the log signed that conflicts with the one the witness had cosigned."""

    id: int
    origin: str
    kind: str
    cosigned: str
    conflicting: str
    detail: str
    time: float

    def checkpoints(self) -> tuple[Checkpoint, Checkpoint]:
        """The two checkpoints (their signatures were checked when the evidence was kept)."""
        return _body(self.cosigned), _body(self.conflicting)


def _body(note: str) -> Checkpoint:
    return Checkpoint.parse(note[: note.rfind("\n\n") + 1])


_SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_state (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS witness_evidence (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    kind TEXT NOT NULL,
    cosigned TEXT NOT NULL,
    conflicting TEXT NOT NULL,
    detail TEXT NOT NULL,
    time REAL NOT NULL,
    UNIQUE (origin, kind, cosigned, conflicting)
);
"""


class WitnessState:
    """The latest cosigned checkpoint per origin and the evidence table, in one SQLite file.

    Sizes are stored as text: a tree size may reach 2^64-1, past SQLite's signed integers.
    One connection per thread (a server answers from a thread pool); several processes may
    share the file, since every update is one IMMEDIATE transaction.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connection().executescript(_SCHEMA)  # idempotent; runs its own transaction

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # committed = on disk, before the answer
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: the write lock is taken before the state is read."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def latest(db: sqlite3.Connection, origin: str) -> tuple[Checkpoint, str] | None:
        row = db.execute("SELECT note FROM witness_state WHERE origin = ?", (origin,)).fetchone()
        return None if row is None else (_body(row[0]), row[0])

    @staticmethod
    def save(db: sqlite3.Connection, cp: Checkpoint, note: str) -> None:
        db.execute(
            "INSERT INTO witness_state (origin, size, root, note, updated) VALUES (?,?,?,?,?) "
            "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
            "note = excluded.note, updated = excluded.updated",
            (cp.origin, str(cp.size), cp.root_hash, note, time.time()),
        )

    @staticmethod
    def keep(db: sqlite3.Connection, origin: str, kind: str, cosigned: str, conflicting: str,
             detail: str) -> None:
        """Record a conflicting pair once (a replayed pair adds nothing)."""
        db.execute(
            "INSERT OR IGNORE INTO witness_evidence "
            "(origin, kind, cosigned, conflicting, detail, time) VALUES (?,?,?,?,?,?)",
            (origin, kind, cosigned, conflicting, detail, time.time()),
        )

    def checkpoint(self, origin: str) -> str | None:
        """The latest cosigned checkpoint note of `origin` (log and witness signatures)."""
        row = self._connection().execute(
            "SELECT note FROM witness_state WHERE origin = ?", (origin,)).fetchone()
        return None if row is None else str(row[0])

    def origins(self) -> list[tuple[str, int]]:
        rows = self._connection().execute(
            "SELECT origin, size FROM witness_state ORDER BY origin").fetchall()
        return [(o, int(s)) for o, s in rows]

    def evidence(self) -> list[Evidence]:
        rows = self._connection().execute(
            "SELECT id, origin, kind, cosigned, conflicting, detail, time "
            "FROM witness_evidence ORDER BY id").fetchall()
        return [Evidence(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


class WitnessService:
    """Answers add-checkpoint requests for the logs it trusts, cosigning with every signer.

    `logs` maps each origin to its trusted log verifier keys (a log may rotate keys);
    `signers` are the witness's cosigning keys (cosignature/v1 Ed25519 today, any
    `notes.Signer` whose `sign(text, timestamp)` makes a cosignature).
    """

    def __init__(self, state: WitnessState, signers: Sequence[notes.Signer],
                 logs: Mapping[str, Iterable[notes.Verifier]]):
        if not signers:
            raise ValueError("signers: a witness needs at least one cosigning key")
        for s in signers:
            if s.SIG_TYPE == notes.ED25519:
                raise ValueError(f"signers: {s.name} is a log (0x01) key, want a witness "
                                 "cosignature key (flchain keygen --witness)")
        self.state = state
        self.signers = tuple(signers)
        self.logs = {origin: tuple(keys) for origin, keys in logs.items()}
        for origin, keys in self.logs.items():
            if not keys:
                raise ValueError(f"logs: origin {origin!r} has no verifier key")
        self.witness = Witness(self.signers[0])

    @property
    def verifiers(self) -> tuple[notes.Verifier, ...]:
        """The keys that verify this witness's cosignatures: give them to the logs' clients."""
        return tuple(s.verifier for s in self.signers)

    def add_checkpoint(self, body: bytes) -> Response:
        """Check a request and cosign its checkpoint, or say (status, one line) why not."""
        try:
            req = AddCheckpoint.parse(body)
            cp_text = _unverified_body(req.note)
        except (RequestError, CheckpointError, notes.NoteError, OverflowError) as e:
            return Response.error(400, f"malformed request: {e}")
        keys = self.logs.get(cp_text.origin)
        if keys is None:
            return Response.error(404, f"unknown log origin {cp_text.origin!r}")
        log = _signed_by(req.note, keys, cp_text.origin)
        if isinstance(log, str):
            return Response.error(403, log)
        return self._cosign(req, cp_text, log)

    def _cosign(self, req: AddCheckpoint, new: Checkpoint, log: notes.Verifier) -> Response:
        """The state check, the proof check and the update, in one transaction."""
        with self.state.transaction() as db:
            latest = self.state.latest(db, new.origin)
            last, last_note = latest if latest else (None, "")
            if last is not None:
                self._keep_conflict(db, last, last_note, new, req)
            if req.old > new.size:
                return Response.error(400, f"old size {req.old} > checkpoint size {new.size}")
            size = last.size if last else 0
            if req.old != size:
                return Response(409, f"{size}\n".encode(), SIZE_CONTENT_TYPE)
            ts = int(time.time())
            try:
                cosigned, _ = self.witness.cosign(req.note, log, req.proof, last,
                                                  origin=new.origin, timestamp=ts)
            except WitnessError as e:
                if last is not None and new.size > last.size:
                    self.state.keep(db, new.origin, INCONSISTENT, last_note, req.note, str(e))
                return Response.error(422, str(e))
            for signer in self.signers[1:]:
                cosigned = notes.add_signature(cosigned, signer, ts)
            self.state.save(db, new, cosigned)
        lines = cosigned.removesuffix("\n").split("\n")[-len(self.signers):]
        return Response(200, "".join(f"{line}\n" for line in lines).encode("utf-8"))

    def _keep_conflict(self, db: sqlite3.Connection, last: Checkpoint, last_note: str,
                       new: Checkpoint, req: AddCheckpoint) -> None:
        """Keep a signed checkpoint that contradicts the cosigned one, whatever the answer."""
        if new.size == last.size and new.root_hash != last.root_hash:
            self.state.keep(db, new.origin, FORK, last_note, req.note,
                            f"size {new.size}: root {last.root_hash.hex()} cosigned, "
                            f"root {new.root_hash.hex()} signed")
        elif new.size < last.size and req.old == last.size:
            self.state.keep(db, new.origin, ROLLBACK, last_note, req.note,
                            f"size {last.size} cosigned, then size {new.size} submitted as "
                            f"its successor")


def _unverified_body(note: str) -> Checkpoint:
    """The checkpoint a well-formed note carries, before its signatures are checked (to
    find its origin); NoteError or CheckpointError when the note or its body is malformed."""
    try:
        text = notes.open_note(note, []).text
    except notes.UnverifiedNoteError as e:  # well formed; no key given yet
        text = e.note.text
    return Checkpoint.parse(text)


def _signed_by(note: str, keys: Sequence[notes.Verifier], origin: str) -> notes.Verifier | str:
    """The trusted key that signed `note`, or why none did (a 403): no signature by a
    trusted key, or one by a trusted key that fails (the spec's malformed note)."""
    try:
        opened = notes.open_note(note, keys)
    except notes.NoteError as e:
        vkeys = ", ".join(k.vkey for k in keys)
        return f"checkpoint for {origin!r} has no valid signature by a trusted log key " \
               f"({vkeys}): {e}"
    return next(s.verifier for s in opened.verified if s.verifier is not None)
