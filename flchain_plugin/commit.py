"""How every integration opens a ledger, finds its key and commits a batch.

These are the ledger's conventions, not its mechanics (`Ledger` appends, reads, proves and
signs): a ledger is named by a `Ledger`, a file path or a `sqlite:///` URI; its
checkpoint key lives beside the file as `<ledger file>.key`, named after the log's origin;
and a batch is committed with a retry when another writer grew the log first, then a
signed checkpoint of exactly that batch's tree head. Flower, MLflow and Lightning call
these three, so each rule is written once.

A PostgreSQL ledger (`postgresql://...`) has no file to keep a key beside: its key is the
`signer` a caller gives (`--key` on the command line), else the key file named by
$FLCHAIN_LOG_KEY, created there on first use; without either, writing fails with an error
that says so. Every writer of one server ledger must use the same key file (copy it to each
host): `verify` with the pinned verifier key names a checkpoint signed by any other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .entries import Entry
from .ledger import Ledger, SizeConflict, TreeHead
from .notes import KeyFileError, Signer, generate_key, load_private_key, save_private_key

LEDGER_ENV = "FLCHAIN_LEDGER"
"""The environment variable naming the ledger file, for the `flchain` command and the
MLflow plugin alike."""

LedgerTarget = Ledger | str | os.PathLike[str]
"""What a user may hand an integration as its ledger."""

LOG_KEY_ENV = "FLCHAIN_LOG_KEY"
"""The environment variable naming the checkpoint key file of a ledger that has no file of
its own (a PostgreSQL ledger)."""

MAX_REBASES = 1000
"""How many times `commit` rebases a batch on a log that keeps growing under it before it
gives up: a bound, so a runaway writer cannot hold a round forever."""


def open_ledger(target: LedgerTarget, *, create: bool = True) -> Ledger:
    """`target` as a Ledger: a Ledger as it is, a path, a `sqlite:///` URI or a
    `postgresql://` URL opened.

    `create=False` for readers: a missing file is an error, never a new empty ledger.
    """
    if isinstance(target, Ledger):
        return target
    if isinstance(target, (str, os.PathLike)):
        return Ledger(target, create=create)
    raise ValueError(
        "ledger must be a Ledger, a file path, a sqlite:/// URI or a postgresql:// URL, got "
        f"{type(target).__name__}"
    )


def ledger_path(ledger: Ledger) -> Path | None:
    """The ledger's file, or None for a store that has none (a server database)."""
    path = getattr(ledger.store, "path", None)
    return Path(path) if path is not None else None


def key_path(ledger_file: str | os.PathLike[str]) -> Path:
    """Where a ledger file's checkpoint key lives: `<ledger file>.key`."""
    return Path(os.fspath(ledger_file) + ".key")


def load_or_create_key(path: str | os.PathLike[str], name: str, *, create: bool = True,
                       generate: Callable[[str], Signer] = generate_key) -> Signer:
    """The key in `path`, created (mode 0600, atomically) on first use when `create`
    (by `generate`: an Ed25519 key unless told, say `notes.generate_ml_dsa_key`).

    Several processes may race to create it: one file wins and every caller loads it.
    """
    path = Path(path)
    if path.exists():
        return load_private_key(path)
    if not create:
        raise KeyFileError(
            f"no key file {path}: create one with `flchain keygen {name} --out {path}`"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_private_key(generate(name), path, None)
    except KeyFileError:
        if not path.exists():
            raise
    return load_private_key(path)


def log_signer(ledger: Ledger, signer: Signer | str | os.PathLike[str] | None = None) -> Signer:
    """The key that signs `ledger`'s checkpoints: `signer` (a Signer or key file) if
    given, else `<ledger file>.key`, created on first use; for a server ledger the file
    $FLCHAIN_LOG_KEY names (see the module docstring); an in-memory key for a store object
    with neither. A key named other than the log's origin is refused: C2SP verifiers
    look a checkpoint's signature up by the origin."""
    origin = ledger.origin
    if isinstance(signer, Signer):
        key = signer
    elif isinstance(signer, (str, os.PathLike)):
        key = load_private_key(signer)
    elif signer is None:
        file = _key_file(ledger)
        if file is None:
            return generate_key(origin)
        key = load_or_create_key(file, origin)
        if key.name != origin:
            raise KeyFileError(
                f"key file {file} is named {key.name!r}, but the ledger origin is "
                f"{origin!r}: a checkpoint key must be named after its log"
            )
        return key
    else:
        raise ValueError(f"signer must be a notes.Signer or a key file path, got {signer!r}")
    if key.name != origin:
        raise ValueError(
            f"signer: key is named {key.name!r}, but checkpoints of this ledger need a key "
            f"named after its origin {origin!r}"
        )
    return key


def _key_file(ledger: Ledger) -> Path | None:
    """`<ledger file>.key`; for a server ledger (a store with a `url`) $FLCHAIN_LOG_KEY, or
    KeyFileError without it; None for a store object with neither."""
    path = ledger_path(ledger)
    if path is not None:
        return key_path(path)
    if not hasattr(ledger.store, "url"):
        return None
    url = getattr(ledger.store, "location", "this ledger")
    env = os.environ.get(LOG_KEY_ENV)
    if not env:
        raise KeyFileError(
            f"{url} is a server ledger with no file to keep its checkpoint key beside: give "
            f"the key (--key FILE, or signer=), or set {LOG_KEY_ENV} to its key file (created "
            "there on first use; every writer must use the same file)"
        )
    return Path(env)


def log_pq_signer(ledger: Ledger, signer: Signer | str | os.PathLike[str] | None
                  ) -> Signer | None:
    """The ML-DSA-44 key adding a second signature to `ledger`'s checkpoints: a Signer or
    key file (`flchain keygen ORIGIN --alg ml-dsa-44`), or None for none. Never created
    on first use: a post-quantum signature only means something to clients given its key."""
    if signer is None:
        return None
    key = load_private_key(signer) if isinstance(signer, (str, os.PathLike)) else signer
    if not isinstance(key, Signer):
        raise ValueError(f"pq_signer must be a notes.Signer or a key file path, got {signer!r}")
    ledger.check_pq_signer(key)
    return key


@dataclass(frozen=True)
class Committed:
    """A committed batch: the tree head it made, the index of its first entry (after any
    rebase), the entries as logged, and the signed checkpoint of that head (or None)."""

    head: TreeHead
    first: int
    entries: tuple[Entry, ...]
    checkpoint: str | None


Admit = Callable[[int, int], None]
"""`admit(start, end)`: look at the entries another writer appended in [start, end) and raise
to abandon the batch (say, when one of them already commits the same identity)."""


def commit(
    ledger: Ledger,
    batch: list[Entry],
    *,
    built_for: int | None = None,
    signer: Signer | None = None,
    admit: Admit | None = None,
    pq_signer: Signer | None = None,
) -> Committed:
    """Append `batch` as one batch, with a signed checkpoint of its tree head stored in the
    same transaction.

    `built_for`: the ledger size against which the batch's leaf indices (a `model`
    entry's `inputs`), or a caller's checks (`admit`), were computed. If another writer
    grew the log since, `admit` sees what it appended, every entry is rebased by the
    difference (`Entry.rebased`) and the append retried, at most MAX_REBASES times. The
    checkpoint is of this batch's head exactly, whatever another writer appends after it,
    so proofs announced for that size stay valid. `pq_signer` adds the log's ML-DSA-44
    signature to that checkpoint (`log_pq_signer`).
    """
    base = built_for
    for _ in range(MAX_REBASES):
        try:
            head = ledger.append(batch, expect_size=base, signer=signer, pq_signer=pq_signer)
            return Committed(head, head.size - len(batch), tuple(batch), head.checkpoint)
        except SizeConflict as conflict:
            if admit is not None:
                admit(conflict.expected, conflict.size)
            delta, base = conflict.size - conflict.expected, conflict.size
            batch = [e.rebased(delta) for e in batch]
    raise SizeConflict(ledger.size, base or 0)


__all__ = [
    "LEDGER_ENV",
    "LOG_KEY_ENV",
    "Admit",
    "Committed",
    "LedgerTarget",
    "commit",
    "key_path",
    "ledger_path",
    "load_or_create_key",
    "log_pq_signer",
    "log_signer",
    "open_ledger",
]
