"""The signed client statement: what a client vouches for when it sends an update.

A client signs the canonical JSON (RFC 8785) of exactly
`{run, round, node, parent, update, num_examples, metrics, dataset, nonce}`: which run and
round, which node, the global model it trained from (`parent`), the digest of what it sends
(`update`), its weight and metrics, an optional salted dataset commitment and a fresh
nonce. The ledger's `update` entry holds these fields with the key and signature, so anyone
can re-check a recorded update with `Statement.from_update(entry).verify(...)`.
Framework-free: Flower carries it, but the format is the ledger's.

Signatures: `key`/`signature` is the client's identity key (the one a `member` entry
registers and a policy allow-lists): Ed25519 (signed-note type 0x01) or ML-DSA-44. An
ML-DSA-44 statement signature is the private signed-note type 0xff + `flchain-plugin/
ml-dsa-44\n` (notes.ML_DSA_44): ML-DSA-44 (FIPS 204, empty context) over the statement
bytes, exactly as 0x01 is Ed25519 over them. Why not 0x06: its message is a tree head
(origin, size, root), not arbitrary bytes, and signed-note has no other ML-DSA-44 type.
Beside an Ed25519 identity key a client may add `pq_key`/`pq_signature`, a second,
ML-DSA-44 signature over the same bytes (hybrid: forging the statement then takes
breaking both). Both must verify when present.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from . import entries as E
from .canonical import CanonicalError, canonical_json, parse_json
from .notes import ED25519, ML_DSA_44, SIGNATURE_TYPES, NoteError, Signer, Verifier

FIELDS = ("run", "round", "node", "parent", "update", "num_examples", "metrics", "dataset",
          "nonce")
MAX_STATEMENT_BYTES = 16 * 1024
KEY_TYPES = (ED25519, ML_DSA_44)
"""The signed-note types a statement key may have."""


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
            obj = parse_json(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
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

    def sign(self, signer: Signer, pq_signer: Signer | None = None) -> SignedStatement:
        """Signed by `signer` (Ed25519 or ML-DSA-44), and by `pq_signer` (ML-DSA-44)
        beside it when given."""
        data = self.encode()
        for who, s, types in (("signer", signer, KEY_TYPES), ("pq_signer", pq_signer,
                                                              (ML_DSA_44,))):
            if s is not None and s.SIG_TYPE not in types:
                raise StatementError(f"statement {who}: a {SIGNATURE_TYPES[s.SIG_TYPE]} key "
                                     f"cannot sign statements, want "
                                     f"{' or '.join(SIGNATURE_TYPES[t] for t in types)}")
        text = data.decode("utf-8")
        if pq_signer is None:
            return SignedStatement(self, data, signer.verifier_key, signer.sign(text))
        return SignedStatement(self, data, signer.verifier_key, signer.sign(text),
                               pq_signer.verifier_key, pq_signer.sign(text))


@dataclass(frozen=True)
class SignedStatement:
    """A statement, its exact bytes, the signer's verifier key and signature, and the
    optional second ML-DSA-44 key and signature (see the module docstring)."""

    statement: Statement
    data: bytes
    key: str
    signature: bytes
    pq_key: str | None = None
    pq_signature: bytes | None = None

    @property
    def signature_b64(self) -> str:
        return base64.b64encode(self.signature).decode("ascii")

    @property
    def pq_signature_b64(self) -> str | None:
        sig = self.pq_signature
        return None if sig is None else base64.b64encode(sig).decode("ascii")

    @classmethod
    def parse(cls, data: bytes, key: str, signature: bytes, pq_key: str | None = None,
              pq_signature: bytes | None = None) -> SignedStatement:
        """Decode what travelled; the signatures are checked by `verify`, not here."""
        if not isinstance(key, str) or not isinstance(signature, (bytes, bytearray)):
            raise StatementError("statement key must be a string and signature bytes")
        if (pq_key is None) != (pq_signature is None) or not (
                pq_key is None or (isinstance(pq_key, str)
                                   and isinstance(pq_signature, (bytes, bytearray)))):
            raise StatementError("statement pq_key must be a string and pq_signature bytes, "
                                 "both or neither")
        return cls(Statement.decode(data), bytes(data), key, bytes(signature), pq_key,
                   None if pq_signature is None else bytes(pq_signature))

    def verifier(self) -> Verifier:
        return _statement_key(self.key, "statement key", KEY_TYPES)

    def pq_verifier(self) -> Verifier | None:
        """The ML-DSA-44 key that signs this statement: the identity key if it is one,
        else the second key (None: no ML-DSA-44 signature)."""
        if self.pq_key is not None:
            return _statement_key(self.pq_key, "statement pq_key", (ML_DSA_44,))
        v = self.verifier()
        return v if v.sig_type == ML_DSA_44 else None

    def verify(self, key: Verifier | None = None) -> None:
        """Raise StatementError unless `key` (default: the carried key) signed the bytes,
        and the carried ML-DSA-44 `pq_key`, if any, did too."""
        v = key or self.verifier()
        text = self.data.decode("utf-8")
        if not v.verify(text, self.signature):
            raise StatementError(f"signature does not verify under key {v.vkey}")
        if self.pq_key is not None:
            pq = _statement_key(self.pq_key, "statement pq_key", (ML_DSA_44,))
            if self.pq_signature is None or not pq.verify(text, self.pq_signature):
                raise StatementError(f"ML-DSA-44 pq_signature does not verify under pq_key "
                                     f"{pq.name}+{pq.key_id:08x}")


def _statement_key(vkey: str, what: str, types: tuple[int, ...]) -> Verifier:
    try:
        v = Verifier.parse(vkey)
    except (NoteError, AttributeError, TypeError) as e:
        raise StatementError(f"{what} {vkey!r}: {e}") from None
    if v.sig_type not in types:
        raise StatementError(f"{what} {v.name}+{v.key_id:08x} is a "
                             f"{SIGNATURE_TYPES[v.sig_type]} key, want "
                             f"{' or '.join(SIGNATURE_TYPES[t] for t in types)}")
    return v


def verify_update(entry: E.Update) -> bool | None:
    """Whether a recorded update's signature verifies (None: it was recorded unsigned)."""
    if entry.key is None or entry.signature is None:
        return None
    try:
        sig = base64.b64decode(entry.signature, validate=True)
        pq_sig = (None if entry.pq_signature is None
                  else base64.b64decode(entry.pq_signature, validate=True))
        st = Statement.from_update(entry)
        SignedStatement.parse(st.encode(), entry.key, sig, entry.pq_key, pq_sig).verify()
    except (StatementError, binascii.Error, ValueError):
        return False
    return True
