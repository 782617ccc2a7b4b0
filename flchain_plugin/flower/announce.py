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
        """Give each message its own content carrying the announcement; remember what each
        node was sent (`st.sent`) for the checks of its reply."""
        out = list(messages)
        st.sent, st.sent_msgs = {}, out
        models: dict[int, Sent] = {}
        proofs: dict[int, tuple[bytes, ...]] = {}  # consistency: from a size to the latest
        inclusion: tuple[bytes, ...] = ()
        for msg in out:
            content, config_name = own_content(msg)
            node = msg.metadata.dst_node_id
            records = content.array_records
            if len(records) == 1:
                sent = self._sent_model(st, next(iter(records.values())), models)
                st.sent[node] = sent
                entry = index = None
                if sent.digest == st.model:
                    if not inclusion:
                        inclusion = self.ledger.inclusion_proof(
                            st.entry_index, self.checkpoint_size).hashes
                    entry, index = st.entry, st.entry_index
                else:
                    log.warning("flchain: the model sent to node %s (%s) is not the recorded "
                                "global model; its client will refuse it", node, sent.digest)
                sizes = self._sizes_to_prove(node)
                for n in sizes:
                    if n not in proofs:
                        proofs[n] = self.ledger.consistency_proof(n, self.checkpoint_size).hashes
                Announcement(st.run, server_round, sent.digest, self.checkpoint, entry, index,
                             inclusion, self.server_key, self.weight_key,
                             tuple((n, proofs[n]) for n in sizes)).write(content[config_name])
                self._offered(node)
            msg.content = content
        return out

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
