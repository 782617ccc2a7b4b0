"""The witness client and the quorum against real witness processes (`flchain witness serve`).

Each status the spec defines is provoked for real: 200 for honest growth, 409 for a client
that does not know the witness's size (it learns it and proves from there), 422 for a fork,
403 for a checkpoint signed by another key, 404 for an unknown log. The quorum is gathered
from three witness processes, with witnesses that refuse connections or never answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from witness_servers import BlackHole, WitnessProcess, dead_url, witnesses

from flchain_plugin import entries as E
from flchain_plugin import notes
from flchain_plugin.checkpoint import Checkpoint, open_checkpoint
from flchain_plugin.ledger import Ledger
from flchain_plugin.quorum import Quorum, QuorumError, Witnesses, verify_quorum
from flchain_plugin.witness_client import (
    LogUnknown,
    LogUntrusted,
    WitnessAhead,
    WitnessClient,
    WitnessRefused,
)

pytest.importorskip("flchain_plugin.witness_http", reason="the witness server (branch witness)")

TESTS = ("statuses", "second-root", "k-of-n", "deadline", "hostile")


def grow(led: Ledger, n: int, tag: str = "a") -> None:
    start = led.size
    led.append([E.Erasure(blob=f"sha256:{i:064x}", reason=f"{tag}{i}")
                for i in range(start, start + n)])


@pytest.fixture(scope="module")
def logs() -> dict[str, notes.Signer]:
    """One log per test (witnesses keep state per origin)."""
    return {t: notes.generate_key(f"quorum.test/{t}") for t in TESTS}


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory, logs: dict[str, notes.Signer]):
    with witnesses(tmp_path_factory.mktemp("w"), ["w0.test", "w1.test", "w2.test"],
                   [k.verifier_key for k in logs.values()]) as procs:
        yield procs


def client(w: WitnessProcess) -> WitnessClient:
    return WitnessClient(w.url, (notes.Verifier.parse(w.vkey),))


def submit(c: WitnessClient, led: Ledger, note: str, log: notes.Signer):
    cp, _ = open_checkpoint(note, log.verifier)
    return c.add_checkpoint(led, note, cp, timeout=10)


def test_client_statuses_against_a_real_witness(tmp_path: Path, logs, three):
    log = logs['statuses']
    origin = log.name
    w = three[0]
    with Ledger(tmp_path / "a.db", origin=origin) as led:
        grow(led, 3)
        c = client(w)
        sigs = submit(c, led, led.sign_checkpoint(log), log)  # 200, from old 0
        assert [s.name for s in sigs] == ["w0.test"] and c.cosigned == {origin: 3}
        grow(led, 5)
        note = led.sign_checkpoint(log)
        assert submit(c, led, note, log) and c.cosigned == {origin: 8}  # 200 with a proof from 3
        fresh = client(w)  # knows nothing: sends old 0, gets 409 "8", proves from 8
        assert submit(fresh, led, note, log) and fresh.cosigned == {origin: 8}
        grow(led, 2)
        fresh = client(w)
        assert submit(fresh, led, led.sign_checkpoint(log), log) and fresh.cosigned == {origin: 10}

        with Ledger(tmp_path / "fork.db", origin=origin) as fork:  # same key, other history
            grow(fork, 12, "fork")
            with pytest.raises(WitnessRefused, match=r"422.*forked"):
                submit(client(w), fork, fork.sign_checkpoint(log), log)
        with Ledger(tmp_path / "old.db", origin=origin) as old:  # a rolled-back log
            grow(old, 3)
            with pytest.raises(WitnessAhead, match=r"cosigned size 10 .* rolled back"):
                submit(client(w), old, old.sign_checkpoint(log), log)

        stranger = notes.generate_key(origin)  # signs as the log, with another key
        with pytest.raises(LogUntrusted, match="403"):
            client(w).add_checkpoint(led, notes.sign_note(led.checkpoint().body(), stranger),
                                     led.checkpoint(), timeout=10)
        with Ledger(tmp_path / "other.db", origin="other.test/log") as other:
            key = notes.generate_key("other.test/log")
            grow(other, 1)
            note = other.sign_checkpoint(key)
            cp, _ = open_checkpoint(note, key.verifier)
            with pytest.raises(LogUnknown, match="404"):
                client(w).add_checkpoint(other, note, cp, timeout=10)


def test_a_second_root_at_one_size_is_refused(tmp_path: Path, logs, three):
    log = logs['second-root']
    origin = log.name
    w = three[1]
    with Ledger(tmp_path / "a.db", origin=origin) as a, \
            Ledger(tmp_path / "b.db", origin=origin) as b:
        grow(a, 4)
        grow(b, 4, "b")
        c = client(w)
        submit(c, a, a.sign_checkpoint(log), log)
        with pytest.raises(WitnessRefused):  # old 4 = size 4, another root: 422 (or 409)
            submit(c, b, b.sign_checkpoint(log), log)


def test_quorum_k_of_n_from_witness_processes(tmp_path: Path, logs, three):
    log = logs['k-of-n']
    origin = log.name
    with Ledger(tmp_path / "q.db", origin=origin) as led:
        keys = [w.vkey for w in three]
        grow(led, 2)
        q = Quorum(Witnesses(tuple((w.url, w.vkey) for w in three), 3))
        try:
            note = q.gather(led, led.sign_checkpoint(log), log.verifier)
            assert verify_quorum(note, log.verifier, keys, 3).cosigners == (
                "w0.test", "w1.test", "w2.test")
            assert led.latest_checkpoint() == note  # stored in the ledger
            for _ in range(2):  # later rounds prove from what each witness cosigned
                grow(led, 3)
                note = q.gather(led, led.sign_checkpoint(log), log.verifier)
                assert len(verify_quorum(note, log.verifier, keys, 3).cosigners) == 3
        finally:
            q.close()


def test_quorum_returns_once_k_answered_and_names_who_did_not(tmp_path: Path, logs, three):
    log = logs['deadline']
    origin = log.name
    hole = BlackHole()
    try:
        with Ledger(tmp_path / "q.db", origin=origin) as led:
            grow(led, 2)
            hung = (hole.url, notes.generate_cosignature_key("hung.test").verifier_key)
            live = tuple((w.url, w.vkey) for w in three[:2])
            q = Quorum(Witnesses((*live, hung), 2, timeout=20, deadline=30))
            t0 = time.monotonic()
            note = q.gather(led, led.sign_checkpoint(log), log.verifier)
            assert time.monotonic() - t0 < 5  # did not wait for the hung witness
            assert verify_quorum(note, log.verifier, [v for _, v in (*live, hung)], 2)
            q.close()

            down = (dead_url(), notes.generate_cosignature_key("down.test").verifier_key)
            cfg = Witnesses((live[0], down, hung), 2, timeout=1, retries=1, backoff=0.1,
                            deadline=2)
            q = Quorum(cfg)
            grow(led, 1)
            note = led.sign_checkpoint(log)
            t0 = time.monotonic()
            with pytest.raises(QuorumError) as err:
                q.gather(led, note, log.verifier)
            assert time.monotonic() - t0 < cfg.deadline + 1
            q.close()
            assert set(err.value.reasons) == {"down.test", "hung.test"}
            assert "unreachable" in err.value.reasons["down.test"]
            assert "did not answer" in err.value.reasons["hung.test"] \
                or "deadline" in err.value.reasons["hung.test"]
            assert "1 of 3 witnesses cosigned, the quorum is 2" in str(err.value)
            assert led.latest_checkpoint() == note  # the log's own note, not a cosigned one
    finally:
        hole.close()


class Hostile(ThreadingHTTPServer):
    """A witness that answers 200 with what `body(request body)` returns: a cosignature
    of another tree, or no cosignature at all. Real HTTP, on loopback."""

    def __init__(self, body: Callable[[bytes], bytes]):
        answer = body

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = answer(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_a_witness_answering_200_without_a_valid_cosignature_does_not_count(
        tmp_path: Path, logs, three):
    log = logs["hostile"]
    origin = log.name
    key = notes.generate_cosignature_key("hostile.test")
    elsewhere = Checkpoint(origin, 1, b"\x01" * 32)

    def forged(request: bytes) -> bytes:  # its own key, over a tree it was not shown
        note = notes.sign_note(elsewhere.body(), log)
        return notes.add_signature(note, key).splitlines(keepends=True)[-1].encode()

    servers = [Hostile(forged), Hostile(lambda request: b"cosigned!\n")]
    try:
        with Ledger(tmp_path / "h.db", origin=origin) as led:
            grow(led, 3)
            live = tuple((w.url, w.vkey) for w in three[:2])
            junk = (servers[1].url, notes.generate_cosignature_key("junk.test").verifier_key)
            vkeys = [v for _, v in live] + [key.verifier_key]
            hostile = ((servers[0].url, key.verifier_key),)
            q = Quorum(Witnesses((*live, *hostile), 2))
            note = q.gather(led, led.sign_checkpoint(log), log.verifier)
            assert verify_quorum(note, log.verifier, vkeys, 2).cosigners == ("w0.test",
                                                                            "w1.test")
            q.close()
            q = Quorum(Witnesses((live[0], *hostile, junk), 2))
            grow(led, 1)
            with pytest.raises(QuorumError) as err:
                q.gather(led, led.sign_checkpoint(log), log.verifier)
            q.close()
            assert "answered 200 but its cosignatures do not verify" in \
                err.value.reasons["hostile.test"]
            assert "is not signature lines" in err.value.reasons["junk.test"]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
