"""SIGKILL a writer at random instants, on SQLite and on PostgreSQL (`ledger_at`): the
ledger always verifies and holds exactly the batches whose append had returned (plus at
most the one that committed just before the kill, never a part of a batch)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_writer import logged_batches

from flchain_plugin.ledger import Ledger

At = Callable[[str], "Path | str"]
WRITER = str(Path(__file__).with_name("ledger_writer.py"))
BATCHES = 200
KILLS = 20  # kills that land while the writer is appending
PG_KILLS = 6  # on PostgreSQL, whose rollback of a dead client's transaction is the server's
# own (each kill costs a process start and a connection: the budget of the suite)
LABEL = "crash"

pytestmark = pytest.mark.slow


def spawn(path: Path | str, start: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WRITER, "write", str(path), LABEL, str(start), str(BATCHES)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def printed_numbers(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Rest of stdout and stderr of a dead or finishing writer. Reads through the same
    buffered file objects as the earlier readline (communicate() would bypass their
    buffers and lose lines already read ahead)."""
    proc.wait(timeout=120)
    assert proc.stdout is not None and proc.stderr is not None
    return proc.stdout.read(), proc.stderr.read()


def check_after_kill(path: Path | str, start: int, printed: list[int], note: str) -> int:
    """Verify the ledger and its batches; return the next batch number to write."""
    assert printed == list(range(start, start + len(printed))), note
    with Ledger(path) as led:
        report = led.verify()
        assert report.ok, f"{note}: {report.problem}"
        batches = logged_batches(led)
        numbers = [b for _, b, _ in batches]
        assert numbers == list(range(len(numbers))), f"{note}: batches {numbers[-5:]}"
        this_run = [b for b in numbers if b >= start]
        # every returned append is there; one more may have committed before its print
        assert len(printed) <= len(this_run) <= len(printed) + 1, (
            f"{note}: printed {len(printed)} batches, ledger holds {len(this_run)}")
        # one tree head per batch, at its end
        assert [h.size for h in led.heads()] == [end for _, _, end in batches], note
        return len(numbers)


def test_sigkill_at_random_points(ledger_at: At) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    path = ledger_at("crash.db")
    kills = KILLS if isinstance(path, Path) else PG_KILLS

    # One uninterrupted run measures how long 200 batches take here.
    proc = spawn(path, 0)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    out, err = finish(proc)
    duration = time.perf_counter() - t0
    assert proc.returncode == 0, err
    start = check_after_kill(path, 0, printed_numbers(out), "uninterrupted run")
    assert start == BATCHES

    mid_run_kills = 0
    reps = 0
    while mid_run_kills < kills:
        reps += 1
        assert reps <= 3 * kills, f"only {mid_run_kills} kills landed mid-run (seed {seed})"
        proc = spawn(path, start)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        delay = rng.uniform(0, duration)
        time.sleep(delay)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        out, err = finish(proc)
        printed = printed_numbers(out)
        if alive and len(printed) < BATCHES:
            mid_run_kills += 1
            assert proc.returncode == -signal.SIGKILL
        else:  # the writer finished first (the machine got faster): kill sooner from now on
            duration = min(duration, delay)
        note = f"seed {seed}, rep {reps}, delay {delay:.4f}s, start {start}"
        nxt = check_after_kill(path, start, printed, note)
        start = nxt


def test_sigkill_while_creating_and_first_appends(ledger_at: At) -> None:
    """Kills from process start on fresh files: a ledger cut off while being created or
    during its first batches still opens, verifies and holds whole batches."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    for rep in range(6):
        path = ledger_at(f"fresh{rep}.db")
        proc = spawn(path, 0)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        out, _ = finish(proc)
        printed = printed_numbers(out.replace("ready", ""))
        check_after_kill(path, 0, printed, f"seed {seed}, fresh rep {rep}")
