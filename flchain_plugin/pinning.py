"""The log's verifier key, as a party other than the writer pins it.

Whoever can rewrite the ledger file can also re-sign it with the key that sits beside it,
so the key that counts is the one a reader holds in its own configuration: an argument,
else the environment variable FLCHAIN_LOG_VERIFIER (the vkey `flchain keygen` prints, or a
file holding it). MLflow loads, Lightning resumes and any other reader that is not the
writer read it here, so there is one variable and one parsing rule for the whole project.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .checkpoint import Checkpoint, CheckpointError, open_checkpoint
from .ledger import Ledger
from .notes import NoteError, Verifier

VERIFIER_ENV = "FLCHAIN_LOG_VERIFIER"
"""The environment variable holding the log's verifier key (`<name>+<id>+<key>`, or the
path of a file holding it)."""


class PinError(ValueError):
    """A pinned verifier key cannot be read; the message names where it came from."""


def parse_verifier(value: Verifier | str, name: str = "verifier") -> Verifier:
    """`value` as a Verifier: a Verifier, a vkey string, or the path of a file holding one.
    PinError naming `name` (the argument or variable it came from) otherwise."""
    if isinstance(value, Verifier):
        return value
    if not isinstance(value, str):
        raise PinError(f"{name}: want a verifier key string or notes.Verifier, "
                       f"got {type(value).__name__}")
    text = value.strip()
    try:
        if os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                text = f.read(4096).strip()
        return Verifier.parse(text)
    except (NoteError, ValueError, OSError) as e:
        raise PinError(
            f"{name}: {value[:100]!r} is not a verifier key ({e}); give the vkey "
            "`flchain keygen` printed for it, or a file holding it"
        ) from None


def configured_verifier(given: Verifier | str | None, name: str = "verifier") -> Verifier | None:
    """The key a reader pins: `given` (named `name` in errors), else FLCHAIN_LOG_VERIFIER,
    else None (nothing pinned)."""
    if given is not None and (not isinstance(given, str) or given.strip()):
        return parse_verifier(given, name)
    env = os.environ.get(VERIFIER_ENV, "")
    return parse_verifier(env, VERIFIER_ENV) if env.strip() else None


RECENT_CHECKPOINTS = 16
"""How many of the newest stored checkpoints a pinned reader checks: all must be signed by
the pinned key. The log signs one per batch, so checking every one would cost a signature
check per batch on each read; `flchain verify --key-verifier` checks them all."""


def newest_signed(notes: Sequence[str], verifier: Verifier, origin: str) -> Checkpoint:
    """The largest of `notes`, each of which must be a checkpoint of `origin` signed by the
    pinned key: one signed by another key means the log was re-signed or rewritten."""
    if not notes:
        raise PinError(f"no signed checkpoint, but the log key {verifier.vkey} is pinned: "
                       "nothing in this ledger can be checked against it")
    best: Checkpoint | None = None
    for note in notes:
        try:
            cp, _ = open_checkpoint(note, verifier, origin=origin)
        except (CheckpointError, NoteError, ValueError) as e:
            raise PinError(f"a checkpoint is not signed by the pinned log key {verifier.vkey} "
                           f"({e}): the log was re-signed by another key or rewritten") from None
        if best is None or cp.size > best.size:
            best = cp
    assert best is not None
    return best


def signed_tree(ledger: Ledger, verifier: Verifier,
                recent: int = RECENT_CHECKPOINTS) -> Checkpoint:
    """The newest checkpoint of `ledger` signed by the pinned key, after checking that its
    `recent` newest stored checkpoints are all signed by that key and that the tree still
    has the signed root: what a reader that is not the writer may trust of the file."""
    notes = [n for _, n in ledger.store.checkpoints(last=recent)]
    cp = newest_signed(notes, verifier, ledger.origin)
    if cp.size > ledger.size or ledger.root_at(cp.size) != cp.root_hash:
        raise PinError(f"the tree of size {cp.size} differs from the checkpoint signed by the "
                       "pinned key: the ledger was rewritten after it was signed")
    return cp


__all__ = [
    "RECENT_CHECKPOINTS",
    "VERIFIER_ENV",
    "PinError",
    "configured_verifier",
    "newest_signed",
    "parse_verifier",
    "signed_tree",
]
