"""Reading and replaying the credits a log records.

`balances` and `awards` read the `credit` entries. `replay_credits` recomputes every
award of every run that recorded contracts, from the log alone (the run entry's
contracts, each round's updates and refusals, in log order) plus, for quality rules, the
validation set the auditor supplies (it must hash to the committed digest) and the
stored blobs (the previous global model and each accepted update, by digest). The
operator computes the credits; this is how anyone else checks them: an award the rules
do not give, a missing one, or one altered in the file is named by round, node and rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import entries as E
from ..blobs import BlobError, BlobStore
from ..ledger import Ledger, LoggedEntry
from .contract import Contracts
from .facts import RefusalHistory, RoundArrays, RoundFacts, round_facts
from .quality import Validation
from .rules import Rule


def awards(ledger: Ledger, run: str | None = None) -> list[LoggedEntry]:
    """Every `credit` entry (of `run`, if given) with its index, in log order."""
    return [le for le in ledger.iter_entries(type="credit")
            if isinstance(le.entry, E.Credit) and (run is None or le.entry.run == run)]


def balances(ledger: Ledger, run: str | None = None) -> dict[str, int]:
    """Each node's total credits (in `run`, if given): the sum of its credit amounts."""
    out: dict[str, int] = defaultdict(int)
    for le in awards(ledger, run):
        out[le.entry.node] += le.entry.amount  # type: ignore[attr-defined]
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Difference:
    """The first credit of a round that replay does not reproduce."""

    run: str
    round: int
    node: str
    rule: str
    index: int | None  # the recorded entry's index (None: an award missing from the log)
    recorded: int | None
    expected: int | None
    detail: str

    def __str__(self) -> str:
        at = f"entry {self.index}" if self.index is not None else "no entry"
        return (f"run {self.run} round {self.round} node {self.node} rule {self.rule} "
                f"({at}): {self.detail}")


@dataclass
class CreditReplay:
    """What replay checked and the differences found (`ok`: none)."""

    runs: int = 0
    rounds: int = 0
    credits: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "runs": self.runs, "rounds": self.rounds,
                "credits": self.credits,
                "differences": [{**d.__dict__, "message": str(d)} for d in self.differences]}


def _compare(facts: RoundFacts, recorded: list[LoggedEntry], due: list[E.Credit]
             ) -> Difference | None:
    """The first position where the recorded credits and the due ones differ."""
    for i in range(max(len(recorded), len(due))):
        got = recorded[i] if i < len(recorded) else None
        want = due[i] if i < len(due) else None
        ge = got.entry if got is not None else None
        if ge is not None and want is not None and ge.encode() == want.encode():
            continue
        who = want if ge is None else ge
        assert isinstance(who, E.Credit)
        if ge is None:
            detail = f"due {want.amount} ({want.basis}) but not recorded"  # type: ignore[union-attr]
        elif want is None:
            detail = f"recorded {ge.amount} but no rule awards it"  # type: ignore[attr-defined]
        else:
            detail = (f"recorded {ge.to_json()} but the rules give {want.to_json()}")
        return Difference(facts.run, facts.round, who.node, who.rule,
                          got.index if got is not None else None,
                          getattr(ge, "amount", None), getattr(want, "amount", None), detail)
    return None


def _arrays(facts: RoundFacts, blobs: BlobStore | None) -> RoundArrays:
    if blobs is None:
        raise ValueError("replaying a quality rule needs the blobs directory the run stored "
                         "its models and updates in (--blobs)")
    if facts.parent is None:
        raise ValueError(f"run {facts.run} round {facts.round}: no model entry names the "
                         "round's starting model")
    try:
        return RoundArrays(blobs.get(facts.parent),
                           {c.update: blobs.get(c.update) for c in facts.accepted})
    except BlobError as e:
        raise ValueError(f"run {facts.run} round {facts.round}: {e}") from None


class _Run:
    """One run's contracts and its entries by round, as read from the log."""

    def __init__(self, contracts: Contracts):
        self.contracts = contracts
        self.rounds: dict[int, list[E.Entry]] = defaultdict(list)
        self.credits: dict[int, list[LoggedEntry]] = defaultdict(list)


def _read(ledger: Ledger, rules: Iterable[type[Rule]], validation: Validation | None
          ) -> tuple[dict[str, _Run], list[LoggedEntry]]:
    runs: dict[str, _Run] = {}
    orphans: list[LoggedEntry] = []
    context = {} if validation is None else {"validation": validation}
    for le in ledger.iter_entries():
        e = le.entry
        if isinstance(e, E.Run) and e.contracts is not None and e.run not in runs:
            try:
                runs[e.run] = _Run(Contracts.from_run(e.contracts, rules=rules, **context))
            except ValueError as err:
                raise ValueError(f"run {e.run} (entry {le.index}): {err}") from None
        elif isinstance(e, (E.Update, E.Rejected, E.Model)) and e.run in runs:
            runs[e.run].rounds[e.round].append(e)
        elif isinstance(e, E.Credit):
            if e.run in runs:
                runs[e.run].credits[e.round].append(le)
            else:
                orphans.append(le)
    return runs, orphans


def replay_credits(ledger: Ledger, blobs: BlobStore | None = None, *,
                   validation: Validation | None = None,
                   rules: Iterable[type[Rule]] = ()) -> CreditReplay:
    """Recompute every recorded run's credits and compare (see module docstring).

    Raises ValueError when replay cannot run (an unknown rule, a validation set that
    does not hash to the committed digest, a missing blob); returns the differences."""
    runs, orphans = _read(ledger, tuple(rules), validation)
    report = CreditReplay(runs=len(runs))
    for le in orphans[:1]:
        c = le.entry
        assert isinstance(c, E.Credit)
        report.differences.append(Difference(c.run, c.round, c.node, c.rule, le.index,
                                             c.amount, None, "credit for a run that "
                                             "recorded no contracts"))
    for run_id, run in runs.items():
        history = RefusalHistory(run.contracts.window)
        for rnd in sorted(set(run.rounds) | set(run.credits)):
            facts = round_facts(run_id, rnd, run.rounds.get(rnd, ()), history.before(rnd))
            if run.contracts.needs_arrays and facts.accepted:
                facts = replace(facts, arrays=_arrays(facts, blobs))
            recorded = run.credits.get(rnd, [])
            report.rounds += 1
            report.credits += len(recorded)
            diff = _compare(facts, recorded, run.contracts.credits(facts))
            if diff is not None:
                report.differences.append(diff)
            history.add(facts)
    report.differences.sort(key=lambda d: (d.index is None, d.index or 0))
    return report
