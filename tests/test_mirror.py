"""Mirrors: proofs computed from tiles, and a verified copy that follows a growing log.

The tiles come from two writers: `export_tiles` (the project's) for the logs a mirror
follows, and `write_tiles` below (a second, naive writer from raw entry bytes) for the
reader's property tests and for sources no honest exporter would produce.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin import merkle
from flchain_plugin.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from flchain_plugin.ledger import Ledger
from flchain_plugin.mirror import (
    MirrorConflict,
    MirrorError,
    evidence_path,
    mirror,
    read_evidence,
)
from flchain_plugin.notes import Signer, generate_key
from flchain_plugin.store import StoreError
from flchain_plugin.tile_source import (
    DirectorySource,
    HttpSource,
    TileNotFound,
    TileReader,
    TileSourceError,
    open_source,
    read_tile,
)
from flchain_plugin.tiles import (
    ENTRIES,
    TILE_WIDTH,
    Tile,
    encode_bundle,
    encode_hashes,
    level_size,
    levels,
    new_tiles,
    tiles_for,
)
from flchain_plugin.tiles_export import export_tiles

ORIGIN = "example.com/mirror-test"
FLCHAIN = [sys.executable, "-m", "flchain_plugin.cli"]

# -- a second tile writer, from leaf hashes or raw entries ----------------------------------


def level_hashes(leaves: list[bytes]) -> list[list[bytes]]:
    """Every complete hash of every tile level: level L hash i is MTH of its 256^L leaves."""
    out = [leaves]
    while len(out[-1]) >= TILE_WIDTH:
        below = out[-1]
        out.append([merkle.root(below[i:i + TILE_WIDTH])
                    for i in range(0, len(below) - TILE_WIDTH + 1, TILE_WIDTH)])
    return out


class MemorySource:
    """The hash tiles of `leaves[:size]`, built on demand from precomputed levels."""

    location = "memory"

    def __init__(self, levels_: list[list[bytes]], size: int):
        self.levels, self.size, self.reads = levels_, size, 0

    def checkpoint(self) -> str:
        raise TileNotFound("memory: no checkpoint")

    def tile(self, tile: Tile) -> bytes:
        have = tiles_for(self.size, tile.level)
        if tile not in have:
            raise TileNotFound(f"memory: no {tile.path} at size {self.size}")
        self.reads += 1
        level = self.levels[tile.level]
        return encode_hashes(level[tile.first_hash:tile.first_hash + tile.width])


def write_tiles(directory: Path, data: list[bytes], signer: Signer,
                origin: str = ORIGIN) -> str:
    """All tiles and a signed checkpoint for the log of `data` (raw entry bytes)."""
    hashes = level_hashes([merkle.leaf_hash(d) for d in data])
    size = len(data)
    for level in (*levels(size), ENTRIES):
        for t in tiles_for(size, level):
            if level == ENTRIES:
                body = encode_bundle(data[t.first_hash:t.first_hash + t.width])
            else:
                body = encode_hashes(hashes[level][t.first_hash:t.first_hash + t.width])
            path = directory / t.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    note = sign_checkpoint(Checkpoint(origin, size, merkle.root(hashes[0])), signer)
    (directory / "checkpoint").write_text(note, encoding="utf-8")
    return note


# -- proofs from tiles ---------------------------------------------------------------------

_rng = random.Random(14)
BIG = 70_000
LEAVES = [_rng.randbytes(32) for _ in range(BIG)]
LEVELS = level_hashes(LEAVES)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_consistency_proofs_from_tiles_equal_merkles(sizes: tuple[int, int]) -> None:
    size1, size2 = sizes
    reader = TileReader(MemorySource(LEVELS, size2), size2)
    proof = reader.consistency_proof(size1)
    assert proof == merkle.consistency_proof(LEAVES[:size2], size1)
    assert reader.root() == merkle.root(LEAVES[:size2])
    assert reader.root(size1) == merkle.root(LEAVES[:size1])
    merkle.verify_consistency(size1, size2, proof, reader.root(size1), reader.root())


@pytest.mark.parametrize("size1,size2", [(1, 65_536), (255, 65_537), (65_535, 65_536),
                                         (65_536, 70_000), (1_000, 70_000), (69_999, 70_000)])
def test_proofs_across_level_two_tiles(size1: int, size2: int) -> None:
    source = MemorySource(LEVELS, size2)
    reader = TileReader(source, size2)
    assert reader.consistency_proof(size1) == merkle.consistency_proof(LEAVES[:size2], size1)
    assert reader.root() == merkle.root(LEAVES[:size2])
    # O(log n) tile reads, each tile once: at most a few per level.
    assert source.reads <= 4 * (len(levels(size2)) + 1)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3_000), st.integers(0, 3_000))
def test_frontier_from_tiles_extends_to_the_root(size: int, more: int) -> None:
    total = min(size + more, BIG)
    frontier = TileReader(MemorySource(LEVELS, total), total).frontier(size)
    frontier.extend(LEAVES[size:total])
    assert frontier.root() == merkle.root(LEAVES[:total])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(0, 300_000), st.integers(0, 2**64 - 1)).flatmap(
    lambda n: st.tuples(st.integers(max(0, n - 70_000), n), st.just(n))),
       st.sampled_from([ENTRIES, 0, 1, 2, 7]))
def test_new_tiles_answers_at_once_for_any_size(sizes: tuple[int, int], level: int) -> None:
    old, size = sizes
    span = new_tiles(old, size, level)
    if level_size(size, level) <= 2_000 * TILE_WIDTH:  # the whole level fits a list
        assert set(span) == set(tiles_for(size, level)) - set(tiles_for(old, level))
    else:  # a size no list could hold: new_tiles still answers at once
        tiles = list(span)  # at most 70,000 new leaves: a few hundred tiles
        if level_size(old, level) == level_size(size, level):
            assert tiles == []
            return
        assert tiles[-1].first_hash + tiles[-1].width == level_size(size, level)
        assert tiles[0].index == level_size(old, level) // TILE_WIDTH
        assert [t.index for t in tiles] == list(range(tiles[0].index, tiles[-1].index + 1))
        assert all(t.full for t in tiles[:-1])


def test_a_replaced_partial_tile_is_read_from_the_full_one(tmp_path: Path) -> None:
    key = generate_key(ORIGIN)
    data = [f"e{i}".encode() for i in range(512)]
    write_tiles(tmp_path, data[:300], key)
    write_tiles(tmp_path, data, key)
    # The log grew to 512: level 0's tile 1 is full, so its partial may go (tlog-tiles).
    for gone in ("tile/0/001.p/44", "tile/entries/001.p/44"):
        (tmp_path / gone).unlink()
    src = DirectorySource(tmp_path)
    reader = TileReader(src, 300)
    assert reader.root() == merkle.root([merkle.leaf_hash(d) for d in data[:300]])
    assert read_tile(src, Tile(ENTRIES, 1, 44)) == data[256:300]


def test_sources_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(TileSourceError, match="not a directory"):
        open_source(tmp_path / "nope")
    src = open_source(tmp_path)
    with pytest.raises(TileNotFound, match=r"tile/0/000\.p/5 does not exist.*export"):
        src.tile(Tile(0, 0, 5))
    with pytest.raises(TileNotFound, match="checkpoint does not exist"):
        src.checkpoint()
    with (pytest.raises(TileSourceError, match=r"http://127\.0\.0\.1:9/checkpoint"),
          HttpSource("http://127.0.0.1:9", timeout=2) as http):
        http.checkpoint()


# -- mirrors of a growing log ----------------------------------------------------------------


class Log:
    """A source ledger signed by `key`, exported as tiles after every batch."""

    def __init__(self, directory: Path, name: str, key: Signer | None = None):
        self.key = key or generate_key(ORIGIN)
        self.ledger = Ledger(directory / f"{name}.db", origin=ORIGIN)
        self.tiles = directory / f"{name}-tiles"
        self.batches = 0

    def grow(self, n: int, label: str = "a") -> int:
        self.ledger.append([E.Credit(run=label, round=self.batches, node=f"n{j}", rule="test",
                                     amount=j) for j in range(n)], signer=self.key)
        self.batches += 1
        export_tiles(self.ledger, self.tiles)
        return self.ledger.size

    @property
    def vkey(self) -> str:
        return self.key.verifier.vkey


def same_log(source: Ledger, mirror_file: Path) -> list[int]:
    """Assert the mirror holds the source's entries, byte for byte; its tree head sizes."""
    with Ledger(mirror_file, create=False, read_only=True) as m:
        assert m.origin == source.origin
        assert m.head().root == source.root_at(m.size)
        assert [e.data for e in m.iter_entries()] == [
            e.data for e in source.iter_entries(0, m.size)]
        return [h.size for h in m.heads()]


def flchain(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*FLCHAIN, *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_a_mirror_follows_a_growing_log_across_restarts(tmp_path: Path) -> None:
    log = Log(tmp_path, "source")
    m = tmp_path / "mirror.db"
    log.grow(5)
    first = mirror(log.tiles, m, log.vkey)
    assert (first.status, first.old_size, first.size, first.appended) == ("mirrored", 0, 5, 5)
    log.grow(300)  # crosses a full tile: level 1 appears
    log.grow(1)
    assert mirror(log.tiles, m).size == 306  # the key pinned at the first run
    assert mirror(log.tiles, m).status == "up to date"
    checkpointed = [log.grow(n) for n in (40, 211, 1)]  # three checkpoints, seen as one
    # A restart in another process, through the CLI, with the pinned key.
    doc = json.loads(flchain("mirror", str(log.tiles), str(m), "--json").stdout)
    assert doc["status"] == "mirrored" and doc["old_size"] == 306 and doc["size"] == 558
    assert same_log(log.ledger, m) == [5, 306, checkpointed[-1]]
    with Ledger(m, create=False) as led:
        assert led.latest_checkpoint() == log.ledger.latest_checkpoint()
        assert led.checkpoint_sizes(10) == [5, 306, 558]
    # The mirror is a normal ledger: verify with the source's key, read its entries.
    verified = json.loads(flchain("--ledger", str(m), "verify", "--key-verifier", log.vkey,
                                  "--json").stdout)
    assert verified["ok"] and verified["size"] == 558 and verified["signed_size"] == 558
    assert verified["verifier_source"] != "file"
    shown = json.loads(flchain("--ledger", str(m), "show", "557", "--json").stdout)
    assert shown["entry"]["node"] == "n0" and shown["entry"]["round"] == 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_tiles(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server (python -m http.server) over a tiles directory."""
    directory = tmp_path / "served"
    directory.mkdir()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                              "127.0.0.1", "--directory", str(directory)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.05)
        yield directory, f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_mirror_follows_a_log_over_http(tmp_path: Path,
                                          http_tiles: tuple[Path, str]) -> None:
    served, url = http_tiles
    log = Log(tmp_path, "source")
    log.tiles = served
    m = tmp_path / "mirror.db"
    log.grow(3)
    assert mirror(url, m, log.vkey).size == 3
    log.grow(600)
    log.grow(7)
    doc = json.loads(flchain("mirror", url, str(m), "--key-verifier", log.vkey, "--once",
                             "--json").stdout)
    assert (doc["status"], doc["size"], doc["appended"]) == ("mirrored", 610, 607)
    assert mirror(url, m).status == "up to date"
    assert same_log(log.ledger, m) == [3, 610]
    flchain("--ledger", str(m), "verify", "--key-verifier", log.vkey)
    with pytest.raises(TileNotFound, match=r"404 .*is .* the tiles prefix"):
        mirror(url + "nowhere/", tmp_path / "other.db", log.vkey)


def test_a_mirror_follows_flchain_serve(tmp_path: Path) -> None:
    log = Log(tmp_path, "source")
    log.grow(300)
    proc = subprocess.Popen([*FLCHAIN, "--ledger", str(log.ledger.store.path), "serve",
                             "--port", "0", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        m = tmp_path / "mirror.db"
        assert mirror(url, m, log.vkey).size == 300
        log.grow(1_000)  # served from the ledger as it grows, no restart
        report = mirror(url, m)
        assert (report.old_size, report.size) == (300, 1_300)
        assert same_log(log.ledger, m) == [300, 1_300]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    flchain("--ledger", str(m), "verify", "--key-verifier", log.vkey)


# -- a log that signs two histories ---------------------------------------------------------


def forked(tmp_path: Path, sizes: tuple[int, ...]) -> tuple[Log, Log, Path]:
    """A mirror of log `a` at size 5, and a log `b` under the same key with other entries."""
    a = Log(tmp_path, "a")
    a.grow(5, "a")
    m = tmp_path / "mirror.db"
    mirror(a.tiles, m, a.vkey)
    b = Log(tmp_path, "b", key=a.key)
    for n in sizes:
        b.grow(n, "b")
    return a, b, m


def assert_evidence(m: Path, a: Log, kind: str, offered_size: int) -> None:
    (ev,) = read_evidence(m)
    assert ev.kind == kind
    mine, _ = open_checkpoint(ev.mirrored, a.key.verifier)
    theirs, _ = open_checkpoint(ev.offered, a.key.verifier)
    assert (mine.size, mine.root_hash) == (5, a.ledger.root_at(5))
    assert theirs.size == offered_size and theirs.root_hash != a.ledger.root_at(
        min(offered_size, a.ledger.size))
    with Ledger(m, create=False) as led:
        assert led.size == 5 and led.checkpoint_sizes(10) == [5]


def test_a_fork_at_one_size_is_refused_with_evidence(tmp_path: Path) -> None:
    a, b, m = forked(tmp_path, (5,))
    with pytest.raises(MirrorConflict, match=r"fork: .*size 5") as e:
        mirror(b.tiles, m)
    assert e.value.path == evidence_path(m)
    assert_evidence(m, a, "fork", 5)
    r = flchain("mirror", str(b.tiles), str(m), "--json", ok=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "fork" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["kind"] == "fork" and doc["evidence"] == str(evidence_path(m))
    human = flchain("mirror", str(b.tiles), str(m), ok=False)
    assert "two histories" in human.stdout and "mirrored checkpoint" in human.stdout
    assert_evidence(m, a, "fork", 5)  # kept once, however often it is seen
    assert mirror(a.tiles, m).status == "up to date"  # the honest log still mirrors
    r = flchain("mirror", str(a.tiles), str(m), "--json")
    assert json.loads(r.stdout)["evidence"] == 1
    assert "keeps 1 pair(s) of conflicting checkpoints" in r.stderr
    with open(evidence_path(m), "a") as f:
        f.write("{not json\n")
    r = flchain("mirror", str(a.tiles), str(m), ok=False)
    assert r.returncode == 1 and "line 2 is not an evidence record" in r.stderr


@pytest.mark.parametrize("sizes", [(3, 4), (2, 700), (3,)])
def test_a_rewritten_history_is_refused_with_evidence(tmp_path: Path,
                                                      sizes: tuple[int, ...]) -> None:
    a, b, m = forked(tmp_path, sizes)
    with pytest.raises(MirrorConflict, match="rewrite"):
        mirror(b.tiles, m)
    assert_evidence(m, a, "rewrite", sum(sizes))
    flchain("--ledger", str(m), "verify", "--key-verifier", a.vkey)


# -- tampered tiles, wrong keys, bad entries ---------------------------------------------------


def tamper(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_a_tampered_bundle_is_named_and_nothing_appended(tmp_path: Path) -> None:
    log = Log(tmp_path, "source")
    m = tmp_path / "mirror.db"
    log.grow(5)
    mirror(log.tiles, m, log.vkey)
    log.grow(10)
    tamper(log.tiles / "tile/entries/000.p/15", b'"node":"n7","round":1', b'"node":"n8","round":1')
    with pytest.raises(MirrorError, match=r"entry 12 in tile/entries/000\.p/15 hashes to .*"
                                          r"tile/0/000\.p/15 holds"):
        mirror(log.tiles, m)
    r = flchain("mirror", str(log.tiles), str(m), ok=False)
    assert r.returncode == 1 and "entry 12 in tile/entries/000.p/15" in r.stderr
    with Ledger(m, create=False) as led:
        assert led.size == 5
    assert not evidence_path(m).exists()


def test_a_tampered_hash_tile_is_named(tmp_path: Path) -> None:
    log = Log(tmp_path, "source")
    m = tmp_path / "mirror.db"
    log.grow(600)
    tile = log.tiles / "tile/1/000.p/2"
    data = bytearray(tile.read_bytes())
    data[40] ^= 1  # hash 1 of level 1
    tile.write_bytes(bytes(data))
    with pytest.raises(MirrorError, match=r"hash 1 of tile/1/000\.p/2 is not the tree hash"):
        mirror(log.tiles, m, log.vkey)
    tile.write_bytes(tile.read_bytes()[:-1])
    with pytest.raises(MirrorError, match=r"tile/1/000\.p/2: got 63 bytes, want 64"):
        mirror(log.tiles, m, log.vkey)
    with Ledger(m, create=False) as led:
        assert led.size == 0


def test_a_wrong_key_is_refused(tmp_path: Path) -> None:
    log = Log(tmp_path, "source")
    log.grow(4)
    m = tmp_path / "mirror.db"
    stranger = generate_key(ORIGIN).verifier.vkey
    with pytest.raises(MirrorError, match="checkpoint: checkpoint has no signature by log key"):
        mirror(log.tiles, m, stranger)
    assert not m.exists()  # nothing created for a checkpoint that does not verify
    with pytest.raises(MirrorError, match="pins no log key and none was given"):
        mirror(log.tiles, m)
    mirror(log.tiles, m, log.vkey)
    with pytest.raises(MirrorError, match=r"mirrors the log of key .* not"):
        mirror(log.tiles, m, stranger)
    r = flchain("mirror", str(log.tiles), str(m), "--key-verifier", stranger, ok=False)
    assert r.returncode == 1 and "mirrors the log of key" in r.stderr
    other = generate_key("example.com/another-log")
    with pytest.raises(MirrorError, match=r"no signature by log key example\.com/another-log"):
        mirror(log.tiles, tmp_path / "m2.db", other.verifier)


def test_entries_must_be_canonical(tmp_path: Path) -> None:
    key = generate_key(ORIGIN)
    good = [E.Credit(run="r", round=0, node=f"n{i}", rule="t", amount=1).encode()
            for i in range(600)]
    spaced = json.dumps(json.loads(good[300]), indent=1).encode()
    write_tiles(tmp_path / "tiles", [*good[:300], spaced, *good[301:]], key)
    m = tmp_path / "mirror.db"
    with pytest.raises(MirrorError, match=r"entry 300 in tile/entries/001 is not a canonical "
                                          "flchain entry .*holds 0 entries"):
        mirror(tmp_path / "tiles", m, key.verifier)
    with Ledger(m, create=False) as led:
        assert led.size == 0
    # Copied in batches of 256: the batch before the bad entry stays, verified.
    with pytest.raises(MirrorError, match=r"entry 300 .*holds 256 entries"):
        mirror(tmp_path / "tiles", m, key.verifier, batch=256)
    with Ledger(m, create=False) as led:
        assert [e.data for e in led.iter_entries()] == good[:256]


def test_a_long_catch_up_is_appended_in_bounded_batches(tmp_path: Path) -> None:
    log = Log(tmp_path, "source")
    log.grow(700)
    m = tmp_path / "mirror.db"
    seen: list[tuple[str, int, int]] = []
    report = mirror(log.tiles, m, log.vkey, batch=300,
                    progress=lambda *a: seen.append(a))  # type: ignore[arg-type]
    assert report.appended == 700
    assert same_log(log.ledger, m) == [512, 700]  # whole bundles, at least 300 a batch
    assert seen[-1] == ("append", 700, 700) and ("verify", 700, 700) in seen
    with Ledger(m, create=False) as led:
        assert led.checkpoint_sizes(5) == [700]
    flchain("--ledger", str(m), "verify", "--key-verifier", log.vkey)


# -- crashes -----------------------------------------------------------------------------------


def test_a_killed_mirror_leaves_its_last_batch_and_a_rerun_continues(tmp_path: Path) -> None:
    log = Log(tmp_path, "source")
    m = tmp_path / "mirror.db"
    log.grow(100)
    mirror(log.tiles, m, log.vkey)
    for _ in range(8):
        log.grow(5_000)
    proc = subprocess.Popen([*FLCHAIN, "mirror", str(log.tiles), str(m)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.uniform(0.5, 2.5))
    proc.kill()
    proc.wait()
    sizes = same_log(log.ledger, m)
    assert sizes in ([100], [100, 40_100])
    # A kill between the batch and its note: the rerun stores the note.
    with Ledger(m, create=False) as led:
        led.store._conn.execute("DELETE FROM checkpoints WHERE size = 40100")
    report = mirror(log.tiles, m)
    assert report.size == 40_100 and report.status in ("mirrored", "up to date")
    with Ledger(m, create=False) as led:
        assert led.checkpoint_sizes(5) == [100, 40_100]
    flchain("--ledger", str(m), "verify", "--key-verifier", log.vkey)


# -- the command -------------------------------------------------------------------------------


def wait_for(predicate: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def mirror_size(m: Path) -> int:
    """The mirror's size; -1 while the mirror process is still creating it."""
    try:
        with Ledger(m, create=False, read_only=True) as led:
            return led.size
    except StoreError:
        return -1


def test_interval_follows_retries_and_stops_on_a_fork(tmp_path: Path) -> None:
    log = Log(tmp_path, "a")
    m = tmp_path / "mirror.db"
    out_file, err_file = tmp_path / "out", tmp_path / "err"
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen([*FLCHAIN, "mirror", str(log.tiles), str(m), "--key-verifier",
                                 log.vkey, "--interval", "0.2", "--json"], stdout=out, stderr=err)
    try:
        # The source does not exist yet: reported and retried, not fatal.
        wait_for(lambda: "retrying in 0.2 s" in err_file.read_text())
        assert proc.poll() is None
        log.grow(3)
        wait_for(lambda: mirror_size(m) == 3)
        log.grow(4)
        wait_for(lambda: mirror_size(m) == 7)
        b = Log(tmp_path, "b", key=log.key)
        b.grow(7, "b")
        log.tiles.rename(tmp_path / "honest")
        b.tiles.rename(log.tiles)  # the operator now serves another history at size 7
        proc.wait(timeout=60)
    finally:
        proc.kill()
    out, err = out_file.read_text(), err_file.read_text()
    assert proc.returncode == 1
    assert "warning: cannot read the source" in err and "retrying in 0.2 s" in err
    assert err.strip().splitlines()[-1].startswith("flchain: error: mirror refused")
    docs = [json.loads(line) for line in out.splitlines()]
    assert {d["size"] for d in docs if d["ok"]} == {3, 7}
    assert docs[-1]["ok"] is False and docs[-1]["kind"] == "fork"
    assert read_evidence(m)[0].kind == "fork" and mirror_size(m) == 7


@pytest.mark.parametrize("args,words", [
    (["--once", "--interval", "1"], "give --once or --interval, not both"),
    (["--interval", "0"], "--interval"),
    (["--key-verifier", "not-a-key"], "is not a verifier key"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    r = flchain("mirror", str(tmp_path), str(tmp_path / "m.db"), *args, ok=False)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "m.db").exists()


def test_the_mirror_file_is_ledger_or_the_ledger_option(tmp_path: Path) -> None:
    log = Log(tmp_path, "source")
    log.grow(2)
    r = flchain("mirror", str(log.tiles), "--key-verifier", log.vkey, ok=False)
    assert r.returncode == 2 and "give the mirror's ledger file" in r.stderr
    flchain("--ledger", str(tmp_path / "m1.db"), "mirror", str(log.tiles), "--key-verifier",
            log.vkey)
    assert mirror_size(tmp_path / "m1.db") == 2
    # LEDGER wins over $FLCHAIN_LEDGER, which often names the source's own ledger.
    env = {**os.environ, "FLCHAIN_LEDGER": str(tmp_path / "source.db")}
    r = subprocess.run([*FLCHAIN, "mirror", str(log.tiles), str(tmp_path / "m2.db"),
                        "--key-verifier", log.vkey], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert mirror_size(tmp_path / "m2.db") == 2 and log.ledger.size == 2


def test_an_unreadable_source_is_exit_2(tmp_path: Path) -> None:
    key = generate_key(ORIGIN).verifier.vkey
    r = flchain("mirror", str(tmp_path / "none"), str(tmp_path / "m.db"), "--key-verifier", key,
                "--json", ok=False)
    assert r.returncode == 2 and "cannot read the source" in r.stderr
    assert json.loads(r.stdout)["status"] == "unreachable"
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles/checkpoint").write_bytes(b"\xff\xfe")
    r = flchain("mirror", str(tmp_path / "tiles"), str(tmp_path / "m.db"), "--key-verifier", key,
                ok=False)
    assert r.returncode == 2 and "is not UTF-8 text" in r.stderr, r.stderr
    (tmp_path / "tiles/checkpoint").write_text("garbage\n")
    r = flchain("mirror", str(tmp_path / "tiles"), str(tmp_path / "m.db"), "--key-verifier", key,
                ok=False)
    assert r.returncode == 1 and "checkpoint" in r.stderr and r.stderr.count("\n") == 1


def test_the_benchmark_runs_quick() -> None:
    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_mirror.py"
    r = subprocess.run([sys.executable, str(bench), "--quick", "--json"], capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    (line,) = r.stdout.strip().splitlines()
    doc = json.loads(line)
    assert doc["bench"] == "mirror" and doc["quick"] is True
    results = doc["results"]
    assert set(results) == {"mirror", "mirror_check", "verify_source"}
    for r_ in results.values():
        assert r_["value"] > 0 and r_["passed"] is None
    assert results["mirror"]["baseline"] == results["verify_source"]["value"]
