"""The audit report's facts: what one ledger shows about its runs.

A data protection officer or a model-risk auditor reads one page (`report_html` renders
it) or one JSON document (`AuditReport.to_json`, what `flchain report --json` prints):
the runs and their policies; every round with the updates it accepted and refused and
why; per-client totals; the lineage of the final model; credits; signed checkpoints with
their witness cosignatures; chain anchors; the verification and replay status; and which
of these records serve which record-keeping duty (EU AI Act, GDPR).

Framework-free and read-only: it reads the ledger, its stored checkpoint notes and, for
lineage and replay, the blob store. Nothing here is trusted from the ledger beyond what
`verify_ledger` checks: every string it returns is the ledger's own and is escaped by the
renderer, never interpreted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import entries as E
from . import notes
from .checkpoint import Checkpoint, CheckpointError
from .digest import parse_digest
from .ledger import Ledger, LoggedEntry
from .ledger_audit import VerifyReport, known_verifier, verify_ledger
from .lineage import LineageError, latest_model
from .lineage import lineage as trace
from .replay import STATUSES, replay

REPORT_FORMAT = "flchain-report/v1"
"""The JSON document's `format`: a field's meaning never changes within a version."""

REPLAY_STATUSES = STATUSES
"""A replayed round's status: `flchain_plugin.replay`'s own list, not a copy of it."""


# -- rounds, runs and clients ----------------------------------------------------------------


@dataclass
class RoundFacts:
    """One round of a run: the replies it accepted and refused, the model it recorded."""

    run: str
    round: int
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    model: dict[str, Any] | None = None
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    credits: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "round": self.round, "model": self.model,
                "accepted": self.accepted, "refused": self.refused,
                "evaluations": self.evaluations, "credits": self.credits}


@dataclass
class RunFacts:
    """A run: its `run` entry (strategy, configuration digest, policy) and its rounds."""

    run: str
    index: int | None = None
    strategy: str | None = None
    config: str | None = None
    model: str | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, Any] = field(default_factory=dict)  # what else the run entry holds
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    rounds: dict[int, RoundFacts] = field(default_factory=dict)

    def round(self, number: int) -> RoundFacts:
        return self.rounds.setdefault(number, RoundFacts(self.run, number))

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "index": self.index, "strategy": self.strategy,
                "config": self.config, "model": self.model, "policy": self.policy,
                "recorded": self.recorded,
                "members": [{"node": n, **m} for n, m in self.members.items()],
                "rounds": [self.rounds[r].to_json() for r in sorted(self.rounds)]}


@dataclass
class ClientTotals:
    """What one client (a node id) contributed over the whole ledger."""

    node: str
    name: str | None = None
    accepted: int = 0
    refused: int = 0
    examples: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    credits: int | float = 0
    datasets: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "name": self.name, "accepted": self.accepted,
                "refused": self.refused, "examples": self.examples,
                "reasons": dict(sorted(self.reasons.items())), "credits": self.credits,
                "datasets": sorted(self.datasets)}


def key_name(vkey: str) -> str:
    """The name part of a verifier key (`client-3+1a2b3c4d+AQ...` -> `client-3`)."""
    return vkey.split("+", 1)[0]


def _fields(le: LoggedEntry) -> dict[str, Any]:
    """An entry's own fields and its index: the generic view, for types whose fields other
    parts of the project own (credit, anchor, erasure) and may extend."""
    doc = le.entry.to_json()
    doc.pop("v", None)
    doc.pop("type", None)
    return {"index": le.index, **doc}


class _Collector:
    """Sorts every entry of one pass into runs, rounds, clients and the other sections."""

    def __init__(self) -> None:
        self.runs: dict[str, RunFacts] = {}
        self.clients: dict[str, ClientTotals] = {}
        self.counts: Counter[str] = Counter()
        self.credits: list[dict[str, Any]] = []
        self.anchors: list[dict[str, Any]] = []
        self.erasures: list[dict[str, Any]] = []
        self.rollbacks: list[dict[str, Any]] = []
        self.others: Counter[str] = Counter()

    def run(self, name: str) -> RunFacts:
        return self.runs.setdefault(name, RunFacts(name))

    def client(self, node: str) -> ClientTotals:
        return self.clients.setdefault(node, ClientTotals(node))

    def add(self, le: LoggedEntry) -> None:
        e = le.entry
        self.counts[e.TYPE] += 1
        handler = getattr(self, f"_on_{e.TYPE}", None)
        if handler is None:
            self.others[e.TYPE] += 1
        else:
            handler(le, e)

    def _on_run(self, le: LoggedEntry, e: E.Run) -> None:
        r = self.run(e.run)
        r.index, r.strategy, r.config, r.model = le.index, e.strategy, e.config, e.model
        r.policy = dict(e.policy)
        # fields other parts add to the run entry (the aggregation replay rebuilds, the
        # credit contracts), shown as recorded
        r.recorded = {k: v for k, v in _fields(le).items()
                      if k not in ("index", "run", "strategy", "config", "model", "policy")}

    def _on_member(self, le: LoggedEntry, e: E.Member) -> None:
        self.run(e.run).members[e.node] = {"index": le.index, "key": e.key, "via": e.via}
        self.client(e.node).name = key_name(e.key)

    def _on_update(self, le: LoggedEntry, e: E.Update) -> None:
        self.run(e.run).round(e.round).accepted.append({
            "index": le.index, "node": e.node, "update": e.update,
            "num_examples": e.num_examples, "metrics": e.metrics, "dataset": e.dataset,
            "signed": e.signature is not None})
        c = self.client(e.node)
        c.accepted += 1
        c.examples += e.num_examples
        if e.dataset:
            c.datasets.add(e.dataset)

    def _on_rejected(self, le: LoggedEntry, e: E.Rejected) -> None:
        self.run(e.run).round(e.round).refused.append({
            "index": le.index, "node": e.node, "reason": e.reason, "detail": e.detail,
            "update": e.update})
        c = self.client(e.node)
        c.refused += 1
        c.reasons[e.reason] += 1

    def _on_model(self, le: LoggedEntry, e: E.Model) -> None:
        self.run(e.run).round(e.round).model = {
            "index": le.index, "model": e.model, "parent": e.parent, "inputs": len(e.inputs),
            "aggregator": e.aggregator, "kept": not e.inputs and e.parent == e.model,
            "metrics": e.metrics}

    def _on_evaluation(self, le: LoggedEntry, e: E.Evaluation) -> None:
        self.run(e.run).round(e.round).evaluations.append({
            "index": le.index, "source": e.source, "model": e.model, "metrics": e.metrics})

    def _on_credit(self, le: LoggedEntry, e: E.Credit) -> None:
        doc = _fields(le)
        self.credits.append(doc)
        self.run(e.run).round(e.round).credits.append(doc)
        self.client(e.node).credits += e.amount

    def _on_anchor(self, le: LoggedEntry, e: E.Anchor) -> None:
        self.anchors.append(_fields(le))

    def _on_erasure(self, le: LoggedEntry, e: E.Erasure) -> None:
        self.erasures.append(_fields(le))

    def _on_rollback(self, le: LoggedEntry, e: E.Rollback) -> None:
        self.rollbacks.append(_fields(le))


# -- checkpoints, witnesses and anchors --------------------------------------------------------


def _signature_json(sig: notes.Signature, origin: str) -> dict[str, Any]:
    return {"name": sig.name, "key_id": f"{sig.key_id:08x}",
            "role": "log" if sig.name == origin else "witness",
            "verified": True if sig.verified else None, "timestamp": sig.timestamp}


def checkpoint_facts(size: int, note: str, origin: str,
                     keys: list[notes.Verifier]) -> dict[str, Any]:
    """One stored checkpoint note: its tree, the log's signature and each cosignature,
    each checked where its key is known (`verified` True; None when no key was given)."""
    doc: dict[str, Any] = {"size": size, "root": None, "signatures": [], "problem": None}
    try:
        opened = notes.open_note(note, keys)
    except notes.UnverifiedNoteError as e:
        opened = e.note
    except notes.NoteError as e:  # an invalid signature by a known key, or bad syntax
        doc["problem"] = str(e)
        return doc
    try:
        doc["root"] = Checkpoint.parse(opened.text).root_hash.hex()
    except CheckpointError as e:
        doc["problem"] = str(e)
    doc["signatures"] = [_signature_json(s, origin) for s in opened.signatures]
    return doc


def anchor_facts(ledger: Ledger, anchor: dict[str, Any]) -> dict[str, Any]:
    """An `anchor` entry's fields (`_fields` of an `E.Anchor`) and whether the root it
    anchored is this log's root at that size (checked here, from the ledger; the chain
    itself is checked by `flchain anchor verify`)."""
    size, root, origin = anchor["size"], anchor["root"], anchor["origin"]
    doc = {**anchor, "matches_log": None, "problem": None}
    if origin != ledger.origin:  # fields as `E.Anchor` decoded them: typed and present
        doc["problem"] = f"it anchors another log's checkpoint (origin {origin!r})"
    elif size > ledger.size:
        doc["problem"] = f"size {size} is beyond the log (size {ledger.size})"
    else:
        want = ledger.root_at(size)
        doc["matches_log"] = parse_digest(root) == want
        if not doc["matches_log"]:
            doc["problem"] = (f"anchored root {root} is not the log's root at size {size} "
                              f"({want.hex()})")
    return doc


# -- verification and replay -------------------------------------------------------------------


def verification_facts(report: VerifyReport) -> dict[str, Any]:
    p = report.problem
    return {"ok": report.ok, "size": report.size, "root": report.root.hex(),
            "heads": report.heads, "checkpoints": report.checkpoints,
            "signed_size": report.signed_size, "head_signed": report.head_signed,
            "verifier": report.verifier, "verifier_source": report.verifier_source,
            "warnings": report.warnings,
            "problem": None if p is None else {"kind": p.kind, "index": p.index,
                                               "detail": p.detail}}


def replay_facts(ledger: Ledger, blobs: Any, run_replay: bool) -> dict[str, Any]:
    """Every round recomputed by `flchain_plugin.replay`, or "not_run" and why: the report
    never claims a replay that did not happen. Status "ok" (every round recomputed bit for
    bit), "partial" (none differs, some could not be recomputed: erased, not replayable),
    "failed" (a round differs or lacks an input), "not_run"."""
    if not run_replay:
        return {"status": "not_run", "detail": "replay was not asked for (--no-replay)",
                "rounds": []}
    if blobs is None:
        return {"status": "not_run", "rounds": [],
                "detail": "no blob store: replay needs the kept update blobs"}
    result = replay(ledger, blobs)
    rounds = [r.to_json() for r in result.rounds]
    counts = result.counts()
    detail = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no rounds"
    first = next((r for r in rounds if r["status"] != "ok"), None)
    if first is not None:
        detail += (f"; first not ok: run {first['run']} round {first['round']} "
                   f"{first['status']}: {first['detail']}")
    status = ("failed" if not result.ok else
              "ok" if rounds and counts["ok"] == len(rounds) else "partial")
    return {"status": status, "detail": detail, "rounds": rounds}


# -- record-keeping duties ---------------------------------------------------------------------


@dataclass(frozen=True)
class Duty:
    """A record-keeping duty and the ledger records that serve it."""

    law: str
    article: str
    duty: str
    records: tuple[str, ...]
    how: str

    def to_json(self, counts: Counter[str], checkpoints: int) -> dict[str, Any]:
        found = sum(counts[r] for r in self.records if r != "checkpoint note")
        if "checkpoint note" in self.records:
            found += checkpoints
        return {"law": self.law, "article": self.article, "duty": self.duty,
                "records": list(self.records), "count": found, "how": self.how}


DUTIES: tuple[Duty, ...] = (
    Duty("EU AI Act", "Art. 12(1)", "automatic recording of events (logs) over the "
         "lifetime of the system", ("run", "update", "rejected", "model", "evaluation",
                                    "checkpoint note"),
         "every round is one appended batch with a signed checkpoint; `flchain verify`"),
    Duty("EU AI Act", "Art. 12(2)", "traceability: situations that may present a risk or a "
         "substantial modification; post-market monitoring",
         ("rejected", "model", "rollback", "evaluation"),
         "refusals with reason codes, each model version with its inputs; "
         "`flchain lineage latest`"),
    Duty("EU AI Act", "Art. 12(3)(a), where relevant", "period of each use (start and end)",
         ("run", "checkpoint note", "anchor"),
         "run entries and tree heads; witness cosignature times and chain anchors are "
         "signed, stored tree-head times are not"),
    Duty("EU AI Act", "Art. 12(3)(b)", "reference data the inputs were checked against",
         ("run", "member"), "the run's policy (allow-listed client keys, norm bound) and "
                            "registered client keys"),
    Duty("EU AI Act", "Art. 12(3)(c)", "input data: what each round was trained on",
         ("update", "dataset"), "client update digests and salted dataset commitments, "
                                "never the data; `flchain audit replay`"),
    Duty("EU AI Act", "Art. 19(1), 26(6)", "keep the automatically generated logs at least "
         "six months", ("checkpoint note", "anchor"),
         "append-only log; signed, witnessed and anchored checkpoints show it was kept whole"),
    Duty("GDPR", "Art. 15", "right of access: what one data subject's client contributed",
         ("member", "update", "rejected", "dataset", "credit"),
         "`flchain lineage --client NODE`"),
    Duty("GDPR", "Art. 17", "right to erasure", ("erasure",),
         "`flchain erase DIGEST` destroys the blob and its key; the log still verifies"),
    Duty("GDPR", "Art. 30", "records of processing activities: purpose, participants, "
         "categories of data, recipients", ("run", "member", "dataset", "model"),
         "run entries (strategy, configuration digest, policy), members, dataset "
         "commitments, model versions"),
)


# -- the report --------------------------------------------------------------------------------


@dataclass
class AuditReport:
    """Everything the audit report shows; `to_json` is `flchain report --json`'s document
    and what `report_html.render` draws."""

    ledger: dict[str, Any]
    verification: dict[str, Any]
    runs: list[RunFacts]
    clients: list[ClientTotals]
    lineage: dict[str, Any] | None
    credits: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]
    anchors: list[dict[str, Any]]
    erasures: list[dict[str, Any]]
    rollbacks: list[dict[str, Any]]
    replay: dict[str, Any]
    duties: list[dict[str, Any]]
    counts: dict[str, int]
    generated: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """The ledger verifies, the final model's lineage is consistent, every stored
        checkpoint and anchor matches the log, and replay (if run) found no round that
        differs."""
        return (self.verification["ok"]
                and (self.lineage is None or self.lineage["ok"])
                and not any(c["problem"] for c in self.checkpoints)
                and not any(a["problem"] for a in self.anchors)
                and self.replay["status"] != "failed")

    def problems(self) -> list[str]:
        """One line per thing that does not hold, the most fundamental first."""
        out = []
        if not self.verification["ok"]:
            out.append(f"the ledger does not verify: {self.verification['problem']['detail']}")
        if self.lineage is not None and not self.lineage["ok"]:
            out.append(f"the lineage of {self.lineage['model']} has a problem: "
                       f"{self.lineage['problems'][0]}")
        out += [f"checkpoint at size {c['size']}: {c['problem']}"
                for c in self.checkpoints if c["problem"]]
        out += [f"anchor entry {a['index']}: {a['problem']}"
                for a in self.anchors if a["problem"]]
        if self.replay["status"] == "failed":
            out.append(f"replay: {self.replay['detail']}")
        return out

    def checks(self) -> list[dict[str, str]]:
        """Every check the report made or could not make, one row each: what an auditor
        reads first. Status "ok", "failed", "warning" (holds, but weaker than one may
        assume) or "not_run"."""
        v = self.verification
        out = [_check("ledger (flchain verify)", "ok" if v["ok"] else "failed",
                      f"{v['size']} entries, {v['heads']} tree heads recomputed" if v["ok"]
                      else v["problem"]["detail"])]
        out.append(_check("log signatures", "ok" if v["verifier"] else "warning",
                          f"{v['checkpoints']} checkpoints checked with the "
                          f"{v['verifier_source']} key" if v["verifier"] else
                          "not checked: no verifier key pinned, given or in <ledger>.key"))
        out.append(_check("newest tree head signed", "ok" if v["head_signed"] else "warning",
                          f"latest signed size {v['signed_size']}"))
        out.append(_lineage_check(self.lineage))
        out.append(_witness_check(self.checkpoints))
        bad = [a for a in self.anchors if a["problem"]]
        out.append(_check("chain anchors", "not_run" if not self.anchors else
                          "failed" if bad else "ok",
                          "no anchor entries" if not self.anchors else bad[0]["problem"]
                          if bad else f"{len(self.anchors)} anchored roots match the log"))
        out.append(_check("replay (flchain audit replay)",
                          "warning" if self.replay["status"] == "partial"
                          else self.replay["status"], self.replay["detail"]))
        return out

    def to_json(self) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for c in self.credits:
            totals[c["node"]] += c["amount"]
        return {"format": REPORT_FORMAT, "generated": self.generated, "ok": self.ok,
                "problems": self.problems(), "checks": self.checks(), "ledger": self.ledger,
                "verification": self.verification, "counts": self.counts,
                "runs": [r.to_json() for r in self.runs],
                "clients": [c.to_json() for c in self.clients], "lineage": self.lineage,
                "credits": {"entries": self.credits, "totals": dict(sorted(totals.items()))},
                "checkpoints": self.checkpoints, "anchors": self.anchors,
                "erasures": self.erasures, "rollbacks": self.rollbacks,
                "replay": self.replay, "duties": self.duties}


def _check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"check": name, "status": status, "detail": detail}


def _lineage_check(lin: dict[str, Any] | None) -> dict[str, str]:
    name = "final model's lineage (flchain lineage)"
    if lin is None:
        return _check(name, "not_run", "no model recorded, or the ledger does not verify")
    if not lin["ok"]:
        return _check(name, "failed", lin["problems"][0])
    updates = [u for v in lin["versions"] for r in v["rounds"] if not r["kept"]
               for u in r["updates"]]
    signed = sum(u["signature"] is True for u in updates)
    return _check(name, "ok", f"{len(lin['versions'])} versions back to the start; "
                              f"{signed} of {len(updates)} update signatures verified, "
                              "every input an update of its round")


def _witness_check(checkpoints: list[dict[str, Any]]) -> dict[str, str]:
    name = "witness cosignatures"
    cos = [s for c in checkpoints for s in c["signatures"] if s["role"] == "witness"]
    if not cos:
        return _check(name, "not_run", "no stored checkpoint carries a cosignature")
    checked = sum(s["verified"] is True for s in cos)
    witnesses = len({s["name"] for s in cos})
    if checked < len(cos):
        return _check(name, "warning", f"{len(cos)} cosignatures by {witnesses} witnesses, "
                                       f"{checked} checked (give --witness-key VKEY)")
    return _check(name, "ok", f"{checked} cosignatures by {witnesses} witnesses verified")


def _lineage(ledger: Ledger, model: str | None, blobs: Any) -> dict[str, Any] | None:
    model = model if model is not None else latest_model(ledger)
    if model is None:
        return None
    try:
        return trace(ledger, model, blobs=blobs).to_json()
    except LineageError as e:
        return {"model": model, "ok": False, "problems": [str(e)], "versions": [],
                "datasets": []}


def _times(ledger: Ledger) -> dict[str, float | None]:
    heads = ledger.heads()
    return {"first_head_time": heads[0].timestamp if heads else None,
            "last_head_time": heads[-1].timestamp if heads else None}


def build_report(
    ledger: Ledger,
    *,
    blobs: Any = None,
    model: str | None = None,
    verifier: notes.Verifier | None = None,
    witness_keys: Iterable[notes.Verifier] = (),
    replay: bool = True,
    path: str | None = None,
) -> AuditReport:
    """Gather the audit report. The ledger is scanned by `verify_ledger`, then its
    entries sorted in one pass here (only when it verifies); lineage reads the entries it
    needs by index and replay makes its own pass, each as its command would.

    `blobs`: the blob store (model weights, kept updates) for lineage and replay; `model`:
    the final model to trace (default: the latest recorded); `verifier`: the log key an
    auditor pins (default: pinned or key file, as `flchain verify`); `witness_keys`: the
    witnesses' verifier keys, to check cosignatures; `replay`: recompute every round with
    `flchain_plugin.replay` when it and the blobs are there.
    """
    checked = verify_ledger(ledger, verifier=verifier)
    col = _Collector()
    if checked.ok:  # a ledger that does not verify is reported, not read further
        for le in ledger.iter_entries():
            col.add(le)
    log_key, _ = known_verifier(ledger, verifier)
    keys = ([log_key] if log_key else []) + list(witness_keys)
    stored = ledger.store.checkpoints()
    cps = [checkpoint_facts(size, note, ledger.origin, keys) for size, note in stored]
    counts = dict(sorted(col.counts.items()))
    info = {"path": path, "origin": ledger.origin, "size": ledger.size,
            "root": ledger.head().root.hex(), **_times(ledger),
            "witness_keys": [k.vkey for k in witness_keys]}
    return AuditReport(
        ledger=info, verification=verification_facts(checked),
        runs=list(col.runs.values()),
        clients=sorted(col.clients.values(), key=lambda c: (c.name or "~", c.node)),
        lineage=_lineage(ledger, model, blobs) if checked.ok else None,
        credits=col.credits, checkpoints=cps,
        anchors=[anchor_facts(ledger, a) for a in col.anchors],
        erasures=col.erasures, rollbacks=col.rollbacks,
        replay=(replay_facts(ledger, blobs, replay) if checked.ok else
                {"status": "not_run", "detail": "the ledger does not verify", "rounds": []}),
        duties=[d.to_json(col.counts, len(stored)) for d in DUTIES], counts=counts)
