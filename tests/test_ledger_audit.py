"""`verify_ledger` accounts for every stored row and checks every stored checkpoint.

Rows are planted with sqlite3 directly, as whoever holds the file could: each class of row
outside the tree's shape (node rows at unstored levels, above the top or beyond the
frontier; a negative key in any table; entry, head, index and checkpoint rows beyond the
size) must be named by verify, and must not be what a read returns. Checkpoints are
checked against the log's verifier key whenever one is known: given, pinned in the
ledger, or the key file beside it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin import merkle
from flchain_plugin.checkpoint import Checkpoint, sign_checkpoint
from flchain_plugin.cli import cli
from flchain_plugin.commit import commit, key_path, log_signer
from flchain_plugin.ledger import Ledger
from flchain_plugin.ledger_audit import Problem, VerifyReport, verify_ledger
from flchain_plugin.notes import generate_key, load_private_key
from flchain_plugin.store import NODE_LEVEL_SHIFT, StoreError
from flchain_plugin.subtrees import MIN_NODE_LEVEL, stored_node_ranges

BATCHES = [3, 7, 20, 40, 30]  # 100 entries: nodes stored at levels 4 (6), 5 (3), 6 (1)
SIZE = sum(BATCHES)
HEADS = [sum(BATCHES[: i + 1]) for i in range(len(BATCHES))]


def entry(i: int) -> E.Entry:
    return E.Dataset(dataset="sha256:" + f"{i:064x}", owner=f"o{i}", scheme="salted-v1",
                     examples=i)


def build(path: Path, *, pin: bool = True) -> Path:
    """A ledger of BATCHES, each batch committed with a checkpoint signed by the key file
    `<ledger>.key`, whose verifier is pinned in the ledger when `pin`."""
    with Ledger(path, origin="example.com/audit") as led:
        signer = log_signer(led)
        if pin:
            led.pin_verifier(signer.verifier)
        start = 0
        for n in BATCHES:
            commit(led, [entry(i) for i in range(start, start + n)], signer=signer)
            start += n
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("audit") / "base.db")


def copy(base: Path, tmp_path: Path) -> Path:
    path = tmp_path / "case.db"
    shutil.copyfile(base, path)
    shutil.copy2(key_path(base), key_path(path))  # keeps the key file's mode 0600
    return path


def planted(base: Path, tmp_path: Path, edit: Callable[[sqlite3.Connection], object]) -> Problem:
    path = copy(base, tmp_path)
    with sqlite3.connect(path) as c:
        edit(c)
    c.close()
    with Ledger(path, create=False) as led:
        report = led.verify()
    assert report.problem is not None, "planted row went unnoticed"
    return report.problem


def test_the_untouched_ledger_verifies_with_its_pinned_key(base: Path) -> None:
    with Ledger(base, create=False) as led:
        report = led.verify()
        assert report.ok, report.problem
        assert (report.size, report.heads, report.checkpoints) == (SIZE, len(BATCHES), 5)
        assert report.verifier_source == "pinned" and report.verifier == led.pinned_verifier.vkey
        assert report.signed_size == SIZE and report.head_signed and report.warnings == []


# -- B.1: every stored row accounted for ---------------------------------------------------


def node_key(level: int, index: int) -> int:
    return (level << NODE_LEVEL_SHIFT) | index


def stored_node(key: int) -> bool:
    return any(a <= key < b for a, b in stored_node_ranges(SIZE))


@settings(max_examples=40, deadline=None)
@given(level=st.integers(0, 63), index=st.integers(0, (1 << NODE_LEVEL_SHIFT) - 1))
def test_any_node_row_outside_the_tree_is_named(base: Path,
                                                tmp_path_factory: pytest.TempPathFactory,
                                                level: int, index: int) -> None:
    """Unstored levels (0..3), above the top (7..), beyond the frontier at a stored level."""
    key = node_key(level, index)
    if stored_node(key):  # a row the tree has: replacing it is the tamper tests' business
        return
    problem = planted(base, tmp_path_factory.mktemp("n"), lambda c: c.execute(
        "INSERT INTO nodes (id, hash) VALUES (?, ?)", (key, b"\x01" * 32)))
    assert (problem.kind, problem.level, problem.index) == ("node", level, index), problem
    assert "outside the tree" in problem.detail


@pytest.mark.parametrize(("level", "index", "why"), [
    (7, 0, "has 0 node(s) at level 7"),  # above the top level (6)
    (4, 6, "has 6 node(s) at level 4"),  # beyond the frontier: entries 96..111
    (2, 0, "level 2 is not stored"),
    (0, 5, "level 0 is not stored"),
])
def test_node_rows_outside_the_tree_say_why(base: Path, tmp_path: Path, level: int, index: int,
                                            why: str) -> None:
    problem = planted(base, tmp_path, lambda c: c.execute(
        "INSERT INTO nodes (id, hash) VALUES (?, ?)", (node_key(level, index), b"\x01" * 32)))
    assert why in problem.detail and problem.detail.startswith(f"node level {level} index {index}")


def test_a_planted_node_above_the_top_is_named_before_it_breaks_an_append(base: Path,
                                                                         tmp_path: Path) -> None:
    """Before: verify passed and the append that completes that subtree failed with an SQL
    integrity error. Now verify names the row, and the append says to run verify."""
    path = copy(base, tmp_path)
    with sqlite3.connect(path) as c:
        c.execute("INSERT INTO nodes (id, hash) VALUES (?, ?)", (node_key(7, 0), b"\x01" * 32))
    c.close()
    with Ledger(path, create=False) as led:
        assert led.verify().problem is not None
        with pytest.raises(StoreError, match="run `flchain verify`"):
            led.append([entry(i) for i in range(SIZE, 128)])  # completes level 7 index 0
        assert led.size == SIZE  # nothing written


NEGATIVE_ROWS = {
    "entries": ("INSERT INTO entries (idx, type, leaf, data) SELECT -1, type, leaf, data "
                "FROM entries WHERE idx = 0", ("entry", -1)),
    "nodes": ("INSERT INTO nodes (id, hash) VALUES (-1, zeroblob(32))", ("node", -1)),
    "heads": ("INSERT INTO heads (size, root, ts) VALUES (-3, zeroblob(32), 0)", ("head", -3)),
    "checkpoints": ("INSERT INTO checkpoints (id, size, note) SELECT -2, size, note "
                    "FROM checkpoints LIMIT 1", ("checkpoint", -2)),
    "refs": ("INSERT INTO refs (digest, idx) VALUES (5, -4)", ("index", -4)),
    "refs_recent": ("INSERT INTO refs_recent (digest, idx) VALUES (5, -4)", ("index", -4)),
}


@pytest.mark.parametrize("table", sorted(NEGATIVE_ROWS))
def test_a_negative_key_in_any_table_is_named(base: Path, tmp_path: Path, table: str) -> None:
    sql, want = NEGATIVE_ROWS[table]
    problem = planted(base, tmp_path, lambda c: c.execute(sql))
    assert (problem.kind, problem.index) == want, problem


def test_a_negative_index_is_refused_not_read(base: Path, tmp_path: Path) -> None:
    """`ledger[-1]` once returned a planted row -1; now negative indices are refused."""
    path = copy(base, tmp_path)
    with sqlite3.connect(path) as c:
        c.execute(NEGATIVE_ROWS["entries"][0])
    c.close()
    with Ledger(path, create=False) as led:
        for bad in (-1, -SIZE):
            with pytest.raises(IndexError, match="indices run from 0"):
                led[bad]
            with pytest.raises(IndexError, match="indices run from 0"):
                led.get(bad)
        with pytest.raises(TypeError):
            led.get(True)  # type: ignore[arg-type]
        assert led[SIZE - 1].index == SIZE - 1


@pytest.mark.parametrize("idx", [SIZE, SIZE + 7, 1 << 40])
def test_an_entry_row_beyond_the_size_is_named(base: Path, tmp_path: Path, idx: int) -> None:
    problem = planted(base, tmp_path, lambda c: c.execute(
        "INSERT INTO entries (idx, type, leaf, data) SELECT ?, type, leaf, data FROM entries "
        "WHERE idx = 0", (idx,)))
    assert problem.kind == "head" and f"holds {idx + 1} entries" in problem.detail, problem


@pytest.mark.parametrize("table", ["refs", "refs_recent"])
def test_an_index_row_beyond_the_size_is_named(base: Path, tmp_path: Path, table: str) -> None:
    problem = planted(base, tmp_path, lambda c: c.execute(
        f"INSERT INTO {table} (digest, idx) VALUES (7, ?)", (SIZE,)))
    assert (problem.kind, problem.index) == ("index", SIZE), problem


def test_a_head_row_of_size_zero_is_named(base: Path, tmp_path: Path) -> None:
    problem = planted(base, tmp_path, lambda c: c.execute(
        "INSERT INTO heads (size, root, ts) VALUES (0, ?, 0)", (merkle.SHA256.empty_root(),)))
    assert (problem.kind, problem.index) == ("head", 0), problem


@pytest.mark.parametrize("size", HEADS[:-1])
def test_a_deleted_intermediate_head_is_named_by_its_checkpoint(base: Path, tmp_path: Path,
                                                                size: int) -> None:
    problem = planted(base, tmp_path, lambda c: c.execute(
        "DELETE FROM heads WHERE size = ?", (size,)))
    assert (problem.kind, problem.index) == ("checkpoint", size), problem
    assert "no tree head of that size" in problem.detail


@pytest.mark.parametrize("size", [SIZE + 1, 10**9])
def test_a_checkpoint_row_beyond_the_size_is_named(base: Path, tmp_path: Path, size: int) -> None:
    problem = planted(base, tmp_path, lambda c: c.execute(
        "INSERT INTO checkpoints (size, note) SELECT ?, note FROM checkpoints "
        "ORDER BY id DESC LIMIT 1", (size,)))
    assert (problem.kind, problem.index) == ("checkpoint", size), problem


def test_checkpoints_sign_batch_heads_only(base: Path, tmp_path: Path) -> None:
    path = copy(base, tmp_path)
    with Ledger(path, create=False) as led:
        signer = load_private_key(key_path(path))
        with pytest.raises(ValueError, match="not the size after a batch"):
            led.sign_checkpoint(signer, size=50)
        note = sign_checkpoint(Checkpoint(led.origin, 50, led.root_at(50)), signer)
        with pytest.raises(ValueError, match="not the size after a batch"):
            led.add_checkpoint_note(note, signer.verifier)
        assert led.verify().ok


def test_the_first_bad_row_is_named(base: Path, tmp_path: Path) -> None:
    """Two planted rows: the report names the one the documented order reaches first."""
    def edit(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO checkpoints (size, note) VALUES (?, 'x')", (SIZE + 5,))
        c.execute("INSERT INTO nodes (id, hash) VALUES (?, zeroblob(32))", (node_key(9, 0),))

    assert planted(base, tmp_path, edit).kind == "node"


# -- B.2: signatures checked by default -----------------------------------------------------


def replace_notes(path: Path, note_for: Callable[[int, str], str]) -> None:
    with sqlite3.connect(path) as c:
        rows = c.execute("SELECT id, size, note FROM checkpoints").fetchall()
        for cid, size, note in rows:
            c.execute("UPDATE checkpoints SET note = ? WHERE id = ?", (note_for(size, note), cid))
    c.close()


def resigned(key_name: str) -> Callable[[int, str], str]:
    """Re-sign each note's checkpoint with a new key named `key_name`, for that origin."""
    other = generate_key(key_name)

    def sign(size: int, note: str) -> str:
        cp = Checkpoint.parse(note.split("\n\n")[0] + "\n")
        return sign_checkpoint(Checkpoint(key_name, cp.size, cp.root_hash), other)

    return sign


def test_a_checkpoint_re_signed_with_another_key_is_named(base: Path, tmp_path: Path) -> None:
    path = copy(base, tmp_path)
    replace_notes(path, resigned("example.com/audit"))
    with Ledger(path, create=False) as led:
        report = led.verify()
    assert report.problem is not None and report.problem.kind == "checkpoint"
    assert report.problem.index == HEADS[0] and "no signature by log key" in report.problem.detail


def test_a_checkpoint_of_another_origin_is_named_without_any_key(tmp_path: Path) -> None:
    path = build(tmp_path / "l.db", pin=False)
    key_path(path).unlink()  # no verifier key known at all
    replace_notes(path, resigned("example.com/other"))
    with Ledger(path, create=False) as led:
        report = led.verify()
    assert report.verifier is None and report.problem is not None
    assert "origin 'example.com/other'" in report.problem.detail


def test_where_the_verifier_key_comes_from(tmp_path: Path) -> None:
    path = build(tmp_path / "l.db", pin=False)
    with Ledger(path, create=False) as led:
        assert led.pinned_verifier is None
        report = led.verify()
        assert (report.ok, report.verifier_source) == (True, "key file")
        other = generate_key(led.origin).verifier
        given_report = verify_ledger(led, verifier=other)  # the auditor's own pin wins
        assert given_report.verifier_source == "given" and given_report.problem is not None
    key_path(path).unlink()
    with Ledger(path, create=False) as led:
        report = led.verify()
        assert report.ok and report.verifier is None and report.signed_size == SIZE
        assert any("signatures were not checked" in w for w in report.warnings)


def test_pinning_is_once(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", origin="example.com/pin") as led:
        key = generate_key(led.origin)
        led.pin_verifier(key.verifier)
        led.pin_verifier(key.verifier)  # the same key again is fine
        with pytest.raises(ValueError, match="already pins another"):
            led.pin_verifier(generate_key(led.origin).verifier)
        with pytest.raises(ValueError, match="not the ledger origin"):
            led.pin_verifier(generate_key("example.com/else").verifier)
        assert led.pinned_verifier == key.verifier


def test_an_unsigned_newest_head_is_reported(base: Path, tmp_path: Path) -> None:
    path = copy(base, tmp_path)
    with Ledger(path, create=False) as led:
        led.append([entry(SIZE)])
        report = led.verify()
    assert report.ok and not report.head_signed and report.signed_size == SIZE
    assert report.warnings == [f"the newest tree head (size {SIZE + 1}) is covered by no signed "
                               f"checkpoint (latest signed: size {SIZE}); sign one with "
                               "`flchain checkpoint sign`"]
    assert VerifyReport(0, b"", 0, None).head_signed  # an empty log has nothing to sign


# -- the command: init pins, verify checks by default ----------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_init_pins_and_verify_catches_a_re_signed_history(tmp_path: Path) -> None:
    led_path = tmp_path / "l.db"
    code, out, _ = run("--ledger", str(led_path), "init", "--origin", "example.com/cli", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["key_file"] == str(key_path(led_path)) and key_path(led_path).exists()
    vkey = doc["verifier"]
    assert load_private_key(key_path(led_path)).verifier.vkey == vkey
    lines = "".join(json.dumps(entry(i).to_json()) + "\n" for i in range(5))
    r = CliRunner().invoke(cli, ["--ledger", str(led_path), "append"], input=lines)
    assert r.exit_code == 0, r.stderr
    code, out, err = run("--ledger", str(led_path), "verify", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["verifier_source"] == "pinned" and doc["head_signed"] is False
    assert "flchain: warning: the newest tree head (size 5)" in err
    run("--ledger", str(led_path), "checkpoint", "sign", "--key", str(key_path(led_path)))
    doc = json.loads(run("--ledger", str(led_path), "verify", "--json")[1])
    assert doc["ok"] and doc["head_signed"] and doc["signed_size"] == 5 and doc["warnings"] == []

    # The file's writer re-pins and re-signs with a key of its own: verify of the file
    # alone passes (the pin is the writer's); the auditor's own pin catches it.
    attacker = generate_key("example.com/cli")
    with sqlite3.connect(led_path) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'verifier'", (attacker.verifier.vkey,))
    c.close()
    replace_notes(led_path, lambda size, note: sign_checkpoint(
        Checkpoint.parse(note.split("\n\n")[0] + "\n"), attacker))
    assert run("--ledger", str(led_path), "verify")[0] == 0
    code, out, err = run("--ledger", str(led_path), "verify", "--key-verifier", vkey, "--json")
    assert code == 1 and json.loads(out)["problem"]["kind"] == "checkpoint"
    assert err.count("\n") == 1 and "no signature by log key" in err


def test_init_can_pin_a_key_kept_elsewhere(tmp_path: Path) -> None:
    key = generate_key("example.com/hsm")
    led_path = tmp_path / "l.db"
    code, out, _ = run("--ledger", str(led_path), "init", "--key-verifier", key.verifier.vkey,
                       "--json")
    assert code == 0 and json.loads(out)["key_file"] is None and not key_path(led_path).exists()
    with Ledger(led_path, create=False) as led:
        assert led.origin == "example.com/hsm" and led.pinned_verifier == key.verifier
    code, _, err = run("--ledger", str(tmp_path / "m.db"), "init", "--origin", "example.com/x",
                       "--key-verifier", key.verifier.vkey)
    assert code == 2 and "not --origin" in err and not (tmp_path / "m.db").exists()
    code, _, err = run("--ledger", str(tmp_path / "n.db"), "init", "--key-verifier", "garbage")
    assert code == 2 and err.startswith("flchain: error: --key-verifier") and err.count("\n") == 1


def test_min_node_level_is_the_stored_shape() -> None:
    assert stored_node_ranges(15) == []
    assert stored_node_ranges(16) == [(node_key(MIN_NODE_LEVEL, 0), node_key(MIN_NODE_LEVEL, 1))]
