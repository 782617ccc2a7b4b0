"""The signed client statement: what a client vouches for when it sends an update.

A client signs (Ed25519) the canonical JSON (RFC 8785) of exactly
`{run, round, node, parent, update, num_examples, metrics, dataset, nonce}`: which run and
round, which node, the global model it trained from (`parent`), the digest of what it sends
(`update`), its weight and metrics, an optional salted dataset commitment and a fresh
nonce. The ledger's `update` entry holds these fields with the key and signature, so anyone
can re-check a recorded update with `Statement.from_update(entry).verify(...)`.
Framework-free: Flower carries it, but the format is the ledger's.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from . import entries as E
from .canonical import CanonicalError, canonical_json
from .notes import NoteError, Signer, Verifier

FIELDS = ("run", "round", "node", "parent", "update", "num_examples", "metrics", "dataset",
          "nonce")
MAX_STATEMENT_BYTES = 16 * 1024


class StatementError(ValueError):
    """A statement is malformed or its signature does not verify; the message says which."""


def new_nonce() -> str:
    """128 random bits, hex: makes every statement unique so none can be replayed."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Statement:
    """The fields a client signs (see module docstring)."""

    run: str
    round: int
    node: str
    parent: str
    update: str
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    nonce: str = field(default_factory=new_nonce)

    def __post_init__(self) -> None:
        for name, kind in (("run", str), ("node", str), ("nonce", str)):
            if not isinstance(getattr(self, name), kind):
                raise StatementError(f"statement.{name}: want a string")
        for name in ("round", "num_examples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise StatementError(f"statement.{name}: want an integer, got {v!r}")
        try:
            E.check_digest(self.parent, "statement.parent")
            E.check_digest(self.update, "statement.update")
            if self.dataset is not None:
                E.check_digest(self.dataset, "statement.dataset")
        except E.EntryError as e:
            raise StatementError(str(e)) from None
        if not isinstance(self.metrics, dict):
            raise StatementError("statement.metrics: want an object")

    def encode(self) -> bytes:
        """The canonical bytes that are signed."""
        try:
            data = canonical_json(asdict(self))
        except CanonicalError as e:
            raise StatementError(f"statement has no canonical form: {e}") from None
        if len(data) > MAX_STATEMENT_BYTES:
            raise StatementError(
                f"statement is {len(data)} bytes, limit {MAX_STATEMENT_BYTES}: send fewer metrics"
            )
        return data

    @classmethod
    def decode(cls, data: bytes) -> Statement:
        """Parse signed bytes strictly: exactly the fields, in canonical form."""
        if len(data) > MAX_STATEMENT_BYTES:
            raise StatementError(f"statement is {len(data)} bytes, limit {MAX_STATEMENT_BYTES}")
        try:
            obj = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StatementError(f"statement is not JSON: {e}") from None
        if not isinstance(obj, dict) or set(obj) != set(FIELDS):
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise StatementError(f"statement fields {got}, want {sorted(FIELDS)}")
        st = cls(**obj)
        if st.encode() != bytes(data):
            raise StatementError("statement bytes are not canonical JSON (RFC 8785)")
        return st

    @classmethod
    def from_update(cls, entry: E.Update) -> Statement:
        """The statement a recorded `update` entry claims was signed."""
        return cls(entry.run, entry.round, entry.node, entry.parent, entry.update,
                   entry.num_examples, entry.metrics, entry.dataset, entry.nonce)

    def sign(self, signer: Signer) -> SignedStatement:
        data = self.encode()
        return SignedStatement(self, data, signer.verifier_key, signer.private_key.sign(data))


@dataclass(frozen=True)
class SignedStatement:
    """A statement, its exact bytes, the signer's verifier key and the Ed25519 signature."""

    statement: Statement
    data: bytes
    key: str
    signature: bytes

    @property
    def signature_b64(self) -> str:
        return base64.b64encode(self.signature).decode("ascii")

    @classmethod
    def parse(cls, data: bytes, key: str, signature: bytes) -> SignedStatement:
        """Decode what travelled; the signature is checked by `verify`, not here."""
        if not isinstance(key, str) or not isinstance(signature, (bytes, bytearray)):
            raise StatementError("statement key must be a string and signature bytes")
        return cls(Statement.decode(data), bytes(data), key, bytes(signature))

    def verifier(self) -> Verifier:
        try:
            return Verifier.parse(self.key)
        except NoteError as e:
            raise StatementError(f"statement key {self.key!r}: {e}") from None

    def verify(self, key: Verifier | None = None) -> None:
        """Raise StatementError unless `key` (default: the carried key) signed the bytes."""
        v = key or self.verifier()
        if not v.verify(self.data.decode("utf-8"), self.signature):
            raise StatementError(f"signature does not verify under key {v.vkey}")


def verify_update(entry: E.Update) -> bool | None:
    """Whether a recorded update's signature verifies (None: it was recorded unsigned)."""
    if entry.key is None or entry.signature is None:
        return None
    try:
        sig = base64.b64decode(entry.signature, validate=True)
        st = Statement.from_update(entry)
        SignedStatement(st, st.encode(), entry.key, sig).verify()
    except (StatementError, binascii.Error, ValueError):
        return False
    return True
