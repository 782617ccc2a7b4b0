"""The tile shape (`tiles.py`) against the spec's own words, computed a second way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flchain_plugin.tiles import (
    ENTRIES,
    Tile,
    TileDataError,
    TilePathError,
    decode_bundle,
    decode_hashes,
    edge_tiles,
    encode_bundle,
    encode_hashes,
    encode_index,
    levels,
    new_tiles,
    parse_path,
    tile_at,
    tiles_for,
)

BOUNDARY_SIZES = [1, 255, 256, 257, 65_535, 65_536, 65_537, 70_000]


def spec_tiles(size: int) -> set[tuple[int, int, int]]:
    """Every (level, index, width) by the spec's sentence: "the width of the tile at level
    L for size s is floor(s / 256^L) mod 256", full tiles for every multiple of 256 below."""
    out = set()
    level = 0
    while size // 256**level:
        hashes = size // 256**level
        for i in range(hashes // 256):
            out.add((level, i, 256))
        if hashes % 256:
            out.add((level, hashes // 256, hashes % 256))
        level += 1
    return out


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_tiles_agree_with_the_spec_formula(size: int) -> None:
    got = {(t.level, t.index, t.width) for lv in levels(size) for t in tiles_for(size, lv)}
    assert got == spec_tiles(size)
    entries = {(t.index, t.width) for t in tiles_for(size, ENTRIES)}
    assert entries == {(i, w) for (lv, i, w) in spec_tiles(size) if lv == 0}


def test_the_specs_70000_example() -> None:
    edges = {t.level: t for t in edge_tiles(70_000)}
    assert edges[0] == Tile(0, 273, 112) and edges[0].path == "tile/0/273.p/112"
    assert edges[1] == Tile(1, 1, 17) and edges[1].path == "tile/1/001.p/17"
    assert edges[2] == Tile(2, 0, 1) and edges[2].path == "tile/2/000.p/1"
    assert edges[ENTRIES].path == "tile/entries/273.p/112"
    assert len(tiles_for(70_000, 0)) == 274 and len(tiles_for(70_000, 1)) == 2


def test_index_encoding_of_the_spec() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000"
    assert encode_index(1000) == "x001/000"
    assert Tile(0, 1234067).path == "tile/0/x001/x234/067"


@given(st.integers(0, 2**40), st.sampled_from([0, 5, 63, ENTRIES]), st.integers(1, 256))
def test_paths_round_trip(index: int, level: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert parse_path(tile.path) == tile


@pytest.mark.parametrize("bad", [
    "tile/0/1", "tile/0/0001", "tile/0/x000/001", "tile/0/001.p/0", "tile/0/001.p/256",
    "tile/0/001.p/007", "tile/64/000", "tile/0/001.p/", "tile/-1/000", "tile/0/001/",
    "tile/entries/x1/000",
])
def test_non_spec_paths_are_refused(bad: str) -> None:
    with pytest.raises(TilePathError):
        parse_path(bad)


@given(st.integers(0, 140_000), st.integers(0, 2_000))
def test_new_tiles_are_exactly_what_changed(old: int, grow: int) -> None:
    new = old + grow
    for level in (*levels(new), ENTRIES):
        before = set(tiles_for(old, level))
        after = set(tiles_for(new, level))
        assert set(new_tiles(old, new, level)) == after - before


@given(st.integers(1, 2**20))
def test_edge_tiles_are_the_last_of_each_level(size: int) -> None:
    last = {lv: tiles_for(size, lv)[-1] for lv in (*levels(size), ENTRIES)}
    assert {t.level: t for t in edge_tiles(size)} == last


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_bundles_round_trip(entries: list[bytes]) -> None:
    tile = Tile(ENTRIES, 0, len(entries))
    assert decode_bundle(encode_bundle(entries), tile) == entries


@pytest.mark.parametrize("data,why", [
    (b"\x00", "truncated length prefix"), (b"\x00\x05ab", "wants 5 bytes"),
    (b"\x00\x01a\x00\x01b", "got 2 entries, want 1"),
])
def test_bad_bundles_are_named(data: bytes, why: str) -> None:
    with pytest.raises(TileDataError, match=why):
        decode_bundle(data, Tile(ENTRIES, 0, 1))


def test_hash_tiles_hold_exactly_their_width() -> None:
    hashes = [bytes([i]) * 32 for i in range(3)]
    assert decode_hashes(encode_hashes(hashes), Tile(0, 0, 3)) == hashes
    with pytest.raises(TileDataError, match="got 95 bytes, want 96"):
        decode_hashes(encode_hashes(hashes)[:-1], Tile(0, 0, 3))
    with pytest.raises(TileDataError, match="want at most 65535"):
        encode_bundle([b"x" * 65_536])


@given(st.integers(1, 2**20), st.sampled_from([0, 1, 2, ENTRIES]))
def test_tile_at_is_the_levels_tile_of_that_index(size: int, level: int) -> None:
    tiles = tiles_for(size, level)
    for tile in (tiles[:1] + tiles[-2:]) if tiles else []:
        assert tile_at(size, level, tile.index) == tile
    with pytest.raises(ValueError, match=f"has no tile {len(tiles)} \\(it has {len(tiles)}\\)"):
        tile_at(size, level, len(tiles))
