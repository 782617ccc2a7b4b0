"""signing_mod: the ClientApp side of LedgerStrategy.

Before training (and evaluating) it checks the global model it received: its digest must be
the announced one, the announcing checkpoint must be signed by the server's key, the entry
recording the model must be in the checkpoint's tree, and each checkpoint must be proven
(RFC 9162 consistency) to extend the one the client pinned before. A
model that fails is refused with `Message(Error(6, "flchain: ..."), reply_to=msg)` and
the handler never runs. After training it signs the client statement over the reply's
arrays and metrics (flchain_plugin.statement) and attaches it as a ConfigRecord: with the
node's key (Ed25519 or ML-DSA-44) and, given `pq_key`, a second ML-DSA-44 signature.

Put it outermost, so it signs exactly what leaves the client: `ClientApp(mods=[signing_mod(
...)])` with DP clipping as a handler mod, `@app.train(mods=[fixedclipping_mod])`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey
from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from .. import merkle
from ..checkpoint import Checkpoint, CheckpointError
from ..digest import DigestError
from ..notes import (
    ML_DSA_44,
    SIGNER_CLASSES,
    MLDSASigner,
    NoteError,
    Signer,
    Verifier,
    generate_key,
    generate_ml_dsa_key,
    load_private_key,
)
from ..quorum import QuorumError, verify_quorum
from ..quorum import witness_keys as parse_witness_keys
from ..statement import Statement, StatementError
from .arrays import arrayrecord_digest
from .keys import client_key
from .protocol import (
    NODE_CONFIG_SERVER_KEY,
    STATEMENT_RECORD,
    Announcement,
    AnnouncementError,
    json_safe,
    reply_metrics,
    statement_record,
)

STATE = "flchain"
"""ctx.state record where the mod pins the server key and the last checkpoint seen."""

NODE_CONFIG_KEY = "flchain-key"
"""node_config key naming this SuperNode's key file (deployment)."""

VERIFIED_KEPT = 16
"""Verified announcements a mod remembers (one per round and message kind is enough)."""

KeySource = (Signer | str | os.PathLike[str]
             | Callable[[Context], Signer | str | os.PathLike[str]])
DatasetSource = str | Callable[[Context], str | None] | None


def _refuse(msg: Message, why: str) -> Message:
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"flchain: {why}"),
                   reply_to=msg)


def _kind(msg: Message) -> str:
    return msg.metadata.message_type.split(".", 1)[0]


class _Key:
    """One key a mod signs with (see `SigningMod.signer`), resolved where the mod runs.

    A Signer is held as its type, name and raw private bytes (the Ed25519 key or the
    ML-DSA-44 seed), as simulation pickles the mod to ship it to Ray workers.
    """

    def __init__(self, key: KeySource, what: str, ml_dsa: bool) -> None:
        self._raw: tuple[int, str, bytes] | None = None
        self._path: Path | None = None
        self._fn: Callable[[Context], Signer] | None = None
        self._generate = generate_ml_dsa_key if ml_dsa else generate_key
        self._cache: dict[Any, Signer] = {}
        if isinstance(key, Signer):
            if ml_dsa and not isinstance(key, MLDSASigner):
                raise ValueError(f"{what} must be an ML-DSA-44 key (notes.MLDSASigner), got a "
                                 f"{type(key).__name__}")
            self._raw = (key.SIG_TYPE, key.name, key.private_key.private_bytes_raw())
        elif isinstance(key, (str, os.PathLike)):
            self._path = Path(key)
        elif callable(key):
            self._fn = key
        else:
            raise ValueError(f"{what} must be a notes.Signer, a key file, a key directory, or "
                             f"a function Context -> Signer; got {type(key).__name__}")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}}

    def signer(self, ctx: Context, create: bool) -> Signer:
        if self._fn is not None:
            got = self._fn(ctx)
            if isinstance(got, Signer):
                return got
            if not isinstance(got, (str, os.PathLike)):
                raise ValueError(f"the key function returned a {type(got).__name__}; want a "
                                 "notes.Signer, a key file or a key directory")
            return self._from_path(Path(got), ctx, create)
        if self._raw is not None:
            if "raw" not in self._cache:
                kind, name, raw = self._raw
                key = (MLDSA44PrivateKey.from_seed_bytes(raw) if kind == ML_DSA_44
                       else Ed25519PrivateKey.from_private_bytes(raw))
                self._cache["raw"] = SIGNER_CLASSES[kind](name, key)
            return self._cache["raw"]
        assert self._path is not None
        return self._from_path(self._path, ctx, create)

    def _from_path(self, path: Path, ctx: Context, create: bool) -> Signer:
        """The key a path gives: the SuperNode's node_config `flchain-key` file (relative
        to `path`), never created, as an operator provisions it; else `path` as a key
        file or a directory of `client-<partition-id>.key` (simulation)."""
        named = ctx.node_config.get(NODE_CONFIG_KEY)
        if named is not None:
            path = path / str(named)
            if not path.is_file():
                raise ValueError(f"node_config {NODE_CONFIG_KEY} names {path}, which is not a "
                                 f"key file: make it with `flchain keygen --out {path} NAME`")
        if path.is_dir() or (not path.exists() and create and "partition-id" in ctx.node_config):
            if "partition-id" not in ctx.node_config:
                raise ValueError(f"{path} is a key directory but node_config has no "
                                 f"partition-id; set --node-config '{NODE_CONFIG_KEY}=...'")
            pid = int(ctx.node_config["partition-id"])  # type: ignore[arg-type]
            if ("dir", path, pid) not in self._cache:
                self._cache[("dir", path, pid)] = client_key(path, pid, create=create,
                                                             generate=self._generate)
            return self._cache[("dir", path, pid)]
        if ("file", path) not in self._cache:
            self._cache[("file", path)] = load_private_key(path)
        return self._cache[("file", path)]


class SigningMod:
    """A Flower Mod (`mod(msg, ctx, call_next) -> Message`); build it with `signing_mod`.

    Picklable, as simulation ships ClientApps to Ray workers: keys are held as raw bytes
    or paths and loaded where the mod runs.
    """

    def __init__(
        self,
        key: KeySource,
        *,
        pq_key: KeySource | None = None,
        server_key: str | Verifier | None = None,
        dataset: DatasetSource = None,
        create_keys: bool = True,
        require_consistency: bool = True,
        witness_keys: Iterable[str | Verifier] = (),
        quorum: int | None = None,
    ) -> None:
        self.witness_keys, self.quorum = _witness_quorum(witness_keys, quorum)
        self._key = _Key(key, "key", ml_dsa=False)
        self._pq = None if pq_key is None else _Key(pq_key, "pq_key", ml_dsa=True)
        if isinstance(server_key, Verifier):
            server_key = server_key.vkey
        if server_key is not None:
            try:
                Verifier.parse(server_key)
            except (NoteError, AttributeError, TypeError) as e:
                raise ValueError(f"server_key: {server_key!r} is not a verifier key: {e}") from None
        self.server_key = server_key
        if dataset is not None and not (isinstance(dataset, str) or callable(dataset)):
            raise ValueError("dataset must be a commitment digest or a function Context -> "
                             "digest")
        self.dataset = dataset
        self.create_keys = create_keys
        self.require_consistency = require_consistency
        # Pure-function memos, per process: a parsed server key, and the checkpoint of an
        # announcement already verified for the same model and key. A simulation actor
        # serving several nodes verifies each signed checkpoint once, not once per node.
        self._verifiers: dict[str, Verifier] = {}
        self._verified: dict[tuple[Announcement, str, str], Checkpoint] = {}
        self._extended: dict[tuple[int, bytes, int, bytes], None] = {}  # proven (old size,
        # old root, new size, new root): every node an actor serves proves the same step

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_verifiers"], state["_verified"], state["_extended"] = {}, {}, {}
        return state

    # -- keys ----------------------------------------------------------------------------

    def signer(self, ctx: Context) -> Signer:
        """This node's key: a fixed key, a key file, `client-<partition-id>.key` in a key
        directory, the node_config's `flchain-key` file, or the function's result."""
        return self._key.signer(ctx, self.create_keys)

    def pq_signer(self, ctx: Context) -> Signer | None:
        """This node's second, ML-DSA-44 key, found as `signer` finds the first (a key
        directory creates ML-DSA-44 keys); None without `pq_key`."""
        return None if self._pq is None else self._pq.signer(ctx, self.create_keys)

    def _server(self, ctx: Context, ann: Announcement, pinned: ConfigRecord) -> Verifier:
        """The server key: given to the mod, in node_config, or pinned on first use."""
        vkey = self.server_key or ctx.node_config.get(NODE_CONFIG_SERVER_KEY)
        old = pinned.get("server-key")
        if vkey is None and old is not None:
            if ann.server_key is not None and ann.server_key != old:
                raise AnnouncementError(f"server key changed from {old} to {ann.server_key} "
                                        "(pinned on first use)")
            vkey = old
        if vkey is None:
            vkey = ann.server_key
        if not isinstance(vkey, str):
            raise AnnouncementError("no server key: pass signing_mod(server_key=...) or set "
                                    f"node_config {NODE_CONFIG_SERVER_KEY}")
        if vkey not in self._verifiers:
            try:
                self._verifiers[vkey] = Verifier.parse(vkey)
            except NoteError as e:
                raise AnnouncementError(f"server key {vkey!r}: {e}") from None
        return self._verifiers[vkey]

    def _verify(self, ann: Announcement, received: str, server: Verifier) -> Checkpoint:
        """`ann.verify(received, server)`, remembered for the last few announcements."""
        key = (ann, received, server.vkey)
        cp = self._verified.get(key)
        if cp is None:
            cp = ann.verify(received, server)  # raises: nothing is remembered
            if self.quorum:
                self._witnessed(ann, server)
            if len(self._verified) >= VERIFIED_KEPT:
                del self._verified[next(iter(self._verified))]
            self._verified[key] = cp
        return cp

    def _witnessed(self, ann: Announcement, server: Verifier) -> None:
        """The announced checkpoint carries the quorum of witness cosignatures."""
        assert ann.checkpoint is not None  # ann.verify checked it
        try:
            verify_quorum(ann.checkpoint, server, self.witness_keys, self.quorum)
        except (QuorumError, CheckpointError) as e:
            raise AnnouncementError(f"the checkpoint is not witnessed: {e}") from None

    def _dataset(self, ctx: Context, pinned: ConfigRecord) -> str | None:
        if self.dataset is None:
            return None
        if isinstance(self.dataset, str):
            return self.dataset
        cached = pinned.get("dataset")
        if isinstance(cached, str):
            return cached
        value = self.dataset(ctx)
        if value is not None:
            pinned["dataset"] = value
        return value

    # -- the mod -------------------------------------------------------------------------

    def __call__(self, msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
        kind = _kind(msg)
        if kind not in ("train", "evaluate") or not msg.has_content():
            return call_next(msg, ctx)
        content = msg.content
        pinned = ctx.state.config_records.get(STATE)
        if pinned is None:
            pinned = ConfigRecord()
            ctx.state[STATE] = pinned
        try:
            ann = None
            for cfg in content.config_records.values():
                ann = Announcement.read(cfg)
                if ann is not None:
                    break
            if ann is None:
                return _refuse(msg, "the instruction announces no model: the server must run "
                                    "flchain_plugin.flower.LedgerStrategy")
            if len(content.array_records) != 1:
                return _refuse(msg, f"the instruction has {len(content.array_records)} "
                                    "ArrayRecords, want 1")
            received = arrayrecord_digest(next(iter(content.array_records.values())))
            server = self._server(ctx, ann, pinned)
            cp = self._verify(ann, received, server)
            last = pinned.get("size")
            if isinstance(last, int):
                if cp.size < last:
                    raise AnnouncementError(f"checkpoint size {cp.size} is older than the "
                                            f"{last} already seen: the log was rolled back")
                if cp.size == last and pinned.get("root") != cp.root_hash:
                    raise AnnouncementError(f"two different trees of size {cp.size}: the "
                                            "server shows clients different logs")
                if cp.size > last:
                    self._check_extends(last, pinned.get("root"), cp, ann)
            pinned["size"], pinned["root"] = cp.size, cp.root_hash
            pinned["server-key"] = server.vkey
        except (AnnouncementError, DigestError) as e:
            return _refuse(msg, f"refusing to {kind}: {e}")
        reply = call_next(msg, ctx)
        if kind != "train" or reply.has_error():
            return reply
        return self._sign(msg, reply, ctx, ann, pinned)

    def _check_extends(self, last: int, root: Any, cp: Checkpoint, ann: Announcement) -> None:
        """The announced tree extends the one of size `last` (root `root`) pinned before.

        Requires 0 < last < cp.size. Without a proof from `last`, only a client built with
        `require_consistency=False` goes on (checking then only that trees never shrink).
        """
        old_root = root if isinstance(root, bytes) else b""
        step = (last, old_root, cp.size, cp.root_hash)
        if step in self._extended:
            return
        proof = ann.consistency_from(last)
        if proof is None:
            if self.require_consistency:
                raise AnnouncementError(
                    f"no consistency proof from the checkpoint of size {last} this client "
                    f"saw to the announced one of size {cp.size} (proofs sent from sizes "
                    f"{[n for n, _ in ann.consistency]}): the server must prove its log "
                    "extends the one it showed before"
                )
            return
        try:
            merkle.verify_consistency(last, cp.size, proof, old_root, cp.root_hash)
        except merkle.ProofError as e:
            raise AnnouncementError(
                f"the log of size {cp.size} does not extend the one of size {last} this "
                f"client saw: a forked log ({e})"
            ) from None
        if len(self._extended) >= VERIFIED_KEPT:
            del self._extended[next(iter(self._extended))]
        self._extended[step] = None

    def _sign(self, msg: Message, reply: Message, ctx: Context, ann: Announcement,
              pinned: ConfigRecord) -> Message:
        rc = reply.content
        if len(rc.array_records) != 1:
            return _refuse(msg, f"the reply has {len(rc.array_records)} ArrayRecords, want 1 "
                                  "to sign")
        try:
            update = arrayrecord_digest(next(iter(rc.array_records.values())))
            metrics = json_safe(reply_metrics(rc))
            n = metrics.get(ann.weight_key, 0)
            st = Statement(run=ann.run, round=ann.round, node=str(ctx.node_id),
                           parent=ann.model, update=update,
                           num_examples=int(n) if isinstance(n, (int, float)) else 0,
                           metrics=metrics, dataset=self._dataset(ctx, pinned))
            signed = st.sign(self.signer(ctx), self.pq_signer(ctx))
        except (StatementError, DigestError, NoteError, ValueError) as e:
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=f"flchain: cannot sign the update: {e}"),
                           reply_to=msg)
        rc[STATEMENT_RECORD] = statement_record(signed)
        return reply


def _witness_quorum(keys: Iterable[str | Verifier], quorum: int | None
                    ) -> tuple[tuple[Verifier, ...], int]:
    """Parsed witness keys and the quorum (0: none required), as signing_mod validates."""
    if isinstance(keys, (str, Verifier)):
        keys = (keys,)
    parsed = parse_witness_keys(keys)
    names = len({v.name for v in parsed})
    if quorum is None:
        return parsed, names // 2 + 1 if names else 0
    if not names:
        raise ValueError("quorum: given without witness_keys (the witnesses' verifier keys)")
    if isinstance(quorum, bool) or not isinstance(quorum, int) or not 1 <= quorum <= names:
        raise ValueError(f"quorum must be an int in [1, {names}] (the witnesses in "
                         f"witness_keys), got {quorum!r}")
    return parsed, quorum


def signing_mod(
    key: KeySource,
    *,
    pq_key: KeySource | None = None,
    server_key: str | Verifier | None = None,
    dataset: DatasetSource = None,
    create_keys: bool = True,
    require_consistency: bool = True,
    witness_keys: Iterable[str | Verifier] = (),
    quorum: int | None = None,
) -> SigningMod:
    """A ClientApp mod that verifies the received model and signs the client statement.

    key: a notes.Signer; a key file; a key directory holding `client-<partition-id>.key`
        (simulation; created when missing unless `create_keys=False`); or a function
        `Context -> Signer`, or `Context -> key file or directory` (a directory taken
        from the run config, say). In deployment the SuperNode's node_config
        `flchain-key` names the file (absolute, or relative to the directory given): it
        is loaded, never created. Ed25519 or ML-DSA-44 (`flchain keygen --alg ml-dsa-44`).
    pq_key: a second key, ML-DSA-44, found the same way (a directory of its own),
        signing the statement beside `key` (hybrid): for a policy with
        `require_post_quantum` whose clients keep their Ed25519 identity.
    server_key: the server's verifier key (LedgerStrategy.verifier_key). None: node_config
        `flchain-server-key`, else trust the first key announced and pin it in ctx.state.
    dataset: a salted dataset commitment (flchain_plugin.datasets.dataset_commitment) or a
        function `Context -> commitment`, called once per node and run; signed into every
        statement and recorded as a `dataset` entry.
    require_consistency: refuse a checkpoint larger than the one pinned before unless the
        announcement proves (RFC 9162 consistency) that its log extends the pinned one.
        False accepts a missing proof (a server that is not LedgerStrategy), still refusing
        a proof that fails, a smaller tree and a second root at one size.
    witness_keys, quorum: refuse a checkpoint that lacks valid cosignatures of `quorum`
        distinct witnesses among these verifier keys (default quorum: a majority of them);
        the same rule as the server's (flchain_plugin.quorum.verify_quorum).
    """
    return SigningMod(key, pq_key=pq_key, server_key=server_key, dataset=dataset,
                      create_keys=create_keys, require_consistency=require_consistency,
                      witness_keys=witness_keys, quorum=quorum)
