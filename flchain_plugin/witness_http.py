"""The witness over HTTP (https://c2sp.org/tlog-witness): a starlette app around
`witness.WitnessService`.

`POST <prefix>/add-checkpoint` answers with the service's status, body and content type;
`GET <prefix>/<hex sha256(origin)>/checkpoint` serves the latest cosigned checkpoint of a log
(the spec's monitoring endpoint) so monitors can compare views without asking the log. The
body is read up to `witness.MAX_REQUEST_BYTES` and refused past it without reading the rest.
The service is blocking (SQLite, signatures) and runs in starlette's thread pool. Nothing a
client sends can make a traceback reach it: an unforeseen error is logged here and answered
with one line and status 500.
"""

from __future__ import annotations

import hashlib
import logging
import re

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from . import witness

log = logging.getLogger(__name__)

_PREFIX = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class BodyTooLarge(Exception):
    """A request body passed the limit while it was being read."""


def check_prefix(prefix: str) -> str:
    """The URL path prefix, '' or '/a/b' (no trailing slash); ValueError naming `prefix`."""
    prefix = prefix.rstrip("/")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix: {prefix!r} is not a URL path like /witness (or empty)")
    return prefix


def create_app(service: witness.WitnessService, *, prefix: str = "",
               max_body: int = witness.MAX_REQUEST_BYTES) -> Starlette:
    """The ASGI app serving `service` under `prefix` (the spec's submission and monitoring
    prefix, one value for both)."""
    prefix = check_prefix(prefix)

    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await _read_body(request, max_body)
        except BodyTooLarge:
            return PlainTextResponse(f"request body exceeds {max_body} bytes\n", 413)
        try:
            answer = await run_in_threadpool(service.add_checkpoint, body)
        except Exception as e:  # a bug or a broken disk: logged here, one line to the client
            log.exception("add-checkpoint failed")
            return PlainTextResponse(f"internal error: {type(e).__name__}\n", 500)
        # set as given: starlette would add "; charset" to text/x.tlog.size
        return Response(answer.body, answer.status,
                        headers={"Content-Type": answer.content_type})

    async def checkpoint(request: Request) -> Response:
        origin_hash = request.path_params["origin_hash"]
        if not _HEX_SHA256.fullmatch(origin_hash):
            return PlainTextResponse("want /<lowercase hex sha256 of the origin>/checkpoint\n",
                                     404)
        try:
            note = await run_in_threadpool(_latest_by_hash, service, origin_hash)
        except Exception as e:
            log.exception("checkpoint lookup failed")
            return PlainTextResponse(f"internal error: {type(e).__name__}\n", 500)
        if note is None:
            return PlainTextResponse("no checkpoint cosigned for this origin\n", 404)
        return PlainTextResponse(note, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[
        Route(f"{prefix}/add-checkpoint", add_checkpoint, methods=["POST"]),
        Route(f"{prefix}/{{origin_hash}}/checkpoint", checkpoint, methods=["GET"]),
    ])


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it (or its declared length) passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _latest_by_hash(service: witness.WitnessService, origin_hash: str) -> str | None:
    for origin in service.logs:
        if hashlib.sha256(origin.encode("utf-8")).hexdigest() == origin_hash:
            return service.state.checkpoint(origin)
    return None
