"""Where a mirror reads a C2SP tlog-tiles log from, and what it computes from the tiles alone.

A `TileSource` is a directory or an http(s) URL holding `checkpoint` and `tile/...`; it
hands out bytes and knows nothing of Merkle trees. A `TileReader` reads the hash tiles of
one tree size and answers what a verifier needs without trusting anyone who holds the
entries: the hash of any perfect subtree, the root, and RFC 9162 consistency proofs. Each
perfect subtree of height 8L is one level-L tile hash; any other height h is the fold of
2^(h mod 8) neighbouring hashes of one level-(h // 8) tile, so a proof costs O(log n) tile
reads, each tile read once. Every path and width comes from `tiles` (the one rule).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx

from . import merkle
from .tiles import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    decode_bundle,
    decode_hashes,
    level_size,
    tile_at,
)

DEFAULT_TIMEOUT = 30.0
"""Seconds an HTTP source may take to connect or to send the next bytes of one file."""

MAX_FILE_BYTES = 65_536 * 258
"""The largest file a source may hand over: a full bundle of maximal entries (256 x
(2 + 65,535) bytes) is below it; anything larger is not a tile and is refused unread."""


class TileSourceError(OSError):
    """A file of the source cannot be read; the message names the URL or path and what to do."""


class TileNotFound(TileSourceError):
    """The source has no such file (HTTP 404, no such file)."""


@runtime_checkable
class TileSource(Protocol):
    """Read access to a tlog-tiles prefix."""

    location: str

    def checkpoint(self) -> str:
        """The text of `<prefix>/checkpoint`, the latest signed checkpoint note."""
        ...

    def tile(self, tile: Tile) -> bytes:
        """The bytes of `<prefix>/<tile.path>`."""
        ...


class DirectorySource:
    """Tiles exported to a local directory (`flchain tiles export DIR`)."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.location = str(self.directory)
        if not self.directory.is_dir():
            raise TileSourceError(f"tile source {self.location} is not a directory: give the "
                                  "directory `flchain tiles export` wrote, or an http(s) URL")

    def _read(self, relative: str) -> bytes:
        path = self.directory / relative
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise TileNotFound(f"{path} does not exist: the export in {self.location} is "
                               "incomplete; rerun `flchain tiles export`") from None
        except OSError as e:
            raise TileSourceError(f"cannot read {path}: {e.strerror or e}") from None
        if len(data) > MAX_FILE_BYTES:
            raise TileSourceError(f"{path} is larger than any tile ({MAX_FILE_BYTES} bytes)")
        return data

    def close(self) -> None:
        """Nothing to release; here so every source can be closed alike."""

    def checkpoint(self) -> str:
        return _text(self._read("checkpoint"), str(self.directory / "checkpoint"))

    def tile(self, tile: Tile) -> bytes:
        return self._read(tile.path)


class HttpSource:
    """Tiles served over HTTP(S) by any static web server or `flchain serve`.

    One keep-alive client for all reads; `close` (or `with`) releases it.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT,
                 client: httpx.Client | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: {url!r} is not an http(s) URL")
        self.location = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=True)

    def __enter__(self) -> HttpSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _get(self, relative: str) -> bytes:
        url = f"{self.location}/{relative}"
        try:
            with self._client.stream("GET", url) as r:
                if r.status_code == 404:
                    raise TileNotFound(f"{url}: 404 not found: is {self.location} the tiles "
                                       "prefix (the URL its `checkpoint` is under)?")
                if r.status_code != 200:
                    raise TileSourceError(f"{url}: HTTP {r.status_code}; try again later or "
                                          "ask the log's operator")
                data = bytearray()
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) > MAX_FILE_BYTES:
                        raise TileSourceError(f"{url} is larger than any tile "
                                              f"({MAX_FILE_BYTES} bytes)")
                return bytes(data)
        except httpx.TimeoutException:
            raise TileSourceError(f"{url}: timed out; check the network or raise the "
                                  "timeout") from None
        except httpx.HTTPError as e:
            raise TileSourceError(f"{url}: {type(e).__name__}: {e}; check the URL and that "
                                  "the server is up") from None

    def checkpoint(self) -> str:
        return _text(self._get("checkpoint"), f"{self.location}/checkpoint")

    def tile(self, tile: Tile) -> bytes:
        return self._get(tile.path)


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TileSourceError(f"{where} is not UTF-8 text ({e}): not a checkpoint") from None


def open_source(location: str | os.PathLike[str], *,
                timeout: float = DEFAULT_TIMEOUT) -> DirectorySource | HttpSource:
    """An http(s) URL as an HttpSource, anything else as a DirectorySource."""
    text = os.fspath(location)
    if text.startswith(("http://", "https://")):
        return HttpSource(text, timeout=timeout)
    return DirectorySource(text)


def read_tile(source: TileSource, tile: Tile) -> list[bytes]:
    """The hashes (or, for an entry bundle, the entries) of `tile`, checked against its
    width. A partial tile the source no longer has (tlog-tiles lets a log replace it by the
    full tile) is read as the full tile's first `width` items."""
    decode = decode_bundle if tile.level == ENTRIES else decode_hashes
    try:
        return decode(source.tile(tile), tile)
    except TileNotFound:
        if tile.full:
            raise
    full = Tile(tile.level, tile.index)
    try:
        data = source.tile(full)
    except TileNotFound:
        raise TileNotFound(f"{source.location}: neither {tile.path} nor {full.path} exists: "
                           "the source does not hold this tree size") from None
    return decode(data, full)[:tile.width]


class TileReader:
    """The hash tiles of the tree of `size` leaves in `source`, read lazily, each once.

    Trusts nothing: a caller compares what it computes here with a signed root. A partial
    tile the source no longer has (replaced by the full one, as tlog-tiles allows) is read
    from the full tile's first hashes.
    """

    def __init__(self, source: TileSource, size: int):
        if size < 0:
            raise ValueError(f"size: got {size}, want >= 0")
        self.source = source
        self.size = size
        self._tiles: dict[tuple[int, int], list[bytes]] = {}

    def tile_at(self, level: int, tile_index: int) -> Tile:
        """The tile of `level` with index `tile_index` in this tree (`tiles.tile_at`)."""
        return tile_at(self.size, level, tile_index)

    def hashes(self, tile: Tile) -> list[bytes]:
        """The hashes a hash tile of this tree holds, fetched and decoded once."""
        key = (tile.level, tile.index)
        got = self._tiles.get(key)
        if got is None:
            got = read_tile(self.source, tile)
            self._tiles[key] = got
        return got

    def hash_at(self, level: int, index: int) -> bytes:
        """Hash `index` of tile level `level`: MTH of leaves [index*256^L, (index+1)*256^L)."""
        if not 0 <= index < level_size(self.size, level):
            raise ValueError(f"level {level} of a tree of size {self.size} has no hash {index}")
        tile = self.tile_at(level, index // TILE_WIDTH)
        return self.hashes(tile)[index % TILE_WIDTH]

    def subtree(self, height: int, index: int) -> bytes:
        """MTH of the perfect subtree of leaves [index * 2^height, (index+1) * 2^height)."""
        level, below = divmod(height, TILE_HEIGHT)
        count = 1 << below
        first = index << below
        if (index + 1) << height > self.size:
            raise ValueError(f"subtree ({height}, {index}) is beyond size {self.size}")
        tile = self.tile_at(level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        return merkle.root(self.hashes(tile)[offset:offset + count])

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range a proof asks for (see merkle.perfect_subtrees)."""
        return merkle.fold_range([self.subtree(h, i) for h, i in
                                  merkle.perfect_subtrees(start, end)])

    def root(self, size: int | None = None) -> bytes:
        """The root of the first `size` leaves (default: this reader's size)."""
        n = self.size if size is None else size
        if not 0 <= n <= self.size:
            raise ValueError(f"size {n} is beyond this reader's tree of {self.size}")
        return self.range_hash(0, n) if n else merkle.SHA256.empty_root()

    def frontier(self, size: int) -> merkle.Frontier:
        """The right edge of the tree of the first `size` leaves, to extend with new leaves."""
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is beyond this reader's tree of {self.size}")
        return merkle.Frontier(size, [self.subtree(h, i) for h, i in
                                      merkle.Frontier.nodes_for(size)])

    def consistency_proof(self, size1: int) -> list[bytes]:
        """The RFC 9162 consistency proof from the tree of `size1` to this reader's tree."""
        if not 0 <= size1 <= self.size:
            raise ValueError(f"size1 {size1} must be between 0 and {self.size}")
        return [self.range_hash(a, b) for a, b in merkle.consistency_ranges(size1, self.size)]


__all__ = [
    "DEFAULT_TIMEOUT",
    "DirectorySource",
    "HttpSource",
    "TileNotFound",
    "TileReader",
    "TileSource",
    "TileSourceError",
    "open_source",
    "read_tile",
]
