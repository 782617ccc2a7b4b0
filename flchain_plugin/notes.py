"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519, and the keys that sign them.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
`— <key name> <base64(key id || signature)>`. A verifier key is the text
`<name>+<8 hex key id>+<base64(signature type || public key)>`, where the key id is the first
four bytes of SHA-256(name || "\\n" || signature type || public key), big endian.

Two signature types are supported, both Ed25519 through `cryptography`:

- 0x01 (`ED25519`): the signature is over the note text (golang.org/x/mod/sumdb/note).
- 0x04 (`COSIGNATURE_V1`): a witness cosignature (https://c2sp.org/tlog-cosignature):
  the signature is `u64 timestamp || Ed25519(msg)` with
  msg = "cosignature/v1\\ntime <timestamp>\\n" || note text.

Private key file format (written by `save_private_key`, read by `load_private_key`): two
header lines, then a PKCS#8 PEM block, encrypted when a passphrase is given::

    # name: example.com/log
    # type: ed25519            (or: cosignature/v1)
    -----BEGIN PRIVATE KEY-----          (or ENCRYPTED PRIVATE KEY)
    ...

The name lives in the file because the key id, and so every signature, depends on it.
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

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SIGNATURE_TYPES = {ED25519: "Ed25519", COSIGNATURE_V1: "Ed25519 cosignature/v1"}

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
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
)
_KEY_FILE_TYPES = {"ed25519": ED25519, "cosignature/v1": COSIGNATURE_V1}
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


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """SHA-256(name || "\\n" || sig_type || public_key)[:4] as a big-endian uint32."""
    h = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key)
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
            raise NoteError(
                f"signature type 0x{self.sig_type:02x} is not supported, "
                f"want 0x{ED25519:02x} (Ed25519) or 0x{COSIGNATURE_V1:02x} (cosignature/v1)"
            )
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise NoteError(
                f"Ed25519 public key has {len(self.public_key)} bytes, want {PUBLIC_KEY_SIZE}"
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
        v = cls(name, raw[0], raw[1:])
        if v.key_id != int(hex_id, 16):
            raise NoteError(f"verifier key id {hex_id} does not match its key, want {v.key_id:08x}")
        return v

    @property
    def vkey(self) -> str:
        """The verifier key string, as `parse` reads it."""
        key = _b64(bytes([self.sig_type]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{key}"

    def __str__(self) -> str:
        return self.vkey

    def verify(self, text: str, signature: bytes) -> bool:
        """Whether `signature` (without the key id) is this key's signature of `text`."""
        pub = Ed25519PublicKey.from_public_bytes(self.public_key)
        if self.sig_type == COSIGNATURE_V1:
            if len(signature) != TIMESTAMP_SIZE + SIGNATURE_SIZE:
                return False
            ts = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
            try:
                msg = cosignature_message(ts, text)
            except NoteError:
                return False
            signature = signature[TIMESTAMP_SIZE:]
        else:
            if len(signature) != SIGNATURE_SIZE:
                return False
            msg = text.encode("utf-8")
        try:
            pub.verify(signature, msg)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key producing type 0x01 note signatures over the note text."""

    SIG_TYPE: ClassVar[int] = ED25519

    name: str
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)
    public_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"key name {self.name!r} is invalid: want non-empty, no spaces or '+'")
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise NoteError(f"private key is {type(self.private_key).__name__}, want Ed25519")
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
        """The cosignature time (POSIX seconds) of a verified cosignature/v1, else None."""
        if self.verifier is None or self.verifier.sig_type != COSIGNATURE_V1:
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
                f" ({SIGNATURE_TYPES[v.sig_type]}): does not verify over the note text"
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
    kind = next(k for k, v in _KEY_FILE_TYPES.items() if v == signer.SIG_TYPE)
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

    Returns a CosignatureSigner for `# type: cosignature/v1` files, else a Signer. Refuses
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
    if kind not in _KEY_FILE_TYPES:
        raise KeyFileError(
            f"key file {path} has type {kind!r}, want one of {', '.join(_KEY_FILE_TYPES)}"
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
    if not isinstance(key, Ed25519PrivateKey):
        kind = next((k for c, k in _OTHER_KEYS if isinstance(key, c)), type(key).__name__)
        raise KeyFileError(f"key file {path} holds an {kind} private key, want Ed25519")
    try:
        cls = CosignatureSigner if _KEY_FILE_TYPES[kind] == COSIGNATURE_V1 else Signer
        return cls(name, key)
    except NoteError as e:
        raise KeyFileError(f"key file {path}: {e}") from None
