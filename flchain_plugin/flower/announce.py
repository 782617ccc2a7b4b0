"""Announcing the global model to clients, and what each client may have pinned.

Each instruction gets its own content whose single ConfigRecord also carries the
`Announcement` (protocol.py): run, round, the digest of the model sent, the latest signed
checkpoint, the inclusion proof of the entry that recorded the model, and consistency
proofs from every checkpoint the node may have pinned: the one its last clean reply
confirmed and those offered since (a reply that was lost, or an error after its
signing_mod had pinned).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from ..ledger import Ledger
from .arrays import TensorView, record_views, views_digest
from .protocol import Announcement
from .run import RunState, Sent

log = logging.getLogger("flchain.flower")

UNCONFIRMED_KEPT = 8
"""Checkpoint sizes offered to a node since its last clean reply that announcements keep
proving consistency from; a node that missed more replies in a row than this may be left
without a proof from the size it pinned, and its signing_mod then refuses."""


def own_content(msg: Message) -> tuple[RecordDict, str]:
    """A copy of the message's content with its own ConfigRecord (strategies share one
    content among all messages): (content, name of that ConfigRecord)."""
    content = msg.content
    config_name = next(iter(content.config_records), None)
    new = RecordDict()
    for name, rec in content.items():
        new[name] = ConfigRecord(dict(rec)) if name == config_name else rec
    if config_name is None:
        config_name = "config"
        new[config_name] = ConfigRecord()
    return new, config_name


@dataclass
class _Proofs:
    """The proofs one round's announcements share, each read from the ledger once."""

    ledger: Ledger
    size: int
    _inclusion: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    _consistency: dict[int, tuple[bytes, ...]] = field(default_factory=dict)

    def inclusion(self, index: int) -> tuple[bytes, ...]:
        if index not in self._inclusion:
            self._inclusion[index] = self.ledger.inclusion_proof(index, self.size).hashes
        return self._inclusion[index]

    def consistency(self, first: int) -> tuple[bytes, ...]:
        """From a tree of `first` entries to the announced checkpoint's."""
        if first not in self._consistency:
            self._consistency[first] = self.ledger.consistency_proof(first, self.size).hashes
        return self._consistency[first]


@dataclass
class Announcer:
    """Writes announcements and tracks, per node, the checkpoint sizes it may have pinned."""

    ledger: Ledger
    server_key: str
    weight_key: str
    checkpoint: str | None = None
    checkpoint_size: int = 0
    confirmed: dict[int, int] = field(default_factory=dict)
    unconfirmed: dict[int, list[int]] = field(default_factory=dict)
    resumed: list[int] = field(default_factory=list)  # a restarted run: sizes any node
    # may have pinned from the process before

    def signed(self, checkpoint: str, size: int) -> None:
        """A new checkpoint was signed: announce it from now on."""
        self.checkpoint, self.checkpoint_size = checkpoint, size

    def confirm(self, replies: Iterable[Message]) -> None:
        """A reply without error means its node accepted (and pinned) what it was sent."""
        for r in replies:
            node = r.metadata.src_node_id
            if not r.has_error() and self.unconfirmed.get(node):
                self.confirmed[node] = self.unconfirmed[node][-1]
                self.unconfirmed[node] = []

    def _sizes_to_prove(self, node: int) -> list[int]:
        pinned = self.unconfirmed.setdefault(node, list(self.resumed))
        return sorted({n for n in (self.confirmed.get(node, 0), *pinned)
                       if 0 < n < self.checkpoint_size})

    def _offered(self, node: int) -> None:
        pinned = self.unconfirmed[node]
        if self.checkpoint_size not in pinned:
            pinned.append(self.checkpoint_size)
            del pinned[:-UNCONFIRMED_KEPT]

    def announce(self, st: RunState, server_round: int,
                 messages: Iterable[Message]) -> list[Message]:
        """Give each message a content of its own carrying its announcement; remember what
        each node was sent (`st.sent`) for the checks of its reply.

        Messages whose strategy content and announcement are the same (every node that
        confirmed the same checkpoint, the usual case) share one announced content, as
        they shared the strategy's: announcing is then one ConfigRecord a round, not one
        a node. Nothing writes into it after it is built."""
        out = list(messages)
        st.sent, st.sent_msgs = {}, out
        models: dict[int, Sent] = {}
        announced: dict[tuple[int, tuple[int, ...]], RecordDict] = {}
        proofs = _Proofs(self.ledger, self.checkpoint_size)
        for msg in out:
            records = msg.content.array_records
            if len(records) != 1:
                msg.content = own_content(msg)[0]
                continue
            node = msg.metadata.dst_node_id
            sent = self._sent_model(st, next(iter(records.values())), models)
            st.sent[node] = sent
            sizes = tuple(self._sizes_to_prove(node))
            key = (id(msg.content), sizes)
            if key not in announced:
                announced[key] = self._announced(st, server_round, msg, sent, sizes, proofs)
            msg.content = announced[key]
            self._offered(node)
        return out

    def _announced(self, st: RunState, server_round: int, msg: Message, sent: Sent,
                   sizes: tuple[int, ...], proofs: _Proofs) -> RecordDict:
        """`msg`'s content with the announcement of `sent` proving consistency from `sizes`."""
        content, config_name = own_content(msg)
        entry = index = None
        inclusion: tuple[bytes, ...] = ()
        if sent.digest == st.model:
            entry, index, inclusion = st.entry, st.entry_index, proofs.inclusion(st.entry_index)
        else:
            log.warning("flchain: the model sent to node %s (%s) is not the recorded global "
                        "model; its client will refuse it", msg.metadata.dst_node_id,
                        sent.digest)
        Announcement(st.run, server_round, sent.digest, self.checkpoint, entry, index,
                     inclusion, self.server_key, self.weight_key,
                     tuple((n, proofs.consistency(n)) for n in sizes)).write(content[config_name])
        return content

    @staticmethod
    def _sent_model(st: RunState, record: ArrayRecord, models: dict[int, Sent]) -> Sent:
        """The digest and tensors of a record sent this round (each record hashed once)."""
        if id(record) not in models:
            if record is st.record:
                models[id(record)] = Sent(st.model, st.global_views())
            else:
                views: dict[str, TensorView] = record_views(record)
                models[id(record)] = Sent(views_digest(views), views)
        return models[id(record)]
