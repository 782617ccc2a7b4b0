"""An access request: everything the ledger records about one client, and where it went.

A data subject (or the organisation behind a client) may ask what was kept about it. The
ledger names a client by its node id: its `member` keys, the `dataset` commitments it owns,
every `update` it sent and whether the update is still kept, erased or was never kept, the
`model` versions that aggregated each update, the replies refused and why, and its
`credit` awards. One pass over the log; digests and metadata only, as the ledger holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import entries as E
from .vault import UpdateVault


@dataclass
class ClientRecords:
    node: str
    members: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    credits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.members or self.datasets or self.updates or self.rejected
                    or self.credits)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "members": self.members, "datasets": self.datasets,
                "updates": self.updates, "rejected": self.rejected, "credits": self.credits}


def client_records(ledger: Any, node: str, vault: UpdateVault | None = None) -> ClientRecords:
    """What the ledger records about `node`; `vault` tells kept updates from erased ones."""
    out = ClientRecords(node)
    by_index: dict[int, dict[str, Any]] = {}
    erased: dict[str, int] = {}
    for le in ledger.iter_entries():
        e, i = le.entry, le.index
        if isinstance(e, E.Member) and e.node == node:
            out.members.append({"index": i, "run": e.run, "key": e.key, "via": e.via})
        elif isinstance(e, E.Dataset) and e.owner == node:
            out.datasets.append({"index": i, "dataset": e.dataset, "scheme": e.scheme,
                                 "examples": e.examples})
        elif isinstance(e, E.Update) and e.node == node:
            row = {"index": i, "run": e.run, "round": e.round, "update": e.update,
                   "parent": e.parent, "num_examples": e.num_examples, "dataset": e.dataset,
                   "models": [], "stored": None}
            by_index[i] = row
            out.updates.append(row)
        elif isinstance(e, E.Rejected) and e.node == node:
            out.rejected.append({"index": i, "run": e.run, "round": e.round,
                                 "reason": e.reason, "update": e.update})
        elif isinstance(e, E.Credit) and e.node == node:
            out.credits.append({"index": i, "run": e.run, "round": e.round, "rule": e.rule,
                                "amount": e.amount})
        elif isinstance(e, E.Model):
            for j in e.inputs:
                if j in by_index:
                    by_index[j]["models"].append(e.model)
        elif isinstance(e, E.Erasure):
            erased.setdefault(e.blob, i)
    for row in out.updates:
        if row["update"] in erased:
            row["stored"] = f"erased (entry {erased[row['update']]})"
        elif vault is not None:
            row["stored"] = "kept (encrypted)" if vault.has(row["update"]) else "not kept"
    return out
