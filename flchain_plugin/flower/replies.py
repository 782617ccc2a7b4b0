"""Flower replies turned into the facts `flchain_plugin.verification` reads.

Every reply is hashed here before anything else touches it (inner strategies change
replies in place). Parsing the `.npy` headers runs in the calling thread (numpy parses
non-standard headers with `ast`, which CPython < 3.11.8 cannot run on two threads at
once); the digest, the finiteness check and the update norm run on a thread pool when the
replies are large enough to gain from it (hashlib and BLAS release the GIL).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flwr.app import Message, RecordDict
from flwr.common.constant import ErrorCode

from ..digest import PARALLEL_MIN_BYTES, DigestError
from ..statement import SignedStatement, StatementError
from ..verification import Policy, ReplyFacts, all_finite, update_norm
from .arrays import TensorView, record_views, views_digest
from .protocol import json_safe, read_statement, reply_metrics

SentModel = tuple[str, dict[str, TensorView]]
"""(digest, tensors) of the global model a node was sent."""

_ERROR_NAMES = {code: name for name, code in vars(ErrorCode).items()
                if not name.startswith("_") and isinstance(code, int)}
"""Flower's error codes by number (5: NODE_UNAVAILABLE, the SuperLink's for a lost node)."""


@dataclass(frozen=True)
class _Arrays:
    """A reply's arrays as far as they could be read: how many ArrayRecords, their bytes,
    the parsed tensors, then (measured) their digest, first non-finite tensor and norm."""

    count: int = 0
    nbytes: int = 0
    views: dict[str, TensorView] | None = None
    error: str | None = None
    digest: str | None = None
    non_finite: str | None = None
    norm: float | None = None


def _parse(content: RecordDict, max_bytes: int | None) -> _Arrays:
    records = content.array_records
    if len(records) != 1:
        return _Arrays(count=len(records))
    record = next(iter(records.values()))
    nbytes = sum(len(a.data) for a in record.values())
    if max_bytes is not None and nbytes > max_bytes:
        return _Arrays(count=1, nbytes=nbytes)  # not read: the size bound refuses it
    try:
        return _Arrays(count=1, nbytes=nbytes, views=record_views(record))
    except DigestError as e:
        return _Arrays(count=1, nbytes=nbytes, error=str(e))


def _signatures(views: dict[str, TensorView]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: v.signature for k, v in views.items()}


def _measure(arrays: _Arrays, sent: SentModel, norms: bool) -> _Arrays:
    """Digest, finiteness and (when a bound needs it and the tensors match the model sent)
    the update norm. A finite norm proves every value finite (update - parent is NaN or
    infinite wherever the update is), so the separate finiteness pass runs only without
    one. Thread-safe: hashlib and numpy only."""
    if arrays.views is None:
        return arrays
    views = arrays.views
    try:
        digest = views_digest(views, threads=1)
        norm = None
        if norms and _signatures(views) == _signatures(sent[1]):
            norm = update_norm({k: v.numpy() for k, v in views.items()},
                               {k: v.numpy() for k, v in sent[1].items()})
        bad = None
        if norm is None or not math.isfinite(norm):  # a finite norm: every value is finite
            bad = next((n for n, v in views.items() if not all_finite(v.numpy())), None)
    except (DigestError, ValueError, TypeError) as e:  # whatever a client sent: malformed
        return dataclasses.replace(arrays, views=None, error=str(e))
    return dataclasses.replace(arrays, digest=digest, non_finite=bad, norm=norm)


def _statement(content: RecordDict) -> tuple[SignedStatement | None, str | None]:
    try:
        return read_statement(content), None
    except StatementError as e:
        return None, str(e)


def _metric_keys(content: RecordDict) -> tuple[Any, ...]:
    return tuple(sorted((n, tuple(sorted(r.keys()))) for n, r in content.metric_records.items()))


def error_detail(reply: Message, node: int) -> str:
    """What an error reply says, and who said it: a SuperLink-made error (a node that
    went away, a reply that expired) comes from the SuperLink, not from `node`, the node
    mapped through the instruction it answers."""
    err = reply.error
    name = _ERROR_NAMES.get(err.code, "unknown code")
    meta = reply.metadata
    if meta.src_node_id != node:
        return (f"the SuperLink answered for node {node}: error code {err.code} ({name}) "
                f"to instruction {meta.reply_to_message_id}: {err.reason}")
    return f"error code {err.code} ({name}): {err.reason}"


def missing_replies(sent: Sequence[Message], replies: Sequence[Message],
                    sent_model: Callable[[int], SentModel]) -> list[ReplyFacts]:
    """The facts of each instruction no reply answered by the round's timeout (a node
    killed mid-round, or one whose reply was lost), so the round records it."""
    answered = {r.metadata.reply_to_message_id for r in replies}
    out = []
    for m in sent:
        meta = m.metadata
        if meta.message_id in answered:
            continue
        digest, views = sent_model(meta.dst_node_id)
        out.append(ReplyFacts(
            node=str(meta.dst_node_id), parent=digest, expected=_signatures(views),
            error=f"no reply from node {meta.dst_node_id} to {meta.message_type} instruction "
                  f"{meta.message_id} by the round's timeout (the node went down or its "
                  "reply was lost)"))
    return out


def _facts(reply: Message, node: int, sent: SentModel, arrays: _Arrays | None) -> ReplyFacts:
    base = ReplyFacts(node=str(node), parent=sent[0], expected=_signatures(sent[1]))
    if reply.has_error() or arrays is None:
        return dataclasses.replace(base, error=error_detail(reply, node))
    content = reply.content
    statement, statement_error = _statement(content)
    return dataclasses.replace(
        base, statement=statement, statement_error=statement_error,
        array_records=arrays.count, nbytes=arrays.nbytes, arrays_error=arrays.error,
        update=arrays.digest,
        tensors=_signatures(arrays.views) if arrays.views is not None else None,
        non_finite=arrays.non_finite, norm=arrays.norm,
        metrics=json_safe(reply_metrics(content)), metric_keys=_metric_keys(content))


def reply_facts(replies: Sequence[Message], sent_to: Callable[[Message], tuple[int, SentModel]],
                policy: Policy) -> list[ReplyFacts]:
    """The facts of each reply. `sent_to(reply)`: its node and the model that node was sent."""
    targets = [sent_to(r) for r in replies]
    parsed = [None if r.has_error() else _parse(r.content, policy.max_update_bytes)
              for r in replies]
    norms = policy.measures_norms

    def measure(i: int) -> _Arrays | None:
        p = parsed[i]
        return None if p is None else _measure(p, targets[i][1], norms)

    workers = min(len(replies), os.cpu_count() or 1, 8)
    if workers > 1 and sum(p.nbytes for p in parsed if p) >= PARALLEL_MIN_BYTES:
        with ThreadPoolExecutor(workers) as pool:
            measured = list(pool.map(measure, range(len(replies))))
    else:
        measured = [measure(i) for i in range(len(replies))]
    return [_facts(r, node, sent, m)
            for r, (node, sent), m in zip(replies, targets, measured, strict=True)]
