"""What LedgerStrategy remembers about the run it serves, and the entries a round records.

The run state is rebuilt from the ledger when a server restarts (`load_history`): members,
nonces, updates and datasets already recorded for the run are what replays and key
changes are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import Strategy

from .. import entries as E
from ..canonical import json_value
from ..ledger import Ledger
from ..verification import History, ReplyFacts, Verdict
from .arrays import TensorView, record_views
from .protocol import json_safe


@dataclass
class Sent:
    """What one node was sent this round: the model's digest and its tensors."""

    digest: str
    views: dict[str, TensorView]


@dataclass
class RunState:
    """The run being served: its id, the recorded global model, what was sent this round,
    and the `History` the checks read."""

    run: str
    model: str
    record: ArrayRecord
    entry_index: int
    entry: bytes
    views: dict[str, TensorView] | None = None
    history: History = field(default_factory=History)
    datasets: set[str] = field(default_factory=set)
    sent: dict[int, Sent] = field(default_factory=dict)
    sent_msgs: list[Message] = field(default_factory=list)

    def global_views(self) -> dict[str, TensorView]:
        if self.views is None:
            self.views = record_views(self.record)
        return self.views

    def node_of(self, reply: Message) -> int:
        """The node a reply answers for: SuperLink-made errors come from node 1, so map
        them through the instruction they reply to."""
        src = reply.metadata.src_node_id
        if src in self.sent:
            return src
        rid = reply.metadata.reply_to_message_id
        for m in self.sent_msgs:
            if m.metadata.message_id == rid:
                return m.metadata.dst_node_id
        return src

    def sent_to(self, node: int) -> tuple[str, dict[str, TensorView]]:
        """(digest, tensors) of the model sent to `node` (the global one if not known)."""
        sent = self.sent.get(node)
        return (sent.digest, sent.views) if sent else (self.model, self.global_views())

    def load_history(self, ledger: Ledger) -> None:
        """Members, nonces, updates and datasets already recorded for this run."""
        h = self.history
        for le in ledger.iter_entries(type="member"):
            e = le.entry
            if isinstance(e, E.Member) and e.run == self.run:
                h.members[e.node] = e.key
        for le in ledger.iter_entries(type="update"):
            e = le.entry
            if isinstance(e, E.Update) and e.run == self.run:
                h.updates.add(e.update)
                if e.pq_key is not None:
                    h.pq_members.setdefault(e.node, e.pq_key)
                if e.nonce:
                    h.nonces.add(e.nonce)
                if e.dataset:
                    self.datasets.add(e.dataset)

    # -- the entries of a round ------------------------------------------------------------

    def newcomers(self, updates: list[E.Update], via: str) -> list[E.Entry]:
        """`member` entries for nodes signing for the first time, `dataset` entries for
        commitments not seen before in this run (and remember both)."""
        out: list[E.Entry] = []
        for u in updates:
            if u.key is not None and u.node not in self.history.members:
                out.append(E.Member(run=self.run, node=u.node, key=u.key, via=via))
                self.history.members[u.node] = u.key
            if u.pq_key is not None:  # a second ML-DSA-44 key, bound on first use too
                self.history.pq_members.setdefault(u.node, u.pq_key)
            if u.dataset is not None and u.dataset not in self.datasets:
                out.append(E.Dataset(dataset=u.dataset, owner=u.node,
                                     scheme="flchain-dataset/v1", examples=u.num_examples))
                self.datasets.add(u.dataset)
        return out

    def update_entry(self, f: ReplyFacts, server_round: int, weight: Any) -> E.Update:
        """The `update` entry of an accepted reply: the signed statement's fields, or what
        was received for an unsigned reply the policy allowed."""
        assert f.update is not None  # accepted replies were read
        if f.statement is None:
            n = int(weight) if float(weight).is_integer() else 0
            return E.Update(run=self.run, round=server_round, node=f.node,
                            update=f.update, parent=f.parent, num_examples=n,
                            metrics=dict(f.metrics), dataset=None, nonce="", key=None,
                            signature=None)
        s, sig = f.statement.statement, f.statement
        return E.Update(run=s.run, round=s.round, node=s.node, update=s.update, parent=s.parent,
                        num_examples=s.num_examples, metrics=s.metrics, dataset=s.dataset,
                        nonce=s.nonce, key=sig.key, signature=sig.signature_b64,
                        pq_key=sig.pq_key, pq_signature=sig.pq_signature_b64)

    def rejected_entry(self, v: Verdict, server_round: int) -> E.Rejected:
        assert v.refusal is not None
        return E.Rejected(run=self.run, round=server_round, node=v.facts.node,
                          reason=v.refusal.reason.value, detail=v.refusal.detail[:2000],
                          update=v.refusal.update, parent=v.facts.parent)


def describe(strategy: Strategy) -> str:
    """`Outer(Inner(...))` along `.strategy` attributes: the aggregator's name."""
    name = type(strategy).__name__
    inner = getattr(strategy, "strategy", None)
    return f"{name}({describe(inner)})" if isinstance(inner, Strategy) else name


def _scalars(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in sorted(vars(obj).items()):
        if k.startswith("_"):
            continue
        if v is None or isinstance(v, (str, bool, int, float)):
            out[k] = json_value(v)
    return out


def config_json(strategy: Strategy, config: ConfigRecord) -> dict[str, Any]:
    """The strategy chain's scalar parameters and the train config: what the run entry's
    `config` digest commits to."""
    chain: list[dict[str, Any]] = []
    s: Any = strategy
    while isinstance(s, Strategy):
        chain.append({"class": f"{type(s).__module__}.{type(s).__qualname__}",
                      "params": _scalars(s)})
        s = getattr(s, "strategy", None)
    return {"strategy": chain, "config": json_safe(dict(config))}
