"""The rules a client update must pass before it is aggregated, free of any framework.

A framework integration (the Flower wrapper) turns each reply into `ReplyFacts`, the
only thing these rules read; `verify_round` runs `CHECKS` in order (the order of
ARCHITECTURE.md's "Lineage verification") and returns one `Verdict` per reply. The first
check that fails names the refusal: its `Reason` code, and a detail that starts with the
check's name, so a `rejected` entry says exactly which rule it broke.

    CHECKS            the ordered per-reply checks (a reader compares them with the doc)
    ROUND_CHECKS      what needs the whole round: the update-norm bound, metric keys
    Policy            what is enforced, recorded in the run entry
    MedianNormBound   the default norm bound, derived from the round's own updates
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .digest import json_digest
from .entries import Reason
from .notes import ML_DSA_44, NoteError, Verifier
from .statement import SignedStatement, StatementError

DEFAULT_WEIGHT_KEY = "num-examples"

TensorSignature = tuple[str, tuple[int, ...]]
"""(little-endian dtype string, shape): what a tensor of an update must share with the
global model."""


# -- the policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MedianNormBound:
    """The default update-norm bound: `factor` x the median of the round's update norms.

    Why the median: it is the norm of an honest update as long as fewer than half of the
    round's updates are hostile, and one boosted update cannot move it. Why factor 5:
    measured on the README's task (bench/flower_false_refusals.py), honest updates on
    Dirichlet(0.1) splits over 10 clients reached 4.75x their round's median (1,000
    updates), so 5x refused none of them (4x refused 0.6%), while a model-replacement
    update scaled by 10 lands at 10x its honest norm: refused whenever that honest norm
    was at least half the median (93% of such boosts there, all on the demo's split). A
    boost of a client whose honest update was smaller stays inside the range honest
    clients span on such splits: no norm bound can refuse it without refusing them. Zero
    norms (a client that sent the model back unchanged) are left out: they say nothing
    about how far an honest client moves.

    Small rounds: with fewer than `min_updates` non-zero norms a median says little (of
    two, one may be the attacker), so the bound is that of the last round that had enough
    updates; before any such round there is no bound, and the refusal detail says so.
    """

    factor: float = 5.0
    min_updates: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or not (
            math.isfinite(self.factor) and self.factor > 1
        ):
            raise ValueError(f"MedianNormBound: factor must be a number above 1, "
                             f"got {self.factor!r}")
        if (isinstance(self.min_updates, bool) or not isinstance(self.min_updates, int)
                or self.min_updates < 1):
            raise ValueError(f"MedianNormBound: min_updates must be a positive integer, "
                             f"got {self.min_updates!r}")

    def bound(self, norms: Iterable[float]) -> float | None:
        """The bound for a round whose candidate updates have `norms` (None: too few)."""
        moved = [n for n in norms if n > 0]
        if len(moved) < self.min_updates:
            return None
        return self.factor * statistics.median(moved)

    def to_json(self) -> dict[str, Any]:
        return {"rule": "factor x median of the round's non-zero update norms",
                "factor": self.factor, "min_updates": self.min_updates}


NormBound = float | MedianNormBound | None


@dataclass(frozen=True)
class Policy:
    """What a reply must satisfy, recorded in the run's `run` entry. Defaults are safe.

    - `require_signatures`: refuse replies without a signed statement (`unsigned`). Off
      only for clients that cannot sign; their updates are then recorded unsigned.
    - `allowed_keys`: verifier keys (`name+id+base64`) that may sign; any other key is
      `unknown_client`. None means trust on first use: a node's first valid key is
      registered (a `member` entry) and must sign everything after.
    - `max_update_norm`: bound on the L2 norm of (update - global model) over floating
      tensors (`out_of_bounds`): a number, None (no bound), or by default
      `MedianNormBound()`, derived from the round's own updates.
    - `max_update_bytes`: bound on the reply's array bytes, checked before hashing.
    - `max_examples`: bound on the weight a client claims: stops one client from
      dominating a weighted average.
    - `weight_key`: the metric holding the client's weight; a positive finite number.
    - `require_dataset`: refuse statements without a dataset commitment.
    - `require_post_quantum`: refuse statements without a valid ML-DSA-44 signature by a
      key bound to the node (`not_post_quantum`): what stays unforgeable once Ed25519
      is not (statement.py says how a client signs with ML-DSA-44).
    - `metric_keys`: the metric names a reply may carry (`weight_key` always may), and so
      the only ones the ledger records; a reply with any other is refused
      (`metric_not_allowed`) and its metrics are not written. None records every metric
      the client signed: the signature covers them, so they cannot be dropped silently.
    """

    require_signatures: bool = True
    allowed_keys: frozenset[str] | None = None
    max_update_norm: NormBound = field(default_factory=MedianNormBound)
    max_update_bytes: int | None = None
    max_examples: int | None = None
    weight_key: str = DEFAULT_WEIGHT_KEY
    require_dataset: bool = False
    require_post_quantum: bool = False
    metric_keys: frozenset[str] | None = None
    _verifiers: dict[str, Verifier] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for name in ("require_signatures", "require_dataset", "require_post_quantum"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False")
        if self.allowed_keys is not None:
            object.__setattr__(self, "allowed_keys", self._parse_keys(self.allowed_keys))
        bound = self.max_update_norm
        if bound is not None and not isinstance(bound, MedianNormBound) and not (
            isinstance(bound, (int, float)) and not isinstance(bound, bool)
            and math.isfinite(bound) and bound > 0
        ):
            raise ValueError(f"max_update_norm must be a positive number, None or a "
                             f"MedianNormBound, got {bound!r}")
        for name in ("max_update_bytes", "max_examples"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if not isinstance(self.weight_key, str) or not self.weight_key:
            raise ValueError("weight_key must be a non-empty string")
        if self.metric_keys is not None:
            keys = self.metric_keys
            if isinstance(keys, str) or not isinstance(keys, Iterable) or not all(
                    isinstance(k, str) and k for k in keys):
                raise ValueError("metric_keys must be a collection of metric names or None, "
                                 f"got {keys!r}")
            object.__setattr__(self, "metric_keys", frozenset(keys))

    def _parse_keys(self, keys: Any) -> frozenset[str]:
        if isinstance(keys, str) or not isinstance(keys, Iterable):
            raise ValueError("allowed_keys must be a collection of verifier key strings")
        keys = frozenset(keys)
        for k in keys:
            try:
                self._verifiers[k] = Verifier.parse(k)
            except (NoteError, TypeError, AttributeError) as e:
                raise ValueError(f"allowed_keys: {k!r} is not a verifier key: {e}") from None
        if not keys:
            raise ValueError("allowed_keys is empty: no client could sign; use None for "
                             "trust on first use")
        return keys

    def verifier(self, key: str) -> Verifier | None:
        """The parsed allow-listed key (None: not allow-listed, or trust on first use)."""
        return self._verifiers.get(key)

    @property
    def trust_on_first_use(self) -> bool:
        return self.allowed_keys is None

    @property
    def measures_norms(self) -> bool:
        """Whether replies' update norms must be computed (any norm bound is set)."""
        return self.max_update_norm is not None

    def _keys_json(self) -> Any:
        if self.allowed_keys is None:
            return "tofu"
        keys = sorted(self.allowed_keys)
        if len(keys) <= 32:
            return keys
        return {"allowlist": len(keys), "digest": json_digest(keys)}

    def to_json(self) -> dict[str, Any]:
        """The policy as the `run` entry records it."""
        bound = self.max_update_norm
        return {
            "require_signatures": self.require_signatures,
            "keys": self._keys_json(),
            "max_update_norm": bound.to_json() if isinstance(bound, MedianNormBound) else bound,
            "max_update_bytes": self.max_update_bytes,
            "max_examples": self.max_examples,
            "weight_key": self.weight_key,
            "require_dataset": self.require_dataset,
            # recorded when set, so a run without it records its policy as before
            **({"require_post_quantum": True} if self.require_post_quantum else {}),
            **({"metric_keys": sorted(self.metric_keys)} if self.metric_keys is not None
               else {}),
        }


# -- the facts the rules read ----------------------------------------------------------------


@dataclass(frozen=True)
class ReplyFacts:
    """Everything the checks need to know about one reply, taken from it by the framework
    integration before anything else touched it.

    `parent` is the digest of the global model sent to this node this round and
    `expected` its tensors' signatures; `tensors`, `update`, `non_finite` and `norm` are
    None when the arrays could not be read (`arrays_error` says why) or, for `norm`, when
    no norm bound is set or the tensors do not match the global model's.
    """

    node: str
    parent: str
    expected: Mapping[str, TensorSignature]
    error: str | None = None
    statement: SignedStatement | None = None
    statement_error: str | None = None
    array_records: int = 1
    nbytes: int = 0
    arrays_error: str | None = None
    update: str | None = None
    tensors: Mapping[str, TensorSignature] | None = None
    non_finite: str | None = None
    norm: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    metric_keys: tuple[Any, ...] = ()


@dataclass
class History:
    """What the run has recorded so far that later replies are checked against."""

    members: dict[str, str] = field(default_factory=dict)  # node -> registered key
    pq_members: dict[str, str] = field(default_factory=dict)  # node -> first pq_key
    updates: set[str] = field(default_factory=set)
    nonces: set[str] = field(default_factory=set)
    norm_bound: float | None = None  # the last bound a MedianNormBound could derive
    _keys: dict[str, Verifier] = field(default_factory=dict, repr=False)

    def verifier(self, signed: SignedStatement) -> Verifier:
        """The statement's key, parsed once per run (StatementError if it does not parse)."""
        if signed.key not in self._keys:
            self._keys[signed.key] = signed.verifier()
        return self._keys[signed.key]


@dataclass(frozen=True)
class Round:
    """The round the replies answer, and what the checks compare them with."""

    run: str
    round: int
    policy: Policy
    history: History


@dataclass(frozen=True)
class Refusal:
    """A broken rule: the `rejected` entry's reason and detail (`check: why`)."""

    reason: Reason
    detail: str
    update: str | None = None


@dataclass(frozen=True)
class Verdict:
    """One reply's outcome: accepted (`refusal` None) or refused."""

    facts: ReplyFacts
    refusal: Refusal | None = None

    @property
    def accepted(self) -> bool:
        return self.refusal is None


Check = Callable[[ReplyFacts, Round], Refusal | None]


def _refuse(reason: Reason, check: str, why: str, update: str | None = None) -> Refusal:
    return Refusal(reason, f"{check}: {why}", update)


def _signature(sig: TensorSignature) -> str:
    return f"{sig[0]}{list(sig[1])}"


def _weight(f: ReplyFacts, r: Round) -> Any:
    return f.metrics.get(r.policy.weight_key)


# -- the checks, in ARCHITECTURE.md's order ---------------------------------------------------


def no_error(f: ReplyFacts, r: Round) -> Refusal | None:
    """The reply carries no error (a client exception, or its signing_mod's refusal)."""
    if f.error is not None:
        return _refuse(Reason.CLIENT_ERROR, "no_error", f.error)
    return None


def statement_readable(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.statement_error is not None:
        return _refuse(Reason.BAD_SIGNATURE, "statement_readable",
                       f"statement unreadable: {f.statement_error}")
    return None


def signed(f: ReplyFacts, r: Round) -> Refusal | None:
    """Signed when the policy asks, and always once the node registered a key (no
    downgrade to unsigned)."""
    if f.statement is None and (r.policy.require_signatures or f.node in r.history.members):
        return _refuse(Reason.UNSIGNED, "signed", "the reply carries no signed statement: add "
                       "flchain_plugin.flower.signing_mod to the ClientApp")
    return None


def key_allowed(f: ReplyFacts, r: Round) -> Refusal | None:
    allowed = r.policy.allowed_keys
    if f.statement is not None and allowed is not None and f.statement.key not in allowed:
        return _refuse(Reason.UNKNOWN_CLIENT, "key_allowed",
                       f"key {f.statement.key} is not in the policy's allowed_keys")
    return None


def key_registered(f: ReplyFacts, r: Round) -> Refusal | None:
    """The key the node registered first (a `member` entry) signs everything after."""
    registered = r.history.members.get(f.node)
    if f.statement is not None and registered is not None and registered != f.statement.key:
        return _refuse(Reason.BAD_SIGNATURE, "key_registered", f"signed by key "
                       f"{f.statement.key}, node {f.node} registered key {registered}")
    return None


def signature_valid(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.statement is None:
        return None
    try:
        f.statement.verify(r.policy.verifier(f.statement.key) or r.history.verifier(f.statement))
    except StatementError as e:
        return _refuse(Reason.BAD_SIGNATURE, "signature_valid", str(e))
    return None


def post_quantum(f: ReplyFacts, r: Round) -> Refusal | None:
    """When the policy requires it, an ML-DSA-44 signature (signature_valid checked it)
    by a key bound to the node: its identity key, or a second `pq_key` that is
    allow-listed, or under trust on first use the one its first accepted update carried."""
    if not r.policy.require_post_quantum:
        return None
    st = f.statement
    if st is None:
        return _refuse(Reason.NOT_POST_QUANTUM, "post_quantum", "the reply carries no signed "
                       "statement; the policy requires an ML-DSA-44 signature")
    if st.pq_key is None:
        if (r.policy.verifier(st.key) or r.history.verifier(st)).sig_type == ML_DSA_44:
            return None  # the identity key is ML-DSA-44: bound by the key checks above
        return _refuse(Reason.NOT_POST_QUANTUM, "post_quantum", "the statement is signed with "
                       "Ed25519 only; the policy requires an ML-DSA-44 signature: give "
                       "signing_mod an ML-DSA-44 key (flchain keygen --alg ml-dsa-44)")
    allowed, known = r.policy.allowed_keys, r.history.pq_members.get(f.node)
    if allowed is not None and st.pq_key not in allowed:
        return _refuse(Reason.NOT_POST_QUANTUM, "post_quantum", f"ML-DSA-44 pq_key "
                       f"{_short(st.pq_key)} is not in the policy's allowed_keys")
    if known is not None and known != st.pq_key:
        return _refuse(Reason.NOT_POST_QUANTUM, "post_quantum", f"ML-DSA-44 pq_key "
                       f"{_short(st.pq_key)}, node {f.node} signed with {_short(known)} first")
    return None


def _short(vkey: str) -> str:
    """`name+keyid` of a verifier key: an ML-DSA-44 key is 1,800 characters long."""
    return "+".join(vkey.split("+", 2)[:2])


def signed_for_node(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.statement is not None and f.statement.statement.node != f.node:
        return _refuse(Reason.BAD_SIGNATURE, "signed_for_node", f"statement is signed for "
                       f"node {f.statement.statement.node}, the reply came from {f.node}")
    return None


def same_run(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.statement is not None and f.statement.statement.run != r.run:
        return _refuse(Reason.WRONG_RUN, "same_run", f"statement is for run "
                       f"{f.statement.statement.run}, this is run {r.run}")
    return None


def same_round(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.statement is not None and f.statement.statement.round != r.round:
        return _refuse(Reason.WRONG_ROUND, "same_round", f"statement is for round "
                       f"{f.statement.statement.round}, this is round {r.round}")
    return None


def parent_sent(f: ReplyFacts, r: Round) -> Refusal | None:
    """Trained from the global model sent to this node this round."""
    s = f.statement.statement if f.statement is not None else None
    if s is not None and s.parent != f.parent:
        return _refuse(Reason.STALE_PARENT, "parent_sent", f"trained from {s.parent}, the "
                       f"global model sent was {f.parent}", s.update)
    return None


def one_array_record(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.array_records != 1:
        return _refuse(Reason.MALFORMED, "one_array_record",
                       f"the reply has {f.array_records} ArrayRecords, want 1")
    return None


def size_bound(f: ReplyFacts, r: Round) -> Refusal | None:
    """A bound checked before the arrays are read: reading them is what it protects."""
    limit = r.policy.max_update_bytes
    if limit is not None and f.nbytes > limit:
        return _refuse(Reason.OUT_OF_BOUNDS, "size_bound",
                       f"update is {f.nbytes} bytes, policy max_update_bytes is {limit}")
    return None


def arrays_readable(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.arrays_error is not None or f.update is None or f.tensors is None:
        return _refuse(Reason.MALFORMED, "arrays_readable", str(f.arrays_error))
    return None


def arrays_signed(f: ReplyFacts, r: Round) -> Refusal | None:
    """The digest recomputed from the arrays received is the one the client signed."""
    if f.statement is not None and f.update != f.statement.statement.update:
        return _refuse(Reason.DIGEST_MISMATCH, "arrays_signed", f"arrays received digest to "
                       f"{f.update}, the statement signed {f.statement.statement.update}",
                       f.update)
    return None


def metrics_signed(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.statement is not None and dict(f.metrics) != f.statement.statement.metrics:
        return _refuse(Reason.DIGEST_MISMATCH, "metrics_signed",
                       "metrics received differ from the signed statement's", f.update)
    return None


def metrics_allowed(f: ReplyFacts, r: Round) -> Refusal | None:
    """Only the metrics the policy names reach the ledger: a client cannot make the log
    keep a value (a per-record loss, a count) that the consortium agreed not to record."""
    allowed = r.policy.metric_keys
    if allowed is None:
        return None
    extra = sorted(k for k in f.metrics if k not in allowed and k != r.policy.weight_key)
    if extra:
        shown = ", ".join(repr(k[:40]) for k in extra[:5]) + (" ..." if len(extra) > 5 else "")
        return _refuse(Reason.METRIC_NOT_ALLOWED, "metrics_allowed", f"metrics {shown} are "
                       "not in the policy's metric_keys; the ledger records only those",
                       f.update)
    return None


def nonce_fresh(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.statement is not None and f.statement.statement.nonce in r.history.nonces:
        return _refuse(Reason.REPLAY, "nonce_fresh", f"nonce {f.statement.statement.nonce} "
                       "was already used in this run", f.update)
    return None


def update_fresh(f: ReplyFacts, r: Round) -> Refusal | None:
    """Never seen before in this run; an unchanged model (update == parent) may honestly
    come from several clients."""
    if f.update in r.history.updates and f.update != f.parent:
        return _refuse(Reason.REPLAY, "update_fresh",
                       f"update {f.update} was already sent in this run", f.update)
    return None


def tensor_names(f: ReplyFacts, r: Round) -> Refusal | None:
    got = f.tensors or {}
    if got.keys() != f.expected.keys():
        missing = sorted(f.expected.keys() - got.keys())[:3]
        extra = sorted(got.keys() - f.expected.keys())[:3]
        return _refuse(Reason.MALFORMED, "tensor_names", f"tensor names differ from the "
                       f"global model (missing {missing}, unexpected {extra})", f.update)
    return None


def tensor_types(f: ReplyFacts, r: Round) -> Refusal | None:
    for name, sig in (f.tensors or {}).items():
        if sig != f.expected[name]:
            return _refuse(Reason.MALFORMED, "tensor_types", f"tensor {name!r} is "
                           f"{_signature(sig)}, the global model's is "
                           f"{_signature(f.expected[name])}", f.update)
    return None


def finite(f: ReplyFacts, r: Round) -> Refusal | None:
    if f.non_finite is not None:
        return _refuse(Reason.NON_FINITE, "finite", f"tensor {f.non_finite!r} has NaN or "
                       "infinite values", f.update)
    return None


def weight_valid(f: ReplyFacts, r: Round) -> Refusal | None:
    w = _weight(f, r)
    if (isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)
            or w <= 0):
        return _refuse(Reason.MALFORMED, "weight_valid", f"metric {r.policy.weight_key!r} "
                       f"is {w!r}, want a positive number", f.update)
    return None


def weight_signed(f: ReplyFacts, r: Round) -> Refusal | None:
    """The weight the server aggregates with is the `num_examples` the client signed."""
    w = _weight(f, r)
    if f.statement is not None and f.statement.statement.num_examples != w:  # 10.0 == 10
        return _refuse(Reason.MALFORMED, "weight_signed", f"the statement signs num_examples "
                       f"{f.statement.statement.num_examples}, the reply weighs "
                       f"{r.policy.weight_key}={w}", f.update)
    return None


def dataset_committed(f: ReplyFacts, r: Round) -> Refusal | None:
    if r.policy.require_dataset and (f.statement is None
                                     or f.statement.statement.dataset is None):
        return _refuse(Reason.MALFORMED, "dataset_committed", "the statement has no dataset "
                       "commitment, which the policy requires", f.update)
    return None


def examples_bound(f: ReplyFacts, r: Round) -> Refusal | None:
    limit, w = r.policy.max_examples, _weight(f, r)
    if limit is not None and w > limit:
        return _refuse(Reason.OUT_OF_BOUNDS, "examples_bound", f"{r.policy.weight_key} {w} "
                       f"exceeds policy max_examples {limit}", f.update)
    return None


CHECKS: tuple[Check, ...] = (
    no_error,            # client_error
    statement_readable,  # bad_signature
    signed,              # unsigned
    key_allowed,         # unknown_client
    key_registered,      # bad_signature
    signature_valid,     # bad_signature
    post_quantum,        # not_post_quantum
    signed_for_node,     # bad_signature
    same_run,            # wrong_run
    same_round,          # wrong_round
    parent_sent,         # stale_parent
    one_array_record,    # malformed
    size_bound,          # out_of_bounds
    arrays_readable,     # malformed
    arrays_signed,       # digest_mismatch
    metrics_signed,      # digest_mismatch
    metrics_allowed,     # metric_not_allowed
    nonce_fresh,         # replay
    update_fresh,        # replay
    tensor_names,        # malformed
    tensor_types,        # malformed
    finite,              # non_finite
    weight_valid,        # malformed
    weight_signed,       # malformed
    dataset_committed,   # malformed
    examples_bound,      # out_of_bounds
)
"""The per-reply checks, in order: the first that fails refuses the reply."""


# -- what needs the whole round ------------------------------------------------------------


def norm_bound(policy: Policy, history: History,
               norms: Sequence[float]) -> tuple[float | None, str]:
    """The round's update-norm bound and how it was set (for the refusal detail)."""
    bound = policy.max_update_norm
    if bound is None or not isinstance(bound, MedianNormBound):
        return bound, f"policy max_update_norm {bound}"
    derived = bound.bound(norms)
    if derived is not None:
        history.norm_bound = derived
        return derived, (f"{bound.factor:g} x the median of this round's "
                         f"{sum(1 for n in norms if n > 0)} non-zero update norms")
    if history.norm_bound is not None:
        return history.norm_bound, ("the bound of the last round with at least "
                                    f"{bound.min_updates} non-zero update norms")
    return None, "no bound yet"


def within_norm_bound(candidates: list[ReplyFacts], r: Round) -> dict[int, Refusal]:
    """Refuse the updates whose norm exceeds the round's bound (`out_of_bounds`)."""
    limit, how = norm_bound(r.policy, r.history, [f.norm or 0.0 for f in candidates])
    if limit is None:
        return {}
    out: dict[int, Refusal] = {}
    for i, f in enumerate(candidates):
        norm = f.norm if f.norm is not None else math.inf
        if not norm <= limit:
            out[i] = _refuse(Reason.OUT_OF_BOUNDS, "norm_bound", f"update norm {norm:.6g} "
                             f"exceeds {limit:.6g} ({how})", f.update)
    return out


def metric_keys_agree(candidates: list[ReplyFacts], r: Round) -> dict[int, Refusal]:
    """Refuse replies whose metric keys differ from the most common ones: a Flower
    strategy raises on inconsistent replies, which would stop the whole run."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, f in enumerate(candidates):
        groups.setdefault(f.metric_keys, []).append(i)
    if len(groups) <= 1:
        return {}
    best = max(groups.values(), key=lambda ix: (len(ix), -ix[0]))
    return {i: _refuse(Reason.MALFORMED, "metric_keys_agree", "MetricRecord keys differ "
                       "from the other replies'", candidates[i].update)
            for ix in groups.values() if ix is not best for i in ix}


RoundCheck = Callable[[list[ReplyFacts], Round], dict[int, Refusal]]
ROUND_CHECKS: tuple[RoundCheck, ...] = (within_norm_bound, metric_keys_agree)
"""Checks over the replies that passed CHECKS, in order (each sees the survivors of the
one before)."""


def first_refusal(f: ReplyFacts, r: Round) -> Refusal | None:
    """The first check in CHECKS that `f` fails, None if it passes them all."""
    for check in CHECKS:
        refusal = check(f, r)
        if refusal is not None:
            return refusal
    return None


def verify_round(replies: Sequence[ReplyFacts], r: Round) -> list[Verdict]:
    """Every reply's verdict: CHECKS on each in order, then ROUND_CHECKS on the survivors.

    A reply that passes CHECKS burns its update and nonce at once, so a later reply of the
    same round repeating them is a replay; one refused by a round check gets them back (a
    refused reply burns nothing)."""
    refusals: dict[int, Refusal] = {}
    for i, f in enumerate(replies):
        refusal = first_refusal(f, r)
        if refusal is not None:
            refusals[i] = refusal
        else:
            _burn(r.history, f)
    for check in ROUND_CHECKS:
        alive = [i for i in range(len(replies)) if i not in refusals]
        for j, refusal in check([replies[i] for i in alive], r).items():
            refusals[alive[j]] = refusal
            _unburn(r.history, replies[alive[j]])
    return [Verdict(f, refusals.get(i)) for i, f in enumerate(replies)]


def _burn(history: History, f: ReplyFacts) -> None:
    if f.update is not None:
        history.updates.add(f.update)
    if f.statement is not None:
        history.nonces.add(f.statement.statement.nonce)


def _unburn(history: History, f: ReplyFacts) -> None:
    if f.update is not None and f.update != f.parent:  # an unchanged model burns nothing
        history.updates.discard(f.update)
    if f.statement is not None:
        history.nonces.discard(f.statement.statement.nonce)


# -- measuring an update ---------------------------------------------------------------------


def update_norm(update: Mapping[str, np.ndarray], parent: Mapping[str, np.ndarray]) -> float:
    """L2 norm of (update - parent) over the floating tensors both hold: how far a client
    moved the model, which the norm bound limits."""
    sq = 0.0
    for name, arr in update.items():
        if arr.dtype.kind in "fc" and name in parent:
            d = (arr - parent[name]).reshape(-1)
            sq += float(np.vdot(d, d).real)
    return math.sqrt(sq)


def all_finite(arr: np.ndarray) -> bool:
    """All values finite. A BLAS dot product is one fast pass with no temporary; it is
    non-finite iff some value is, or the squares overflow (then check value by value)."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return True
    flat = arr.reshape(-1)
    if arr.dtype.kind == "f" and arr.dtype.itemsize >= 4:
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(float(np.dot(flat, flat))):
                return True
    return bool(np.isfinite(flat).all())
