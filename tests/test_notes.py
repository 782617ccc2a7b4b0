"""Signed notes, verifier keys, cosignatures and key files.

Vectors, transcribed as literals:
- golang.org/x/mod sumdb/note/note_test.go (github.com/golang/mod @ fe2ec04f): the
  PeterNeumann and EnochRoot keys, note and signatures, and the malformed inputs.
- c2sp.org/signed-note example (github.com/C2SP/C2SP @ 5ba5ee83, signed-note.md) and the
  tlog-cosignature example (tlog-cosignature.md).
- github.com/transparency-dev/formats @ 0b850f1a: note/note_cosigv1_test.go (verifier keys
  of types 0x01 and 0x04, malformed keys) and log/note_test.go (test keys).
- A real checkpoint of the transparency.dev staging CT log arche2025h1 with four public
  witnesses' cosignature/v1 lines, as transcribed in the tlog_scales Python test suite; the
  witness verifier keys are the published ones (remora.n621.de's is also in the formats
  tests above).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import notes
from flchain_plugin.notes import (
    COSIGNATURE_V1,
    ED25519,
    CosignatureSigner,
    InvalidSignatureError,
    KeyFileError,
    NoteError,
    Signer,
    UnverifiedNoteError,
    Verifier,
    add_signature,
    generate_cosignature_key,
    generate_key,
    load_private_key,
    open_note,
    save_private_key,
    sign_note,
)


def signer_from_skey(skey: str, cls: type[Signer] = Signer) -> Signer:
    """A Signer from golang.org/x/mod's `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`."""
    _, _, name, _, key64 = skey.split("+", 4)
    raw = base64.b64decode(key64)
    assert raw[0] == ED25519
    return cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))


# golang.org/x/mod sumdb/note/note_test.go
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6"
    "KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WW"
    "d1RvMc+QQ=\n"
)

# c2sp.org/signed-note
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKu"
    "wHjG1Yu72IneyaQM=\n"
)

# c2sp.org/tlog-cosignature example: a log signature and a witness cosignature (no keys given)
C2SP_COSIGNED = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2"
    "q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2"
    "oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)

# transparency-dev/formats note/note_cosigv1_test.go and log/note_test.go
PLUS_VKEY = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"  # '+' in the base64
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"  # type 0x04
LOG_SKEY = "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ"
LOG_VKEY = "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs"
KNOWN1_SKEY = "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci"
KNOWN1_VKEY = "Known+451c786d+AXAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH"

# A real cosigned checkpoint (arche2025h1 staging CT log); its first line is an RFC 6962
# (type 0x05) signature this module does not verify, so it stays unverified.
ARCHE_NOTE = (
    "arche2025h1.staging.ct.transparency.dev\n1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n\n"
    "— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPM"
    "HbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=\n"
    "— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3N"
    "ygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n"
    "— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2r"
    "hIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n"
    "— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ7"
    "5W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==\n"
    "— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sX"
    "Tynk5XeU/zZ0WBxtqB0DrAWfBw==\n"
    "— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY"
    "/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==\n"
)
ARCHE_VKEY = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
ARCHE_WITNESSES = (
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
    REMORA_VKEY,
    "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
)
ARCHE_COSIGNED_AT = 1779573024  # 0x6a122120, the timestamp in each cosignature line

CHECKPOINT_TEXT = "example.com/log\n3\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


# --- verifier keys -------------------------------------------------------------------------


def test_vkey_vectors_parse_and_round_trip():
    for vkey, name, kid, sig_type in [
        (PETER_VKEY, "PeterNeumann", 0xC74F20A3, ED25519),
        (ENOCH_VKEY, "EnochRoot", 0xAF0CFE78, ED25519),
        (C2SP_VKEY, "example.com/foo", 0x530D903A, ED25519),
        (PLUS_VKEY, "TEST", 0x7997405C, ED25519),
        (REMORA_VKEY, "remora.n621.de", 0xDA77ADE7, COSIGNATURE_V1),
        (LOG_VKEY, "Log", 0x2271C621, ED25519),
    ]:
        v = Verifier.parse(vkey)
        assert (v.name, v.key_id, v.sig_type) == (name, kid, sig_type)
        assert v.vkey == vkey == str(v)
    assert Verifier.parse(C2SP_VKEY).public_key == bytes.fromhex(
        "e932791ae6e7a840a46164c904786426d5e7821dd8b29a00d61cae72afdd4da4"
    )


def test_signer_vkey_and_key_id_match_vector():
    for skey, vkey in [(PETER_SKEY, PETER_VKEY), (LOG_SKEY, LOG_VKEY), (KNOWN1_SKEY, KNOWN1_VKEY)]:
        s = signer_from_skey(skey)
        assert s.verifier_key == vkey
        assert s.verifier == Verifier.parse(vkey)
        assert f"{s.key_id:08x}" == skey.split("+")[3]


def test_vkey_every_substring_and_mangling_rejected():
    # golang.org/x/mod TestNewVerifier: every proper substring and every +1 byte change fails.
    b = PETER_VKEY.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteError):
                    Verifier.parse(b[i:j].decode())
    for i in range(len(b)):
        mangled = bytearray(b)
        mangled[i] += 1
        with pytest.raises(NoteError):
            Verifier.parse(mangled.decode())


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        # golang.org/x/mod: wrong length key / unknown algorithm, each with adjusted key hash
        # (the first is also non-canonical base64, which is checked first here)
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "public key is not canonical base64",
        ),
        (
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "signature type 0x65 is not supported",
        ),
        # transparency-dev/formats TestCoSigV1NewVerifier
        ("bananas.sigstore.dev+12344556", "has one '+'"),
        ("rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!", "not valid base64"),
        ("rekor.sigstore.dev+12345678+AwEB", "signature type 0x03 is not supported"),
        ("rekor.sigstore.dev+NOT_A_NUMBER+" + PETER_VKEY.split("+")[2], "not 8 lowercase hex"),
        ("PeterNeumann+00000000+" + PETER_VKEY.split("+")[2], "want c74f20a3"),
        ("PeterNeumann+C74F20A3+" + PETER_VKEY.split("+")[2], "not 8 lowercase hex"),
        ("PeterNeumann", "has no '+'"),
        ("Peter Neumann+c74f20a3+" + PETER_VKEY.split("+")[2], "name 'Peter Neumann' is invalid"),
        ("PeterNeumann+c74f20a3+", "public key is empty"),
    ],
)
def test_vkey_errors_name_the_check(vkey, message):
    with pytest.raises(NoteError, match=re.escape(message)):
        Verifier.parse(vkey)


def test_vkey_wrong_key_length_with_matching_id():
    raw = b"\x01" + Verifier.parse(PETER_VKEY).public_key[:31]
    kid = hashlib.sha256(b"PeterNeumann\n" + raw).digest()[:4].hex()
    with pytest.raises(NoteError, match="public key has 31 bytes, want 32"):
        Verifier.parse(f"PeterNeumann+{kid}+{base64.b64encode(raw).decode()}")


def test_key_id_is_truncated_sha256_big_endian():
    v = Verifier.parse(PETER_VKEY)
    assert notes.key_id("PeterNeumann", ED25519, v.public_key) == 0xC74F20A3
    # the same key as a cosigner has another id (type byte is hashed in)
    assert notes.key_id("PeterNeumann", COSIGNATURE_V1, v.public_key) != 0xC74F20A3


# --- signing and opening -------------------------------------------------------------------


def test_sign_reproduces_go_signature_exactly():
    assert sign_note(TEXT, signer_from_skey(PETER_SKEY)) == TEXT + "\n" + PETER_SIG


def test_open_c2sp_example():
    n = open_note(C2SP_NOTE, [Verifier.parse(C2SP_VKEY)])
    assert n.text == "This is an example message.\n"
    assert [s.name for s in n.verified] == ["example.com/foo"]
    assert n.encode() == C2SP_NOTE


def test_open_one_known_one_unknown():
    n = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [Verifier.parse(PETER_VKEY)])
    assert n.text == TEXT
    assert [(s.name, s.key_id) for s in n.verified] == [("PeterNeumann", 0xC74F20A3)]
    assert [(s.name, s.key_id) for s in n.unverified] == [("EnochRoot", 0xAF0CFE78)]


def test_open_both_known():
    vs = [Verifier.parse(PETER_VKEY), Verifier.parse(ENOCH_VKEY)]
    n = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), vs)
    assert [s.name for s in n.verified] == ["PeterNeumann", "EnochRoot"]
    assert n.unverified == ()


def test_open_no_known_key_keeps_note_in_error():
    with pytest.raises(UnverifiedNoteError, match="no signature by a known key") as e:
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
    assert [s.name for s in e.value.note.unverified] == ["PeterNeumann", "EnochRoot"]
    assert "PeterNeumann+c74f20a3" in str(e.value)


def test_open_duplicates_dropped_and_bad_known_signature_rejected():
    b = ENOCH_SIG.encode()
    enoch_abcd = (b[:60] + b"ABCD" + b[60:]).decode()
    note = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd
    n = open_note(note, [Verifier.parse(PETER_VKEY)])
    assert len(n.verified) == 1
    assert len(n.unverified) == 2  # enoch, and enoch with ABCD inserted (unknown key: kept)
    # a known key's bad signature rejects the whole note
    with pytest.raises(InvalidSignatureError, match="invalid signature for key EnochRoot"):
        open_note(note, [Verifier.parse(PETER_VKEY), Verifier.parse(ENOCH_VKEY)])


def test_open_identical_verifiers_are_one_and_colliding_ones_are_ambiguous():
    peter = Verifier.parse(PETER_VKEY)
    enoch = Verifier.parse(ENOCH_VKEY)
    open_note(TEXT + "\n" + ENOCH_SIG, [enoch, peter, enoch])
    fake = Verifier("EnochRoot", ED25519, peter.public_key)
    object.__setattr__(fake, "key_id", enoch.key_id)  # a 32-bit id collision, forced
    with pytest.raises(NoteError, match="ambiguous key EnochRoot"):
        open_note(TEXT + "\n" + ENOCH_SIG, [enoch, fake])


def test_open_invalid_signature_names_key():
    b = PETER_SIG.encode()
    bad = (b[:60] + b"ABCD" + b[60:]).decode()
    with pytest.raises(
        InvalidSignatureError, match=r"invalid signature for key PeterNeumann\+c74f"
    ):
        open_note(TEXT + "\n" + bad, [Verifier.parse(PETER_VKEY)])


def test_open_too_many_signatures():
    with pytest.raises(NoteError, match="101 signature lines, want at most 100"):
        open_note(TEXT + "\n" + PETER_SIG * 101, [Verifier.parse(PETER_VKEY)])
    open_note(TEXT + "\n" + PETER_SIG * 16, [Verifier.parse(PETER_VKEY)])  # spec: accept >= 16


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (TEXT.encode(), "no blank line"),
        ((TEXT + "\n").encode(), "no signature lines"),
        ((TEXT + "\n" + PETER_SIG[:-1]).encode(), "does not end in a newline"),
        (("\x01" + TEXT + "\n" + PETER_SIG).encode(), "control character U\\+0001 at offset 0"),
        (b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), "not valid UTF-8 at byte 0"),
        ((TEXT + "\n" + "— Bad Name " + PETER_SIG.split(" ")[2]).encode(), "more than 2 spaces"),
        ((TEXT + "\n" + PETER_SIG + "Unexpected line.\n").encode(), "line 2 does not start"),
        ((TEXT + "\n" + PETER_SIG.replace("Peter", "Pe+ter")).encode(), "invalid key name"),
        ((TEXT + "\n" + "— PeterNeumann\n").encode(), "no signature after the key name"),
        ((TEXT + "\n" + "— PeterNeumann AAAA\n").encode(), "3 bytes, want more than 4"),
        ((TEXT + "\n" + "— PeterNeumann AAAA!\n").encode(), "not valid base64"),
    ],
)
def test_open_malformed(msg, message):
    with pytest.raises(NoteError, match=message):
        open_note(msg, [Verifier.parse(PETER_VKEY)])


def test_sign_rejects_bad_text():
    s = signer_from_skey(PETER_SKEY)
    with pytest.raises(NoteError, match="does not end in a newline"):
        sign_note("abc", s)
    with pytest.raises(NoteError, match="control character U\\+0009"):
        sign_note("a\tb\n", s)
    with pytest.raises(NoteError, match="line 2 starts with an em dash"):
        sign_note("fine\n— not a signature\n", s)
    with pytest.raises(NoteError, match="'bad name' is invalid"):
        Signer("bad name", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="'a\\+b' is invalid"):
        Signer("a+b", Ed25519PrivateKey.generate())


def test_text_with_blank_lines_round_trips():
    s = generate_key("example.com/blank")
    text = "a\n\nb\n\n"
    n = open_note(sign_note(text, s), [s.verifier])
    assert n.text == text


def test_tampered_text_fails():
    s = signer_from_skey(PETER_SKEY)
    note = sign_note(TEXT, s).replace("cryptography", "cryptographY")
    with pytest.raises(InvalidSignatureError, match="does not verify over the note text"):
        open_note(note, [s.verifier])


def test_add_signature_cosigns_and_replaces_own():
    log = signer_from_skey(LOG_SKEY)
    known = signer_from_skey(KNOWN1_SKEY)
    note = sign_note(CHECKPOINT_TEXT, log)
    both = add_signature(note, known)
    n = open_note(both, [log.verifier, known.verifier])
    assert [s.name for s in n.verified] == ["Log", "Known"]
    assert add_signature(both, known) == both  # Ed25519 is deterministic: same line, replaced
    assert both.count("— Known ") == 1


# --- cosignatures (c2sp.org/tlog-cosignature) ----------------------------------------------


def test_real_witness_cosignatures_verify():
    witnesses = [Verifier.parse(v) for v in ARCHE_WITNESSES]
    n = open_note(ARCHE_NOTE, [Verifier.parse(ARCHE_VKEY), *witnesses])
    assert [s.verifier for s in n.verified] == [Verifier.parse(ARCHE_VKEY), *witnesses]
    assert [s.timestamp for s in n.verified] == [None] + [ARCHE_COSIGNED_AT] * 4
    assert len(n.unverified) == 1  # the RFC 6962 (0x05) signature


def test_real_cosignature_tampered_timestamp_fails():
    remora = Verifier.parse(REMORA_VKEY)
    line = next(ln for ln in ARCHE_NOTE.splitlines() if ln.startswith("— remora"))
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[4 + 7] ^= 1  # last byte of the timestamp
    bad = ARCHE_NOTE.replace(line, f"— remora.n621.de {base64.b64encode(raw).decode()}")
    with pytest.raises(InvalidSignatureError, match=re.escape("remora.n621.de+da77ade7")):
        open_note(bad, [remora])


def test_c2sp_cosignature_example_carries_spec_timestamp():
    with pytest.raises(UnverifiedNoteError) as e:
        open_note(C2SP_COSIGNED, [])
    witness = e.value.note.unverified[1]
    assert witness.name == "witness.example.com/w1"
    # the message example of tlog-cosignature.md says "time 1679315147"
    assert int.from_bytes(witness.signature[:8], "big") == 1679315147
    assert len(witness.signature) == 8 + 64


def test_cosignature_message_layout():
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert notes.cosignature_message(1679315147, body) == (
        b"cosignature/v1\ntime 1679315147\n" + body.encode()
    )
    with pytest.raises(NoteError, match="2 newline-terminated lines, want at least 3"):
        notes.cosignature_message(1, "a\nb\n")
    with pytest.raises(NoteError, match="outside \\[0, 2\\^63-1\\]"):
        notes.cosignature_message(2**63, body)


def test_cosignature_sign_verify_and_key_types_differ():
    plain = signer_from_skey(KNOWN1_SKEY)
    cosigner = CosignatureSigner(plain.name, plain.private_key)
    assert cosigner.verifier.sig_type == COSIGNATURE_V1
    assert cosigner.key_id != plain.key_id
    note = sign_note(CHECKPOINT_TEXT, cosigner, timestamp=1700000000)
    n = open_note(note, [cosigner.verifier])
    assert n.verified[0].timestamp == 1700000000
    assert sign_note(CHECKPOINT_TEXT, cosigner, timestamp=1700000000) == note  # deterministic
    # a plain verifier of the same key does not know the cosignature's key id
    with pytest.raises(UnverifiedNoteError):
        open_note(note, [plain.verifier])
    # the timestamp is signed
    raw = bytearray(base64.b64decode(note.split(" ")[-1]))
    raw[11] ^= 1
    bad = note.rsplit(" ", 1)[0] + " " + base64.b64encode(raw).decode() + "\n"
    with pytest.raises(InvalidSignatureError):
        open_note(bad, [cosigner.verifier])


def test_cosigner_refuses_non_checkpoint_text():
    with pytest.raises(NoteError, match="want at least 3"):
        sign_note("one line\n", generate_cosignature_key("w.example"), timestamp=1)


# --- properties ----------------------------------------------------------------------------

_line = st.text(
    st.characters(blacklist_categories=("Cs",), min_codepoint=0x20), max_size=30
).filter(lambda s: not s.startswith("—"))
_texts = st.lists(_line, min_size=1, max_size=6).map(lambda ls: "\n".join(ls) + "\n")
_SIGNER = generate_key("example.com/prop")
_OTHER = generate_key("example.com/other")


@settings(max_examples=60, deadline=None)
@given(_texts)
def test_sign_open_round_trip(text):
    note = sign_note(text, _SIGNER)
    n = open_note(note, [_SIGNER.verifier])
    assert n.text == text
    assert n.encode() == note
    n2 = open_note(add_signature(note, _OTHER), [_SIGNER.verifier, _OTHER.verifier])
    assert [s.name for s in n2.verified] == ["example.com/prop", "example.com/other"]


@settings(max_examples=60, deadline=None)
@given(_texts, st.data())
def test_any_changed_text_byte_fails(text, data):
    note = sign_note(text, _SIGNER).encode()
    i = data.draw(st.integers(0, len(text.encode()) - 1))
    bad = bytearray(note)
    bad[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(NoteError):
        n = open_note(bytes(bad), [_SIGNER.verifier])
        # a flip can move the last blank line; then the text differs and cannot verify
        assert n.text == text


# --- key files -----------------------------------------------------------------------------


def test_key_file_round_trip_mode_0600(tmp_path):
    s = generate_key("example.com/log")
    path = tmp_path / "log.key"
    save_private_key(s, path, None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().startswith("# name: example.com/log\n# type: ed25519\n-----BEGIN")
    loaded = load_private_key(path)
    assert type(loaded) is Signer
    assert loaded == s
    assert loaded.verifier_key == s.verifier_key
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]  # no temporary left behind


def test_key_file_mode_is_0600_under_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        save_private_key(generate_key("a"), tmp_path / "k", None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600


def test_key_file_refuses_overwrite(tmp_path):
    path = tmp_path / "log.key"
    first, second = generate_key("a"), generate_key("b")
    save_private_key(first, path, None)
    with pytest.raises(KeyFileError, match="exists; pass overwrite=True"):
        save_private_key(second, path, None)
    assert load_private_key(path) == first
    save_private_key(second, path, None, overwrite=True)
    assert load_private_key(path) == second
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_key_file_passphrase(tmp_path):
    s = generate_key("example.com/log")
    path = tmp_path / "log.key"
    save_private_key(s, path, b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert load_private_key(path, b"correct horse") == s
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(path, b"battery staple")
    with pytest.raises(KeyFileError, match="encrypted: a passphrase is needed"):
        load_private_key(path)
    plain = tmp_path / "plain.key"
    save_private_key(s, plain, None)
    with pytest.raises(KeyFileError, match="not encrypted"):
        load_private_key(plain, b"correct horse")
    with pytest.raises(KeyFileError, match="non-empty bytes"):
        save_private_key(s, tmp_path / "empty.key", b"")


def test_key_file_world_readable_refused(tmp_path):
    path = tmp_path / "log.key"
    save_private_key(generate_key("a"), path, None)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="mode 0644, want 0600: run chmod 600"):
        load_private_key(path)


def test_key_file_cosigner_type(tmp_path):
    w = generate_cosignature_key("witness.example/w1")
    save_private_key(w, tmp_path / "w.key", b"pw")
    loaded = load_private_key(tmp_path / "w.key", b"pw")
    assert type(loaded) is CosignatureSigner
    assert loaded.verifier_key == w.verifier_key


def test_key_file_wrong_key_type_and_missing_name(tmp_path):
    from cryptography.hazmat.primitives import serialization

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "ec.key"
    path.write_bytes(b"# name: a\n# type: ed25519\n" + pem)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="holds an ECDSA private key, want Ed25519"):
        load_private_key(path)
    path.write_bytes(b"# type: ed25519\n" + pem)
    with pytest.raises(KeyFileError, match="no '# name: <key name>' line"):
        load_private_key(path)
    path.write_bytes(b"# name: a\n# type: rsa\n" + pem)
    with pytest.raises(KeyFileError, match="type 'rsa', want one of ed25519, cosignature/v1"):
        load_private_key(path)
    path.write_bytes(b"# name: a\n# type: ed25519\nnot a pem\n")
    with pytest.raises(KeyFileError, match="no readable PEM private key"):
        load_private_key(path)
