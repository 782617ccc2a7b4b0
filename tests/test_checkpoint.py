"""Checkpoints (c2sp.org/tlog-checkpoint) and the witness that cosigns them.

Vectors, transcribed as literals:
- c2sp.org/tlog-checkpoint example (github.com/C2SP/C2SP @ 5ba5ee83, tlog-checkpoint.md).
- github.com/transparency-dev/formats @ 0b850f1a: log/checkpoint_test.go (bodies, including
  malformed ones) and log/note_test.go (the sum.golang.org checkpoint and its key; test keys).
- A real checkpoint of the arche2025h1 staging CT log cosigned by public witnesses (see
  tests/test_notes.py for its provenance).
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import merkle
from flchain_plugin.checkpoint import (
    Checkpoint,
    CheckpointError,
    Witness,
    WitnessError,
    open_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from flchain_plugin.notes import (
    CosignatureSigner,
    Signer,
    Verifier,
    add_signature,
    generate_cosignature_key,
    generate_key,
    open_note,
)


def signer_from_skey(skey: str, cls: type[Signer] = Signer) -> Signer:
    """A Signer from golang.org/x/mod's `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`."""
    _, _, name, _, key64 = skey.split("+", 4)
    return cls(name, Ed25519PrivateKey.from_private_bytes(base64.b64decode(key64)[1:]))


# c2sp.org/tlog-checkpoint
SOFA_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

# transparency-dev/formats log/note_test.go
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n"
    "— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEP"
    "WL+o3GeoWwOoAw=\n"
)
LOG_SKEY = "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ"
UNKNOWN_SKEY = "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU"
# transparency-dev/formats witness/witness_test.go (a witness key)
WIT1_SKEY = "PRIVATE+KEY+Wit1+55ee4561+AeadRiG7XM4XiieCHzD8lxysXMwcViy5nYsoXURWGrlE"

ARCHE_NOTE = (
    "arche2025h1.staging.ct.transparency.dev\n1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n\n"
    "— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3N"
    "ygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n"
    "— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sX"
    "Tynk5XeU/zZ0WBxtqB0DrAWfBw==\n"
)
ARCHE_VKEY = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"

ROOT = bytes(range(32))


# --- body format ---------------------------------------------------------------------------


def test_c2sp_example_body_round_trips():
    cp = Checkpoint.parse(SOFA_BODY)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert cp.body() == SOFA_BODY


def test_extension_lines_round_trip():
    body = SOFA_BODY + "6086d1a9\nWaxing gibbous\n"
    cp = Checkpoint.parse(body)
    assert cp.extensions == ("6086d1a9", "Waxing gibbous")
    assert cp.body() == body
    assert Checkpoint("Moon Log", 0, ROOT, ("x",)).body().endswith("\nx\n")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # transparency-dev/formats log/checkpoint_test.go: their hashes are not 32 bytes
        ("Log\n123\nYmFuYW5hcw==\n", "root hash has 7 bytes, want 32"),
        (
            "Banana\n9944\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\n",
            "root hash has 37 bytes, want 32",
        ),
        ("Head\n9944\n", "has 2 lines, want at least 3"),
        ("\n9944\n" + SOFA_BODY.split("\n")[2] + "\n", "origin line is empty"),
        ("Log\n123\nYmFuYW5hcw==", "does not end in a newline"),
        ("Log\nbananas\n" + SOFA_BODY.split("\n")[2] + "\n", "'bananas' is not a decimal"),
        ("Log\n-34\n" + SOFA_BODY.split("\n")[2] + "\n", "'-34' is not a decimal"),
        (
            "Log\n3438945738945739845734895735\n" + SOFA_BODY.split("\n")[2] + "\n",
            "exceeds 2^64-1",
        ),
        ("Log\n123\nThisIsn'tBase64\n", "is not valid base64"),
        # the spec: extension lines MUST be non-empty (formats accepts trailing newlines)
        (SOFA_BODY + "\n\n\n", "extension line 4 is empty"),
        # strictness beyond the formats tests
        ("Log\n0123\n" + SOFA_BODY.split("\n")[2] + "\n", "'0123' is not a decimal"),
        ("Log\n+5\n" + SOFA_BODY.split("\n")[2] + "\n", "'+5' is not a decimal"),
        ("Log\n 5\n" + SOFA_BODY.split("\n")[2] + "\n", "' 5' is not a decimal"),
        ("Log\n\u0665\n" + SOFA_BODY.split("\n")[2] + "\n", "is not a decimal"),
        ("Log\n5\n" + SOFA_BODY.split("\n")[2][:-1] + "I=\n", "not canonical base64"),
    ],
)
def test_parse_rejects(body, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        Checkpoint.parse(body)


def test_constructor_checks():
    Checkpoint("o", 2**64 - 1, ROOT)
    for args, message in [
        (("", 1, ROOT), "origin '' is empty"),
        (("a\nb", 1, ROOT), "control character"),
        (("o", -1, ROOT), "outside \\[0, 2\\^64-1\\]"),
        (("o", 2**64, ROOT), "outside"),
        (("o", True, ROOT), "not an int"),
        (("o", 1, ROOT[:31]), "31 bytes, want 32"),
        (("o", 1, ROOT, ("",)), "extension 0 \\(''\\) is empty"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            Checkpoint(*args)


@settings(max_examples=100, deadline=None)
@given(
    origin=st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1),
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(
        st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1),
        max_size=3,
    ),
)
def test_body_parse_round_trip(origin, size, root, extensions):
    cp = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(cp.body()) == cp


# --- signed checkpoints --------------------------------------------------------------------


def test_sumdb_checkpoint_verifies_with_explicit_origin():
    v = Verifier.parse(SUMDB_VKEY)
    cp = verify_checkpoint(SUMDB_NOTE, v, origin="go.sum database tree")
    assert (cp.origin, cp.size) == ("go.sum database tree", 6476701)
    assert cp.root_hash == base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=")
    # by default the origin must be the log's key name
    with pytest.raises(
        CheckpointError, match=re.escape("origin 'go.sum database tree', want 'sum.golang.org'")
    ):
        verify_checkpoint(SUMDB_NOTE, v)
    with pytest.raises(
        CheckpointError, match=re.escape("origin 'go.sum database tree', want 'Go rocks'")
    ):
        verify_checkpoint(SUMDB_NOTE, v, origin="Go rocks")


def test_real_checkpoint_with_witness_cosignature():
    log, remora = Verifier.parse(ARCHE_VKEY), Verifier.parse(REMORA_VKEY)
    cp, note = open_checkpoint(ARCHE_NOTE, log, [remora])
    assert cp.size == 1432088532
    assert note.signed_by(log) and note.signed_by(remora)
    assert note.verified[1].timestamp == 1779573024
    # the cosigner alone does not make a checkpoint valid: the log must have signed
    other_log = generate_key("arche2025h1.staging.ct.transparency.dev").verifier
    with pytest.raises(CheckpointError, match="no signature by log key"):
        open_checkpoint(ARCHE_NOTE, other_log, [remora])


def test_sign_verify_round_trip_with_vector_key():
    log = signer_from_skey(LOG_SKEY)
    cp = Checkpoint("Log", 42, ROOT)
    note = sign_checkpoint(cp, log)
    assert note.startswith(cp.body() + "\n— Log ")
    assert verify_checkpoint(note, log.verifier) == cp
    assert sign_checkpoint(cp, log) == note  # Ed25519 is deterministic


def _swap_body(note: str, body: str) -> str:
    return body + note[note.rindex("\n\n") + 1 :]


def test_tampered_size_root_or_signature_fails():
    log = signer_from_skey(LOG_SKEY)
    cp = Checkpoint("Log", 42, ROOT)
    note = sign_checkpoint(cp, log)
    for tampered in [
        Checkpoint("Log", 43, ROOT),
        Checkpoint("Log", 42, bytes(32)),
        Checkpoint("Log", 42, ROOT, ("extra",)),
    ]:
        with pytest.raises(CheckpointError, match="invalid signature for key Log\\+2271c621"):
            verify_checkpoint(_swap_body(note, tampered.body()), log.verifier)
    raw = bytearray(base64.b64decode(note.split(" ")[-1]))
    raw[-1] ^= 1
    bad = note.rsplit(" ", 1)[0] + " " + base64.b64encode(raw).decode() + "\n"
    with pytest.raises(CheckpointError, match="invalid signature"):
        verify_checkpoint(bad, log.verifier)


def test_wrong_key_and_malformed_body():
    log, unknown = signer_from_skey(LOG_SKEY), signer_from_skey(UNKNOWN_SKEY)
    note = sign_checkpoint(Checkpoint("Log", 1, ROOT), unknown)
    with pytest.raises(CheckpointError, match="no signature by log key Log\\+2271c621"):
        verify_checkpoint(note, log.verifier)
    from flchain_plugin.notes import sign_note

    hat = sign_note("if this is a valid checkpoint then I'll eat my hat\n", log)
    with pytest.raises(CheckpointError, match="has 1 lines, want at least 3"):
        verify_checkpoint(hat, log.verifier)


# --- witness -------------------------------------------------------------------------------

LEAVES = [merkle.leaf_hash(f"entry {i}".encode()) for i in range(40)]
OTHER = [merkle.leaf_hash(f"forked {i}".encode()) for i in range(40)]
LOG = signer_from_skey(LOG_SKEY)
WITNESS = Witness(signer_from_skey(WIT1_SKEY, CosignatureSigner))


def tree_note(size: int, leaves: list[bytes] = LEAVES, signer: Signer = LOG) -> str:
    return sign_checkpoint(Checkpoint("Log", size, merkle.root(leaves[:size])), signer)


def test_witness_cosigns_first_and_consistent_checkpoints():
    note5, cp5 = WITNESS.cosign(tree_note(5), LOG.verifier, [], None, timestamp=1700000000)
    assert cp5 == Checkpoint("Log", 5, merkle.root(LEAVES[:5]))
    n = open_note(note5, [LOG.verifier, WITNESS.signer.verifier])
    assert [s.name for s in n.verified] == ["Log", "Wit1"]
    assert n.verified[1].timestamp == 1700000000
    assert WITNESS.cosign(tree_note(5), LOG.verifier, [], None, timestamp=1700000000)[0] == note5

    proof = merkle.consistency_proof(LEAVES[:13], 5)
    note13, cp13 = WITNESS.cosign(tree_note(13), LOG.verifier, proof, cp5)
    assert cp13.size == 13
    assert open_note(note13, [WITNESS.signer.verifier]).verified[0].name == "Wit1"
    # the same checkpoint again, with an empty proof, is fine (idempotent)
    assert WITNESS.cosign(tree_note(13), LOG.verifier, [], cp13)[1] == cp13


def test_witness_cosigns_note_with_other_cosignatures():
    other = generate_cosignature_key("w2.example")
    first, cp = WITNESS.cosign(tree_note(3), LOG.verifier, [], None, timestamp=1)
    both = add_signature(first, other, timestamp=2)
    again, _ = WITNESS.cosign(both, LOG.verifier, [], cp, timestamp=3)
    n = open_note(again, [LOG.verifier, WITNESS.signer.verifier, other.verifier])
    assert [(s.name, s.timestamp) for s in n.verified] == [
        ("Log", None),
        ("w2.example", 2),
        ("Wit1", 3),
    ]


def test_witness_refuses_rollback():
    _, cp13 = WITNESS.cosign(tree_note(13), LOG.verifier, [], None)
    with pytest.raises(WitnessError, match="rollback from size 13 to 5 for 'Log'"):
        WITNESS.cosign(tree_note(5), LOG.verifier, [], cp13)


def test_witness_refuses_inconsistent_tree():
    last = Checkpoint("Log", 7, merkle.root(LEAVES[:7]))
    # a fork: the log's new tree does not extend the one the witness saw
    forked = merkle.consistency_proof(OTHER[:20], 7)
    with pytest.raises(WitnessError) as e:
        WITNESS.cosign(tree_note(20, OTHER), LOG.verifier, forked, last)
    msg = str(e.value)
    assert f"size 20 root {merkle.root(OTHER[:20]).hex()} is not consistent" in msg
    assert f"last cosigned size 7 root {last.root_hash.hex()}" in msg
    assert "calculated root1" in msg
    # the right tree with a proof for the wrong sizes
    wrong = merkle.consistency_proof(LEAVES[:20], 8)
    want = len(merkle.consistency_proof(LEAVES[:20], 7))
    with pytest.raises(WitnessError, match=f"wrong proof size {len(wrong)}, want {want}"):
        WITNESS.cosign(tree_note(20), LOG.verifier, wrong, last)
    # equal sizes, different roots
    with pytest.raises(WitnessError, match="roots differ for equal sizes"):
        WITNESS.cosign(tree_note(7, OTHER), LOG.verifier, [], last)
    # from nothing, a non-empty proof is wrong, and an empty tree must have the empty root
    with pytest.raises(WitnessError, match="wrong proof size 1, want 0"):
        WITNESS.cosign(tree_note(4), LOG.verifier, [LEAVES[0]], None)
    bad_empty = sign_checkpoint(Checkpoint("Log", 0, ROOT), LOG)
    with pytest.raises(WitnessError, match="roots differ"):
        WITNESS.cosign(bad_empty, LOG.verifier, [], None)
    empty = sign_checkpoint(Checkpoint("Log", 0, hashlib.sha256().digest()), LOG)
    assert WITNESS.cosign(empty, LOG.verifier, [], None)[1].size == 0


def test_witness_refuses_unsigned_or_foreign_checkpoint():
    with pytest.raises(WitnessError, match="refusing to cosign: checkpoint has no signature by"):
        WITNESS.cosign(tree_note(5, signer=signer_from_skey(UNKNOWN_SKEY)), LOG.verifier, [], None)
    note = tree_note(5)
    forged = _swap_body(note, Checkpoint("Log", 6, merkle.root(LEAVES[:6])).body())
    with pytest.raises(WitnessError, match="invalid signature for key Log"):
        WITNESS.cosign(forged, LOG.verifier, [], None)
    last = Checkpoint("Other", 1, merkle.root(LEAVES[:1]))
    with pytest.raises(WitnessError, match="origin 'Log', last cosigned origin 'Other'"):
        WITNESS.cosign(note, LOG.verifier, merkle.consistency_proof(LEAVES[:5], 1), last)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40))
def test_witness_accepts_exactly_consistent_growth(a, b):
    size1, size2 = min(a, b), max(a, b)
    last = Checkpoint("Log", size1, merkle.root(LEAVES[:size1]))
    proof = merkle.consistency_proof(LEAVES[:size2], size1)
    _, cp = WITNESS.cosign(tree_note(size2), LOG.verifier, proof, last, timestamp=1)
    assert cp.size == size2
    if size1 > 0 and size1 != size2:
        # the same proof never vouches for a forked tree of the same size
        with pytest.raises(WitnessError, match="not consistent"):
            WITNESS.cosign(tree_note(size2, OTHER), LOG.verifier, proof, last, timestamp=1)
    if size1 < size2:
        bigger = Checkpoint("Log", size2, merkle.root(LEAVES[:size2]))
        with pytest.raises(WitnessError, match=f"rollback from size {size2} to {size1}"):
            WITNESS.cosign(tree_note(size1), LOG.verifier, [], bigger, timestamp=1)
