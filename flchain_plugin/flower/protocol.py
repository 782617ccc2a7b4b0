"""What LedgerStrategy and signing_mod put into Flower messages, and how each side checks it.

Server to client, in the instruction's one ConfigRecord (keys prefixed `flchain-`): the run
id, the round, the digest of the global model sent, the latest signed checkpoint, the
ledger entry that recorded that model and its inclusion proof in the checkpoint's tree,
and the server's verifier key. A client can thus check, before training, that the arrays
it got are the model the signed log recorded.

Client to server, as an extra ConfigRecord `flchain-statement` in the reply: the signed
statement bytes, the signature and the client's verifier key (flchain_plugin.statement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from .. import entries as E
from .. import merkle
from ..canonical import json_value
from ..checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ..notes import Verifier
from ..statement import SignedStatement, StatementError
from ..verification import DEFAULT_WEIGHT_KEY

RUN = "flchain-run"
ROUND = "flchain-round"
MODEL = "flchain-model"
CHECKPOINT = "flchain-checkpoint"
ENTRY = "flchain-entry"
ENTRY_INDEX = "flchain-entry-index"
PROOF = "flchain-proof"
CONSISTENCY_FROM = "flchain-consistency-from"
CONSISTENCY = "flchain-consistency"
SERVER_KEY = "flchain-server-key"
WEIGHT_KEY = "flchain-weight-key"

STATEMENT_RECORD = "flchain-statement"
NODE_CONFIG_SERVER_KEY = "flchain-server-key"
"""node_config key (deployment: `--node-config 'flchain-server-key="..."'`)."""

MODEL_ENTRY_TYPES = ("run", "model", "rollback")


class AnnouncementError(ValueError):
    """The global model a client received does not match what the signed log recorded."""


@dataclass(frozen=True)
class Announcement:
    """The ledger facts about one instruction's global model (see module docstring)."""

    run: str
    round: int
    model: str
    checkpoint: str | None
    entry: bytes | None
    index: int | None
    proof: tuple[bytes, ...]
    server_key: str | None
    weight_key: str = DEFAULT_WEIGHT_KEY  # the metric the server weights updates by
    # RFC 9162 consistency proofs to this checkpoint, one from each size this node may have
    # pinned (the checkpoint it last confirmed, and those offered since whose replies did
    # not come back clean), so a client proves the log it sees now extends the one it
    # pinned, not merely outgrew it: ((from size, proof hashes), ...).
    consistency: tuple[tuple[int, tuple[bytes, ...]], ...] = ()

    def consistency_from(self, size: int) -> tuple[bytes, ...] | None:
        """The proof from a tree of `size` entries to the checkpoint's, None if not sent."""
        return next((proof for first, proof in self.consistency if first == size), None)

    def write(self, config: ConfigRecord) -> None:
        config[RUN] = self.run
        if self.weight_key != DEFAULT_WEIGHT_KEY:
            config[WEIGHT_KEY] = self.weight_key
        if self.consistency:
            config[CONSISTENCY_FROM] = [size for size, _ in self.consistency]
            config[CONSISTENCY] = [b"".join(proof) for _, proof in self.consistency]
        config[ROUND] = self.round
        config[MODEL] = self.model
        if self.server_key is not None:
            config[SERVER_KEY] = self.server_key
        if self.checkpoint is not None and self.entry is not None and self.index is not None:
            config[CHECKPOINT] = self.checkpoint
            config[ENTRY] = self.entry
            config[ENTRY_INDEX] = self.index
            config[PROOF] = b"".join(self.proof)

    @classmethod
    def read(cls, config: ConfigRecord) -> Announcement | None:
        """The announcement in `config`, or None if the server announced nothing."""
        if MODEL not in config:
            return None
        try:
            run, rnd, model = config[RUN], config[ROUND], config[MODEL]
            proof = config.get(PROOF, b"")
            if not isinstance(run, str) or not isinstance(model, str):
                raise TypeError("run and model must be strings")
            if isinstance(rnd, bool) or not isinstance(rnd, int):
                raise TypeError("round must be an integer")
            if not isinstance(proof, bytes) or len(proof) % 32:
                raise TypeError("proof must be 32-byte hashes")
            cp, entry, index, key = (config.get(k) for k in (CHECKPOINT, ENTRY, ENTRY_INDEX,
                                                              SERVER_KEY))
            if cp is not None and not isinstance(cp, str):
                raise TypeError("checkpoint must be a string")
            if entry is not None and not isinstance(entry, bytes):
                raise TypeError("entry must be bytes")
            if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
                raise TypeError("entry index must be an integer")
            if key is not None and not isinstance(key, str):
                raise TypeError("server key must be a string")
            weight_key = config.get(WEIGHT_KEY, DEFAULT_WEIGHT_KEY)
            if not isinstance(weight_key, str):
                raise TypeError("weight key must be a string")
            sizes, proofs = config.get(CONSISTENCY_FROM, []), config.get(CONSISTENCY, [])
            if not isinstance(sizes, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) for n in sizes
            ):
                raise TypeError("consistency-from must be a list of integers")
            if not isinstance(proofs, list) or len(proofs) != len(sizes) or not all(
                isinstance(p, bytes) and len(p) % 32 == 0 for p in proofs
            ):
                raise TypeError("consistency must be one proof of 32-byte hashes per size")
        except (KeyError, TypeError) as e:
            raise AnnouncementError(f"malformed flchain announcement: {e}") from None
        consistency = tuple((n, _hashes(p)) for n, p in zip(sizes, proofs, strict=True))
        return cls(run, rnd, model, cp, entry, index, _hashes(proof), key, weight_key,
                   consistency)

    def verify(self, received: str, server: Verifier) -> Checkpoint:
        """Check the received model (digest `received`) against the signed log.

        Requires: `received` is the announced digest; the checkpoint is signed by `server`
        (and its origin is the key's name); the entry is in the checkpoint's tree; and it
        records this model. Returns the checkpoint.
        """
        if received != self.model:
            raise AnnouncementError(
                f"global model digest mismatch: received {received}, announced {self.model}"
            )
        if self.checkpoint is None or self.entry is None or self.index is None:
            raise AnnouncementError(
                f"model {self.model} comes with no signed checkpoint and inclusion proof"
            )
        try:
            cp = open_checkpoint(self.checkpoint, server)[0]
        except CheckpointError as e:
            raise AnnouncementError(f"checkpoint does not verify: {e}") from None
        if not 0 <= self.index < cp.size:
            raise AnnouncementError(
                f"model entry {self.index} is not in the checkpoint's tree of size {cp.size}"
            )
        try:
            merkle.verify_inclusion(self.index, cp.size, merkle.leaf_hash(self.entry),
                                    self.proof, cp.root_hash)
        except merkle.ProofError as e:
            raise AnnouncementError(
                f"model entry {self.index} is not in the signed log (size {cp.size}): {e}"
            ) from None
        try:
            entry = E.decode(self.entry)
        except E.EntryError as e:
            raise AnnouncementError(f"model entry {self.index} does not decode: {e}") from None
        if entry.TYPE not in MODEL_ENTRY_TYPES or getattr(entry, "model", None) != self.model:
            raise AnnouncementError(
                f"entry {self.index} ({entry.TYPE}) does not record model {self.model}"
            )
        if getattr(entry, "run", None) != self.run:  # not a model of another run
            raise AnnouncementError(
                f"entry {self.index} records model {self.model} for run "
                f"{getattr(entry, 'run', None)}, not this run {self.run}"
            )
        return cp


def _hashes(joined: bytes) -> tuple[bytes, ...]:
    return tuple(joined[i : i + 32] for i in range(0, len(joined), 32))


def statement_record(signed: SignedStatement) -> ConfigRecord:
    rec = ConfigRecord(
        {"statement": signed.data, "signature": signed.signature, "key": signed.key}
    )
    if signed.pq_key is not None and signed.pq_signature is not None:
        rec["pq-key"], rec["pq-signature"] = signed.pq_key, signed.pq_signature
    return rec


def read_statement(content: RecordDict) -> SignedStatement | None:
    """The signed statement in a reply, None if there is none.

    Raises StatementError when one is there but cannot be parsed.
    """
    if STATEMENT_RECORD not in content:
        return None
    rec = content[STATEMENT_RECORD]
    if not isinstance(rec, ConfigRecord):
        raise StatementError(f"{STATEMENT_RECORD} is a {type(rec).__name__}, want ConfigRecord")
    try:
        data, sig, key = rec["statement"], rec["signature"], rec["key"]
    except KeyError as e:
        raise StatementError(f"{STATEMENT_RECORD} lacks {e}") from None
    if not isinstance(data, bytes):
        raise StatementError("statement must be bytes")
    pq_key, pq_sig = rec.get("pq-key"), rec.get("pq-signature")
    return SignedStatement.parse(data, key, sig, pq_key, pq_sig)  # type: ignore[arg-type]


def json_safe(value: Any) -> Any:
    """A JSON-loggable copy (`canonical.json_value`): client (statement) and server
    (comparison, entries) both use it, so they agree."""
    return json_value(value)


def reply_metrics(content: RecordDict) -> dict[str, Any]:
    """A reply's metrics as one object: the MetricRecord's items if there is one, else
    `{record name: items}`."""
    recs = content.metric_records
    if len(recs) == 1:
        return dict(next(iter(recs.values())))
    return {name: dict(rec) for name, rec in recs.items()}
