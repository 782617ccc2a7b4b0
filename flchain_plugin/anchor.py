"""Anchoring the log's checkpoints on an EVM chain, and minting its credits there.

A chain adds what no consortium member controls: a timestamped record of the log's root
at a size. `anchor_checkpoint` publishes the latest signed checkpoint (origin, size, root)
to the anchor contract (which accepts only a strictly growing size per origin from its
owner) and records an `anchor` entry naming the transaction. `verify_anchors` reads EVERY
anchored root back from the contract's events and proves the local ledger consistent with
each, so a history rewritten everywhere local (entries, hashes, re-signed checkpoints) is
still caught. `mint_round` mints a round's `credit` entries, summed per node, in one
transaction that names the anchored checkpoint holding them; `verify_mints` replays every
mint against the ledger.

Who is paid: a node's payee address is the one configured for it (`payees`), else an
address derived from the node id (`derived_payee`: the last 20 bytes of
keccak256("flchain payee\\n" + node)). No key controls a derived address: its balance is a
public, replayable account of what the node earned, to be paid out by configuring a
payee before minting. This module imports web3 only through `Chain` objects handed to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import entries as E
from . import merkle
from .checkpoint import Checkpoint, unverified_checkpoint
from .commit import Committed, commit, log_signer
from .digest import format_digest
from .ledger import Ledger

if TYPE_CHECKING:
    from .chain.client import Chain

MAX_RECIPIENTS = 1024
"""The most nodes one round's mint pays: credit_token.vy's bound."""

PAYEE_DOMAIN = b"flchain payee\n"
"""Domain separation of derived payee addresses (module docstring)."""


def derived_payee(node: str) -> str:
    """The address credited to `node` when no payee is configured for it."""
    from eth_utils import keccak, to_checksum_address  # a dependency of web3

    return str(to_checksum_address(keccak(PAYEE_DOMAIN + node.encode("utf-8"))[12:]))


def payee(node: str, payees: Mapping[str, str]) -> str:
    """`node`'s address: configured in `payees`, else derived from its id."""
    from eth_utils import is_address, to_checksum_address

    given = payees.get(node)
    if given is None:
        return derived_payee(node)
    if not is_address(given):
        raise ValueError(f"payees[{node!r}]: {given!r} is not an EVM address")
    return str(to_checksum_address(given))


@dataclass(frozen=True)
class AnchoredTree:
    """One anchor read back from the chain: from its event, or from `latest`, which
    knows no transaction or cosignature count (`tx` "" and `witnesses` -1 then)."""

    origin: str
    size: int
    root: bytes
    block: int
    tx: str
    witnesses: int
    timestamp: int


@dataclass(frozen=True)
class AnchorConfig:
    """`LedgerStrategy(anchor=AnchorConfig(chain, every=N))`: anchor the latest checkpoint
    every N rounds, after the round's commit, and (`mint`) mint the credits of the rounds
    since the previous anchor, one transaction per round. `payees`: node id -> address.
    `witness_keys` and `quorum`: verify that many witness cosignatures on the checkpoint
    before anchoring it, and state the count on chain."""

    chain: Chain
    every: int = 1
    mint: bool = True
    payees: Mapping[str, str] = field(default_factory=dict)
    witness_keys: tuple[str, ...] = ()
    quorum: int = 0

    def __post_init__(self) -> None:
        if getattr(self.chain, "anchors", None) is None:
            raise ValueError("chain: want a flchain_plugin.chain.Chain with deployed contracts "
                             "(Chain.deploy(), or give anchors= and token=)")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be an int >= 1 (rounds between anchors), "
                             f"got {self.every!r}")
        if not isinstance(self.payees, Mapping):
            raise ValueError(f"payees must map node ids to addresses, got {self.payees!r}")
        for node in self.payees:
            payee(node, self.payees)
        object.__setattr__(self, "witness_keys", tuple(self.witness_keys))
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) \
                or not 0 <= self.quorum <= len(self.witness_keys):
            raise ValueError(f"quorum must be an int in [0, {len(self.witness_keys)}] "
                             f"(the witness_keys given), got {self.quorum!r}")

    def due(self, server_round: int) -> bool:
        return server_round % self.every == 0

    def publish(self, ledger: Ledger, note: str | None = None) -> E.Anchor:
        """Anchor `note` (default: the latest stored checkpoint), mint the rounds since
        the last anchor; the `anchor` entry to record (not yet appended)."""
        since = latest_anchor(ledger, self.chain)
        return publish(ledger, self.chain, note=note, witness_keys=self.witness_keys,
                       quorum=self.quorum,
                       mint_since=(since.size if since else 0) if self.mint else None,
                       payees=self.payees)


# -- anchoring -------------------------------------------------------------------------


def latest_anchor(ledger: Ledger, chain: Chain) -> AnchoredTree | None:
    """The contract's latest anchor of this ledger's origin, or None."""
    fn = chain.contract("anchor_log").functions.latest(ledger.origin)
    size, root, block, timestamp = chain.call(fn, "reading the latest anchor")
    if size == 0:
        return None
    return AnchoredTree(ledger.origin, int(size), bytes(root), int(block), "", -1,
                        int(timestamp))


def _cosigned(ledger: Ledger, note: str, witness_keys: Iterable[str], quorum: int) -> int:
    """How many witness cosignatures on `note` verify (at least `quorum`, or raise)."""
    if quorum == 0:
        return 0
    from .ledger_audit import known_verifier
    from .quorum import QuorumError, verify_quorum

    log, _ = known_verifier(ledger)
    if log is None:
        raise ValueError("cannot count witness cosignatures: the ledger has no known "
                         "verifier key (pin one with `flchain init --key-verifier`)")
    try:
        return len(verify_quorum(note, log, list(witness_keys), quorum,
                                 origin=ledger.origin).cosigners)
    except QuorumError as e:
        raise ValueError(f"not anchored: {e}") from None


def checkpoint_to_anchor(ledger: Ledger, note: str | None = None) -> tuple[str, Checkpoint]:
    """`note` (default: the latest stored signed checkpoint) and its checkpoint, checked
    to be of this ledger: its origin, and its root at that size."""
    note = note if note is not None else ledger.latest_checkpoint()
    if note is None:
        raise ValueError("the ledger has no signed checkpoint to anchor: sign one with "
                         "`flchain checkpoint sign`")
    cp = unverified_checkpoint(note)
    if cp.origin != ledger.origin:
        raise ValueError(f"checkpoint is of origin {cp.origin!r}, not this ledger's "
                         f"{ledger.origin!r}")
    if cp.root_hash != ledger.root_at(cp.size):
        raise ValueError(f"checkpoint of size {cp.size} does not match the ledger's root at "
                         "that size: run `flchain verify`")
    return note, cp


def publish(ledger: Ledger, chain: Chain, *, note: str | None = None,
            witness_keys: Iterable[str] = (), quorum: int = 0,
            mint_since: int | None = None, payees: Mapping[str, str] | None = None
            ) -> E.Anchor:
    """Send the anchor transaction for `note` (default: the latest stored signed
    checkpoint) and, with `mint_since`, mint every round whose credit entries lie in
    [mint_since, size) and is not minted yet; the `anchor` entry recording it all."""
    note, cp = checkpoint_to_anchor(ledger, note)
    witnesses = _cosigned(ledger, note, witness_keys, quorum)
    fn = chain.contract("anchor_log").functions.anchor(
        cp.origin, cp.size, cp.root_hash, witnesses, hashlib.sha256(note.encode()).digest())
    receipt = chain.transact(fn, f"anchoring {cp.origin} at size {cp.size}")
    minted = None
    if mint_since is not None and chain.token is not None:
        due = unminted_rounds(ledger, chain, mint_since, cp.size)
        credits = round_credits(ledger, 0, cp.size) if due else {}  # one scan for all rounds
        minted = [mint_round(ledger, chain, cp, run, rnd, payees or {}, credits=credits)
                  for run, rnd in due] or None
    return E.Anchor(chain=chain.id, contract=str(chain.anchors),
                    tx=receipt["transactionHash"].to_0x_hex(),
                    block=int(receipt["blockNumber"]), origin=cp.origin, size=cp.size,
                    root=format_digest(cp.root_hash), minted=minted)


def anchor_checkpoint(ledger: Ledger, chain: Chain, *, note: str | None = None,
                      mint: bool = False, payees: Mapping[str, str] | None = None,
                      witness_keys: Iterable[str] = (), quorum: int = 0) -> Committed:
    """Anchor the latest checkpoint (and with `mint`, mint every credited round not minted
    yet) and commit the `anchor` entry with a signed checkpoint of its own."""
    entry = publish(ledger, chain, note=note, witness_keys=witness_keys, quorum=quorum,
                    mint_since=0 if mint else None, payees=payees)
    return commit(ledger, [entry], signer=log_signer(ledger))


def anchors(ledger: Ledger) -> list[tuple[int, E.Anchor]]:
    """The `anchor` entries the ledger records, with their indices, oldest first."""
    out = []
    for logged in ledger.iter_entries(type=E.Anchor.TYPE):
        assert isinstance(logged.entry, E.Anchor)
        out.append((logged.index, logged.entry))
    return out


def anchored_trees(ledger: Ledger, chain: Chain) -> list[AnchoredTree]:
    """Every anchor of this ledger's origin, from the contract's events, oldest first."""
    from eth_utils import keccak

    contract = chain.contract("anchor_log")
    events = chain.logs(contract.events.Anchored, "reading anchors",
                        origin_key=keccak(text=ledger.origin))
    return [AnchoredTree(ev["args"]["origin"], int(ev["args"]["size"]),
                         bytes(ev["args"]["root"]), int(ev["blockNumber"]),
                         ev["transactionHash"].to_0x_hex(), int(ev["args"]["witnesses"]),
                         int(ev["args"]["timestamp"]))
            for ev in events if ev["args"]["origin"] == ledger.origin]


# -- verifying -------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorReport:
    """What `verify_anchors` checked; `problems` empty when everything holds.
    `elsewhere`: the indices of `anchor` entries recorded on another chain or contract,
    which this chain cannot confirm: named, so a reader knows they went unchecked."""

    size: int
    anchored: tuple[AnchoredTree, ...]
    entries: int
    problems: tuple[str, ...]
    elsewhere: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def check_tree(ledger: Ledger, tree: AnchoredTree, size: int, root: bytes) -> str | None:
    """None if the ledger's tree of `size` (root `root`) extends the anchored one: a
    consistency proof from the anchored root, computed from the ledger, verifies."""
    where = f"size {tree.size} anchored in block {tree.block} (tx {tree.tx})"
    if tree.size > size:
        return (f"{where}, but the ledger has only {size} entries: entries were removed, or "
                "that anchor is not of this ledger")
    proof = ledger.consistency_proof(tree.size, size)
    try:
        merkle.verify_consistency(tree.size, size, proof.hashes, tree.root, root)
    except merkle.ProofError as e:
        return (f"{where}: the ledger is not consistent with the anchored root "
                f"{tree.root.hex()} ({e}): its history was rewritten")
    return None


def _on_chain(entry: E.Anchor, chain: Chain) -> bool:
    """Whether `entry` was anchored on this chain's anchor contract."""
    return entry.chain == chain.id and entry.contract.lower() == str(chain.anchors).lower()


def _entry_problem(index: int, entry: E.Anchor,
                   by_tx: Mapping[str, AnchoredTree]) -> str | None:
    tree = by_tx.get(entry.tx.lower())
    if tree is None:
        return (f"anchor entry {index} names transaction {entry.tx}, which anchored nothing "
                f"for {entry.origin} in contract {entry.contract}")
    if (tree.size, format_digest(tree.root)) != (entry.size, entry.root):
        return (f"anchor entry {index} records size {entry.size} root {entry.root}, but "
                f"transaction {entry.tx} anchored size {tree.size} root "
                f"{format_digest(tree.root)}")
    return None


def verify_anchors(ledger: Ledger, chain: Chain) -> AnchorReport:
    """Prove the ledger consistent with every root anchored for its origin, and check
    that every `anchor` entry for this contract names a real anchor transaction; entries
    of another chain or contract are listed in `elsewhere`, for that chain's auditor."""
    head = ledger.head()
    trees = anchored_trees(ledger, chain)
    problems = [p for t in trees if (p := check_tree(ledger, t, head.size, head.root))]
    by_tx = {t.tx.lower(): t for t in trees}
    recorded = anchors(ledger)
    here = [(i, e) for i, e in recorded if _on_chain(e, chain)]
    problems += [p for i, e in here if (p := _entry_problem(i, e, by_tx))]
    elsewhere = tuple(i for i, e in recorded if not _on_chain(e, chain))
    return AnchorReport(head.size, tuple(trees), len(recorded), tuple(problems), elsewhere)


# -- minting ---------------------------------------------------------------------------


def round_credits(ledger: Ledger, start: int = 0, end: int | None = None
                  ) -> dict[tuple[str, int], dict[str, int]]:
    """The `credit` entries in [start, end), summed per node, by (run, round). Amounts
    are whole, non-negative token units: `entries.Credit` refuses any other on reading."""
    out: dict[tuple[str, int], dict[str, int]] = {}
    for logged in ledger.iter_entries(start, end, type=E.Credit.TYPE):
        e = logged.entry
        assert isinstance(e, E.Credit)
        nodes = out.setdefault((e.run, e.round), {})
        nodes[e.node] = nodes.get(e.node, 0) + e.amount
    return out


def unminted_rounds(ledger: Ledger, chain: Chain, start: int, end: int
                    ) -> list[tuple[str, int]]:
    """The (run, round)s with credits in [start, end) that the token has not minted."""
    from eth_abi import encode
    from eth_utils import keccak

    token = chain.contract("credit_token").functions
    return [key for key in round_credits(ledger, start, end)
            if not chain.call(token.minted(keccak(encode(["string", "uint64"], list(key)))),
                              "reading mints")]


def mint_round(ledger: Ledger, chain: Chain, anchored: Checkpoint, run: str, rnd: int,
               payees: Mapping[str, str], *,
               credits: Mapping[tuple[str, int], Mapping[str, int]] | None = None
               ) -> dict[str, Any]:
    """Mint round `rnd` of `run` in one transaction against the anchored checkpoint that
    holds its credits; what the `anchor` entry records of it. `credits`: the ledger's
    `round_credits` below `anchored.size`, when the caller already summed them (minting
    many rounds reads the ledger once, not once a round)."""
    if credits is None:
        credits = round_credits(ledger, 0, anchored.size)
    node_credits = credits.get((run, rnd))
    if not node_credits:
        raise ValueError(f"run {run!r} round {rnd}: no credit entries below size "
                         f"{anchored.size}")
    paid = sorted((payee(n, payees), a) for n, a in node_credits.items() if a > 0)
    if len(paid) > MAX_RECIPIENTS:
        raise ValueError(f"run {run!r} round {rnd}: {len(paid)} nodes credited, the token "
                         f"mints at most {MAX_RECIPIENTS} a round (credit_token.vy)")
    token = chain.contract("credit_token")
    fn = token.functions.mint_round(anchored.origin, anchored.size, anchored.root_hash, run,
                                    rnd, [a for a, _ in paid], [v for _, v in paid])
    receipt = chain.transact(fn, f"minting run {run} round {rnd}")
    return {"token": str(chain.token), "tx": receipt["transactionHash"].to_0x_hex(),
            "run": run, "round": rnd, "total": sum(v for _, v in paid)}


@dataclass(frozen=True)
class MintReport:
    """What `verify_mints` compared: each minted round against the ledger's credits."""

    rounds: int
    total: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _minted_amounts(chain: Chain) -> list[tuple[Any, dict[str, int]]]:
    """Each Minted event with what its transaction minted to whom."""
    token = chain.contract("credit_token")
    zero = "0x" + "00" * 20
    per_tx: dict[str, dict[str, int]] = {}
    for ev in chain.logs(token.events.Transfer, "reading mints", sender=zero):
        paid = per_tx.setdefault(ev["transactionHash"].to_0x_hex(), {})
        paid[ev["args"]["receiver"]] = paid.get(ev["args"]["receiver"], 0) + ev["args"]["value"]
    return [(ev, per_tx.get(ev["transactionHash"].to_0x_hex(), {}))
            for ev in chain.logs(token.events.Minted, "reading mints")]


def verify_mints(ledger: Ledger, chain: Chain, payees: Mapping[str, str] | None = None
                 ) -> MintReport:
    """Replay every mint of this ledger's origin: what each round's transaction minted
    to each address equals the round's credits in the ledger, summed per node; names
    the round and node that differ."""
    ledger_credits = round_credits(ledger)
    problems: list[str] = []
    rounds = total = 0
    for ev, paid in _minted_amounts(chain):
        args = ev["args"]
        if args["origin"] != ledger.origin:
            continue
        rounds += 1
        total += args["total"]
        key, tx = (args["run"], int(args["round"])), ev["transactionHash"].to_0x_hex()
        want: dict[str, int] = {}  # summed: nodes may share a payee, as the mint pays
        names: dict[str, str] = {}
        for n, a in ledger_credits.get(key, {}).items():
            address = payee(n, payees or {})
            names.setdefault(address, n)
            if a > 0:
                want[address] = want.get(address, 0) + a
        for address in sorted(set(want) | set(paid)):
            if want.get(address, 0) != paid.get(address, 0):
                problems.append(
                    f"run {key[0]} round {key[1]}: node {names.get(address, address)} is "
                    f"credited {want.get(address, 0)} in the ledger but {paid.get(address, 0)}"
                    f" was minted to {address} (tx {tx})")
    return MintReport(rounds, total, tuple(problems))


def balances_on_chain(chain: Chain, nodes: Iterable[str],
                      payees: Mapping[str, str] | None = None) -> dict[str, int]:
    """Each node's token balance (its payee address's)."""
    fns = chain.contract("credit_token").functions
    return {n: int(chain.call(fns.balanceOf(payee(n, payees or {})), "reading balances"))
            for n in nodes}


__all__ = [
    "AnchorConfig",
    "AnchorReport",
    "AnchoredTree",
    "MintReport",
    "anchor_checkpoint",
    "anchored_trees",
    "anchors",
    "balances_on_chain",
    "check_tree",
    "checkpoint_to_anchor",
    "derived_payee",
    "latest_anchor",
    "mint_round",
    "payee",
    "publish",
    "round_credits",
    "unminted_rounds",
    "verify_anchors",
    "verify_mints",
]
