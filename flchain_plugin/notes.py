"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 and ML-DSA-44, and their keys.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
`— <key name> <base64(key id || signature)>`. A verifier key is the text
`<name>+<8 hex key id>+<base64(signature type || public key)>`, where the key id is the first
four bytes of SHA-256(name || "\\n" || signature type || public key), big endian.

Four signature types are supported, all through `cryptography` (ML-DSA-44 is FIPS 204):

- 0x01 (`ED25519`): the signature is over the note text (golang.org/x/mod/sumdb/note).
- 0x04 (`COSIGNATURE_V1`): a witness cosignature (https://c2sp.org/tlog-cosignature):
  the signature is `u64 timestamp || Ed25519(msg)` with
  msg = "cosignature/v1\\ntime <timestamp>\\n" || note text.
- 0x06 (`SUBTREE_V1`): the timestamped ML-DSA-44 (sub)tree cosignature of
  tlog-cosignature v1.1: `u64 timestamp || ML-DSA-44(subtree_message(...))`, the binary
  `subtree/v1` message over the cosigner name, the timestamp, the log origin, the leaf
  range [start, end) and the subtree hash; empty ML-DSA context, as the Go reference.
- 0xff + `ML_DSA_44_ID` (`ML_DSA_44`): ML-DSA-44 over the note text, the post-quantum
  twin of 0x01, for the log's second checkpoint signature and client statements. Why a
  private type: signed-note assigns ML-DSA-44 only to 0x06, whose message is a subtree,
  not a text, so a signature over arbitrary bytes needs the spec's 0xff escape, "followed
  by a longer identifier that is unlikely to collide": here the 25 ASCII bytes
  `flchain-plugin/ml-dsa-44` + newline, part of the key material of its verifier keys
  (`base64(0xff || id || 1,312-byte key)`) and so of their key ids.

Why 0x06 reads the checkpoint body here, below `checkpoint.py`: its signed message is
defined over a checkpoint's origin, size and root hash, not over the note text, so a
0x06 signature of a note can only be made or checked by reading those three lines. This
module reads exactly those (`checkpoint_fields`, through `checkpoint.Checkpoint.parse`)
and nothing else; the full checkpoint (extensions, the log's own signature) stays
`checkpoint.py`'s.

Private key file format (written by `save_private_key`, read by `load_private_key`): two
header lines, then a PKCS#8 PEM block, encrypted when a passphrase is given::

    # name: example.com/log
    # type: ed25519            (or: cosignature/v1, ml-dsa-44, subtree/v1)
    -----BEGIN PRIVATE KEY-----          (or ENCRYPTED PRIVATE KEY)
    ...

The name lives in the file because the key id, and so every signature, depends on it.
ML-DSA-44 keys are PKCS#8 too (`cryptography` writes the 32-byte seed form, RFC 9881).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SUBTREE_V1 = 0x06
ML_DSA_44 = 0xFF
ML_DSA_44_ID = b"flchain-plugin/ml-dsa-44\n"
"""The private identifier after 0xff (see the module docstring)."""
SIGNATURE_TYPES = {
    ED25519: "Ed25519",
    COSIGNATURE_V1: "Ed25519 cosignature/v1",
    SUBTREE_V1: "ML-DSA-44 subtree/v1",
    ML_DSA_44: "ML-DSA-44",
}

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
ML_DSA_44_PUBLIC_KEY_SIZE = 1312
ML_DSA_44_SIGNATURE_SIZE = 2420
PUBLIC_KEY_SIZES = {ED25519: PUBLIC_KEY_SIZE, COSIGNATURE_V1: PUBLIC_KEY_SIZE,
                    SUBTREE_V1: ML_DSA_44_PUBLIC_KEY_SIZE, ML_DSA_44: ML_DSA_44_PUBLIC_KEY_SIZE}
SIGNATURE_SIZES = {ED25519: SIGNATURE_SIZE, COSIGNATURE_V1: 8 + SIGNATURE_SIZE,
                   SUBTREE_V1: 8 + ML_DSA_44_SIGNATURE_SIZE, ML_DSA_44: ML_DSA_44_SIGNATURE_SIZE}
"""Bytes of a signature (after the key id), timestamp included."""
TIMESTAMPED = frozenset({COSIGNATURE_V1, SUBTREE_V1})
SUBTREE_LABEL = b"subtree/v1\n\0"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
TIMESTAMP_SIZE = 8
KEY_ID_SIZE = 4
MAX_SIGNATURES = 100  # the spec asks to accept at least 16; golang.org/x/mod accepts 100
MAX_TIMESTAMP = 2**63 - 1

SIG_PREFIX = "— "  # em dash U+2014, space
EM_DASH = "—"

_OTHER_KEYS = (
    (rsa.RSAPrivateKey, "RSA"),
    (ec.EllipticCurvePrivateKey, "ECDSA"),
    (dsa.DSAPrivateKey, "DSA"),
    (ed448.Ed448PrivateKey, "Ed448"),
    (x25519.X25519PrivateKey, "X25519"),
    (x448.X448PrivateKey, "X448"),
    (Ed25519PrivateKey, "Ed25519"),
    (MLDSA44PrivateKey, "ML-DSA-44"),
)
KEY_FILE_TYPES = {"ed25519": ED25519, "cosignature/v1": COSIGNATURE_V1,
                  "ml-dsa-44": ML_DSA_44, "subtree/v1": SUBTREE_V1}
"""The `# type:` of a key file -> its signature type."""
_HEX8 = re.compile(r"[0-9a-f]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """A note or verifier key is malformed or fails verification; the message says which check."""


class InvalidSignatureError(NoteError):
    """A signature by a known key does not verify."""


class UnverifiedNoteError(NoteError):
    """The note is well formed but no known key signed it. `.note` holds the parsed note."""

    def __init__(self, message: str, note: Note):
        super().__init__(message)
        self.note = note


class KeyFileError(ValueError):
    """A private key file cannot be written or loaded; the message says why and what to do."""


def valid_name(name: str) -> bool:
    """Whether `name` is a legal key name: non-empty, no Unicode spaces, no '+', no controls."""
    return (
        isinstance(name, str)
        and name != ""
        and not any(c.isspace() or c == "+" or ord(c) < 0x20 or c == "\x7f" for c in name)
        and _is_utf8(name)
    )


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def type_bytes(sig_type: int) -> bytes:
    """The signature type as it prefixes key material: one byte, or 0xff and its id."""
    return bytes([sig_type]) + (ML_DSA_44_ID if sig_type == ML_DSA_44 else b"")


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """SHA-256(name || "\\n" || sig_type || public_key)[:4] as a big-endian uint32."""
    h = hashlib.sha256(name.encode("utf-8") + b"\n" + type_bytes(sig_type) + public_key)
    return int.from_bytes(h.digest()[:KEY_ID_SIZE], "big")


def cosignature_message(timestamp: int, text: str) -> bytes:
    """The bytes an Ed25519 cosignature/v1 signs.

    Requires 0 <= timestamp <= 2^63-1 and `text` to be a checkpoint body (>= 3 lines).
    """
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} outside [0, 2^63-1]")
    lines = text.count("\n")
    if lines < 3 or not text.endswith("\n"):
        raise NoteError(f"cosigned text has {lines} newline-terminated lines, want at least 3")
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _u8_prefixed(value: bytes, what: str) -> bytes:
    if not 1 <= len(value) <= 255:
        raise NoteError(f"subtree/v1 {what} is {len(value)} bytes, want 1 to 255")
    return bytes([len(value)]) + value


def subtree_message(cosigner: str, timestamp: int, origin: str, start: int, end: int,
                    root: bytes) -> bytes:
    """The bytes an ML-DSA-44 subtree/v1 cosignature signs (tlog-cosignature v1.1).

    `label || u8 len || cosigner || u64 timestamp || u8 len || origin || u64 start ||
    u64 end || hash[32]`. Requires start <= end, a 32-byte hash, and timestamp 0 when
    start != 0 (a subtree has no "largest tree seen at time t" to vouch for).
    """
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"subtree/v1 timestamp {timestamp} outside [0, 2^63-1]")
    if not 0 <= start <= end < 2**64:
        raise NoteError(f"subtree/v1 range [{start}, {end}) is not 0 <= start <= end < 2^64")
    if start != 0 and timestamp != 0:
        raise NoteError(f"subtree/v1 start {start} != 0 requires timestamp 0, got {timestamp}")
    if len(root) != HASH_SIZE:
        raise NoteError(f"subtree/v1 hash has {len(root)} bytes, want {HASH_SIZE}")
    return (SUBTREE_LABEL + _u8_prefixed(cosigner.encode("utf-8"), "cosigner name")
            + timestamp.to_bytes(8, "big") + _u8_prefixed(origin.encode("utf-8"), "origin")
            + start.to_bytes(8, "big") + end.to_bytes(8, "big") + bytes(root))


def checkpoint_fields(text: str) -> tuple[str, int, bytes]:
    """(origin, size, root hash) of a checkpoint body, which a subtree/v1 cosignature
    signs (why this module reads them: see the module docstring), parsed by
    `checkpoint.Checkpoint.parse`, the one reading of a checkpoint body."""
    from .checkpoint import Checkpoint, CheckpointError  # it builds on notes: imported late

    try:
        cp = Checkpoint.parse(text)
    except CheckpointError as e:
        raise NoteError(f"cosigned text is not a checkpoint: {e}") from None
    if cp.size == 0 and cp.root_hash != EMPTY_ROOT:
        raise NoteError("checkpoint of size 0 has a root other than SHA-256 of the empty string")
    return cp.origin, cp.size, cp.root_hash


def b64decode_strict(s: str, what: str) -> bytes:
    """Strict standard base64: alphabet, padding and canonical encoding."""
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError(f"{what} is not valid base64: {e}") from None
    if base64.b64encode(raw).decode("ascii") != s:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_text(text: str) -> None:
    """Requires note text to be valid, newline terminated and free of control characters."""
    if not isinstance(text, str):
        raise NoteError(f"note text is {type(text).__name__}, want str")
    if not text.endswith("\n"):
        raise NoteError("note text does not end in a newline")
    if not _is_utf8(text):
        raise NoteError("note text is not valid UTF-8")
    _check_controls(text, "note text")


def _check_controls(s: str, what: str) -> None:
    m = _CONTROL.search(s)
    if m:
        raise NoteError(f"{what} has control character U+{ord(m[0]):04X} at offset {m.start()}")


@dataclass(frozen=True)
class Verifier:
    """A public key that checks note signatures of one name, key id and signature type."""

    name: str
    sig_type: int
    public_key: bytes
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"key name {self.name!r} is invalid: want non-empty, no spaces or '+'")
        if self.sig_type not in SIGNATURE_TYPES:
            want = ", ".join(f"0x{t:02x} ({n})" for t, n in SIGNATURE_TYPES.items())
            raise NoteError(f"signature type 0x{self.sig_type:02x} is not supported, want {want}")
        size = PUBLIC_KEY_SIZES[self.sig_type]
        if len(self.public_key) != size:
            raise NoteError(
                f"{SIGNATURE_TYPES[self.sig_type]} public key has {len(self.public_key)} bytes, "
                f"want {size}"
            )
        object.__setattr__(self, "public_key", bytes(self.public_key))
        object.__setattr__(self, "key_id", key_id(self.name, self.sig_type, self.public_key))

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse `<name>+<8 hex key id>+<base64(type || key)>`, checking the key id."""
        name, sep, rest = vkey.partition("+")
        if not sep:
            raise NoteError("verifier key has no '+': want <name>+<key id>+<base64 key>")
        hex_id, sep, key64 = rest.partition("+")
        if not sep:
            raise NoteError("verifier key has one '+': want <name>+<key id>+<base64 key>")
        if not valid_name(name):
            raise NoteError(f"verifier key name {name!r} is invalid: want non-empty, no spaces")
        if not _HEX8.fullmatch(hex_id):
            raise NoteError(f"verifier key id {hex_id!r} is not 8 lowercase hex digits")
        raw = b64decode_strict(key64, "verifier public key")
        if not raw:
            raise NoteError("verifier public key is empty")
        prefix = type_bytes(raw[0])
        if not raw.startswith(prefix):
            raise NoteError(f"verifier key of private type 0xff does not continue with "
                            f"{ML_DSA_44_ID!r}: an unknown private signature type")
        v = cls(name, raw[0], raw[len(prefix):])
        if v.key_id != int(hex_id, 16):
            raise NoteError(f"verifier key id {hex_id} does not match its key, want {v.key_id:08x}")
        return v

    @property
    def vkey(self) -> str:
        """The verifier key string, as `parse` reads it."""
        key = _b64(type_bytes(self.sig_type) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{key}"

    def __str__(self) -> str:
        return self.vkey

    def verify(self, text: str, signature: bytes) -> bool:
        """Whether `signature` (without the key id) is this key's signature of `text`."""
        if len(signature) != SIGNATURE_SIZES[self.sig_type]:
            return False
        ts = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
        try:
            if self.sig_type == COSIGNATURE_V1:
                msg = cosignature_message(ts, text)
            elif self.sig_type == SUBTREE_V1:
                origin, size, root = checkpoint_fields(text)
                msg = subtree_message(self.name, ts, origin, 0, size, root)
            else:
                msg = text.encode("utf-8")
        except NoteError:
            return False
        if self.sig_type in TIMESTAMPED:
            signature = signature[TIMESTAMP_SIZE:]
        return self._check(signature, msg)

    def verify_subtree(self, origin: str, start: int, end: int, root: bytes,
                       signature: bytes) -> bool:
        """Whether `signature` is this 0x06 key's subtree/v1 cosignature of leaves
        [start, end) of `origin` with hash `root` (false for any other key type)."""
        if self.sig_type != SUBTREE_V1 or len(signature) != SIGNATURE_SIZES[SUBTREE_V1]:
            return False
        ts = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
        try:
            msg = subtree_message(self.name, ts, origin, start, end, root)
        except NoteError:
            return False
        return self._check(signature[TIMESTAMP_SIZE:], msg)

    def _check(self, signature: bytes, msg: bytes) -> bool:
        pub: Ed25519PublicKey | MLDSA44PublicKey
        if self.sig_type in (ED25519, COSIGNATURE_V1):
            pub = Ed25519PublicKey.from_public_bytes(self.public_key)
        else:
            pub = MLDSA44PublicKey.from_public_bytes(self.public_key)
        try:
            pub.verify(signature, msg)
        except InvalidSignature:
            return False
        return True


PrivateKey = Ed25519PrivateKey | MLDSA44PrivateKey


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key producing type 0x01 note signatures over the note text."""

    SIG_TYPE: ClassVar[int] = ED25519
    KEY_CLASS: ClassVar[type] = Ed25519PrivateKey
    ALGORITHM: ClassVar[str] = "Ed25519"

    name: str
    private_key: PrivateKey = field(repr=False, compare=False)
    public_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"key name {self.name!r} is invalid: want non-empty, no spaces or '+'")
        if not isinstance(self.private_key, self.KEY_CLASS):
            raise NoteError(f"private key is {type(self.private_key).__name__}, "
                            f"want {self.ALGORITHM}")
        pub = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        object.__setattr__(self, "public_key", pub)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.SIG_TYPE, self.public_key)

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.SIG_TYPE, self.public_key)

    @property
    def verifier_key(self) -> str:
        """`<name>+<8 hex key id>+<base64(type || public key)>`, to give to verifiers."""
        return self.verifier.vkey

    def sign(self, text: str, timestamp: int | None = None) -> bytes:
        """The signature bytes (without key id) of `text`. `timestamp` is unused for 0x01."""
        return self.private_key.sign(text.encode("utf-8"))


@dataclass(frozen=True)
class CosignatureSigner(Signer):
    """A witness key producing type 0x04 timestamped cosignatures (c2sp.org/tlog-cosignature).

    The signed message does not include the name, so one key must serve one cosigner name.
    """

    SIG_TYPE: ClassVar[int] = COSIGNATURE_V1

    def sign(self, text: str, timestamp: int | None = None) -> bytes:
        """`u64 timestamp || Ed25519(cosignature_message)`; `timestamp` defaults to now."""
        ts = int(time.time()) if timestamp is None else timestamp
        msg = cosignature_message(ts, text)
        return ts.to_bytes(TIMESTAMP_SIZE, "big") + self.private_key.sign(msg)


@dataclass(frozen=True)
class MLDSASigner(Signer):
    """A named ML-DSA-44 key signing the note text (private type 0xff, see the module
    docstring): the post-quantum twin of `Signer`, for a log's second checkpoint
    signature and for client statements."""

    SIG_TYPE: ClassVar[int] = ML_DSA_44
    KEY_CLASS: ClassVar[type] = MLDSA44PrivateKey
    ALGORITHM: ClassVar[str] = "ML-DSA-44"


@dataclass(frozen=True)
class SubtreeCosignatureSigner(Signer):
    """A witness ML-DSA-44 key producing type 0x06 subtree/v1 cosignatures of checkpoints
    (tlog-cosignature v1.1). The message covers the cosigner name and the checkpoint's
    origin, size and root, not its extension lines."""

    SIG_TYPE: ClassVar[int] = SUBTREE_V1
    KEY_CLASS: ClassVar[type] = MLDSA44PrivateKey
    ALGORITHM: ClassVar[str] = "ML-DSA-44"

    def sign(self, text: str, timestamp: int | None = None) -> bytes:
        """`u64 timestamp || ML-DSA-44(subtree_message)` of the checkpoint body `text`
        (start 0, end its size); `timestamp` defaults to now."""
        origin, size, root = checkpoint_fields(text)
        ts = int(time.time()) if timestamp is None else timestamp
        return self.sign_subtree(origin, 0, size, root, ts)

    def sign_subtree(self, origin: str, start: int, end: int, root: bytes,
                     timestamp: int = 0) -> bytes:
        """The cosignature of leaves [start, end) of `origin` with hash `root`; a subtree
        with start != 0 must have timestamp 0 (NoteError otherwise)."""
        msg = subtree_message(self.name, timestamp, origin, start, end, root)
        sig = self.private_key.sign(msg)  # empty context, as the Go reference
        return timestamp.to_bytes(TIMESTAMP_SIZE, "big") + sig


@dataclass(frozen=True)
class Signature:
    """One signature line. `verifier` is the key that verified it, None when the key is unknown."""

    name: str
    key_id: int
    signature: bytes
    verifier: Verifier | None = None

    @property
    def verified(self) -> bool:
        return self.verifier is not None

    @property
    def timestamp(self) -> int | None:
        """The cosignature time (POSIX seconds) of a verified 0x04 or 0x06, else None."""
        if self.verifier is None or self.verifier.sig_type not in TIMESTAMPED:
            return None
        return int.from_bytes(self.signature[:TIMESTAMP_SIZE], "big")

    @property
    def line(self) -> str:
        """The signature line, newline included."""
        raw = self.key_id.to_bytes(KEY_ID_SIZE, "big") + self.signature
        return f"{SIG_PREFIX}{self.name} {_b64(raw)}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text and its signatures in note order, verified or not."""

    text: str
    signatures: tuple[Signature, ...]

    @property
    def verified(self) -> tuple[Signature, ...]:
        return tuple(s for s in self.signatures if s.verified)

    @property
    def unverified(self) -> tuple[Signature, ...]:
        return tuple(s for s in self.signatures if not s.verified)

    def signed_by(self, verifier: Verifier) -> bool:
        """Whether a signature verified by `verifier` is in the note."""
        return any(s.verifier == verifier for s in self.signatures)

    def encode(self) -> str:
        """The note as text, signatures in their order."""
        return self.text + "\n" + "".join(s.line for s in self.signatures)


def _split(note: str | bytes) -> tuple[str, list[Signature]]:
    """Parse a note's syntax, checking no signature. Returns (text, unverified signatures)."""
    if isinstance(note, (bytes, bytearray, memoryview)):
        try:
            note = bytes(note).decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError(f"note is not valid UTF-8 at byte {e.start}") from None
    if not _is_utf8(note):
        raise NoteError("note is not valid UTF-8")
    _check_controls(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("note has no signature lines after its last blank line")
    if not block.endswith("\n"):
        raise NoteError("note's last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signature lines, want at most {MAX_SIGNATURES}")
    sigs = []
    for n, line in enumerate(lines, 1):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"signature line {n} does not start with an em dash and a space")
        name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not valid_name(name):
            raise NoteError(f"signature line {n} has invalid key name {name!r}")
        if not sep or not b64:
            raise NoteError(f"signature line {n} has no signature after the key name")
        if " " in b64:
            raise NoteError(f"signature line {n} has more than 2 spaces (key names have none)")
        raw = b64decode_strict(b64, f"signature line {n}")
        if len(raw) <= KEY_ID_SIZE:
            raise NoteError(f"signature line {n} has {len(raw)} bytes, want more than 4")
        sigs.append(Signature(name, int.from_bytes(raw[:KEY_ID_SIZE], "big"), raw[KEY_ID_SIZE:]))
    return text, sigs


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse `note` and verify every signature whose (name, key id) matches a known verifier.

    Signatures from unknown keys are kept, unverified; identical lines are kept once.
    Raises InvalidSignatureError if a known key's signature fails (the whole note is
    rejected, as the spec advises), UnverifiedNoteError if no known key signed, NoteError
    for malformed notes or two different verifiers with the same name and key id.
    """
    text, parsed = _split(note)
    known: dict[tuple[str, int], Verifier] = {}
    ambiguous: set[tuple[str, int]] = set()
    for v in verifiers:
        k = (v.name, v.key_id)
        if k in known and known[k] != v:
            ambiguous.add(k)
        known[k] = v
    out: list[Signature] = []
    seen: set[Signature] = set()
    for sig in parsed:
        if sig in seen:
            continue
        seen.add(sig)
        k = (sig.name, sig.key_id)
        if k in ambiguous:
            raise NoteError(f"ambiguous key {sig.name}+{sig.key_id:08x}: two verifiers match")
        v = known.get(k)
        if v is None:
            out.append(sig)
            continue
        if not v.verify(text, sig.signature):
            raise InvalidSignatureError(
                f"invalid signature for key {sig.name}+{sig.key_id:08x}"
                f" ({SIGNATURE_TYPES[v.sig_type]}): does not verify over the "
                f"{'checkpoint' if v.sig_type == SUBTREE_V1 else 'note text'}"
            )
        out.append(Signature(sig.name, sig.key_id, sig.signature, v))
    result = Note(text, tuple(out))
    if not result.verified:
        found = ", ".join(f"{s.name}+{s.key_id:08x}" for s in out)
        want = ", ".join(f"{n}+{i:08x}" for n, i in known) or "none"
        raise UnverifiedNoteError(
            f"note has no signature by a known key: found {found}; known {want}", result
        )
    return result


def _signature_line(text: str, signer: Signer, timestamp: int | None) -> str:
    raw = signer.key_id.to_bytes(KEY_ID_SIZE, "big") + signer.sign(text, timestamp)
    return f"{SIG_PREFIX}{signer.name} {_b64(raw)}\n"


def sign_note(text: str, signer: Signer, timestamp: int | None = None) -> str:
    """A note of `text` signed by `signer`.

    Requires `text` to end in a newline, hold no control characters other than newline and
    no line starting with an em dash (so no text line can pass for a signature to a reader).
    `timestamp` is the cosignature time for a CosignatureSigner (default: now).
    """
    _check_text(text)
    for n, line in enumerate(text.split("\n"), 1):
        if line.startswith(EM_DASH):
            raise NoteError(f"note text line {n} starts with an em dash")
    return text + "\n" + _signature_line(text, signer, timestamp)


def add_signature(note: str | bytes, signer: Signer, timestamp: int | None = None) -> str:
    """`note` with a signature by `signer` appended (a cosignature).

    Does not verify the existing signatures: open the note first. An existing signature
    with the signer's name and key id is replaced, as golang.org/x/mod's Sign does.
    """
    text, sigs = _split(note)
    kept = [s for s in sigs if (s.name, s.key_id) != (signer.name, signer.key_id)]
    return text + "\n" + "".join(s.line for s in kept) + _signature_line(text, signer, timestamp)


def generate_key(name: str) -> Signer:
    """A new random Ed25519 key named `name`, for 0x01 note signatures."""
    return Signer(name, Ed25519PrivateKey.generate())


def generate_cosignature_key(name: str) -> CosignatureSigner:
    """A new random Ed25519 witness key named `name`, for 0x04 cosignatures."""
    return CosignatureSigner(name, Ed25519PrivateKey.generate())


def generate_ml_dsa_key(name: str) -> MLDSASigner:
    """A new random ML-DSA-44 key named `name`, for 0xff signatures over text."""
    return MLDSASigner(name, MLDSA44PrivateKey.generate())


def generate_subtree_cosignature_key(name: str) -> SubtreeCosignatureSigner:
    """A new random ML-DSA-44 witness key named `name`, for 0x06 subtree/v1 cosignatures."""
    return SubtreeCosignatureSigner(name, MLDSA44PrivateKey.generate())


SIGNER_CLASSES: dict[int, type[Signer]] = {
    ED25519: Signer, COSIGNATURE_V1: CosignatureSigner,
    SUBTREE_V1: SubtreeCosignatureSigner, ML_DSA_44: MLDSASigner,
}
"""The signer class of each signature type."""


def save_private_key(
    signer: Signer,
    path: str | os.PathLike[str],
    passphrase: bytes | None,
    *,
    overwrite: bool = False,
) -> None:
    """Write `signer` to `path` (format in the module docstring) with mode 0600.

    The file is written to a temporary file created with O_EXCL and mode 0600 in the same
    directory, synced, then linked into place, so the key is never readable by others and
    `path` is either absent or complete. Refuses an existing `path` unless `overwrite`.
    """
    if passphrase is not None and (not isinstance(passphrase, bytes) or not passphrase):
        raise KeyFileError("passphrase must be non-empty bytes, or None for no encryption")
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"key file {path} exists; pass overwrite=True to replace it")
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
    )
    kind = next(k for k, v in KEY_FILE_TYPES.items() if v == signer.SIG_TYPE)
    data = f"# name: {signer.name}\n# type: {kind}\n".encode() + pem
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o600)  # exact mode whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and refuses an existing path
            except FileExistsError:
                raise KeyFileError(
                    f"key file {path} exists; pass overwrite=True to replace it"
                ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> Signer:
    """Read a key file written by `save_private_key`.

    Returns the signer class of the `# type:` line (`SIGNER_CLASSES`). Refuses
    files readable or writable by group or others (POSIX), like ssh does.
    """
    path = Path(path)
    st = path.stat()
    mode = st.st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise KeyFileError(f"key file {path} has mode {mode:04o}, want 0600: run chmod 600 {path}")
    data = path.read_bytes()
    headers: dict[str, str] = {}
    lines = data.split(b"\n")
    i = 0
    while i < len(lines) and lines[i].startswith(b"#"):
        key, sep, value = lines[i][1:].decode("utf-8", "replace").strip().partition(":")
        if not sep:
            raise KeyFileError(f"key file {path} line {i + 1} is not '# key: value'")
        headers[key.strip()] = value.strip()
        i += 1
    name = headers.get("name")
    if not name:
        raise KeyFileError(f"key file {path} has no '# name: <key name>' line before the PEM")
    kind = headers.get("type", "")
    if kind not in KEY_FILE_TYPES:
        raise KeyFileError(
            f"key file {path} has type {kind!r}, want one of {', '.join(KEY_FILE_TYPES)}"
        )
    pem = b"\n".join(lines[i:])
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as e:
        if passphrase is None:
            raise KeyFileError(f"key file {path} is encrypted: a passphrase is needed") from None
        raise KeyFileError(f"key file {path} is not encrypted: pass no passphrase ({e})") from None
    except ValueError as e:
        if passphrase is not None and b"ENCRYPTED" in pem:
            raise KeyFileError(f"wrong passphrase for key file {path}") from None
        raise KeyFileError(f"key file {path} holds no readable PEM private key: {e}") from None
    cls = SIGNER_CLASSES[KEY_FILE_TYPES[kind]]
    if not isinstance(key, cls.KEY_CLASS):
        held = next((k for c, k in _OTHER_KEYS if isinstance(key, c)), type(key).__name__)
        raise KeyFileError(f"key file {path} of type {kind} holds an {held} private key, "
                           f"want {cls.ALGORITHM}")
    try:
        return cls(name, key)
    except NoteError as e:
        raise KeyFileError(f"key file {path}: {e}") from None
