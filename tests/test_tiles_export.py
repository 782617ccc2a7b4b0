"""`export_tiles` and `flchain tiles export` on real SQLite ledgers, checked by a reader
written from the tlog-tiles spec alone (`tiles_reader`): the files, their widths and
paths around tile boundaries, the root rebuilt from tiles, incremental and atomic writes,
and refusals."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiles_reader import (
    TileReader,
    credits,
    file_fetch,
    grow,
    leaf,
    signed_ledger,
    spec_paths,
)

from flchain_plugin.checkpoint import verify_checkpoint
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import generate_key
from flchain_plugin.store import StoreError, node_key
from flchain_plugin.tiles_export import TilesExportError, export_tiles

BOUNDARY_SIZES = [1, 255, 256, 257, 65_536, 70_000]
FLCHAIN = Path(sys.executable).with_name("flchain")


def files(directory: Path) -> dict[str, os.stat_result]:
    return {p.relative_to(directory).as_posix(): p.stat()
            for p in directory.rglob("*") if p.is_file()}


def tile_files(directory: Path) -> set[str]:
    """The published files but the checkpoint (not the exporter's dot-file state)."""
    return {p for p in files(directory) if p != "checkpoint" and not p.startswith(".")}


@pytest.fixture(scope="module")
def boundary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, Path, Path]:
    """One ledger signed at every boundary size, exported once at the end (`full`) and
    once after every checkpoint (`steps`)."""
    tmp = tmp_path_factory.mktemp("boundary")
    led = Ledger(tmp / "l.db", origin="example.com/boundary")
    key = generate_key(led.origin)
    led.pin_verifier(key.verifier)
    for size in BOUNDARY_SIZES:
        grow(led, size, key)
        export_tiles(led, tmp / "steps")
    export_tiles(led, tmp / "full")
    yield led, tmp / "full", tmp / "steps"
    led.close()


def test_spec_example_70000(boundary: tuple[Ledger, Path, Path]) -> None:
    """The spec's own example: size 70,000 has 273 full level-0 tiles and one of width
    112, one full level-1 tile and one of width 17, and a level-2 tile of width 1."""
    _, full, _ = boundary
    names = tile_files(full)
    for path in ("tile/0/272", "tile/0/273.p/112", "tile/1/000", "tile/1/001.p/17",
                 "tile/2/000.p/1", "tile/entries/272", "tile/entries/273.p/112"):
        assert path in names, path
    assert "tile/0/273" not in names and "tile/1/001" not in names and "tile/3/000.p/1" not in names
    assert (full / "tile/0/000").stat().st_size == 256 * 32
    assert (full / "tile/1/001.p/17").stat().st_size == 17 * 32


def test_files_are_exactly_the_tiles_of_every_checkpointed_size(
        boundary: tuple[Ledger, Path, Path]) -> None:
    """Exactly the union of each checkpointed size's tiles (second computation: the
    spec's formulas in tiles_reader), nothing beyond the latest checkpoint."""
    led, full, steps = boundary
    want = set().union(*(spec_paths(s) for s in BOUNDARY_SIZES))
    assert tile_files(full) == want
    assert tile_files(steps) == want
    for s in BOUNDARY_SIZES:  # every partial tile of every checkpointed size
        assert spec_paths(s) <= want
    for path in want:  # the incremental export holds the same bytes as the one-shot one
        assert (full / path).read_bytes() == (steps / path).read_bytes(), path
    assert (full / "checkpoint").read_text() == led.latest_checkpoint()


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_reader_rebuilds_root_from_tiles_alone(boundary: tuple[Ledger, Path, Path],
                                               size: int) -> None:
    """For each checkpointed size, the root from the tiles a client of that size fetches
    equals the ledger's root at that size; the latest equals the signed checkpoint's."""
    led, full, _ = boundary
    reader = TileReader(file_fetch(full), size)
    assert reader.root() == led.root_at(size)
    if size == BOUNDARY_SIZES[-1]:
        cp = verify_checkpoint((full / "checkpoint").read_text(), led.pinned_verifier)
        assert (cp.size, cp.root_hash) == (size, reader.root())


def test_entry_bundles_hash_to_level0(boundary: tuple[Ledger, Path, Path]) -> None:
    """Every bundled entry is the ledger's canonical entry and hashes to its level-0 leaf."""
    led, full, _ = boundary
    reader = TileReader(file_fetch(full), 70_000)
    for n in (0, 137, 273):
        got = reader.entries(n)
        assert len(got) == (112 if n == 273 else 256)
        for j, data in enumerate(got):
            i = n * 256 + j
            assert leaf(data) == reader.hash_at(0, i)
            assert data == led.get(i).data


def test_incremental_writes_only_new_tiles(tmp_path: Path) -> None:
    led, key = signed_ledger(tmp_path / "l.db", [70_000])
    out = tmp_path / "tiles"
    first = export_tiles(led, out)
    assert (first.previous_size, first.size, first.tiles) == (0, 70_000, len(spec_paths(70_000)))
    before = files(out)
    grow(led, 71_000, key)
    second = export_tiles(led, out)
    after = files(out)
    new = set(after) - set(before)
    assert new == spec_paths(71_000) - spec_paths(70_000)
    assert second.tiles == len(new) and second.files == len(new) + 1
    for path, st in before.items():  # no old file touched: full tiles are never rewritten
        if path in tile_files(out):
            assert (after[path].st_ino, after[path].st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert TileReader(file_fetch(out), 71_000).root() == led.root_at(71_000)
    third = export_tiles(led, out)  # nothing new: nothing written
    assert (third.tiles, third.files) == (0, 0)
    assert {p: (st.st_ino, st.st_mtime_ns) for p, st in files(out).items()} == {
        p: (st.st_ino, st.st_mtime_ns) for p, st in after.items()}
    led.close()


def test_late_checkpoint_of_old_size_gets_its_partial_tiles(tmp_path: Path) -> None:
    """A size signed after it was exported past gets its partial tiles; the directory
    still publishes the largest checkpoint (no rollback)."""
    led, key = signed_ledger(tmp_path / "l.db", [300])
    led.append(credits(300, 200))  # head 500, not signed yet
    grow(led, 800, key)
    out = tmp_path / "tiles"
    export_tiles(led, out)
    assert not (out / "tile/0/001.p/244").exists()
    led.sign_checkpoint(key, size=500)
    report = export_tiles(led, out)
    assert (out / "tile/0/001.p/244").exists() and (out / "tile/entries/001.p/244").exists()
    assert report.size == 800 and "\n800\n" in (out / "checkpoint").read_text()
    assert TileReader(file_fetch(out), 500).root() == led.root_at(500)
    led.close()


def test_missing_partial_tile_healed_without_state(tmp_path: Path) -> None:
    """Without the exporter's state file, every checkpointed size's edge tiles are
    checked: one someone removed is written again, nothing else."""
    led, _ = signed_ledger(tmp_path / "l.db", [300, 700])
    out = tmp_path / "tiles"
    export_tiles(led, out)
    (out / ".flchain-tiles.json").unlink()
    (out / "tile/0/001.p/44").unlink()
    report = export_tiles(led, out)
    assert report.tiles == 1 and (out / "tile/0/001.p/44").exists()
    assert tile_files(out) == spec_paths(300) | spec_paths(700)
    led.close()


def test_tampered_ledger_stops_the_export_naming_the_row(tmp_path: Path) -> None:
    """A changed entry or a missing subtree hash is named, and nothing is published."""
    led, _ = signed_ledger(tmp_path / "l.db", [70_000])
    led.close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("UPDATE entries SET data = CAST(? AS BLOB) WHERE idx = 1234", (b'{"x":1}',))
    led = Ledger(tmp_path / "l.db", create=False)
    with pytest.raises(StoreError, match="entry 1234 does not hash to its stored leaf"):
        export_tiles(led, tmp_path / "tiles")
    assert not (tmp_path / "tiles" / "checkpoint").exists()
    led.close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("UPDATE entries SET data = CAST(? AS BLOB) WHERE idx = 1234",
                   (credits(1234, 1)[0].encode(),))
        db.execute("DELETE FROM nodes WHERE id = ?", (node_key(8, 5),))
    led = Ledger(tmp_path / "l.db", create=False)
    with pytest.raises(StoreError, match="level-8 hash 5 is missing"):
        export_tiles(led, tmp_path / "tiles")
    assert not (tmp_path / "tiles" / "checkpoint").exists()
    proc = flchain("--ledger", str(tmp_path / "l.db"), "tiles", "export", str(tmp_path / "t2"))
    assert proc.returncode == 1 and "level-8 hash 5 is missing" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "flchain verify" in proc.stderr
    led.close()


def test_no_checkpoint_refused(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db", origin="example.com/unsigned")
    led.append(credits(0, 10))
    with pytest.raises(TilesExportError, match=r"no signed checkpoint.*checkpoint sign"):
        export_tiles(led, tmp_path / "tiles")
    assert not (tmp_path / "tiles" / "checkpoint").exists()
    led.close()


def test_foreign_and_forked_directories_refused(tmp_path: Path) -> None:
    """Another origin's tiles, or a same-origin tree this ledger does not have, are
    refused and left exactly as they were."""
    mine, _ = signed_ledger(tmp_path / "a.db", [600], origin="example.com/a")
    other, _ = signed_ledger(tmp_path / "b.db", [600], origin="example.com/b")
    fork = Ledger(tmp_path / "fork.db", origin="example.com/a")
    fkey = generate_key("example.com/a")
    fork.append(credits(1_000_000, 600), signer=fkey)  # same origin, other entries
    out = tmp_path / "tiles"
    export_tiles(mine, out)
    before = {p: (out / p).read_bytes() for p in files(out)}
    with pytest.raises(TilesExportError, match=r"holds the tiles of log 'example\.com/a'"):
        export_tiles(other, out)
    with pytest.raises(TilesExportError, match=r"not in this ledger's tree.*forked"):
        export_tiles(fork, out)
    assert {p: (out / p).read_bytes() for p in files(out)} == before
    (out / "checkpoint").write_text("not a note\n")
    with pytest.raises(TilesExportError, match="is not a checkpoint note"):
        export_tiles(mine, out)
    for led in (mine, other, fork):
        led.close()


def test_rollback_refused(tmp_path: Path) -> None:
    """A directory already ahead of the ledger's checkpoints (a restored backup) is not
    rolled back."""
    led, key = signed_ledger(tmp_path / "l.db", [300, 700])
    out = tmp_path / "tiles"
    export_tiles(led, out)
    led.close()
    restored = Ledger(tmp_path / "r.db", origin=led.origin)
    restored.append(credits(0, 300), signer=key)
    restored.append(credits(300, 400))  # head 700 exists, not signed
    with pytest.raises(TilesExportError, match=r"already publishes size 700.*roll readers back"):
        export_tiles(restored, out)
    restored.close()


CRASH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.tiles_export import export_tiles

    def die(done, total):
        if done == int(sys.argv[3]):
            os._exit(9)  # a kill -9: no cleanup, no finally

    export_tiles(Ledger(sys.argv[1], create=False), Path(sys.argv[2]), progress=die)
""")


def test_crash_between_files_leaves_old_consistent_view(tmp_path: Path) -> None:
    """A process killed mid-export leaves the previous checkpoint with all its tiles, no
    temp file, and the next export completes the same files as an uninterrupted one."""
    led, key = signed_ledger(tmp_path / "l.db", [5_000])
    out = tmp_path / "tiles"
    export_tiles(led, out)
    old_note = (out / "checkpoint").read_text()
    grow(led, 9_000, key)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path / "l.db"), str(out), "20"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert (out / "checkpoint").read_text() == old_note
    visible = {p for p in tile_files(out) if "/." not in "/" + p}  # temp files are dot-files
    assert TileReader(file_fetch(out), 5_000).root() == led.root_at(5_000)
    assert len(visible - spec_paths(5_000)) >= 20  # written, not yet published
    assert visible <= spec_paths(5_000) | spec_paths(9_000)
    report = export_tiles(led, out)
    assert report.previous_size == 5_000 and report.size == 9_000
    assert tile_files(out) == spec_paths(5_000) | spec_paths(9_000)
    assert not [p for p in files(out) if p.endswith(".tmp")]  # the killed one's temps swept
    assert TileReader(file_fetch(out), 9_000).root() == led.root_at(9_000)
    led.close()


def test_failure_mid_export_cleans_up(tmp_path: Path) -> None:
    """An exception mid-export (disk full, a bug) leaves no temp file and the old view."""
    led, key = signed_ledger(tmp_path / "l.db", [1_000])
    out = tmp_path / "tiles"
    export_tiles(led, out)
    old_note = (out / "checkpoint").read_text()
    grow(led, 3_000, key)

    def fail(done: int, total: int) -> None:
        if done == 3:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        export_tiles(led, out, progress=fail)
    assert (out / "checkpoint").read_text() == old_note
    assert not [p for p in files(out) if p.endswith(".tmp")]
    led.close()


# -- the command ---------------------------------------------------------------------------


def flchain(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("FLCHAIN_LEDGER", None)
    return subprocess.run([str(FLCHAIN), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_export_json_and_errors(tmp_path: Path) -> None:
    led, _ = signed_ledger(tmp_path / "l.db", [1_000])
    led.close()
    out = tmp_path / "tiles"
    proc = flchain("--ledger", str(tmp_path / "l.db"), "tiles", "export", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["size"] == 1_000 and doc["tiles"] == len(spec_paths(1_000))
    assert doc["files"] == doc["tiles"] + 1 and doc["previous_size"] == 0
    human = flchain("--ledger", str(tmp_path / "l.db"), "tiles", "export", str(out))
    assert human.returncode == 0 and "tiles exported" in human.stdout
    other, _ = signed_ledger(tmp_path / "o.db", [10], origin="example.com/other")
    other.close()
    refused = flchain("--ledger", str(tmp_path / "o.db"), "tiles", "export", str(out))
    assert refused.returncode == 2
    assert refused.stderr.startswith("flchain: error: ") and refused.stderr.count("\n") == 1
    assert "holds the tiles of log" in refused.stderr and "Traceback" not in refused.stderr
    missing = flchain("--ledger", str(tmp_path / "none.db"), "tiles", "export", str(out))
    assert missing.returncode == 2 and "no ledger at" in missing.stderr
