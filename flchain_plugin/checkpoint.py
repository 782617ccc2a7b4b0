"""C2SP tlog-checkpoints (https://c2sp.org/tlog-checkpoint): signed tree heads, and witnesses.

A checkpoint body is the origin line, the decimal tree size, the base64 root hash and
optional non-empty extension lines, each ending in a newline. It travels as a signed note
(`flchain_plugin.notes`). A `Witness` cosigns a log's checkpoint only after checking a
consistency proof from the last checkpoint it cosigned for that log, so two witnesses that
cosigned the same size saw the same tree (https://c2sp.org/tlog-witness).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flchain_plugin import merkle, notes

MAX_SIZE = 2**64 - 1

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f]")


class CheckpointError(ValueError):
    """A checkpoint is malformed, unsigned or for another log; the message says which check."""


class WitnessError(ValueError):
    """A witness refuses to cosign; the message names the sizes and roots involved."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: `size` leaves whose RFC 9162 SHA-256 tree hash is `root_hash`."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or _CONTROL.search(self.origin):
            raise CheckpointError(
                f"checkpoint origin {self.origin!r} is empty or has a control character"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError(f"checkpoint size {self.size!r} is not an int")
        if not 0 <= self.size <= MAX_SIZE:
            raise CheckpointError(f"checkpoint size {self.size} outside [0, 2^64-1]")
        if len(self.root_hash) != merkle.HASH_SIZE:
            raise CheckpointError(
                f"checkpoint root hash has {len(self.root_hash)} bytes, want {merkle.HASH_SIZE}"
            )
        object.__setattr__(self, "root_hash", bytes(self.root_hash))
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for i, ext in enumerate(self.extensions):
            if not ext or _CONTROL.search(ext):
                raise CheckpointError(
                    f"checkpoint extension {i} ({ext!r}) is empty or has a control character"
                )

    def body(self) -> str:
        """The note text: origin, size, base64 root hash and extensions, one per line."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body strictly (no leading zeros, canonical base64, 32-byte root)."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint body does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(
                f"checkpoint has {len(lines)} lines, want at least 3 (origin, size, root hash)"
            )
        origin, size, root, *extensions = lines
        if not origin:
            raise CheckpointError("checkpoint origin line is empty")
        if not _DECIMAL.fullmatch(size):
            raise CheckpointError(
                f"checkpoint size line {size!r} is not a decimal without leading zeros"
            )
        if int(size) > MAX_SIZE:
            raise CheckpointError(f"checkpoint size {size} exceeds 2^64-1")
        try:
            raw = notes.b64decode_strict(root, f"checkpoint root hash {root!r}")
        except notes.NoteError as e:
            raise CheckpointError(str(e)) from None
        for i, ext in enumerate(extensions, 4):
            if not ext:
                raise CheckpointError(f"checkpoint extension line {i} is empty")
        return cls(origin, int(size), raw, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, signer: notes.Signer,
                    pq_signer: notes.Signer | None = None) -> str:
    """`cp` as a signed note. The key name should be the origin (see `verify_checkpoint`).

    `pq_signer`: a second, ML-DSA-44 signature after `signer`'s, which tlog-tiles
    requires to be Ed25519: clients that know the ML-DSA-44 key check it, others skip it.
    """
    note = notes.sign_note(cp.body(), signer)
    return note if pq_signer is None else notes.add_signature(note, pq_signer)


def open_checkpoint(
    note: str | bytes,
    log: notes.Verifier,
    cosigners: Iterable[notes.Verifier] = (),
    *,
    origin: str | None = None,
) -> tuple[Checkpoint, notes.Note]:
    """Verify a checkpoint note signed by `log` and return it with its opened note.

    Requires a valid signature by `log` and origin == `origin`, which defaults to the log's
    key name (pass it when they differ, as for sum.golang.org). Signatures of `cosigners`
    are verified too; the returned note tells which of them signed.
    """
    want = log.name if origin is None else origin
    try:
        opened = notes.open_note(note, [log, *cosigners])
    except notes.UnverifiedNoteError as e:
        raise CheckpointError(f"checkpoint has no signature by log key {log.vkey}: {e}") from e
    except notes.NoteError as e:
        raise CheckpointError(f"checkpoint note: {e}") from e
    if not opened.signed_by(log):
        raise CheckpointError(f"checkpoint has no signature by log key {log.vkey}")
    cp = Checkpoint.parse(opened.text)
    if cp.origin != want:
        raise CheckpointError(f"checkpoint origin {cp.origin!r}, want {want!r}")
    return cp, opened


def unverified_checkpoint(note: str | bytes) -> Checkpoint:
    """The checkpoint in a note whoever signed it: the note's syntax is checked, its
    signatures are not (for showing a note, or reading one when no key is pinned)."""
    try:
        notes.open_note(note, [])
    except notes.UnverifiedNoteError as e:
        return Checkpoint.parse(e.note.text)
    raise AssertionError("a note opened with no keys is never verified")  # pragma: no cover


def verify_checkpoint(
    note: str | bytes, verifier: notes.Verifier, *, origin: str | None = None
) -> Checkpoint:
    """The checkpoint in `note`, which `verifier` must have signed (see `open_checkpoint`)."""
    return open_checkpoint(note, verifier, origin=origin)[0]


@dataclass(frozen=True)
class Witness:
    """Cosigns checkpoints that extend the last one it cosigned for the same log.

    Holds no state: the caller keeps the last cosigned Checkpoint per origin and passes it
    to `cosign`, which returns the next one to keep.
    """

    signer: notes.Signer

    def cosign(
        self,
        note: str | bytes,
        log: notes.Verifier,
        consistency_proof: Sequence[bytes],
        last: Checkpoint | None,
        *,
        origin: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[str, Checkpoint]:
        """Return (`note` with this witness's cosignature, its checkpoint).

        Requires `log`'s signature on `note`, a size no smaller than `last`'s and a
        consistency proof from `last` (None: the empty tree) to the new checkpoint.
        """
        try:
            new, _ = open_checkpoint(note, log, origin=origin)
        except CheckpointError as e:
            raise WitnessError(f"refusing to cosign: {e}") from e
        if last is None:
            last = Checkpoint(new.origin, 0, merkle.SHA256.empty_root())
        if last.origin != new.origin:
            raise WitnessError(
                f"refusing to cosign: checkpoint origin {new.origin!r}, "
                f"last cosigned origin {last.origin!r}"
            )
        if new.size < last.size:
            raise WitnessError(
                f"refusing to cosign: rollback from size {last.size} to {new.size} "
                f"for {new.origin!r}"
            )
        try:
            merkle.verify_consistency(
                last.size, new.size, consistency_proof, last.root_hash, new.root_hash
            )
        except merkle.ProofError as e:
            raise WitnessError(
                f"refusing to cosign: size {new.size} root {new.root_hash.hex()} is not "
                f"consistent with last cosigned size {last.size} root {last.root_hash.hex()}: {e}"
            ) from e
        return notes.add_signature(note, self.signer, timestamp), new
