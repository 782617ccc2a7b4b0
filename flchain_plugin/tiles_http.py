"""Serve a ledger as C2SP tlog-tiles over HTTP, read-only, straight from the ledger.

For operators who would rather run `flchain serve` than publish `flchain tiles export`'s
files on a static host: the same paths, the same bytes (`tiles_export.read_tile`), and
only the tiles the exported directory would hold, those of the latest signed checkpoint:
a full tile once the checkpointed tree covers it, a partial tile only at a width some
checkpoint was signed at. Tiles never change, so they are cached for a year; the
checkpoint for a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .checkpoint import Checkpoint
from .ledger import Ledger
from .store import StoreError
from .tiles import TILE_WIDTH, Tile, TilePathError, level_size, parse_path
from .tiles_export import (
    CHECKPOINT,
    TilesExportError,
    checkpoint_tiles,
    published_checkpoint,
    read_tile,
)

CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"
CHECKPOINT_CACHE = "public, max-age=5"
"""The spec's "a few seconds": readers see a new checkpoint soon, a burst is served once."""
TILE_CACHE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"


@dataclass
class _Published:
    """The published checkpoint and the partial tiles it implies, kept until the ledger
    stores another note (one query per request instead of a root and a checkpoint scan)."""

    note: str = ""
    checkpoint: Checkpoint | None = None
    partial: frozenset[Tile] = field(default_factory=frozenset)


class TileServer:
    """The request handlers over one open ledger (the caller opens and closes it)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._published = _Published()

    def published(self) -> _Published:
        note = self.ledger.latest_checkpoint()
        if note is None:
            return _Published()
        if note != self._published.note:
            note, cp = published_checkpoint(self.ledger)
            partial = frozenset(t for t in checkpoint_tiles(self.ledger, cp.size) if not t.full)
            self._published = _Published(note, cp, partial)
        return self._published

    def exists(self, tile: Tile) -> bool:
        """Whether the export of the published checkpoint holds `tile`."""
        pub = self.published()
        if pub.checkpoint is None:
            return False
        if tile.full:
            return level_size(pub.checkpoint.size, tile.level) >= tile.first_hash + TILE_WIDTH
        return tile in pub.partial

    def checkpoint(self, request: Request) -> Response:
        try:
            pub = self.published()
        except (StoreError, TilesExportError) as e:
            return _error(500, str(e))
        if pub.checkpoint is None:
            return _error(404, "the log has no signed checkpoint yet")
        return Response(pub.note.encode("utf-8"), media_type=CHECKPOINT_TYPE,
                        headers={"Cache-Control": CHECKPOINT_CACHE})

    def tile(self, request: Request) -> Response:
        path = request.url.path.removeprefix("/")
        try:
            tile = parse_path(path)
        except TilePathError as e:
            return _error(404, str(e))
        try:
            if not self.exists(tile):
                return _error(404, f"{path}: no such tile in the published tree")
            data = read_tile(self.ledger, tile)
        except StoreError as e:
            return _error(500, str(e))
        return Response(data, media_type=TILE_TYPE, headers={"Cache-Control": TILE_CACHE})


def _error(status: int, message: str) -> Response:
    return PlainTextResponse(message + "\n", status_code=status,
                             headers={"Cache-Control": NO_CACHE})


def tiles_app(ledger: Ledger) -> Starlette:
    """The ASGI app: `GET /checkpoint` and `GET /tile/...` (HEAD too), nothing else."""
    server = TileServer(ledger)
    return Starlette(routes=[
        Route(f"/{CHECKPOINT}", server.checkpoint, methods=["GET"]),
        Route("/tile/{rest:path}", server.tile, methods=["GET"]),
    ])
