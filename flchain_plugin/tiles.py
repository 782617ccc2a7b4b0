"""The shape of a C2SP tlog-tiles log (https://c2sp.org/tlog-tiles): which tiles a tree of a
given size has, their widths, and their paths.

Pure arithmetic, shared by the writer (`flchain tiles export`, `flchain serve`) and the
readers (mirrors, tile-based proofs), so the two can never disagree on a path or a width.

A tile at level L holds up to 256 hashes; hash i of tile N at level L is the Merkle tree
hash of the leaves [(N*256+i) * 256^L, (N*256+i+1) * 256^L), so level 0 holds leaf hashes
and each level-L hash is the root of a perfect subtree of height 8L. A tile is full at
width 256, partial (`.p/<W>`) below that; a tree of size s has at level L
floor(s / 256^L) // 256 full tiles and, when W = floor(s / 256^L) mod 256 is not 0, one
partial tile of width W. Entry bundles `tile/entries/<N>` follow level 0's tiles.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

TILE_WIDTH = 256
"""Hashes (or entries) in a full tile."""
TILE_HEIGHT = 8
"""log2(TILE_WIDTH): a level-L hash covers 2^(8L) leaves."""
HASH_SIZE = 32
MAX_LEVEL = 63
ENTRIES = -1
"""The `level` of an entry bundle, which sits beside level 0 under `tile/entries/`."""

_PATH = re.compile(
    r"tile/(entries|[0-9]|[1-5][0-9]|6[0-3])/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([0-9]{1,3}))?"
)


class TilePathError(ValueError):
    """A string that is not a tile path of the spec."""


@dataclass(frozen=True, order=True)
class Tile:
    """One tile: its level (ENTRIES for an entry bundle), index and width (1..256)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not (self.level == ENTRIES or 0 <= self.level <= MAX_LEVEL):
            raise TilePathError(f"tile level: got {self.level}, want 0..{MAX_LEVEL} or ENTRIES")
        if self.index < 0:
            raise TilePathError(f"tile index: got {self.index}, want >= 0")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TilePathError(f"tile width: got {self.width}, want 1..{TILE_WIDTH}")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """`tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`, relative to the prefix."""
        level = "entries" if self.level == ENTRIES else str(self.level)
        partial = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{partial}"

    @property
    def first_hash(self) -> int:
        """Index, within its level, of the tile's first hash (or entry)."""
        return self.index * TILE_WIDTH

    def leaves(self) -> range:
        """The leaves (entry indexes) this tile's hashes cover."""
        span = 1 << (TILE_HEIGHT * max(self.level, 0))
        return range(self.first_hash * span, (self.first_hash + self.width) * span)


def encode_index(n: int) -> str:
    """The spec's index path: zero-padded 3-digit parts, all but the last prefixed `x`
    (1234067 -> `x001/x234/067`)."""
    if n < 0:
        raise TilePathError(f"tile index: got {n}, want >= 0")
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def parse_path(path: str) -> Tile:
    """The tile a path names; TilePathError for anything the spec does not allow (extra
    leading zeros in W, a width of 0 or 256 written as partial, a bad index part)."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise TilePathError(f"not a tile path: {path!r}")
    level_s, index_s, width_s = m.groups()
    index = int(index_s.replace("x", "").replace("/", ""))
    if encode_index(index) != index_s:
        raise TilePathError(
            f"tile index {index_s!r} is not in canonical form ({encode_index(index)!r})"
        )
    if width_s is not None and (width_s != str(int(width_s)) or not 1 <= int(width_s) < TILE_WIDTH):
        raise TilePathError(f"partial tile width {width_s!r}: want 1..255 without leading zeros")
    level = ENTRIES if level_s == "entries" else int(level_s)
    return Tile(level, index, int(width_s) if width_s else TILE_WIDTH)


def level_size(size: int, level: int) -> int:
    """How many hashes level `level` holds for a tree of `size` leaves (entries: `size`)."""
    return size >> (TILE_HEIGHT * max(level, 0))


def tiles_for(size: int, level: int) -> list[Tile]:
    """Every tile of one level in a tree of `size` leaves: the full ones, then the partial
    one when the level's width is not a multiple of 256."""
    n = level_size(size, level)
    out = [Tile(level, i) for i in range(n // TILE_WIDTH)]
    if n % TILE_WIDTH:
        out.append(Tile(level, n // TILE_WIDTH, n % TILE_WIDTH))
    return out


def levels(size: int) -> range:
    """The hash-tile levels a tree of `size` leaves has (none for an empty tree)."""
    top = 0
    while level_size(size, top + 1):
        top += 1
    return range(top + 1) if size else range(0)


def edge_tiles(size: int) -> list[Tile]:
    """The right-most tile of every level, and of the entry bundles: the only tiles that
    differ between a tree of `size` and a larger one. These are the partial tiles a
    checkpoint of `size` needs (full ones where `size` is a multiple of 256^(L+1))."""
    out = []
    for level in (*levels(size), ENTRIES):
        n = level_size(size, level)
        if n % TILE_WIDTH:
            out.append(Tile(level, n // TILE_WIDTH, n % TILE_WIDTH))
        elif n:
            out.append(Tile(level, n // TILE_WIDTH - 1))
    return out


def tile_at(size: int, level: int, index: int) -> Tile:
    """Tile `index` of `level` in a tree of `size` leaves: full left of the level's edge,
    the edge tile (partial, or full when the level's width is a multiple of 256) at it."""
    n = level_size(size, level)
    if not 0 <= index < -(-n // TILE_WIDTH):
        raise ValueError(f"level {level} of a tree of size {size} has no tile {index} "
                         f"(it has {-(-n // TILE_WIDTH)})")
    return Tile(level, index, min(n - index * TILE_WIDTH, TILE_WIDTH))


def new_tiles(old_size: int, size: int, level: int) -> Iterator[Tile]:
    """The tiles of `level` a tree of `size` has that a tree of `old_size` has not: every
    tile from the one `old_size` left partial, in their final width at `size`. One at a
    time: a signed checkpoint may claim any size up to 2^64-1, and a reader must not build
    a list that size before it learns that the tiles are missing."""
    if not 0 <= old_size <= size:
        raise ValueError(f"new_tiles: got sizes {old_size} -> {size}, want 0 <= old <= new")
    first, old_width = divmod(level_size(old_size, level), TILE_WIDTH)
    for index in range(first, -(-level_size(size, level) // TILE_WIDTH)):
        tile = tile_at(size, level, index)
        if not (index == first and tile.width == old_width):
            yield tile


# -- tile contents --------------------------------------------------------------------------

MAX_ENTRY_SIZE = 0xFFFF
"""An entry bundle prefixes each entry with a big-endian uint16 length."""


class TileDataError(ValueError):
    """Tile bytes that do not hold what their path says."""


def encode_hashes(hashes: list[bytes]) -> bytes:
    """A hash tile: its hashes concatenated, 32 bytes each."""
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise TileDataError(f"hash {i}: got {len(h)} bytes, want {HASH_SIZE}")
    return b"".join(hashes)


def decode_hashes(data: bytes, tile: Tile) -> list[bytes]:
    """The hashes of a hash tile's bytes, which must be exactly `tile.width` hashes."""
    if tile.level == ENTRIES:
        raise TileDataError(f"{tile.path} is an entry bundle, not a hash tile")
    if len(data) != tile.width * HASH_SIZE:
        raise TileDataError(
            f"{tile.path}: got {len(data)} bytes, want {tile.width * HASH_SIZE} "
            f"({tile.width} hashes)"
        )
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: list[bytes]) -> bytes:
    """An entry bundle: each entry prefixed by its length as a big-endian uint16."""
    for i, e in enumerate(entries):
        if len(e) > MAX_ENTRY_SIZE:
            raise TileDataError(f"entry {i}: got {len(e)} bytes, want at most {MAX_ENTRY_SIZE}")
    return b"".join([part for e in entries for part in (len(e).to_bytes(2, "big"), e)])


def decode_bundle(data: bytes, tile: Tile) -> list[bytes]:
    """The entries of a bundle's bytes: exactly `tile.width` of them and nothing after."""
    if tile.level != ENTRIES:
        raise TileDataError(f"{tile.path} is a hash tile, not an entry bundle")
    out, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise TileDataError(f"{tile.path}: truncated length prefix at byte {pos}")
        n = int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 + n > len(data):
            raise TileDataError(
                f"{tile.path}: entry {len(out)} at byte {pos} wants {n} bytes, "
                f"{len(data) - pos - 2} left"
            )
        out.append(data[pos + 2:pos + 2 + n])
        pos += 2 + n
    if len(out) != tile.width:
        raise TileDataError(f"{tile.path}: got {len(out)} entries, want {tile.width}")
    return out
