"""A tlog-tiles reader written from the spec alone, for the tests: it knows nothing of
`flchain_plugin.tiles`, so the exporter and this reader agree only if both follow
https://c2sp.org/tlog-tiles. Plus a quick builder of large signed ledgers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from flchain_plugin import entries as E
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import Signer, generate_key

Fetch = Callable[[str], bytes]


def index_path(n: int) -> str:
    """N as the spec writes it: 3-digit groups, zero-padded, all but the last `x`-prefixed."""
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def spec_paths(size: int) -> set[str]:
    """Every tile path of a tree of `size` leaves, from the spec's formulas: at level L
    floor(size / 256^L) hashes, in tiles of 256 and one partial of the remainder."""
    out = set()
    for level in ["entries", *range(64)]:
        n = size // 256 ** (0 if level == "entries" else level)
        if n == 0:
            break
        for i in range(n // 256):
            out.add(f"tile/{level}/{index_path(i)}")
        if n % 256:
            out.add(f"tile/{level}/{index_path(n // 256)}.p/{n % 256}")
    return out


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 MTH over already-hashed nodes (split at the largest power of 2 below n)."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return _node(_mth(hashes[:k]), _mth(hashes[k:]))


class TileReader:
    """Reads hashes of a tree of `size` leaves through `fetch(path) -> bytes`, using only
    the tiles a client of that size may ask for (full ones, or the partial one at size)."""

    def __init__(self, fetch: Fetch, size: int):
        self.fetch = fetch
        self.size = size
        self.cache: dict[str, bytes] = {}

    def tile_path(self, level: int | str, index: int) -> str:
        n = self.size // 256 ** (0 if level == "entries" else int(level))
        width = min(256, n - index * 256)
        assert width > 0, f"level {level} tile {index} is beyond size {self.size}"
        return f"tile/{level}/{index_path(index)}" + ("" if width == 256 else f".p/{width}")

    def tile(self, level: int | str, index: int) -> bytes:
        path = self.tile_path(level, index)
        if path not in self.cache:
            self.cache[path] = self.fetch(path)
        return self.cache[path]

    def hash_at(self, level: int, i: int) -> bytes:
        data = self.tile(level, i // 256)
        assert len(data) % 32 == 0
        return data[(i % 256) * 32:(i % 256 + 1) * 32]

    def subtree(self, height: int, index: int) -> bytes:
        """The hash of the perfect subtree of 2^height leaves at `index`, from the tile
        level just below it."""
        level, rest = divmod(height, 8)
        first = index << rest
        return _mth([self.hash_at(level, first + j) for j in range(1 << rest)])

    def root(self) -> bytes:
        """MTH of the whole tree: its perfect subtrees left to right, folded right to left."""
        parts, start = [], 0
        for height in reversed(range(self.size.bit_length())):
            if self.size >> height & 1:
                parts.append(self.subtree(height, start >> height))
                start += 1 << height
        out = parts[-1]
        for h in reversed(parts[:-1]):
            out = _node(h, out)
        return out

    def entries(self, index: int) -> list[bytes]:
        """The entries of one bundle, split by their uint16 length prefixes."""
        data, out, pos = self.tile("entries", index), [], 0
        while pos < len(data):
            n = int.from_bytes(data[pos:pos + 2], "big")
            out.append(data[pos + 2:pos + 2 + n])
            pos += 2 + n
        assert pos == len(data)
        return out


def leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def file_fetch(directory: Path) -> Fetch:
    return lambda path: (directory / path).read_bytes()


def credits(start: int, n: int) -> list[E.Entry]:
    """Small entries, quick to encode: 70,000 of them append in a few seconds."""
    return [E.Credit(run="r", round=(start + i) // 1000, node=f"n{start + i}", rule="equal",
                     amount=1) for i in range(n)]


def grow(led: Ledger, to: int, key: Signer | None, batch: int = 20_000) -> None:
    """Append up to size `to` in large batches; sign the final head if `key` is given."""
    while led.size < to:
        n = min(batch, to - led.size)
        led.append(credits(led.size, n), signer=key if led.size + n == to else None)


def signed_ledger(path: Path, sizes: list[int], origin: str = "example.com/tiles-test"
                  ) -> tuple[Ledger, Signer]:
    """A ledger with a signed checkpoint at each of `sizes` (increasing)."""
    led = Ledger(path, origin=origin)
    key = generate_key(origin)
    led.pin_verifier(key.verifier)
    for s in sizes:
        grow(led, s, key)
    return led, key
