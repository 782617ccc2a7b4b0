"""The witness client's encodings and the quorum rule, without a network.

Cosignatures here are made in-process by `checkpoint.Witness` (the stateless cosign rule),
so `verify_quorum` is checked against real cosignature/v1 signatures. The client against
a real witness server is in test_quorum_witness.py.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import notes
from flchain_plugin.checkpoint import Checkpoint, CheckpointError, Witness
from flchain_plugin.quorum import (
    QuorumError,
    WitnessEndpoint,
    Witnesses,
    verify_quorum,
    witness_keys,
)
from flchain_plugin.witness_client import (
    MAX_PROOF_LINES,
    BadWitnessResponse,
    parse_cosignatures,
    parse_size,
    request_body,
)

ORIGIN = "example.org/log"


@pytest.fixture(scope="module")
def log() -> notes.Signer:
    return notes.generate_key(ORIGIN)


@pytest.fixture(scope="module")
def witnesses() -> list[notes.CosignatureSigner]:
    return [notes.generate_cosignature_key(f"w{i}.example") for i in range(3)]


def signed_note(log: notes.Signer, size: int = 5, seed: int = 1) -> tuple[str, Checkpoint]:
    cp = Checkpoint(ORIGIN, size, bytes([seed]) * 32)
    return notes.sign_note(cp.body(), log), cp


def cosigned(note: str, log: notes.Signer, by: list[notes.CosignatureSigner]) -> str:
    for w in by:
        note, _ = Witness(w).cosign(note, log.verifier, [], None, timestamp=1_700_000_000)
    return note


# -- request and response encodings ----------------------------------------------------------


def test_request_body_follows_the_spec_layout(log):
    note, _ = signed_note(log)
    proof = [bytes([i]) * 32 for i in range(3)]
    body = request_body(20852014, proof, note).decode()
    lines = body.split("\n")
    assert lines[0] == "old 20852014"
    assert [base64.b64decode(x) for x in lines[1:4]] == proof
    assert lines[4] == "" and body.endswith("\n\n" + note)


@settings(max_examples=200)
@given(old=st.integers(1, 2**64 - 1), n=st.integers(0, MAX_PROOF_LINES))
def test_request_body_round_trips(old, n):
    proof = [bytes([i % 256]) * 32 for i in range(n)]
    head, sep, note = request_body(old, proof, "o\n1\nAA==\n\n— o AAAAAAA=\n").decode() \
        .partition("\n\n")
    assert sep and note == "o\n1\nAA==\n\n— o AAAAAAA=\n"
    first, *hashes = head.split("\n")
    assert first == f"old {old}" and [base64.b64decode(h) for h in hashes] == proof


@pytest.mark.parametrize("old, proof, words", [
    (-1, [], "old size"), (True, [], "old size"), (0, [b"\0" * 32], "must be empty"),
    (3, [b"\0" * 31], "proof hash 0 has 31 bytes"),
    (3, [b"\0" * 32] * (MAX_PROOF_LINES + 1), "at most 63"),
])
def test_request_body_refuses_what_the_spec_forbids(old, proof, words):
    with pytest.raises(ValueError, match=words):
        request_body(old, proof, "x\n")


@pytest.mark.parametrize("body, size", [(b"0\n", 0), (b"12\n", 12),
                                        (b"18446744073709551615\n", 2**64 - 1)])
def test_size_bodies(body, size):
    assert parse_size(body) == size


@pytest.mark.parametrize("body", [b"12", b"012\n", b"\n", b"-1\n", b"1 2\n", b"\xef\xbc\x91\n",
                                  "１\n".encode(), b"12\n\n"])
def test_malformed_size_bodies_are_refused(body):
    with pytest.raises(ValueError, match="not a decimal"):
        parse_size(body)


def test_cosignatures_are_verified_and_unknown_keys_ignored(log, witnesses):
    note, cp = signed_note(log)
    stranger = notes.generate_cosignature_key("stranger.example")
    full = cosigned(note, log, [witnesses[0], stranger])
    body = full[full.index("\n\n") + 2:].encode()  # log + both cosignature lines
    sigs = parse_cosignatures(body, cp, [witnesses[0].verifier])
    assert [s.name for s in sigs] == ["w0.example"] and sigs[0].timestamp == 1_700_000_000


def test_a_cosignature_that_does_not_verify_is_not_used(log, witnesses):
    _, cp = signed_note(log)
    other, _ = signed_note(log, seed=2)  # a cosignature of another tree, presented for cp
    line = cosigned(other, log, [witnesses[0]]).splitlines(keepends=True)[-1]
    with pytest.raises(BadWitnessResponse, match="do not verify"):
        parse_cosignatures(line.encode(), cp, [witnesses[0].verifier])
    with pytest.raises(BadWitnessResponse, match="no signature by a known key"):
        parse_cosignatures(line.encode(), cp, [witnesses[1].verifier])
    for junk in (b"", b"ok\n", b"\xff\n", line.encode()[:-1]):
        with pytest.raises(BadWitnessResponse):
            parse_cosignatures(junk, cp, [witnesses[0].verifier])


# -- the quorum rule ---------------------------------------------------------------------------


def test_verify_quorum_counts_distinct_valid_witnesses(log, witnesses):
    note, cp = signed_note(log)
    keys = [w.verifier for w in witnesses]
    two = cosigned(note, log, witnesses[:2])
    got = verify_quorum(two, log.verifier, keys, 2)
    assert got.checkpoint == cp and got.cosigners == ("w0.example", "w1.example")
    assert verify_quorum(cosigned(note, log, witnesses), log.verifier, keys, 3).cosigners \
        == ("w0.example", "w1.example", "w2.example")
    with pytest.raises(QuorumError, match=r"1 witness\(es\) \(w0.example\), want 2 of 3; "
                                          r"missing: w1.example, w2.example"):
        verify_quorum(cosigned(note, log, witnesses[:1]), log.verifier, keys, 2)
    with pytest.raises(QuorumError, match=r"0 witness\(es\) \(none\)"):
        verify_quorum(note, log.verifier, keys, 1)


def test_one_witness_with_two_keys_counts_once(log, witnesses):
    note, _ = signed_note(log)
    second = notes.generate_cosignature_key("w0.example")  # another key, same witness
    keys = [witnesses[0].verifier, second.verifier, witnesses[1].verifier]
    both = cosigned(note, log, [witnesses[0], second])
    with pytest.raises(QuorumError, match=r"missing: w1\.example"):
        verify_quorum(both, log.verifier, keys, 2)


def test_verify_quorum_refuses_forged_and_foreign_notes(log, witnesses):
    note, _ = signed_note(log)
    keys = [w.verifier for w in witnesses]
    good = cosigned(note, log, witnesses[:2])
    other, _ = signed_note(log, seed=2)
    moved = other + cosigned(other, log, witnesses[:2]).split("\n\n")[1].split("\n", 1)[1]
    assert verify_quorum(moved, log.verifier, keys, 2)  # cosignatures of its own tree: fine
    forged = good.replace(good.split("\n\n")[1].split("\n", 1)[1],
                          moved.split("\n\n")[1].split("\n", 1)[1])  # another tree's
    with pytest.raises(CheckpointError, match="invalid signature"):
        verify_quorum(forged, log.verifier, keys, 2)
    with pytest.raises(CheckpointError, match="no signature by log key"):
        verify_quorum(good, notes.generate_key(ORIGIN).verifier, keys, 2)
    with pytest.raises(CheckpointError, match="origin"):
        verify_quorum(good, log.verifier, keys, 2, origin="another.org/log")


@pytest.mark.parametrize("k", [0, 4, True, 2.0, None])
def test_verify_quorum_refuses_an_impossible_k(log, witnesses, k):
    with pytest.raises(ValueError, match=r"quorum must be an int in \[1, 3\]"):
        verify_quorum(signed_note(log)[0], log.verifier, [w.verifier for w in witnesses], k)


def test_witness_keys_refuse_log_keys_and_duplicates(log, witnesses):
    with pytest.raises(ValueError, match="log signing key"):
        witness_keys([log.verifier])
    with pytest.raises(ValueError, match="listed twice"):
        witness_keys([witnesses[0].verifier_key, witnesses[0].verifier])
    with pytest.raises(ValueError, match="is not a verifier key"):
        witness_keys(["nonsense"])


# -- the configuration -------------------------------------------------------------------------


def test_witnesses_config_accepts_the_documented_forms(witnesses):
    vk = [w.verifier_key for w in witnesses]
    cfg = Witnesses((("http://127.0.0.1:1", vk[0]), f"https://w1.example/ {vk[1]}",
                     WitnessEndpoint("http://w2.example/x", (witnesses[2].verifier,))), 2)
    assert [e.name for e in cfg.endpoints] == ["w0.example", "w1.example", "w2.example"]
    assert len(cfg.keys) == 3 and cfg.quorum == 2


@pytest.mark.parametrize("change, words", [
    ({"quorum": 0}, r"quorum must be an int in \[1, 2\]"),
    ({"quorum": 3}, r"quorum must be an int in \[1, 2\]"),
    ({"timeout": 0}, "timeout must be a positive"),
    ({"deadline": -1}, "deadline must be a positive"),
    ({"backoff": "1"}, "backoff must be a positive"),
    ({"retries": -1}, "retries must be an int"),
    ({"endpoints": ()}, "at least one witness"),
    ({"endpoints": (("ftp://x", "k"),)}, "not an http"),
    ({"endpoints": ("http://a",)}, "give its verifier key"),
    ({"endpoints": (42,)}, "want \\(url, verifier key\\)"),
])
def test_witnesses_config_names_what_is_wrong(witnesses, change, words):
    vk = [w.verifier_key for w in witnesses]
    args = {"endpoints": (("http://a", vk[0]), ("http://b", vk[1])), "quorum": 1, **change}
    with pytest.raises(ValueError, match=words):
        Witnesses(**args)


def test_two_endpoints_of_one_witness_are_refused(witnesses):
    vk = witnesses[0].verifier_key
    with pytest.raises(ValueError, match="same name"):
        Witnesses((("http://a", vk), ("http://b", vk)), 1)



# -- the Flower arguments ----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, words", [
    ({"quorum": 1}, "quorum: given without witnesses"),
    ({"witnesses": "http://a vkey"}, "witnesses must be a list"),
    ({"witnesses": [("http://a", "nonsense")]}, "witnesses: witness http://a keys"),
    ({"witnesses": "W2", "quorum": 3}, r"witnesses: quorum must be an int in \[1, 2\]"),
    ({"witnesses": "CFG", "quorum": 1}, "quorum: 1 differs from witnesses.quorum 2"),
    ({"tiles": 42}, "tiles must be a directory path"),
])
def test_ledger_strategy_names_a_bad_witness_argument(tmp_path, witnesses, kwargs, words):
    pytest.importorskip("flwr.serverapp")
    from flwr.serverapp.strategy import FedAvg

    from flchain_plugin.flower import LedgerStrategy

    two = [(f"http://w{i}", w.verifier_key) for i, w in enumerate(witnesses[:2])]
    if kwargs.get("witnesses") == "W2":
        kwargs = {**kwargs, "witnesses": two}
    if kwargs.get("witnesses") == "CFG":
        kwargs = {**kwargs, "witnesses": Witnesses(tuple(two), 2)}
    with pytest.raises(ValueError, match=words):
        LedgerStrategy(FedAvg(), ledger=tmp_path / "l.db", **kwargs)


def test_ledger_strategy_defaults_to_a_majority(tmp_path, witnesses):
    pytest.importorskip("flwr.serverapp")
    from flwr.serverapp.strategy import FedAvg

    from flchain_plugin.flower import LedgerStrategy

    three = [f"http://w{i} {w.verifier_key}" for i, w in enumerate(witnesses)]
    s = LedgerStrategy(FedAvg(), ledger=tmp_path / "l.db", witnesses=three)
    assert s.quorum is not None and s.quorum.witnesses.quorum == 2
    s.quorum.close()


@pytest.mark.parametrize("kwargs, words", [
    ({"quorum": 1}, "quorum: given without witness_keys"),
    ({"witness_keys": "K", "quorum": 2}, r"quorum must be an int in \[1, 1\]"),
    ({"witness_keys": ["nonsense"]}, "witness_keys: 'nonsense' is not a verifier key"),
    ({"witness_keys": "LOG"}, "witness_keys: .* is a log signing key"),
])
def test_signing_mod_names_a_bad_witness_argument(tmp_path, log, witnesses, kwargs, words):
    pytest.importorskip("flwr.clientapp")
    from flchain_plugin.flower import signing_mod

    if kwargs.get("witness_keys") == "K":
        kwargs = {**kwargs, "witness_keys": witnesses[0].verifier_key}
    if kwargs.get("witness_keys") == "LOG":
        kwargs = {**kwargs, "witness_keys": [log.verifier_key]}
    with pytest.raises(ValueError, match=words):
        signing_mod(tmp_path / "keys", **kwargs)
