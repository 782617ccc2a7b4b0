"""The witness's add-checkpoint rule (c2sp.org/tlog-witness) with its real SQLite state.

Vectors: the real arche2025h1 staging CT log checkpoint with four public witnesses'
cosignature/v1 lines (the same literal as test_notes.py, from the tlog_scales test suite;
published log and witness verifier keys) goes through this witness: it must verify the
log's Ed25519 signature, ignore the unknown signatures (an RFC 6962 one, other witnesses'),
and add a cosignature that verifies beside the four published ones.
"""

from __future__ import annotations

import base64
import sqlite3
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_notes import ARCHE_NOTE, ARCHE_VKEY, ARCHE_WITNESSES
from witness_log import TestLog

from flchain_plugin import notes
from flchain_plugin.checkpoint import Checkpoint, sign_checkpoint
from flchain_plugin.witness import (
    FORK,
    INCONSISTENT,
    MAX_PROOF_LINES,
    ROLLBACK,
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    RequestError,
    WitnessService,
    WitnessState,
)


@pytest.fixture
def log() -> TestLog:
    return TestLog()


@pytest.fixture
def state(tmp_path):
    s = WitnessState(tmp_path / "witness.db")
    yield s
    s.close()


@pytest.fixture
def wkey() -> notes.CosignatureSigner:
    return notes.generate_cosignature_key("witness.example/w1")


@pytest.fixture
def service(state, wkey, log) -> WitnessService:
    return WitnessService(state, [wkey], {log.origin: [log.verifier]})


def cosigned(request_body: bytes, response_body: bytes) -> str:
    """The checkpoint note of a request with the witness's answer appended (the spec's way)."""
    note = AddCheckpoint.parse(request_body).note
    return note + response_body.decode()


def stored_size(state: WitnessState, origin: str) -> int:
    return dict(state.origins())[origin]


# -- honest growth ------------------------------------------------------------------------


def test_honest_growth_is_cosigned_and_verifies(service, log, wkey, state):
    log.grow(5)
    sizes = []
    for old, grow in ((0, 0), (5, 9), (14, 1), (15, 241), (256, 0)):
        log.grow(grow)
        body = log.request(old)
        r = service.add_checkpoint(body)
        assert r.status == 200, r.body
        assert r.body.startswith("— witness.example/w1 ".encode()) and r.body.endswith(b"\n")
        opened = notes.open_note(cosigned(body, r.body), [log.verifier, wkey.verifier])
        assert opened.signed_by(wkey.verifier) and opened.signed_by(log.verifier)
        sig = next(s for s in opened.verified if s.verifier == wkey.verifier)
        assert sig.timestamp and sig.timestamp > 1_700_000_000  # never 0 (the spec)
        sizes.append(stored_size(state, log.origin))
    assert sizes == [5, 14, 15, 256, 256]
    assert state.evidence() == []
    assert state.checkpoint(log.origin) is not None
    assert notes.open_note(state.checkpoint(log.origin), [wkey.verifier]).signed_by(wkey.verifier)


def test_cosigns_with_every_signer(state, log):
    keys = [notes.generate_cosignature_key("w.example/a"),
            notes.generate_cosignature_key("w.example/b")]
    svc = WitnessService(state, keys, {log.origin: [log.verifier]})
    log.grow(3)
    body = log.request(0)
    r = svc.add_checkpoint(body)
    assert r.status == 200 and r.body.count(b"\n") == 2
    opened = notes.open_note(cosigned(body, r.body), [k.verifier for k in keys])
    assert all(opened.signed_by(k.verifier) for k in keys)
    ts = {s.timestamp for s in opened.verified}
    assert len(ts) == 1  # one time for the whole answer


def test_real_cosigned_checkpoint_vector(state, wkey):
    """A real checkpoint (arche2025h1) with foreign signatures: the witness verifies the log's
    Ed25519 signature, ignores the others and cosigns; all five cosignatures verify."""
    log_key = notes.Verifier.parse(ARCHE_VKEY)
    svc = WitnessService(state, [wkey], {log_key.name: [log_key]})
    body = AddCheckpoint(0, (), ARCHE_NOTE).encode()
    r = svc.add_checkpoint(body)
    assert r.status == 200, r.body
    witnesses = [notes.Verifier.parse(v) for v in ARCHE_WITNESSES] + [wkey.verifier]
    opened = notes.open_note(cosigned(body, r.body), [log_key, *witnesses])
    assert all(opened.signed_by(w) for w in witnesses)
    assert stored_size(state, log_key.name) == 1432088532
    # a second root at that size, signed by another key under the same name: 403, not cosigned
    other = notes.generate_key(log_key.name)
    cp = Checkpoint(log_key.name, 1432088532, b"\x01" * 32)
    r = svc.add_checkpoint(AddCheckpoint(1432088532, (), sign_checkpoint(cp, other)).encode())
    assert r.status == 403


def test_same_checkpoint_again_is_cosigned_again(service, log, state):
    log.grow(4)
    assert service.add_checkpoint(log.request(0)).status == 200
    assert service.add_checkpoint(log.request(4)).status == 200
    assert stored_size(state, log.origin) == 4


def test_empty_tree(service, log, state):
    r = service.add_checkpoint(log.request(0, 0))
    assert r.status == 200
    assert stored_size(state, log.origin) == 0
    bad = sign_checkpoint(Checkpoint(log.origin, 0, b"\x00" * 32), log.signer)
    r = service.add_checkpoint(AddCheckpoint(0, (), bad).encode())
    assert r.status == 422 and b"roots differ" in r.body


def test_largest_size_persists(service, log, state, tmp_path, wkey):
    """Sizes up to 2^64-1 (past SQLite's integers) are stored exactly."""
    big = 2**64 - 1
    note = sign_checkpoint(Checkpoint(log.origin, big, b"\x07" * 32), log.signer)
    assert service.add_checkpoint(AddCheckpoint(0, (), note).encode()).status == 200
    state.close()
    again = WitnessState(tmp_path / "witness.db")
    try:
        r = WitnessService(again, [wkey], {log.origin: [log.verifier]}).add_checkpoint(
            log.request(0, 0))
        assert (r.status, r.body) == (409, f"{big}\n".encode())
    finally:
        again.close()


# -- refusals and their status codes -------------------------------------------------------


def test_stale_old_gets_409_with_the_size(service, log):
    log.grow(7)
    assert service.add_checkpoint(log.request(0)).status == 200
    log.grow(3)
    for old in (0, 3, 6, 8):
        r = service.add_checkpoint(log.request(old))
        assert (r.status, r.body, r.content_type) == (409, b"7\n", SIZE_CONTENT_TYPE)
    assert service.add_checkpoint(log.request(7)).status == 200


def test_fork_at_one_size_is_refused_and_kept(service, log, state):
    log.grow(10)
    good = log.request(0)
    assert service.add_checkpoint(good).status == 200
    fork = log.forked(6)
    r = service.add_checkpoint(fork.request(10))
    assert r.status == 422 and b"roots differ" in r.body
    [ev] = state.evidence()
    assert ev.kind == FORK and ev.origin == log.origin
    first, second = ev.checkpoints()
    assert (first.size, second.size) == (10, 10)
    assert first.root_hash == log.checkpoint().root_hash
    assert second.root_hash == fork.checkpoint().root_hash
    assert ev.conflicting == AddCheckpoint.parse(fork.request(10)).note
    assert notes.open_note(ev.cosigned, [log.verifier]).signed_by(log.verifier)
    # the fork is kept whatever `old` says, once; the state still holds the honest root
    assert service.add_checkpoint(fork.request(0)).status == 409
    assert service.add_checkpoint(fork.request(10)).status == 422
    assert len(state.evidence()) == 1
    assert stored_size(state, log.origin) == 10
    log.grow(1)
    assert service.add_checkpoint(log.request(10)).status == 200


def test_shrinking_tree_is_refused_and_kept(service, log, state):
    log.grow(12)
    assert service.add_checkpoint(log.request(0)).status == 200
    shrunk = AddCheckpoint(12, (), log.note(5)).encode()
    r = service.add_checkpoint(shrunk)
    assert r.status == 400 and b"old size 12 > checkpoint size 5" in r.body
    [ev] = state.evidence()
    assert ev.kind == ROLLBACK and "size 12 cosigned, then size 5" in ev.detail
    assert stored_size(state, log.origin) == 12


def test_bad_proof_gets_422_and_is_kept(service, log, state):
    log.grow(9)
    assert service.add_checkpoint(log.request(0)).status == 200
    log.grow(8)
    req = AddCheckpoint.parse(log.request(9))
    proof = list(req.proof)
    proof[1] = bytes(32)
    r = service.add_checkpoint(AddCheckpoint(9, tuple(proof), req.note).encode())
    assert r.status == 422 and b"not consistent with last cosigned size 9" in r.body
    r = service.add_checkpoint(AddCheckpoint(9, req.proof[:-1], req.note).encode())
    assert r.status == 422
    # one pair of notes, kept once however many bad proofs came with it
    assert [e.kind for e in state.evidence()] == [INCONSISTENT]
    assert stored_size(state, log.origin) == 9
    assert service.add_checkpoint(log.request(9)).status == 200


def test_old_zero_with_a_proof_gets_422(service, log, state):
    log.grow(6)
    req = AddCheckpoint.parse(log.request(3))
    r = service.add_checkpoint(AddCheckpoint(0, req.proof, req.note).encode())
    assert r.status == 422 and b"want 0" in r.body
    assert state.origins() == []


def test_unknown_origin_gets_404(service):
    stranger = TestLog("other.example/log")
    stranger.grow(2)
    r = service.add_checkpoint(stranger.request(0))
    assert r.status == 404 and b"other.example/log" in r.body


def test_unknown_key_gets_403(service, log, state):
    impostor = TestLog(log.origin)  # same origin, another key
    impostor.grow(2)
    r = service.add_checkpoint(impostor.request(0))
    assert r.status == 403 and log.verifier.vkey.encode() in r.body
    assert state.origins() == []


def test_bad_signature_by_trusted_key_gets_403(service, log):
    log.grow(2)
    req = AddCheckpoint.parse(log.request(0))
    text, _, sig = req.note.partition("\n\n")
    line_name, b64 = sig.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    bad = f"{text}\n\n{line_name} {base64.b64encode(bytes(raw)).decode()}\n"
    r = service.add_checkpoint(AddCheckpoint(0, (), bad).encode())
    assert r.status == 403 and b"invalid signature" in r.body


def test_rotated_log_keys_both_trusted(state, wkey, log):
    new_key = notes.generate_key(log.origin)
    svc = WitnessService(state, [wkey], {log.origin: [log.verifier, new_key.verifier]})
    log.grow(3)
    assert svc.add_checkpoint(log.request(0)).status == 200
    log.signer = new_key
    log.grow(1)
    assert svc.add_checkpoint(log.request(3)).status == 200


def test_old_larger_than_size_gets_400(service, log):
    log.grow(3)
    r = service.add_checkpoint(AddCheckpoint(4, (), log.note()).encode())
    assert r.status == 400 and b"old size 4 > checkpoint size 3" in r.body


# -- the request format --------------------------------------------------------------------

NOTE = "example.com/log\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n— k AAAAAAAA\n"
H = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize("body, words", [
    (b"", "no empty line"),
    (b"old 1\n", "no empty line"),
    (b"old 1\n\n", "no checkpoint"),
    (b"old 01\n\n" + NOTE.encode(), "leading zeros"),
    (b"old -1\n\n" + NOTE.encode(), "not 'old <size>'"),
    (b"old  1\n\n" + NOTE.encode(), "not 'old <size>'"),
    (b"OLD 1\n\n" + NOTE.encode(), "not 'old <size>'"),
    (b"old 1\r\n\n" + NOTE.encode(), "not 'old <size>'"),
    (b"old 18446744073709551616\n\n" + NOTE.encode(), "exceeds 2^64-1"),
    (b"old 1\nnot base64!\n\n" + NOTE.encode(), "proof line 2 is not valid base64"),
    (b"old 1\n" + base64.b64encode(bytes(31)) + b"\n\n" + NOTE.encode(), "31 bytes"),
    (b"old 1\n" + H[:-1].encode() + b"\n\n" + NOTE.encode(), "proof line 2"),
    (("old 1\n" + (H + "\n") * 64 + "\n" + NOTE).encode(), "64 proof lines"),
    (b"old 1\n\xff\n\n" + NOTE.encode(), "not valid UTF-8"),
    (b"old 1\n" + b"A" * 300_000, "bytes, want at most"),
])
def test_malformed_requests_are_named(body, words):
    with pytest.raises(RequestError, match=words.replace("(", r"\(").replace("^", r"\^")):
        AddCheckpoint.parse(body)


@pytest.mark.parametrize("note, words", [
    ("example.com/log\n1\n" + H + "\n", "no blank line"),
    ("example.com/log\n1\n" + H + "\n\nno dash\n", "em dash"),
    ("example.com/log\n01\n" + H + "\n\n— k AAAAAAAA\n", "leading zeros"),
    ("example.com/log\n" + H + "\n\n— k AAAAAAAA\n", "want at least 3"),
])
def test_malformed_checkpoint_gets_400(service, note, words):
    r = service.add_checkpoint(f"old 0\n\n{note}".encode())
    assert r.status == 400 and words in r.body.decode()
    assert r.body.count(b"\n") == 1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1),
       st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_LINES),
       st.text(st.characters(min_codepoint=0x20, blacklist_characters="\x7f"), min_size=1))
def test_request_round_trip(old, proof, line):
    note = f"{line}\n\n— k AAAAAAAA\n"
    req = AddCheckpoint(old, tuple(proof), note)
    assert AddCheckpoint.parse(req.encode()) == req


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_get_a_status_never_an_exception(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("w") / "w.db"
    st_ = WitnessState(path)
    try:
        log = TestLog()
        svc = WitnessService(st_, [notes.generate_cosignature_key("w")],
                             {log.origin: [log.verifier]})
        for body in (data, b"old 0\n\n" + data, b"old 0\n\nexample.com/log\n0\n" + data):
            r = svc.add_checkpoint(body)
            assert r.status in (400, 403, 404) and r.body.endswith(b"\n")
    finally:
        st_.close()


# -- state: atomic, durable ----------------------------------------------------------------


def test_concurrent_submissions_at_one_old_size_one_wins(tmp_path, wkey, log):
    """Eight threads, each with its own connection, submit old=4 with eight different
    sizes at once: exactly one is cosigned, the rest learn its size (409)."""
    path = tmp_path / "race.db"
    setup = WitnessState(path)
    log.grow(4)
    svc = WitnessService(setup, [wkey], {log.origin: [log.verifier]})
    assert svc.add_checkpoint(log.request(0)).status == 200
    log.grow(8)
    bodies = [log.request(4, 4 + k) for k in range(1, 9)]
    go = threading.Barrier(len(bodies))
    results: list[tuple[int, bytes]] = []

    def submit(body: bytes) -> None:
        go.wait()
        r = svc.add_checkpoint(body)
        results.append((r.status, r.body))

    threads = [threading.Thread(target=submit, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [r for r in results if r[0] == 200]
    assert len(wins) == 1, results
    won = stored_size(setup, log.origin)
    assert sorted(results) == sorted([wins[0]] + [(409, f"{won}\n".encode())] * 7)
    setup.close()


def test_state_survives_restart(tmp_path, wkey, log):
    path = tmp_path / "w.db"
    first = WitnessState(path)
    log.grow(20)
    assert WitnessService(first, [wkey], {log.origin: [log.verifier]}).add_checkpoint(
        log.request(0)).status == 200
    first.close()
    second = WitnessState(path)
    svc = WitnessService(second, [wkey], {log.origin: [log.verifier]})
    assert svc.add_checkpoint(log.request(0, 5)).body == b"20\n"
    log.grow(1)
    assert svc.add_checkpoint(log.request(20)).status == 200
    second.close()


def test_a_failed_write_answers_nothing(tmp_path, wkey, log):
    """If the state cannot be saved, no cosignature leaves the witness."""
    path = tmp_path / "w.db"
    state = WitnessState(path)
    svc = WitnessService(state, [wkey], {log.origin: [log.verifier]})
    other = sqlite3.connect(path)
    other.execute("DROP TABLE witness_state")
    other.close()
    log.grow(2)
    with pytest.raises(sqlite3.OperationalError):
        svc.add_checkpoint(log.request(0))
    state.close()


def test_service_arguments_are_checked(state, log):
    with pytest.raises(ValueError, match="signers"):
        WitnessService(state, [], {log.origin: [log.verifier]})
    with pytest.raises(ValueError, match=r"log \(0x01\) key"):
        WitnessService(state, [notes.generate_key("w")], {log.origin: [log.verifier]})
    with pytest.raises(ValueError, match="no verifier key"):
        WitnessService(state, [notes.generate_cosignature_key("w")], {log.origin: []})
