"""`keep_updates=True`: every accepted reply's arrays, kept encrypted for replay.

Called after the replies are verified and before the wrapped strategy sees them (FedMedian
and FedTrimmedAvg pop the arrays, the DP wrappers swap in clipped ones), so what is kept is
the exact `.npy` bytes the client sent and its `update` entry's digest names. The writes
finish before the round's batch commits: an entry never names an update that a crash
could have lost (a kept update whose entry never committed is harmless).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from flwr.app import Message

from ..vault import UpdateVault
from ..verification import Verdict

log = logging.getLogger("flchain.flower")


def keep_accepted(vault: UpdateVault, replies: Sequence[Message],
                  verdicts: Sequence[Verdict]) -> None:
    """Encrypt and store each accepted reply's tensors under its update digest; a failure
    is logged naming the update (its round stays recorded; replay will report it missing)."""
    jobs = []
    for reply, v in zip(replies, verdicts, strict=True):
        if not v.accepted or v.facts.update is None:
            continue
        record = next(iter(reply.content.array_records.values()))
        jobs.append((v.facts.update, v.facts.node, {k: a.data for k, a in record.items()}))
    if not jobs:
        return

    def put(job: tuple[str, str, dict[str, bytes]]) -> None:
        digest, node, tensors = job
        try:
            vault.put(digest, tensors)
        except (OSError, ValueError) as e:
            log.error("flchain: could not keep update %s of node %s in %s (%s): replay "
                      "will report its round", digest, node, vault, e)

    with ThreadPoolExecutor(min(len(jobs), os.cpu_count() or 1, 8)) as pool:
        list(pool.map(put, jobs))
