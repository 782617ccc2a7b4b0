"""The ledger facts of one round that credit rules read, built from the round's entries.

One builder for both sides: the server builds a round's facts from the batch it is
about to commit, an auditor from the same entries read back from the log, so a replayed
award is computed from exactly what the server's was. Facts hold only what the log
records: accepted updates (node, `num_examples`, arrival position = order in the batch),
refusals with their reason, and refusals of earlier rounds of the run (for penalties).
Nothing a client reports about itself besides `num_examples` (its metrics are its own
word) reaches a rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import entries as E


@dataclass(frozen=True)
class Contribution:
    """An accepted update: its node, the examples it claims, its arrival position among
    the round's accepted updates (0 first) and its digest."""

    node: str
    examples: int
    position: int
    update: str


@dataclass(frozen=True)
class Refusal:
    """A refused reply: its node and the reason code of its `rejected` entry."""

    node: str
    reason: str
    round: int


@dataclass(frozen=True)
class RoundArrays:
    """What quality rules evaluate: the global model the round started from and each
    accepted update's tensors, by update digest."""

    previous: Mapping[str, Any]
    updates: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class RoundFacts:
    """One round of one run as the log records it (see module docstring). `earlier`:
    refusals of this run's previous rounds still inside the longest penalty window;
    `parent`: the digest of the global model the round started from."""

    run: str
    round: int
    accepted: tuple[Contribution, ...]
    refused: tuple[Refusal, ...] = ()
    earlier: tuple[Refusal, ...] = ()
    parent: str | None = None
    arrays: RoundArrays | None = field(default=None, compare=False)


def round_facts(run: str, rnd: int, entries: Iterable[E.Entry],
                earlier: Iterable[Refusal] = ()) -> RoundFacts:
    """The facts of round `rnd` of `run` from its entries, in log order."""
    accepted: list[Contribution] = []
    refused: list[Refusal] = []
    parent = None
    for e in entries:
        if getattr(e, "run", None) != run or getattr(e, "round", None) != rnd:
            continue
        if isinstance(e, E.Update):
            accepted.append(Contribution(e.node, e.num_examples, len(accepted), e.update))
        elif isinstance(e, E.Rejected):
            refused.append(Refusal(e.node, e.reason, rnd))
        elif isinstance(e, E.Model):
            parent = e.parent
    return RoundFacts(run, rnd, tuple(accepted), tuple(refused), tuple(earlier), parent)


class RefusalHistory:
    """Refusals of one run by round, kept for as many rounds as a penalty looks back."""

    def __init__(self, window: int):
        self.window = window
        self._by_round: dict[int, tuple[Refusal, ...]] = {}

    def before(self, rnd: int) -> tuple[Refusal, ...]:
        """Refusals of the `window` rounds before `rnd`, oldest round first."""
        return tuple(r for k in sorted(self._by_round) if rnd - self.window <= k < rnd
                     for r in self._by_round[k])

    def add(self, facts: RoundFacts) -> None:
        if self.window:
            self._by_round[facts.round] = facts.refused
            for k in [k for k in self._by_round if k < facts.round - self.window]:
                del self._by_round[k]
