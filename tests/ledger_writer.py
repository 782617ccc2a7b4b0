"""A separate process for the crash and concurrency tests (not collected by pytest).

    write PATH LABEL START COUNT [GO_FILE [PAUSE]]
        Append COUNT batches numbered START, START+1, ...; print each number (flushed) once
        its append has returned. With GO_FILE, wait for that file before the first append;
        with PAUSE, sleep that many seconds after each append (as a real round would), so
        that a competing writer gets the lock between batches.
    open PATH T0
        At wall-clock time T0, open (creating) the ledger; print its origin.
    read PATH STOP_FILE SEED
        Until STOP_FILE exists, check inclusion and consistency proofs of the latest heads
        while others write; print a JSON summary.

Batch b holds 1 + b % 4 credit entries (run=LABEL, round=b, node="j/k"), so a reader can
tell a complete batch from a partial one.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from flchain_plugin import entries as E
from flchain_plugin import merkle
from flchain_plugin.ledger import Ledger, TreeHead


def batch(label: str, b: int) -> list[E.Entry]:
    k = 1 + b % 4
    return [E.Credit(run=label, round=b, node=f"{j}/{k}", rule="batch", amount=j)
            for j in range(k)]


def logged_batches(led: Ledger) -> list[tuple[str, int, int]]:
    """(label, batch number, tree size after it) for every batch in the log, in order.

    Raises AssertionError if a batch is partial or interleaved with another.
    """
    out: list[tuple[str, int, int]] = []
    cur: tuple[str, int] | None = None
    want_j = 0
    for logged in led.iter_entries():
        e = logged.entry
        where = f"entry {logged.index}"
        assert isinstance(e, E.Credit) and e.rule == "batch", f"{where}: {e}"
        j, k = (int(x) for x in e.node.split("/"))
        if j == 0:
            assert cur is None, f"{where}: batch {cur} is partial"
            cur = (e.run, e.round)
        assert cur == (e.run, e.round), f"{where}: {e.run}/{e.round} inside batch {cur}"
        assert j == want_j, f"{where}: position {j} in batch {cur}, want {want_j}"
        assert k == 1 + e.round % 4, f"{where}: batch {cur} has the wrong size"
        want_j += 1
        if j == k - 1:
            out.append((e.run, e.round, logged.index + 1))
            cur, want_j = None, 0
    assert cur is None, f"the last batch {cur} is partial"
    return out


def write(path: str, label: str, start: int, count: int, go: str | None, pause: float) -> None:
    led = Ledger(path)
    print("ready", flush=True)
    while go and not os.path.exists(go):
        time.sleep(0.001)
    for b in range(start, start + count):
        led.append(batch(label, b))
        print(b, flush=True)
        if pause:
            time.sleep(pause)
    led.close()


def open_at(path: str, t0: float) -> None:
    while time.time() < t0:
        pass  # spin: both processes should reach the open within microseconds
    with Ledger(path) as led:
        print(led.origin, flush=True)


def read(path: str, stop: str, seed: int) -> None:
    rng = random.Random(seed)
    led = Ledger(path, create=False)
    print("ready", flush=True)
    last: TreeHead | None = None
    inclusion = consistency = 0
    sizes: set[int] = set()
    errors: list[str] = []
    done = False
    while not done:
        done = os.path.exists(stop)  # one more round after the writers finished
        head = led.head()
        if head.size == 0:
            time.sleep(0.001)
            continue
        sizes.add(head.size)
        try:
            i = rng.randrange(head.size)
            p = led.inclusion_proof(i, head.size)
            p.verify()
            if p.root != head.root:
                raise AssertionError(f"proof root differs from head at size {head.size}")
            if merkle.leaf_hash(led.get(i).data) != p.leaf_hash:
                raise AssertionError(f"leaf {i} differs from its entry's bytes")
            inclusion += 1
            if last is not None:
                c = led.consistency_proof(last.size, head.size)
                c.verify()
                if c.root1 != last.root or c.root2 != head.root:
                    raise AssertionError(f"tree forked between sizes {last.size} and {head.size}")
                consistency += 1
            last = head
        except Exception as e:  # reported to the test, which fails on any
            errors.append(f"{type(e).__name__}: {e}")
    print(json.dumps({"inclusion": inclusion, "consistency": consistency,
                      "sizes": len(sizes), "errors": errors[:20]}), flush=True)


def main(argv: list[str]) -> None:
    if argv[0] == "write":
        go = argv[5] if len(argv) > 5 else None
        pause = float(argv[6]) if len(argv) > 6 else 0.0
        write(argv[1], argv[2], int(argv[3]), int(argv[4]), go, pause)
    elif argv[0] == "open":
        open_at(argv[1], float(argv[2]))
    elif argv[0] == "read":
        read(argv[1], argv[2], int(argv[3]))
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
