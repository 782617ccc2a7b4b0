"""One lineage core: which entry types record a model is declared on the types, and Flower,
MLflow and Lightning lineage all read it through `flchain_plugin.lineage.walk`.

The table below has one row per way an entry records a model. Each row is logged into a
real SQLite ledger between a recorded parent and a Lightning checkpoint trained from it,
and the three integrations must tell the same story about it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin.ledger import Ledger
from flchain_plugin.lightning.lineage import CheckpointLineageError, checkpoint_lineage
from flchain_plugin.lineage import lineage, parents_of, producer, recorded_as, records, walk
from flchain_plugin.mlflow.verify import lineage as mlflow_lineage
from flchain_plugin.mlflow.view import LocalView


def dg(c: str) -> E.Digest:
    return E.Digest("sha256:" + c * 64)


M, P, FILE, CHILD, CHILD_FILE, MLF, MLF_P, CFG = (dg(c) for c in "12345678")


@dataclass(frozen=True)
class Row:
    """An entry recording model M; `derived` says whether it names P as M's parent."""

    name: str
    make: Callable[[], E.Entry]
    derived: bool
    parent_record: Callable[[], E.Entry] = lambda: E.Run(run="r0", strategy="FedAvg",
                                                         config=CFG, model=P)


ROWS = [
    Row("run: a run's initial model", lambda: E.Run(run="r1", strategy="FedAvg", config=CFG,
                                                    model=M), derived=False),
    Row("update: a client's trained weights", lambda: E.Update(
        run="r0", round=1, node="7", update=M, parent=P, num_examples=3, metrics={},
        dataset=None, nonce="n", key=None, signature=None), derived=True),
    Row("model: a round's aggregate", lambda: E.Model(run="r0", round=1, model=M, parent=P,
                                                      inputs=[], aggregator="FedAvg"),
        derived=True),
    Row("model: a round that kept its model", lambda: E.Model(
        run="r0", round=2, model=M, parent=M, inputs=[], aggregator="FedAvg"), derived=False),
    Row("rollback: an earlier version restored", lambda: E.Rollback(
        model=M, previous=P, reason="diverged"), derived=False),
    Row("checkpoint: a Lightning save", lambda: E.TrainingCheckpoint(
        file=FILE, model=M, epoch=0, step=4, name="a.ckpt", parent=P), derived=True),
    Row("mlflow: a logged model fine-tuned from another", lambda: E.Mlflow(
        kind="logged_model", model_id="m-2", files=MLF, model=M, parents=[MLF_P]),
        derived=True,
        parent_record=lambda: E.Mlflow(kind="logged_model", model_id="m-1", files=MLF_P,
                                       model=P)),
]


def test_the_table_covers_every_type_that_records_a_model() -> None:
    declared = {t for t, cls in E.ENTRY_TYPES.items() if cls.MODEL}
    assert declared == {r.make().TYPE for r in ROWS}
    assert {t for t, cls in E.ENTRY_TYPES.items() if not cls.MODEL} == {
        "member", "rejected", "evaluation", "dataset", "credit", "erasure", "anchor"}
    for cls in E.ENTRY_TYPES.values():
        # what a type records must be findable by digest, or the walk could never reach it
        for name in (cls.MODEL, *cls.NAMED_BY):
            assert name is None or name in cls.SUBJECTS, (cls.TYPE, name)
        if cls.PARENTS is not None:
            assert cls.PARENTS in cls._NAMES, (cls.TYPE, cls.PARENTS)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_every_integration_reads_the_same_lineage(tmp_path: Path, row: Row) -> None:
    entry = row.make()
    with Ledger(tmp_path / "l.db") as led:
        led.append([row.parent_record()])  # 0: the parent P
        led.append([entry])  # 1: records M
        led.append([E.TrainingCheckpoint(file=CHILD_FILE, model=CHILD, epoch=1, step=8,
                                          name="b.ckpt", parent=M)])  # 2: trained from M
        led.append([E.Mlflow(kind="logged_model", model_id="m-3", files=dg("9"), model=M)])

        # The core: what M's record says about its parent.
        assert recorded_as(entry)[0] == M
        assert parents_of(entry) == ((MLF_P,) if entry.TYPE == "mlflow" else
                                     (P,) if row.derived else ())
        assert producer(led, M, before=2).index == 1  # type: ignore[union-attr]
        path = walk(led, M, before=2)
        assert [link.entry.index for link in path.links if link.entry] == (
            [1, 0] if row.derived else [1])
        assert not path.problems

        # Flower: the version of M and, if derived, its parent P.
        lin = lineage(led, M)
        assert lin.ok, lin.problems
        assert (lin.versions[0].source, lin.versions[0].index) == (entry.TYPE, 1)
        assert len(lin.versions) == (2 if row.derived else 1)

        # Lightning: a save trained from M starts at M's record (a save is part of the chain).
        ck = checkpoint_lineage(led, CHILD_FILE)
        if entry.TYPE == "checkpoint":
            assert [c.index for c in ck.chain] == [2, 1] and ck.origin.index == 0  # type: ignore[union-attr]
        else:
            assert [c.index for c in ck.chain] == [2] and ck.origin.index == 1  # type: ignore[union-attr]

        # MLflow: a logged model of weights M links to M's record and, if derived, to P's.
        start = led.get(3)
        steps = {(s.relation, s.index) for s in mlflow_lineage(LocalView(led), start)}
        if entry.TYPE != "mlflow":
            assert (f"same weights ({entry.TYPE})", 1) in steps
        if row.derived:
            assert any(index == 0 for _, index in steps)


def test_the_producer_is_the_latest_derivation_before_the_child(tmp_path: Path) -> None:
    """Several entries record the same weights: a derivation beats an origin, the nearest
    derivation before the child wins, else the first record, and nothing recorded after
    the child counts."""
    with Ledger(tmp_path / "l.db") as led:
        led.append([E.Run(run="r", strategy="FedAvg", config=CFG, model=P)])  # 0
        led.append([E.Rollback(model=M, previous=None, reason="x")])  # 1: origin record
        led.append([E.Model(run="r", round=1, model=M, parent=P, inputs=[],
                            aggregator="FedAvg")])  # 2: derivation
        led.append([E.Model(run="r", round=2, model=M, parent=M, inputs=[],
                            aggregator="FedAvg")])  # 3: kept, origin record
        led.append([E.TrainingCheckpoint(file=FILE, model=M, epoch=0, step=1, name="c",
                                          parent=P)])  # 4: derivation
        assert [e.index for e in records(led, M)] == [1, 2, 3, 4]
        assert producer(led, M).index == 4  # type: ignore[union-attr]
        assert producer(led, M, before=4).index == 2  # type: ignore[union-attr]
        assert producer(led, M, before=2).index == 1  # type: ignore[union-attr]
        assert producer(led, M, before=1) is None
        led.append([E.Run(run="r2", strategy="FedAvg", config=CFG, model=P)])  # 5: origin
        assert producer(led, P).index == 0  # type: ignore[union-attr]  # the earliest origin
        assert producer(led, P, before=0) is None

        # A child naming a parent recorded only after it: the walk names the broken link.
        led.append([E.Model(run="r", round=3, model=CHILD, parent=MLF, inputs=[],
                            aggregator="FedAvg")])  # 6
        led.append([E.Run(run="late", strategy="FedAvg", config=CFG, model=MLF)])  # 7
        path = walk(led, CHILD)
        assert [link.model for link in path.links] == [CHILD, MLF]
        assert path.links[-1].entry is None
        assert path.problems == (f"parent {MLF} of entry 6 is not recorded before it",)
        assert not lineage(led, CHILD).ok


# -- property: every integration agrees with the core on arbitrary ledgers ------------------

MODELS = [dg(c) for c in "abcde"]
FILES = [dg(c) for c in "f09"]


@st.composite
def ledgers(draw: st.DrawFn) -> list[E.Entry]:
    out: list[E.Entry] = []
    for i in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["run", "update", "model", "rollback", "checkpoint",
                                     "mlflow"]))
        m = draw(st.sampled_from(MODELS))
        p = draw(st.none() | st.sampled_from(MODELS))
        if kind == "run":
            out.append(E.Run(run=f"r{i}", strategy="FedAvg", config=CFG, model=m))
        elif kind == "update" and p is not None:
            out.append(E.Update(run="r", round=i, node="1", update=m, parent=p,
                                num_examples=1, metrics={}, dataset=None, nonce=f"n{i}",
                                key=None, signature=None))
        elif kind == "model":
            out.append(E.Model(run="r", round=i, model=m, parent=p, inputs=[],
                               aggregator="FedAvg"))
        elif kind == "rollback":
            out.append(E.Rollback(model=m, previous=p, reason="x"))
        elif kind == "checkpoint":
            out.append(E.TrainingCheckpoint(file=E.Digest(f"sha256:{i + 4096:064x}"), model=m,
                                            epoch=0, step=i, name=f"{i}.ckpt", parent=p))
        else:
            out.append(E.Mlflow(kind="logged_model", model_id=f"m{i}",
                                files=draw(st.sampled_from(FILES)),
                                model=draw(st.none() | st.sampled_from(MODELS)),
                                parents=draw(st.lists(st.sampled_from(FILES), max_size=2))))
    return out


def expected_producer(batch: list[E.Entry], digest: str, before: int) -> int | None:
    """The rule, restated over the plain list: the latest entry before `before` naming a
    parent other than itself, else the first that records `digest`."""
    recorders = [i for i, e in enumerate(batch[:before])
                 if digest in {getattr(e, n) for n in (e.MODEL, *e.NAMED_BY) if n}]
    derived = []
    for i in recorders:
        e = batch[i]
        raw = getattr(e, e.PARENTS) if e.PARENTS else None
        own = {getattr(e, n) for n in (e.MODEL, *e.NAMED_BY) if n}
        if [q for q in (raw if isinstance(raw, list) else [raw]) if q and q not in own]:
            derived.append(i)
    return derived[-1] if derived else (recorders[0] if recorders else None)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=ledgers())
def test_flower_and_lightning_lineage_agree_with_the_core_walk(tmp_path_factory: Any,
                                                               batch: list[E.Entry]) -> None:
    path = tmp_path_factory.mktemp("l") / "l.db"
    with Ledger(path) as led:
        led.append(batch)
        for d in MODELS + FILES:
            path_ = walk(led, d)
            first = path_.links[0]
            assert (first.entry.index if first.entry else None) == expected_producer(
                batch, d, len(batch))
            for a, b in itertools.pairwise(path_.links):
                assert a.entry is not None and b.model == a.parents[0]
                assert b.entry is None or b.entry.index < a.entry.index
                assert b.entry is None or b.entry.index == expected_producer(
                    batch, b.model, a.entry.index)
            for link in path_.links:
                assert link.entry is None or link.model in recorded_as(link.entry.entry)
            if led.find(d):
                lin = lineage(led, d)
                assert [v.model for v in lin.versions] == [x.model for x in path_.links]
                assert lin.ok == (not path_.problems)
        for i, e in enumerate(batch):
            if not isinstance(e, E.TrainingCheckpoint) or e.parent is None:
                continue
            back = walk(led, e.parent, before=i, follow=lambda le: isinstance(
                le.entry, E.TrainingCheckpoint))
            if any(x.entry is None for x in back.links):
                with pytest.raises(CheckpointLineageError, match="is not recorded before it"):
                    checkpoint_lineage(led, e.file)
                continue
            ck = checkpoint_lineage(led, e.file)
            saves = [x.entry.index for x in back.links if x.entry
                     and isinstance(x.entry.entry, E.TrainingCheckpoint)]
            assert [c.index for c in ck.chain] == [i, *saves]
