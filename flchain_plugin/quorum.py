"""A k-of-n quorum of witness cosignatures on a log's checkpoint.

The operator signs its own checkpoints and could sign two different trees of one size; a
witness run by another participant cosigns only trees that extend the last one it
cosigned. A checkpoint carrying k valid cosignatures of k distinct witnesses is one that k
other parties agree is the only tree of that size. `gather` asks every witness at once and
returns as soon as k answered; `verify_quorum` is the one place that counts cosignatures,
for the log, its clients and auditors alike.

Policy when fewer than k cosign: `gather` waits up to `Witnesses.deadline` seconds (each
request bounded by `timeout`, a witness that is unreachable retried `retries` times with
exponential `backoff`), then raises QuorumError naming each witness and why it did not
cosign. The caller must stop there: nothing is announced or trained on with a checkpoint
that lacks its quorum. The entries stay committed in the ledger; the next gather proves
consistency from what the witnesses saw, so a later quorum still covers them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import notes
from .checkpoint import Checkpoint, open_checkpoint
from .ledger import Ledger
from .pinning import parse_verifier
from .witness_client import WitnessClient, WitnessUnavailable

__all__ = [
    "Quorum",
    "QuorumError",
    "WitnessEndpoint",
    "Witnessed",
    "Witnesses",
    "verify_quorum",
    "witness_keys",
]


class QuorumError(Exception):
    """Fewer than k witnesses cosigned; `reasons` maps each missing witness to why."""

    def __init__(self, message: str, reasons: dict[str, str] | None = None):
        super().__init__(message)
        self.reasons = dict(reasons or {})


def _verifier(key: str | notes.Verifier, what: str) -> notes.Verifier:
    """A witness's verifier key (`pinning.parse_verifier`: a key, its text or a file),
    never a log's signing key."""
    v = parse_verifier(key, what)
    if v.sig_type == notes.ED25519:
        raise ValueError(f"{what}: {v.vkey} is a log signing key (type 0x01); a witness "
                         "cosigns with a cosignature key (`flchain keygen --witness`)")
    return v


def witness_keys(keys: Iterable[str | notes.Verifier], what: str = "witness_keys"
                 ) -> tuple[notes.Verifier, ...]:
    """Parsed witness verifier keys, refusing log keys and duplicates."""
    out = tuple(_verifier(k, what) for k in keys)
    if len({v.vkey for v in out}) != len(out):
        raise ValueError(f"{what}: a verifier key is listed twice")
    return out


@dataclass(frozen=True)
class WitnessEndpoint:
    """One witness: the URL prefix of its add-checkpoint and its verifier key(s), one name."""

    url: str
    keys: tuple[notes.Verifier, ...]

    def __post_init__(self) -> None:
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"witness url {self.url!r} is not an http(s) URL")
        keys = witness_keys(self.keys, f"witness {self.url} keys")
        if not keys or len({v.name for v in keys}) != 1:
            raise ValueError(f"witness {self.url}: give its verifier key(s), all of one name")
        object.__setattr__(self, "keys", keys)

    @property
    def name(self) -> str:
        return self.keys[0].name

    @classmethod
    def of(cls, value: WitnessEndpoint | tuple | str) -> WitnessEndpoint:
        """From a WitnessEndpoint, `(url, vkey or vkeys)` or the text `"url vkey..."`."""
        if isinstance(value, WitnessEndpoint):
            return value
        if isinstance(value, str):
            url, *keys = value.split()
            return cls(url, tuple(keys))
        if isinstance(value, tuple) and len(value) == 2:
            url, keys = value
            return cls(url, (keys,) if isinstance(keys, (str, notes.Verifier)) else tuple(keys))
        raise ValueError(f"witness {value!r}: want (url, verifier key) or 'url verifier-key'")


@dataclass(frozen=True)
class Witnesses:
    """Which witnesses to ask, how many must cosign, and how long to wait (seconds)."""

    endpoints: tuple[WitnessEndpoint, ...]
    quorum: int
    timeout: float = 5.0  # one HTTP request
    retries: int = 2  # more attempts at an unreachable witness
    backoff: float = 0.25  # first pause between attempts, doubled each time
    deadline: float = 30.0  # the whole gather

    def __post_init__(self) -> None:
        eps = tuple(WitnessEndpoint.of(e) for e in self.endpoints)
        object.__setattr__(self, "endpoints", eps)
        if not eps:
            raise ValueError("witnesses: give at least one witness")
        for what, values in (("name", [e.name for e in eps]), ("url", [e.url for e in eps])):
            if len(set(values)) != len(values):
                raise ValueError(f"witnesses: two witnesses have the same {what}; each "
                                 "witness counts once")
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) \
                or not 1 <= self.quorum <= len(eps):
            raise ValueError(f"quorum must be an int in [1, {len(eps)}] (the number of "
                             f"witnesses), got {self.quorum!r}")
        for name in ("timeout", "backoff", "deadline"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                    or (value == 0 and name != "backoff"):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) \
                or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")

    @property
    def keys(self) -> tuple[notes.Verifier, ...]:
        return tuple(k for e in self.endpoints for k in e.keys)


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint with the names of the witnesses whose cosignatures verified."""

    checkpoint: Checkpoint
    cosigners: tuple[str, ...]


def verify_quorum(note: str | bytes, log: notes.Verifier,
                  witnesses: Sequence[str | notes.Verifier], k: int, *,
                  origin: str | None = None) -> Witnessed:
    """The checkpoint of `note`, signed by `log` and cosigned by at least `k` distinct
    witnesses (by name) among `witnesses`; raises QuorumError otherwise (CheckpointError
    for a note the log did not sign, or with a cosignature that fails under a known key)."""
    keys = witness_keys(witnesses)
    names = sorted({v.name for v in keys})
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(names):
        raise ValueError(f"quorum must be an int in [1, {len(names)}] (the witnesses), got {k!r}")
    cp, opened = open_checkpoint(note, log, keys, origin=origin)
    cosigners = tuple(sorted({s.verifier.name for s in opened.verified
                              if s.verifier is not None and s.verifier in keys}))
    if len(cosigners) < k:
        missing = [n for n in names if n not in cosigners]
        raise QuorumError(
            f"checkpoint of size {cp.size} carries valid cosignatures of {len(cosigners)} "
            f"witness(es) ({', '.join(cosigners) or 'none'}), want {k} of {len(names)}; "
            f"missing: {', '.join(missing)}")
    return Witnessed(cp, cosigners)


class Quorum:
    """Gathers cosignatures for a log's checkpoints from `Witnesses`, remembering per
    witness the size it last cosigned (see module docstring for the policy)."""

    def __init__(self, witnesses: Witnesses) -> None:
        if not isinstance(witnesses, Witnesses):
            raise ValueError(f"witnesses must be a quorum.Witnesses, got {witnesses!r}")
        self.witnesses = witnesses
        self.clients = [WitnessClient(e.url, e.keys) for e in witnesses.endpoints]
        # Two threads a witness: one may still hold an abandoned request of the last gather.
        self._pool = ThreadPoolExecutor(2 * len(self.clients),
                                        thread_name_prefix="flchain-witness")

    def gather(self, ledger: Ledger, note: str, log: notes.Verifier) -> str:
        """`note` with the cosignatures of at least k witnesses, stored in `ledger`."""
        cfg = self.witnesses
        cp, opened = open_checkpoint(note, log, origin=ledger.origin)
        deadline = time.monotonic() + cfg.deadline
        futures: dict[Future[tuple[notes.Signature, ...]], WitnessClient] = {
            self._pool.submit(self._submit, c, ledger, note, cp, deadline): c
            for c in self.clients}
        got: dict[str, tuple[notes.Signature, ...]] = {}
        why: dict[str, str] = {}
        pending = set(futures)
        while pending and len(got) < cfg.quorum:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done, pending = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
            for f in done:
                name = futures[f].name
                try:
                    got[name] = f.result()
                except Exception as e:  # any failure: this witness did not cosign
                    why[name] = str(e) or type(e).__name__
        if len(got) < cfg.quorum:
            for f in pending:
                why[futures[f].name] = f"no answer within the {cfg.deadline:g}s deadline"
            lines = "; ".join(f"{n}: {r}" for n, r in sorted(why.items()))
            raise QuorumError(
                f"checkpoint of size {cp.size}: {len(got)} of {len(self.clients)} witnesses "
                f"cosigned, the quorum is {cfg.quorum}; stopping rather than announcing an "
                f"unwitnessed checkpoint ({lines})", why)
        sigs = list(opened.signatures)
        for name in sorted(got):  # a witness's line replaces none already in the note
            have = {(o.name, o.key_id) for o in sigs}
            sigs += [s for s in got[name] if (s.name, s.key_id) not in have]
        cosigned = notes.Note(opened.text, tuple(sigs)).encode()
        verify_quorum(cosigned, log, cfg.keys, cfg.quorum, origin=ledger.origin)
        ledger.add_checkpoint_note(cosigned, log)
        return cosigned

    def _submit(self, client: WitnessClient, ledger: Ledger, note: str, cp: Checkpoint,
                deadline: float) -> tuple[notes.Signature, ...]:
        """One witness's cosignatures, retrying an unreachable witness with backoff, never
        past the deadline."""
        cfg = self.witnesses
        for attempt in range(cfg.retries + 1):
            timeout = min(cfg.timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise WitnessUnavailable(f"{client.url}: the {cfg.deadline:g}s deadline passed")
            try:
                return client.add_checkpoint(ledger, note, cp, timeout)
            except WitnessUnavailable:
                pause = cfg.backoff * 2**attempt
                if attempt == cfg.retries or time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        """Stop taking submissions; requests in flight end within their timeout."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for c in self.clients:
            c.close()
