"""Asking one C2SP tlog-witness (https://c2sp.org/tlog-witness) to cosign a checkpoint.

`POST <url>/add-checkpoint` with `old N`, the consistency proof from size N to the
checkpoint, a blank line and the signed note. A witness cosigns only a checkpoint that
extends the last one it cosigned for the log, so the client must know that size: it
remembers the size the witness last cosigned for it and starts from 0 to learn it; a 409
(`text/x.tlog.size`) names the witness's size, and the client proves from there instead.

A cosignature is used only after it verifies under the witness's verifier key: a witness
that answers 200 with anything else is treated as one that did not cosign. Every failure
is a `WitnessClientError` subclass saying what the witness's operator or the log's must do.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from . import notes
from .checkpoint import Checkpoint
from .ledger import Ledger
from .merkle import HASH_SIZE
from .witness import MAX_PROOF_LINES, AddCheckpoint

SIZE_CONTENT_TYPE = "text/x.tlog.size"
CONFLICT_RETRIES = 2  # 409s answered with a new old size before giving up
EXCERPT = 200  # characters of a witness's error body quoted in messages

__all__ = [
    "CONFLICT_RETRIES",
    "BadWitnessResponse",
    "LogUnknown",
    "LogUntrusted",
    "RequestRejected",
    "WitnessAhead",
    "WitnessClient",
    "WitnessClientError",
    "WitnessRefused",
    "WitnessUnavailable",
    "parse_cosignatures",
    "parse_size",
    "request_body",
]


class WitnessClientError(Exception):
    """A witness did not cosign; the message names the witness, why, and what to do."""


class WitnessUnavailable(WitnessClientError):
    """No usable answer (network error, timeout, 5xx): worth retrying later."""


class WitnessRefused(WitnessClientError):
    """422, or a 409 for a second root at one size: the witness saw another tree (a fork)."""


class LogUntrusted(WitnessClientError):
    """403: the witness has no trusted key of this log that signed the checkpoint."""


class LogUnknown(WitnessClientError):
    """404: the witness does not know the log's origin."""


class RequestRejected(WitnessClientError):
    """400: the witness found the request malformed (a client or witness bug)."""


class WitnessAhead(WitnessClientError):
    """The witness cosigned a larger tree than this checkpoint: the log was rolled back."""


class BadWitnessResponse(WitnessClientError):
    """200, but no cosignature that verifies under the witness's key."""


def request_body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """The add-checkpoint body (`witness.AddCheckpoint`, the one encoding of it), refusing
    what a client must not send: a negative size, a proof from 0, a bad or long proof."""
    if isinstance(old, bool) or not isinstance(old, int) or old < 0:
        raise ValueError(f"old size {old!r} is not a non-negative int")
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"consistency proof has {len(proof)} hashes, at most "
                         f"{MAX_PROOF_LINES} are allowed")
    if old == 0 and proof:
        raise ValueError("a proof from old size 0 must be empty")
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise ValueError(f"proof hash {i} has {len(h)} bytes, want {HASH_SIZE}")
    return AddCheckpoint(old, tuple(proof), note).encode()


def parse_size(body: bytes) -> int:
    """The tree size of a 409's `text/x.tlog.size` body: a decimal and a newline."""
    text = body.decode("ascii", "replace")
    digits = text[:-1] if text.endswith("\n") else ""
    if not digits.isdigit() or not digits.isascii() or (len(digits) > 1 and digits[0] == "0"):
        raise ValueError(f"size body {text[:40]!r} is not a decimal and a newline")
    return int(digits)


def parse_cosignatures(body: bytes, cp: Checkpoint,
                       keys: Sequence[notes.Verifier]) -> tuple[notes.Signature, ...]:
    """The signature lines of a 200 that verify under `keys` over the checkpoint.

    Lines by unknown keys are ignored, as the spec says; a line by a known key that does
    not verify, or no line by a known key, is a BadWitnessResponse."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadWitnessResponse("cosignature body is not UTF-8") from None
    if not text.startswith(notes.SIG_PREFIX) or not text.endswith("\n"):
        raise BadWitnessResponse(f"cosignature body {text[:EXCERPT]!r} is not signature lines")
    try:
        opened = notes.open_note(cp.body() + "\n" + text, keys)
    except notes.NoteError as e:
        raise BadWitnessResponse(f"its cosignatures do not verify under its keys: {e}") from None
    return opened.verified


def _excerpt(response: httpx.Response) -> str:
    text = response.content[:EXCERPT * 2].decode("utf-8", "replace").strip()
    return repr(text[:EXCERPT]) if text else "an empty body"


@dataclass
class WitnessClient:
    """One witness: its URL prefix, its verifier keys, and per log origin the tree size
    it last cosigned for us (absent: unknown, so 0 is sent to learn it).

    Calls are serialised per witness (a lock), so a slow answer from one round never
    races the next round's submission to the same witness."""

    url: str
    keys: tuple[notes.Verifier, ...]
    cosigned: dict[str, int] = field(default_factory=dict)
    http: httpx.Client = field(default_factory=httpx.Client, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.keys[0].name

    def add_checkpoint(self, ledger: Ledger, note: str, cp: Checkpoint,
                       timeout: float) -> tuple[notes.Signature, ...]:
        """This witness's verified cosignatures of `note` (whose checkpoint is `cp`),
        proving consistency from the size it last cosigned with `ledger`'s proofs."""
        with self._lock:
            old = self.cosigned.get(cp.origin, 0)
            for _ in range(CONFLICT_RETRIES + 1):
                if old > cp.size:
                    raise WitnessAhead(
                        f"{self.url} has cosigned size {old} of this log, larger than the "
                        f"checkpoint's {cp.size}: the log was rolled back or another writer "
                        "signed beyond it; restore the ledger the witness saw")
                if old > ledger.size:
                    raise WitnessAhead(f"{self.url} has cosigned size {old}, beyond this "
                                       f"ledger's {ledger.size} entries")
                proof = ledger.consistency_proof(old, cp.size).hashes if old else ()
                response = self._post(request_body(old, proof, note), timeout)
                if response.status_code == 409:
                    old = self.cosigned[cp.origin] = self._conflict(response, old)
                    continue
                sigs = self._answer(response, cp)
                self.cosigned[cp.origin] = cp.size
                return sigs
        raise WitnessUnavailable(f"{self.url} answered 409 {CONFLICT_RETRIES + 1} times in a "
                                 "row: its size keeps changing (another client of this log?)")

    def _post(self, body: bytes, timeout: float) -> httpx.Response:
        try:
            return self.http.post(f"{self.url.rstrip('/')}/add-checkpoint", content=body,
                                  timeout=timeout)
        except httpx.TimeoutException:
            raise WitnessUnavailable(f"{self.url} did not answer within {timeout:.3g}s") from None
        except httpx.HTTPError as e:
            raise WitnessUnavailable(f"{self.url} is unreachable: {e}") from None

    def _conflict(self, response: httpx.Response, old: int) -> int:
        """The witness's size from a 409; a 409 that is not a size, or names the size
        just sent, is transparency-dev's answer to a second root at one size."""
        ctype = response.headers.get("content-type", "").split(";")[0].strip()
        try:
            size = parse_size(response.content) if ctype == SIZE_CONTENT_TYPE else None
        except ValueError:
            size = None
        if size is None or size == old:
            raise WitnessRefused(
                f"{self.url} refused a conflicting checkpoint (409, {_excerpt(response)}): it "
                "cosigned another tree of this size; the log forked, keep both as evidence")
        return size

    def _answer(self, response: httpx.Response, cp: Checkpoint) -> tuple[notes.Signature, ...]:
        """The cosignatures of a 200; any other status as its typed error."""
        status, url, body = response.status_code, self.url, _excerpt(response)
        if status == 200:
            try:
                return parse_cosignatures(response.content, cp, self.keys)
            except BadWitnessResponse as e:
                raise BadWitnessResponse(f"{url} answered 200 but {e}") from None
        if status == 422:
            raise WitnessRefused(
                f"{url} refused size {cp.size} (422, {body}): the checkpoint is not "
                "consistent with what it cosigned before; the log forked or was rewritten")
        if status == 403:
            raise LogUntrusted(
                f"{url} does not trust the key that signed this log's checkpoint (403, "
                f"{body}): give its operator the log's verifier key")
        if status == 404:
            raise LogUnknown(f"{url} does not know log {cp.origin!r} (404): ask its operator "
                             "to add the log's origin and verifier key")
        if status == 400:
            raise RequestRejected(f"{url} rejected the request as malformed (400, {body})")
        raise WitnessUnavailable(f"{url} answered HTTP {status} ({body})")

    def close(self) -> None:
        self.http.close()
