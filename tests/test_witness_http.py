"""The witness as a real server: `flchain witness serve` in a subprocess on a free port,
driven with httpx; the CLI's start-up errors and `flchain witness evidence`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from witness_log import TestLog

from flchain_plugin import notes
from flchain_plugin.witness import AddCheckpoint, WitnessService, WitnessState
from flchain_plugin.witness_http import create_app

FLCHAIN = [sys.executable, "-m", "flchain_plugin.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLCHAIN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=os.environ.copy())


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    verifiers: list[str]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def start(tmp: Path, log: TestLog, *extra: str, state: str = "w.db") -> Server:
    proc = subprocess.Popen(
        [*FLCHAIN, "witness", "serve", "--key", "w.pem", "--log", log.verifier.vkey,
         "--state", state, "--port", "0", "--json", *extra],
        cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ.copy())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
    doc = json.loads(line)
    return Server(proc, doc["url"], doc["verifiers"])


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    notes.save_private_key(notes.generate_cosignature_key("witness.example/w1"),
                           tmp_path / "w.pem", None)
    return tmp_path


@pytest.fixture
def log() -> TestLog:
    return TestLog()


@pytest.fixture
def server(tmp: Path, log: TestLog) -> Iterator[Server]:
    s = start(tmp, log)
    yield s
    if s.proc.poll() is None:
        s.stop()


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url + "/add-checkpoint", content=body, timeout=30)


def test_served_cosignatures_verify(server: Server, log: TestLog) -> None:
    witness = notes.Verifier.parse(server.verifiers[0])
    log.grow(300)
    with httpx.Client(base_url=server.url, timeout=30) as client:  # keep-alive, as the spec asks
        for old, size in ((0, 100), (100, 256), (256, 300)):
            body = log.request(old, size)
            r = client.post("/add-checkpoint", content=body)
            assert r.status_code == 200, r.text
            note = AddCheckpoint.parse(body).note + r.text
            assert notes.open_note(note, [log.verifier, witness]).signed_by(witness)
        r = client.post("/add-checkpoint", content=log.request(0, 10))
        assert (r.status_code, r.text, r.headers["content-type"]) == (
            409, "300\n", "text/x.tlog.size")
        origin_hash = hashlib.sha256(log.origin.encode()).hexdigest()
        r = client.get(f"/{origin_hash}/checkpoint")
        assert r.status_code == 200
        assert notes.open_note(r.text, [log.verifier, witness]).signed_by(witness)
        assert client.get(f"/{'0' * 64}/checkpoint").status_code == 404
        assert client.get("/add-checkpoint").status_code == 405


def test_refusals_over_http(server: Server, log: TestLog) -> None:
    stranger = TestLog("other.example/log")
    stranger.grow(1)
    impostor = TestLog(log.origin)
    impostor.grow(1)
    log.grow(8)
    assert post(server.url, log.request(0)).status_code == 200
    fork = log.forked(4)
    cases = [(stranger.request(0), 404), (impostor.request(0), 403), (b"old 1\n", 400),
             (fork.request(8), 422), (AddCheckpoint(0, (), log.note(0)).encode(), 409)]
    for body, status in cases:
        r = post(server.url, body)
        assert r.status_code == status, (status, r.text)
        assert r.text.endswith("\n") and r.text.count("\n") == 1 and "Traceback" not in r.text
    r = post(server.url, b"old 0\n\n" + b"x" * (300 * 1024))
    assert r.status_code == 413


def test_concurrent_submissions_one_wins(server: Server, log: TestLog) -> None:
    """Eight clients race from the same old size against the real server: one 200."""
    log.grow(5)
    assert post(server.url, log.request(0)).status_code == 200
    log.grow(8)
    bodies = [log.request(5, 5 + k) for k in range(1, 9)]
    go = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def submit(body: bytes) -> None:
        go.wait()
        statuses.append(post(server.url, body).status_code)

    threads = [threading.Thread(target=submit, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [409] * 7


def test_state_survives_a_restart_and_evidence_is_shown(tmp: Path, log: TestLog) -> None:
    first = start(tmp, log)
    log.grow(6)
    assert post(first.url, log.request(0)).status_code == 200
    assert post(first.url, log.forked(2).request(6)).status_code == 422
    assert first.stop() == 0
    second = start(tmp, log)
    try:
        r = post(second.url, log.request(0, 3))
        assert (r.status_code, r.text) == (409, "6\n")
    finally:
        assert second.stop() == 0
    out = run("witness", "evidence", "--state", "w.db", "--json", cwd=tmp)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["logs"] == [{"origin": log.origin, "size": 6}]
    [ev] = doc["evidence"]
    assert ev["kind"] == "fork" and ev["origin"] == log.origin
    assert ev["cosigned"] != ev["conflicting"]
    human = run("witness", "evidence", "--state", "w.db", cwd=tmp)
    assert "fork" in human.stdout and "1 conflicting" in human.stdout


def test_prefix(tmp: Path, log: TestLog) -> None:
    s = start(tmp, log, "--prefix", "/witness/")
    try:
        assert s.url.endswith("/witness")
        log.grow(1)
        assert post(s.url, log.request(0)).status_code == 200
        assert post(s.url.removesuffix("/witness"), log.request(0)).status_code == 404
    finally:
        s.stop()


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def test_startup_errors_are_one_line_exit_2(tmp: Path, log: TestLog) -> None:
    notes.save_private_key(notes.generate_key("example.com/log"), tmp / "log.pem", None)
    (tmp / "junk.pem").write_text("# name: x\n# type: ed25519\nnot a key\n")
    os.chmod(tmp / "junk.pem", 0o600)
    busy, port = _busy_port()
    vkey = log.verifier.vkey
    cases = [
        (["--key", "missing.pem", "--log", vkey], "does not exist"),
        (["--key", "junk.pem", "--log", vkey], "no readable PEM"),
        (["--key", "log.pem", "--log", vkey], "is a log key"),
        (["--key", "w.pem", "--log", "example.com/log=nonsense"], "not a verifier key"),
        (["--key", "w.pem"], "give the logs to witness"),
        (["--key", "w.pem", "--log", vkey, "--port", str(port)], "choose another --port"),
        (["--key", "w.pem", "--log", vkey, "--prefix", "a b"], "prefix"),
        (["--key", "w.pem", "--log", vkey, "--state", "garbage.db"], "cannot open --state"),
        (["--key", "w.pem", "--log", vkey, "--state", "no/such/dir.db"], "cannot open --state"),
    ]
    (tmp / "garbage.db").write_bytes(os.urandom(8192))
    try:
        for args, words in cases:
            r = run("witness", "serve", "--state", "w.db", *args, cwd=tmp)
            assert r.returncode == 2, (args, r.stderr)
            assert words in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
            assert "Traceback" not in r.stderr
    finally:
        busy.close()
    r = run("witness", "evidence", "--state", "nowhere.db", cwd=tmp)
    assert r.returncode == 2 and "no witness state" in r.stderr
    r = run("witness", "evidence", "--state", "garbage.db", cwd=tmp)
    assert r.returncode == 2 and "cannot read witness state" in r.stderr
    assert r.stderr.count("\n") == 1


def test_logs_file_and_origin_other_than_key_name(tmp: Path) -> None:
    log = TestLog("sum.example/log", notes.generate_key("sum.example"))
    (tmp / "logs.txt").write_text(f"# the logs\n\n{log.origin}={log.verifier.vkey}\n")
    proc = subprocess.Popen(
        [*FLCHAIN, "witness", "serve", "--key", "w.pem", "--logs-file", "logs.txt",
         "--state", "w.db", "--port", "0", "--json"],
        cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    s = Server(proc, json.loads(proc.stdout.readline())["url"], [])
    try:
        log.grow(2)
        assert post(s.url, log.request(0)).status_code == 200
    finally:
        assert s.stop() == 0


def test_internal_error_is_one_line_500(tmp: Path, log: TestLog) -> None:
    """A broken state file: the client gets status 500 and one line, no traceback."""
    state = WitnessState(tmp / "broken.db")
    svc = WitnessService(state, [notes.generate_cosignature_key("w")],
                         {log.origin: [log.verifier]})
    db = sqlite3.connect(tmp / "broken.db")
    db.execute("DROP TABLE witness_state")
    db.close()
    log.grow(1)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            return await client.post("/add-checkpoint", content=log.request(0))

    r = asyncio.run(call())
    assert (r.status_code, r.text) == (500, "internal error: OperationalError\n")
    state.close()


def test_bench_quick_reports_every_figure() -> None:
    """bench/bench_witness.py --quick runs against the real server and reports its figures
    (their shape only: speed is judged by the full benchmark, never by a test)."""
    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_witness.py"
    r = subprocess.run([sys.executable, str(bench), "--quick", "--json"], capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["bench"] == "witness" and doc["params"]["proof_hashes"] == 63
    results = doc["results"]
    assert set(results) == {"add_checkpoint_p50", "add_checkpoint_p99",
                            "add_checkpoint_first_p50", "add_checkpoint_in_process_p50",
                            "sqlite_commit", "sign_verify",
                            "cosignatures_per_s_4_logs"}
    assert all(v["value"] > 0 and v["passed"] is None for v in results.values())
    assert results["add_checkpoint_p99"]["value"] >= results["add_checkpoint_p50"]["value"]
    assert results["add_checkpoint_p50"]["baseline"] == results["sign_verify"]["value"]


def test_killed_server_keeps_every_answered_checkpoint(tmp: Path, log: TestLog) -> None:
    """SIGKILL (no graceful shutdown) right after answers: every size that got a 200 is in
    the state the next server reads, so it cannot be made to cosign an older tree."""
    first = start(tmp, log)
    log.grow(40)
    answered = 0
    with httpx.Client(base_url=first.url, timeout=30) as client:
        for size in range(1, 41, 3):
            r = client.post("/add-checkpoint", content=log.request(answered, size))
            assert r.status_code == 200, r.text
            answered = size
    first.proc.kill()
    first.proc.wait(timeout=30)
    second = start(tmp, log)
    try:
        r = post(second.url, log.request(0, 1))
        assert (r.status_code, r.text) == (409, f"{answered}\n")
        r = post(second.url, log.request(answered - 3, answered - 1))
        assert r.status_code == 409
    finally:
        assert second.stop() == 0


def test_two_servers_on_one_state_file_still_one_winner(tmp: Path, log: TestLog) -> None:
    """The transaction is SQLite's, not a lock in one process: two server processes sharing
    the state file, eight clients racing across them from one old size, one 200."""
    servers = [start(tmp, log), start(tmp, log)]
    try:
        log.grow(3)
        assert post(servers[0].url, log.request(0)).status_code == 200
        log.grow(8)
        bodies = [(servers[k % 2].url, log.request(3, 3 + k)) for k in range(1, 9)]
        go = threading.Barrier(len(bodies))
        statuses: list[int] = []

        def submit(url: str, body: bytes) -> None:
            go.wait()
            statuses.append(post(url, body).status_code)

        threads = [threading.Thread(target=submit, args=b) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [409] * 7
    finally:
        for s in servers:
            assert s.stop() == 0
