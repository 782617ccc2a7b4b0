"""A read-only view of the ledger, on this machine or behind an MLflow server.

A view pins one tree head when it is opened and hands out only entries whose inclusion
in that tree it has checked (RFC 9162 inclusion proof against the pinned root), so a local
reader notices an entry edited in place, and a client reading over HTTP notices a server
whose answers disagree with the head it states. That head itself is the writer's word,
and the writer (or whoever can rewrite its SQLite file) could re-sign a rewritten history
with a key of its own. So a reader that is not the writer pins the log's verifier key
(`verifier=`, or FLCHAIN_LOG_VERIFIER: a vkey or a file holding one): the view then pins
the newest checkpoint signed by that key instead of the head, refuses a ledger whose recent
checkpoints are signed by any other key, and holds only the entries that checkpoint covers.
A client may also hold a checkpoint it trusts (`HttpView(uri, trusted=(note, verifier))`,
or FLCHAIN_TRUSTED_CHECKPOINT with FLCHAIN_LOG_VERIFIER): the served tree must then be
provably consistent with it. Nothing is cached between views: the ledger may be written by
several processes at once.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flchain_plugin import merkle
from flchain_plugin.canonical import canonical_json, parse_json
from flchain_plugin.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from flchain_plugin.digest import format_digest, parse_digest
from flchain_plugin.entries import Mlflow, decode
from flchain_plugin.ledger import Ledger, LoggedEntry
from flchain_plugin.notes import NoteError, Verifier
from flchain_plugin.pinning import (
    VERIFIER_ENV,
    PinError,
    configured_verifier,
    newest_signed,
    signed_tree,
)

from .config import ConfigError

API_PREFIX = "/flchain/v1"
TRUSTED_ENV = "FLCHAIN_TRUSTED_CHECKPOINT"
class LedgerUnavailableError(RuntimeError):
    """The ledger cannot be reached or answered something that does not verify."""


def pinned_verifier(verifier: str | Verifier | None = None) -> Verifier | None:
    """The log's verifier key a reader pins (`flchain_plugin.pinning`): `verifier` (a
    Verifier, a vkey string or a file holding one), else FLCHAIN_LOG_VERIFIER, else None."""
    try:
        return configured_verifier(verifier, "verifier")
    except PinError as e:
        raise ConfigError(str(e)) from None


def _signed_checkpoint(notes: list[str], verifier: Verifier, origin: str, where: str
                       ) -> Checkpoint:
    """The largest of `notes`, all signed by the pinned key (`pinning.newest_signed`)."""
    try:
        return newest_signed(notes, verifier, origin)
    except PinError as e:
        raise LedgerUnavailableError(f"{where}: {e}. Refusing to load from it.") from None


@dataclass(frozen=True)
class MlflowQuery:
    """Which `mlflow` entries to select; unset fields match anything."""

    kind: str | None = None
    model_id: str | None = None
    name: str | None = None
    version: str | None = None

    def matches(self, entry: object) -> bool:
        return (
            isinstance(entry, Mlflow)
            and (self.kind is None or entry.kind == self.kind)
            and (self.model_id is None or entry.model_id == self.model_id)
            and (self.name is None or entry.name == self.name)
            and (self.version is None or entry.version == self.version)
        )

    def params(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def needles(self) -> tuple[bytes, ...]:
        """Byte strings that the stored bytes of every matching entry contain: stored
        entries are canonical JSON (`decode` refuses any other form) and a member
        `"key":value` is encoded the same wherever it sits, so rows without them need no
        decoding. Only a pre-filter: candidates are still decoded and matched."""
        return tuple(canonical_json({k: v})[1:-1] for k, v in self.params().items())


def scan_mlflow(ledger: Ledger, query: MlflowQuery, start: int = 0, end: int | None = None,
                *, reverse: bool = False) -> Iterator[LoggedEntry]:
    """The `mlflow` entries in [start, end) that `query` matches, decoding only the rows
    whose bytes hold its needles: a registration checks every earlier entry of the log
    for its identity, so this runs on each one."""
    stop = ledger.size if end is None else end
    needles = query.needles()
    for row in ledger.store.entries(start, stop, "mlflow", reverse):
        if all(n in row.data for n in needles):
            le = ledger.get(row.index)
            if query.matches(le.entry):
                yield le


def newest_mlflow(ledger: Ledger, query: MlflowQuery, end: int | None = None
                  ) -> LoggedEntry | None:
    """The newest `mlflow` entry below `end` that `query` matches: read newest first,
    stopping at the first match, so a load or a registration reads the end of the log."""
    return next(scan_mlflow(ledger, query, 0, end, reverse=True), None)


class LedgerView:
    """Entries of one pinned tree head, each checked by an inclusion proof."""

    location: str
    origin: str
    size: int
    root: bytes

    def _pin(self, origin: str, size: int, root: bytes) -> None:
        self.origin, self.size, self.root = origin, size, root

    @property
    def root_digest(self) -> str:
        return format_digest(self.root)

    # source operations, provided by subclasses
    def _entry_bytes(self, index: int) -> bytes:
        raise NotImplementedError

    def _read(self, index: int) -> tuple[bytes, LoggedEntry | None]:
        """An entry's bytes, and its decoded form where the source already has one."""
        return self._entry_bytes(index), None

    def _proof(self, index: int) -> list[bytes]:
        raise NotImplementedError

    def _find(self, digest: str, type: str | None) -> list[int]:
        raise NotImplementedError

    def _mlflow(self, query: MlflowQuery) -> list[int]:
        raise NotImplementedError

    def get(self, index: int) -> LoggedEntry:
        """Entry `index`, after checking its inclusion in the pinned tree."""
        if not 0 <= index < self.size:
            raise IndexError(f"entry {index} is not in the pinned tree of size {self.size}")
        data, got = self._read(index)
        try:
            merkle.verify_inclusion(index, self.size, merkle.leaf_hash(data),
                                    self._proof(index), self.root)
        except merkle.ProofError as e:
            raise LedgerUnavailableError(
                f"{self.location}: entry {index} is not in the tree of size {self.size} with "
                f"root {self.root_digest} ({e}); the ledger was altered, run `flchain verify`"
            ) from e
        return got if got is not None else LoggedEntry(index, data, decode(data))

    def find(self, digest: str, type: str | None = None) -> list[LoggedEntry]:
        """Entries about `digest`, oldest first, each proven."""
        out = [self.get(i) for i in self._find(digest, type) if i < self.size]
        return [e for e in out if digest in e.entry.subjects
                and (type is None or type == e.entry.TYPE)]

    def mlflow(self, query: MlflowQuery) -> list[LoggedEntry]:
        out = [self.get(i) for i in self._mlflow(query) if i < self.size]
        return [e for e in out if query.matches(e.entry)]

    def latest_mlflow(self, **query: str | None) -> LoggedEntry | None:
        found = self.mlflow(MlflowQuery(**query))
        return found[-1] if found else None

    pinned: Verifier | None = None

    def coverage(self) -> str:
        """What the pinned tree is, for messages about an entry it does not hold."""
        if self.pinned is None:
            return f"the ledger at {self.location} (head of size {self.size})"
        return (f"the ledger at {self.location}, as far as its newest checkpoint signed by "
                f"the pinned key {self.pinned.name} covers it (size {self.size})")


class LocalView(LedgerView):
    """A ledger file (or open Ledger) on this machine."""

    def __init__(self, ledger: Ledger, verifier: Verifier | None = None):
        self.ledger = ledger
        self.location = str(getattr(ledger.store, "path", "ledger"))
        if verifier is None:
            head = ledger.head()
            self._pin(ledger.origin, head.size, head.root)
            return
        try:
            cp = signed_tree(ledger, verifier)
        except PinError as e:
            raise LedgerUnavailableError(f"{self.location}: {e}. Refusing to load from it."
                                         ) from None
        self.pinned = verifier
        self._pin(ledger.origin, cp.size, cp.root_hash)

    def _read(self, index: int) -> tuple[bytes, LoggedEntry | None]:
        got = self.ledger.get(index)  # already decoded once; decode it no more
        return got.data, got

    def _proof(self, index: int) -> list[bytes]:
        return list(self.ledger.inclusion_proof(index, self.size).hashes)

    def _find(self, digest: str, type: str | None) -> list[int]:
        return [e.index for e in self.ledger.find(digest, type=type)]

    def _mlflow(self, query: MlflowQuery) -> list[int]:
        return [e.index for e in scan_mlflow(self.ledger, query, 0, self.size)]

    def latest_mlflow(self, **query: str | None) -> LoggedEntry | None:
        """Newest first, stopping at the first match: a load or a finalize reads the end of
        the log, not every MLflow entry ever recorded."""
        le = newest_mlflow(self.ledger, MlflowQuery(**query), self.size)
        return None if le is None else self.get(le.index)  # inclusion in the pinned tree


class HttpView(LedgerView):
    """The ledger of an `mlflow server ... --app-name flchain`, read over its REST routes
    with the client's MLflow credentials."""

    def __init__(self, server_uri: str, trusted: tuple[str, str] | None = None,
                 verifier: Verifier | None = None):
        from mlflow.utils.credentials import get_default_host_creds

        base = server_uri.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        self._creds = get_default_host_creds(base)
        self.location = base + API_PREFIX
        root = self._get("/root")
        try:
            self._pin(str(root["origin"]), int(root["size"]), parse_digest(root["root"]))
        except (KeyError, TypeError, ValueError) as e:
            raise LedgerUnavailableError(f"{self.location}/root: malformed answer {root!r}") from e
        if trusted is None and os.environ.get(TRUSTED_ENV):
            with open(os.environ[TRUSTED_ENV], encoding="utf-8") as f:
                trusted = (f.read(), os.environ.get(VERIFIER_ENV, ""))
        if trusted is not None:
            self._check_against(*trusted)
        if verifier is not None:
            self._pin_signed(verifier)

    def _pin_signed(self, verifier: Verifier) -> None:
        """Pin the server's checkpoint signed by the pinned key instead of its stated head."""
        doc = self._get("/checkpoint")
        notes = [doc["note"]] if isinstance(doc, dict) and doc.get("signed") else []
        cp = _signed_checkpoint(notes, verifier, self.origin, self.location)
        if cp.size > self.size:
            raise LedgerUnavailableError(
                f"{self.location}: the signed checkpoint ({cp.size}) is beyond the tree the "
                f"server states ({self.size})"
            )
        self.pinned = verifier
        self._pin(self.origin, cp.size, cp.root_hash)

    def _check_against(self, note: str, verifier: str) -> None:
        """Refuse the served head unless it extends a checkpoint the client trusts."""
        try:
            cp, _ = open_checkpoint(note, Verifier.parse(verifier), origin=self.origin)
        except (CheckpointError, NoteError, ValueError) as e:
            raise LedgerUnavailableError(f"trusted checkpoint does not verify: {e}") from None
        if cp.size > self.size:
            raise LedgerUnavailableError(
                f"the server's tree ({self.size}) is smaller than the trusted checkpoint's "
                f"({cp.size}): a rolled-back or forked log"
            )
        doc = self._get("/consistency", {"first": cp.size, "second": self.size})
        try:
            merkle.verify_consistency(cp.size, self.size, [bytes.fromhex(h) for h in
                                      doc["hashes"]], cp.root_hash, self.root)
        except (merkle.ProofError, KeyError, ValueError) as e:
            raise LedgerUnavailableError(
                f"the server's tree of size {self.size} does not extend the trusted "
                f"checkpoint of size {cp.size}: {e}"
            ) from None

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        from mlflow.utils.rest_utils import http_request

        try:
            resp = http_request(self._creds, API_PREFIX + path, "GET", params=params,
                                max_retries=2, timeout=60, raise_on_status=False)
        except Exception as e:  # network errors surface from requests/urllib3
            raise LedgerUnavailableError(f"{self.location}{path}: {e}") from e
        if resp.status_code == 404 and path == "/root":
            raise LedgerUnavailableError(
                f"{self.location}: no ledger routes; start the server with "
                "`mlflow server --backend-store-uri flchain+<db> --app-name flchain`"
            )
        if resp.status_code != 200:
            raise LedgerUnavailableError(
                f"{self.location}{path}: HTTP {resp.status_code}: {resp.text[:300]}"
            )
        try:
            return parse_json(resp.text)
        except ValueError as e:
            raise LedgerUnavailableError(f"{self.location}{path}: not JSON: {e}") from e

    def _entry_bytes(self, index: int) -> bytes:
        return base64.b64decode(self._get(f"/entry/{index}")["data"], validate=True)

    def _proof(self, index: int) -> list[bytes]:
        doc = self._get(f"/proof/{index}", {"size": self.size})
        return [bytes.fromhex(h) for h in doc["hashes"]]

    def _find(self, digest: str, type: str | None) -> list[int]:
        params = {"type": type} if type else None
        return [int(i) for i in self._get(f"/find/{digest}", params)["indices"]]

    def _mlflow(self, query: MlflowQuery) -> list[int]:
        params = {**query.params(), "size": self.size}
        return [int(i) for i in self._get("/mlflow", params)["indices"]]
