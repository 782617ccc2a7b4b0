"""One commitment per identity (issue 13, B.4) and a signed checkpoint per batch (B.2).

A logged model (its id) and a model version (its name and number) are committed once:
a second commitment is refused at append, also when two processes race for it, and the
first one stands. Each committed batch is followed by a checkpoint signed with the key at
`<ledger file>.key`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin.checkpoint import open_checkpoint
from flchain_plugin.commit import key_path
from flchain_plugin.ledger import Ledger
from flchain_plugin.mlflow.identity import (
    Commitments,
    DuplicateCommitmentError,
    commit_once,
    identity_of,
)
from flchain_plugin.notes import load_private_key

pytestmark = [pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]


def files(i: int) -> E.Digest:
    return E.Digest("sha256:" + f"{i:064x}")


def logged(model_id: str, i: int) -> E.Mlflow:
    return E.Mlflow(kind="logged_model", model_id=model_id, files=files(i), name="m")


def version(name: str, number: int, i: int) -> E.Mlflow:
    return E.Mlflow(kind="model_version", model_id="m-1", name=name, version=str(number),
                    files=files(i))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db") as led:
        yield led


def test_a_second_commitment_of_either_identity_is_refused(ledger: Ledger) -> None:
    commit_once(ledger, logged("m-1", 1))
    commit_once(ledger, version("model", 1, 1))
    size = ledger.size
    for second, first_index in ((logged("m-1", 2), 0), (version("model", 1, 2), 1)):
        with pytest.raises(DuplicateCommitmentError, match="one commitment per identity") as e:
            commit_once(ledger, second)
        assert e.value.existing.index == first_index
        assert ledger.size == size  # refused before anything was written
    # Other identities are not confused with them, even when their fields overlap.
    commit_once(ledger, logged("m-10", 1))
    commit_once(ledger, version("model", 11, 1))
    commit_once(ledger, version("model-2", 1, 1))
    commit_once(ledger, E.Mlflow(kind="logged_model", model_id="m-2", files=files(3),
                                 name="model", detail={"version": "1", "model_id": "m-1"}))
    assert ledger.size == size + 4
    assert ledger.verify().ok


def test_the_index_ignores_look_alike_fields(ledger: Ledger) -> None:
    """Only the identity's own fields count: a field elsewhere holding the same text
    (a dataset named like the model, a detail holding the id) is not a match."""
    decoy = E.Mlflow(kind="logged_model", model_id="m-2", files=files(1), name="x",
                     datasets=[{"name": "model", "version": "1"}],
                     detail={"model_id": "m-1", "kind": "model_version"})
    ledger.append([decoy])
    index = Commitments(ledger)
    assert index.first(identity_of(logged("m-1", 1))) is None
    assert index.first(identity_of(version("model", 1, 1))) is None
    assert index.first(identity_of(decoy)) is not None


def test_each_commit_signs_a_checkpoint_with_the_ledger_key(ledger: Ledger,
                                                            tmp_path: Path) -> None:
    one = commit_once(ledger, logged("m-1", 1))
    two = commit_once(ledger, version("model", 1, 1))
    key = load_private_key(key_path(tmp_path / "ledger.db"))  # created on first use
    assert key.name == ledger.origin
    for committed in (one, two):
        assert committed.checkpoint is not None
        cp, _ = open_checkpoint(committed.checkpoint, key.verifier)
        assert (cp.size, cp.root_hash) == (committed.head.size, committed.head.root)
    assert ledger.checkpoint_sizes(10) == [1, 2]


def test_a_stores_index_follows_what_other_writers_append(tmp_path: Path) -> None:
    """The index is read once per entry and extended: a commit made through another handle
    (another process, another server worker) after the index was read is still found."""
    path = tmp_path / "ledger.db"
    with Ledger(path) as mine, Ledger(path) as theirs:
        index = Commitments(mine)
        commit_once(mine, logged("m-1", 1), commitments=index)
        commit_once(theirs, version("model", 1, 1))  # the index has not seen this one
        with pytest.raises(DuplicateCommitmentError) as e:
            commit_once(mine, version("model", 1, 2), commitments=index)
        assert e.value.existing.index == 1 and index.read == mine.size
        assert index.first(identity_of(version("model", 1, 9)), end=1) is None
        with pytest.raises(ValueError, match="another ledger"):
            commit_once(theirs, logged("m-2", 2), commitments=index)


def test_the_index_learns_its_own_commits_and_reads_no_row_for_them(tmp_path: Path) -> None:
    """After a commit through the index, the index has read up to the new size, and the
    commitment is served from what the index kept: the store is not asked for that row.
    A commit that another writer's append preceded is read from the store as before."""
    path = tmp_path / "ledger.db"
    with Ledger(path) as mine, Ledger(path) as theirs:
        index = Commitments(mine)
        commit_once(mine, logged("m-1", 1), commitments=index)
        assert index.read == mine.size == 1
        rows: list[int] = []
        entry = mine.store.entry
        mine.store.entry = lambda i: rows.append(i) or entry(i)  # type: ignore[method-assign]
        found = index.first(identity_of(logged("m-1", 9)))
        assert found is not None and found.index == 0 and rows == []
        commit_once(theirs, logged("m-2", 2))
        commit_once(mine, logged("m-3", 3), commitments=index)  # rebased past theirs
        assert index.read == mine.size == 3
        again = index.first(identity_of(logged("m-2", 9)))
        assert again is not None and again.index == 1 and rows == [1]
        assert again.entry == logged("m-2", 2)


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from flchain_plugin import entries as E
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.mlflow.identity import DuplicateCommitmentError, commit_once

    path, label, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.001)
    won = 0
    with Ledger(path) as led:
        for i in range(n):
            files = E.Digest("sha256:" + ("%064x" % (2 * i + (label == "b"))))
            for e in (E.Mlflow(kind="logged_model", model_id=f"m-{i}", files=files, name=label),
                      E.Mlflow(kind="model_version", model_id=f"m-{i}", name="race",
                               version=str(i), files=files)):
                try:
                    commit_once(led, e)
                    won += 1
                except DuplicateCommitmentError:
                    pass
    print(won)
""")


def test_two_processes_racing_commit_each_identity_once(tmp_path: Path) -> None:
    """Two writers commit the same 40 logged models and 40 versions, with different files,
    at the same time: exactly one commitment of each lands, whoever wins it."""
    path, go, n = tmp_path / "race.db", tmp_path / "go", 40
    Ledger(path).close()  # one origin, made before the race
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, str(script), str(path), label, str(n), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for label in ("a", "b")]
    go.touch()
    outs = [p.communicate(timeout=200) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    wins = [int(out) for out, _ in outs]
    assert sum(wins) == 2 * n, wins
    with Ledger(path, create=False) as led:
        assert led.verify().ok
        entries = [e.entry for e in led.iter_entries(type="mlflow")]
        sizes = led.checkpoint_sizes(10 * n)
    seen = [identity_of(e) for e in entries]
    assert len(seen) == len(set(seen)) == 2 * n
    assert sorted(sizes) == list(range(1, 2 * n + 1))  # one signed checkpoint per batch


TEXT = st.text(alphabet=st.sampled_from(['a', '1', '"', '\\', 'é', '\u2028', '\x01', '/', ' ']),
               min_size=1, max_size=4)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["logged_model", "model_version"]), TEXT, TEXT, TEXT),
                min_size=1, max_size=12),
       st.tuples(TEXT, TEXT, TEXT))
def test_the_byte_prefilter_finds_exactly_what_decoding_finds(
        rows: list[tuple[str, str, str, str]], probe: tuple[str, str, str]) -> None:
    """Stored entries are canonical JSON, so `"key":value` is the same bytes wherever it
    sits: scanning with the pre-filter selects the same entries as decoding every one,
    whatever escapes the names need."""
    import tempfile

    from flchain_plugin.mlflow.view import MlflowQuery, scan_mlflow

    entries = [E.Mlflow(kind=k, model_id=m, name=n, version=v, files=files(i),
                        detail={"name": v, "version": n, "model_id": n})
               for i, (k, m, n, v) in enumerate(rows)]
    queries = [identity_of(e) for e in entries] + [
        MlflowQuery(kind="model_version", name=probe[0], version=probe[1]),
        MlflowQuery(kind="logged_model", model_id=probe[2]), MlflowQuery(name=probe[0])]
    with tempfile.TemporaryDirectory() as d, Ledger(Path(d) / "l.db") as led:
        led.append(entries)
        index = Commitments(led)
        for q in queries:
            want = [i for i, e in enumerate(entries) if q.matches(e)]
            assert [le.index for le in scan_mlflow(led, q)] == want
            if q.kind is not None:  # an identity: the index holds its first commitment
                first = index.first(q)
                assert (first.index if first else None) == (want[0] if want else None)
