"""Post-quantum signatures: ML-DSA-44 note signatures (0x06 subtree/v1 cosignatures of
tlog-cosignature v1.1, 0xff ML-DSA-44 over text), their key files, client statements
signed with ML-DSA-44, the policy that requires them, and a real Flower run.

Vector: filippo.io/torchwood cmd/litewitness/testdata/mldsa.txt (github.com/FiloSottile/
torchwood @ fac5716b), transcribed in tests/data/torchwood_mldsa.txt: the seed of an
ML-DSA-44 log key, its 0x06 verifier key, and a size-1 checkpoint it signed with a 0x06
signature of timestamp 0 (made by the Go reference, torchwood's CosignatureSigner).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import notes
from flchain_plugin.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint

DATA = Path(__file__).parent / "data"
ORIGIN = "example.com/log"
ROOT = hashlib.sha256(b"root").digest()
BODY = Checkpoint(ORIGIN, 20852163, ROOT).body()


def _torchwood() -> tuple[bytes, str, str]:
    lines = (DATA / "torchwood_mldsa.txt").read_text(encoding="utf-8").split("\n")
    return bytes.fromhex(lines[0].split()[1]), lines[1].split()[1], "\n".join(lines[3:])


def _spec_message(name: str, ts: int, origin: str, start: int, end: int, root: bytes) -> bytes:
    """tlog-cosignature v1.1's cosigned_message, written from the spec's struct."""
    n, o = name.encode(), origin.encode()
    return (b"subtree/v1\n\x00" + bytes([len(n)]) + n + struct.pack(">Q", ts)
            + bytes([len(o)]) + o + struct.pack(">QQ", start, end) + root)


# -- the 0x06 subtree/v1 cosignature ---------------------------------------------------------


def test_torchwood_reference_vector_verifies_and_seed_gives_its_key():
    seed, vkey, note = _torchwood()
    v = notes.Verifier.parse(vkey)
    assert (v.sig_type, len(v.public_key)) == (notes.SUBTREE_V1, 1312)
    signer = notes.SubtreeCosignatureSigner("example.com/mldsa-log",
                                            MLDSA44PrivateKey.from_seed_bytes(seed))
    assert signer.verifier_key == vkey
    opened = notes.open_note(note, [v])
    assert len(opened.verified) == 1 and opened.verified[0].timestamp == 0
    raw = bytearray(base64.b64decode(note.rsplit(" ", 1)[1]))
    raw[-100] ^= 1
    bad = note.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(notes.InvalidSignatureError,
                       match="ML-DSA-44 subtree/v1\\): does not verify over the checkpoint"):
        notes.open_note(bad, [v])


def test_message_layout_is_the_spec_struct_byte_for_byte():
    got = notes.subtree_message("w.example/1", 1679315147, ORIGIN, 0, 20852163, ROOT)
    want = (b"subtree/v1\n\0" + b"\x0bw.example/1" + (1679315147).to_bytes(8, "big")
            + b"\x0f" + ORIGIN.encode() + bytes(8) + (20852163).to_bytes(8, "big") + ROOT)
    assert got == want == _spec_message("w.example/1", 1679315147, ORIGIN, 0, 20852163, ROOT)
    assert len(b"subtree/v1\n\0") == 12


_name = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e,
                                       exclude_characters="+"), min_size=1, max_size=255)


@settings(max_examples=200, deadline=None)
@given(_name, st.integers(0, 2**63 - 1), _name, st.integers(0, 2**64 - 1),
       st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32))
def test_message_layout_for_any_fields(name, ts, origin, a, b, root):
    start, end = min(a, b), max(a, b)
    if start:
        ts = 0
    assert notes.subtree_message(name, ts, origin, start, end, root) == _spec_message(
        name, ts, origin, start, end, root)


def test_cosignature_signs_the_spec_message_with_empty_context():
    signer = notes.generate_subtree_cosignature_key("w.example/1")
    sig = signer.sign(BODY, 1700000000)
    assert len(sig) == 8 + 2420 and sig[:8] == (1700000000).to_bytes(8, "big")
    pub = MLDSA44PublicKey.from_public_bytes(signer.public_key)
    pub.verify(sig[8:], _spec_message("w.example/1", 1700000000, ORIGIN, 0, 20852163, ROOT))
    pub.verify(sig[8:], _spec_message("w.example/1", 1700000000, ORIGIN, 0, 20852163, ROOT),
               b"")  # the empty context is the default one


def test_cosignature_round_trip_through_add_signature_and_open_note():
    log = notes.generate_key(ORIGIN)
    w = notes.generate_subtree_cosignature_key("w.example/pq")
    note = notes.add_signature(sign_checkpoint(Checkpoint(ORIGIN, 5, ROOT), log), w, 123)
    opened = notes.open_note(note, [log.verifier, w.verifier])
    assert [s.verifier for s in opened.signatures] == [log.verifier, w.verifier]
    assert opened.signatures[1].timestamp == 123
    assert notes.Verifier.parse(w.verifier_key) == w.verifier
    assert base64.b64decode(w.verifier_key.split("+", 2)[2])[0] == 0x06
    assert w.key_id == int.from_bytes(hashlib.sha256(
        b"w.example/pq\n\x06" + w.public_key).digest()[:4], "big")


def _resign(sig_bytes: bytes, ts: int) -> bytes:
    return ts.to_bytes(8, "big") + sig_bytes[8:]


@pytest.mark.parametrize("tamper", ["origin", "size", "root", "timestamp", "name"])
def test_cosignature_refuses_any_changed_field(tamper):
    w = notes.generate_subtree_cosignature_key("w.example/pq")
    sig = w.sign(BODY, 1700000000)
    assert w.verifier.verify(BODY, sig)
    text, vkey = BODY, w.verifier
    if tamper == "origin":
        text = Checkpoint("example.com/other", 20852163, ROOT).body()
    elif tamper == "size":
        text = Checkpoint(ORIGIN, 20852164, ROOT).body()
    elif tamper == "root":
        text = Checkpoint(ORIGIN, 20852163, hashlib.sha256(b"other").digest()).body()
    elif tamper == "timestamp":
        sig = _resign(sig, 1700000001)
    else:  # the same key under another name: the message commits to the name
        vkey = notes.Verifier("w.example/other", notes.SUBTREE_V1, w.public_key)
    assert not vkey.verify(text, sig)


def test_extension_lines_are_not_covered_but_the_three_lines_are():
    w = notes.generate_subtree_cosignature_key("w.example/pq")
    sig = w.sign(BODY, 5)
    assert w.verifier.verify(BODY + "an extension line\n", sig)  # as the spec says


@pytest.mark.parametrize("text, why", [
    ("example.com/log\n5\n", "checkpoint"),
    ("example.com/log\n05\n" + base64.b64encode(ROOT).decode() + "\n", "leading zeros"),
    ("example.com/log\n5\nAAAA\n", "3 bytes"),
    ("\n5\n" + base64.b64encode(ROOT).decode() + "\n", "origin line is empty"),
    ("a\n0\n" + base64.b64encode(ROOT).decode() + "\n", "empty string"),
    ("o" * 256 + "\n5\n" + base64.b64encode(ROOT).decode() + "\n", "1 to 255"),
])
def test_cosigner_refuses_text_that_is_not_a_checkpoint(text, why):
    w = notes.generate_subtree_cosignature_key("w.example/pq")
    with pytest.raises(notes.NoteError, match=why):
        w.sign(text, 1)


def test_subtree_with_start_requires_timestamp_zero():
    w = notes.generate_subtree_cosignature_key("w.example/pq")
    sig = w.sign_subtree(ORIGIN, 256, 512, ROOT)
    assert sig[:8] == bytes(8)
    assert w.verifier.verify_subtree(ORIGIN, 256, 512, ROOT, sig)
    assert not w.verifier.verify_subtree(ORIGIN, 0, 512, ROOT, sig)
    with pytest.raises(notes.NoteError, match="start 256 != 0 requires timestamp 0, got 7"):
        w.sign_subtree(ORIGIN, 256, 512, ROOT, timestamp=7)
    with pytest.raises(notes.NoteError, match="requires timestamp 0"):
        notes.subtree_message("w", 7, ORIGIN, 1, 2, ROOT)
    # a signature over a message with start != 0 and a timestamp is refused too, even
    # when the signature itself is valid ML-DSA-44 over those bytes
    forged = (7).to_bytes(8, "big") + w.private_key.sign(
        _spec_message("w.example/pq", 7, ORIGIN, 256, 512, ROOT))
    assert not w.verifier.verify_subtree(ORIGIN, 256, 512, ROOT, forged)
    with pytest.raises(notes.NoteError, match="start <= end"):
        notes.subtree_message("w", 0, ORIGIN, 5, 4, ROOT)


def test_timestamp_above_2_63_refused():
    w = notes.generate_subtree_cosignature_key("w.example/pq")
    with pytest.raises(notes.NoteError, match="2\\^63-1"):
        w.sign(BODY, 2**63)


# -- the 0xff ML-DSA-44 signature over text --------------------------------------------------


def test_ml_dsa_note_signature_round_trip_and_private_type():
    s = notes.generate_ml_dsa_key(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 5, ROOT), s)
    assert notes.open_note(note, [s.verifier]).verified[0].verifier == s.verifier
    raw = base64.b64decode(s.verifier_key.split("+", 2)[2])
    assert raw[:1] == b"\xff" and raw[1:26] == b"flchain-plugin/ml-dsa-44\n"
    assert len(raw) == 1 + 25 + 1312
    assert notes.Verifier.parse(s.verifier_key) == s.verifier
    assert s.key_id == int.from_bytes(hashlib.sha256(
        ORIGIN.encode() + b"\n" + raw).digest()[:4], "big")
    assert not s.verifier.verify(BODY, s.sign(BODY)[:-1])
    other = "\xff".encode("latin-1") + b"other-id" + bytes(1312)
    v = notes.Verifier(ORIGIN, notes.ED25519, bytes(32))
    with pytest.raises(notes.NoteError, match="unknown private signature type"):
        notes.Verifier.parse(f"{ORIGIN}+{v.key_id:08x}+{base64.b64encode(other).decode()}")


@settings(max_examples=10, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2000), min_size=1))
def test_ml_dsa_any_changed_text_fails(line):
    s = _ML_DSA_KEY
    text = f"x\n{line}\n"
    sig = s.sign(text)
    assert s.verifier.verify(text, sig)
    assert not s.verifier.verify(f"y\n{line}\n", sig)


_ML_DSA_KEY = notes.generate_ml_dsa_key("client-0")


def test_key_types_do_not_cross():
    key = MLDSA44PrivateKey.generate()
    a, b = notes.MLDSASigner("n", key), notes.SubtreeCosignatureSigner("n", key)
    assert a.key_id != b.key_id
    assert not b.verifier.verify(BODY, a.sign(BODY))
    with pytest.raises(notes.NoteError, match="want ML-DSA-44"):
        notes.MLDSASigner("n", notes.generate_key("n").private_key)
    with pytest.raises(notes.NoteError, match="want Ed25519"):
        notes.Signer("n", key)
    with pytest.raises(notes.NoteError, match="subtree/v1 public key has 32 bytes, want 1312"):
        notes.Verifier("n", notes.SUBTREE_V1, bytes(32))


# -- key files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make, kind", [
    (notes.generate_ml_dsa_key, "ml-dsa-44"),
    (notes.generate_subtree_cosignature_key, "subtree/v1"),
])
@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_key_files_round_trip(tmp_path, make, kind, passphrase):
    s = make("w.example/pq")
    path = tmp_path / "k.key"
    notes.save_private_key(s, path, passphrase)
    data = path.read_bytes()
    assert data.startswith(f"# name: w.example/pq\n# type: {kind}\n".encode())
    assert (b"ENCRYPTED PRIVATE KEY" in data) == (passphrase is not None)
    back = notes.load_private_key(path, passphrase)
    assert type(back) is type(s) and back.verifier_key == s.verifier_key
    assert s.verifier.verify(BODY, back.sign(BODY, 1))
    if passphrase:
        with pytest.raises(notes.KeyFileError, match="wrong passphrase"):
            notes.load_private_key(path, b"wrong")


def test_key_file_type_must_match_the_key(tmp_path):
    path = tmp_path / "k.key"
    notes.save_private_key(notes.generate_key("n"), path, None)
    path.write_bytes(path.read_bytes().replace(b"# type: ed25519", b"# type: ml-dsa-44"))
    with pytest.raises(notes.KeyFileError, match="type ml-dsa-44 holds an Ed25519 private key, "
                                                 "want ML-DSA-44"):
        notes.load_private_key(path)
    notes.save_private_key(notes.generate_ml_dsa_key("n"), path, None, overwrite=True)
    path.write_bytes(path.read_bytes().replace(b"# type: ml-dsa-44", b"# type: ed25519"))
    with pytest.raises(notes.KeyFileError, match="holds an ML-DSA-44 private key, want Ed25519"):
        notes.load_private_key(path)


# -- statements: ML-DSA-44 alone or beside Ed25519, recorded and re-checked -----------------

PARENT, UPDATE = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def _statement(**changes):
    from flchain_plugin.statement import Statement
    base = dict(run="run-1", round=1, node="7", parent=PARENT, update=UPDATE, num_examples=3,
                metrics={"num-examples": 3}, dataset=None, nonce="n-1")
    return Statement(**{**base, **changes})


def _update(signed, **changes):
    from flchain_plugin import entries as E
    s = signed.statement
    fields = dict(run=s.run, round=s.round, node=s.node, update=s.update, parent=s.parent,
                  num_examples=s.num_examples, metrics=s.metrics, dataset=s.dataset,
                  nonce=s.nonce, key=signed.key, signature=signed.signature_b64,
                  pq_key=signed.pq_key, pq_signature=signed.pq_signature_b64)
    return E.Update(**{**fields, **changes})


def test_statement_signed_with_ml_dsa_alone_and_hybrid_verify_and_record():
    from flchain_plugin.statement import verify_update
    alone = _statement().sign(_ML_DSA_KEY)
    alone.verify()
    assert alone.pq_verifier() == _ML_DSA_KEY.verifier and len(alone.signature) == 2420
    both = _statement().sign(notes.generate_key("client-7"), _ML_DSA_KEY)
    both.verify()
    assert both.pq_verifier() == _ML_DSA_KEY.verifier and len(both.signature) == 64
    assert _statement().sign(notes.generate_key("client-7")).pq_verifier() is None
    for signed in (alone, both):
        assert verify_update(_update(signed)) is True
    bad = base64.b64encode(bytes(2420)).decode()
    assert verify_update(_update(both, pq_signature=bad)) is False
    assert verify_update(_update(alone, signature=bad)) is False
    other = notes.generate_ml_dsa_key("client-7")
    assert verify_update(_update(both, pq_key=other.verifier_key)) is False


def test_statement_refuses_keys_of_other_types():
    from flchain_plugin.statement import SignedStatement, StatementError
    with pytest.raises(StatementError, match="ML-DSA-44 subtree/v1 key cannot sign statements"):
        _statement().sign(notes.generate_subtree_cosignature_key("c"))
    with pytest.raises(StatementError, match="pq_signer: a Ed25519 key cannot sign"):
        _statement().sign(notes.generate_key("c"), notes.generate_key("c"))
    good = _statement().sign(notes.generate_key("c"))
    with pytest.raises(StatementError, match="both or neither"):
        SignedStatement.parse(good.data, good.key, good.signature, _ML_DSA_KEY.verifier_key)
    ed = notes.generate_key("c")
    swapped = SignedStatement.parse(good.data, good.key, good.signature, ed.verifier_key,
                                    ed.sign(good.data.decode()))
    with pytest.raises(StatementError, match="is a Ed25519 key, want ML-DSA-44"):
        swapped.verify()


OLD_UPDATE = (
    b'{"dataset":null,"key":null,"metrics":{},"node":"7","nonce":"n","num_examples":3,'
    b'"parent":"sha256:' + b"a" * 64 + b'","round":1,"run":"r0","signature":null,'
    b'"type":"update","update":"sha256:' + b"b" * 64 + b'","v":1}'
)
"""An `update` entry as format v1 wrote it before pq_key/pq_signature existed."""


def test_old_update_entries_keep_their_bytes_and_a_null_pq_field_is_not_canonical():
    from flchain_plugin import entries as E
    e = E.decode(OLD_UPDATE)
    assert (e.pq_key, e.pq_signature) == (None, None)
    assert e.encode() == OLD_UPDATE
    with pytest.raises(E.EntryError, match="canonical"):
        E.decode(OLD_UPDATE.replace(b'"parent"', b'"pq_key":null,"parent"'))
    with pytest.raises(E.EntryError, match="both or neither"):
        E.decode(OLD_UPDATE.replace(b'"parent"', b'"pq_key":"k","parent"'))


def test_an_old_ledger_still_verifies_and_lineage_rechecks_the_pq_signature(tmp_path):
    from flchain_plugin import entries as E
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.lineage import lineage
    both = _statement(run="r0").sign(notes.generate_key("client-7"), _ML_DSA_KEY)
    forged = _update(both, pq_signature=base64.b64encode(bytes(2420)).decode())
    with Ledger(tmp_path / "old.db") as led:
        led.append([E.Run(run="r0", strategy="FedAvg", config=UPDATE, model=PARENT),
                    E.decode(OLD_UPDATE)])
        led.append([_update(both), forged,
                    E.Model(run="r0", round=1, model="sha256:" + "c" * 64, parent=PARENT,
                            inputs=[1, 2, 3], aggregator="FedAvg")])
        assert led.verify().ok
        assert led.get(1).data == OLD_UPDATE  # the old entry's leaf is unchanged
        lin = lineage(led, "sha256:" + "c" * 64)
    assert list(lin.problems) == ["update entry 3: its signature does not verify"]
    assert [u.signature for u in lin.accepted_updates()] == [None, True, False]


# -- a real Flower run that requires ML-DSA-44 -----------------------------------------------

SIM_NODES, SIM_ROUNDS = 4, 2
ML_DSA_ALONE, HYBRID, ED25519_ONLY = {0, 1}, 2, 3


def _pq_client_app(tmp: Path):
    from flwr.app import Context, Message
    from test_flower_sim import honest_client

    from flchain_plugin.flower import client_key, signing_mod

    for pid in ML_DSA_ALONE:  # `flchain keygen --alg ml-dsa-44`, one file per client
        client_key(tmp / "pq", pid, generate=notes.generate_ml_dsa_key)
    mods = {pid: signing_mod(tmp / "pq") for pid in ML_DSA_ALONE}
    mods[HYBRID] = signing_mod(tmp / "ed", pq_key=tmp / "pq-hybrid")  # created on first use
    mods[ED25519_ONLY] = signing_mod(tmp / "ed")

    def by_partition(msg: Message, ctx: Context, call_next):
        pid = int(ctx.node_config["partition-id"])
        (tmp / "nodes").mkdir(exist_ok=True)
        (tmp / "nodes" / str(pid)).write_text(str(ctx.node_id))
        return mods[pid](msg, ctx, call_next)

    return honest_client([by_partition], SIM_NODES)


def _pq_server_app(ledger: Path, result: dict, pq_key: Path):
    from flwr.app import ArrayRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from test_flower_sim import net

    from flchain_plugin.flower import LedgerStrategy
    from flchain_plugin.verification import Policy

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = LedgerStrategy(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=SIM_NODES),
            ledger=ledger, policy=Policy(require_post_quantum=True, max_update_norm=None),
            pq_signer=pq_key)
        strategy.start(grid, ArrayRecord(net().state_dict()), num_rounds=SIM_ROUNDS)
        result.update(model=strategy.global_model, key=strategy.verifier_key,
                      pq_key=strategy.pq_signer.verifier_key)

    return app


@pytest.mark.flower
@pytest.mark.usefixtures("quiet_flower")
def test_flower_run_requiring_ml_dsa_accepts_pq_clients_and_refuses_ed25519_only(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from flwr.simulation import run_simulation
    from test_flower_sim import backend, node_map

    from flchain_plugin import entries as E
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.lineage import lineage

    ledger, result = tmp_path / "ledger.db", {}
    with Ledger(ledger) as led:  # the log's ML-DSA-44 key: `flchain keygen ORIGIN --alg ..`
        notes.save_private_key(notes.generate_ml_dsa_key(led.origin), tmp_path / "pq.key", None)
    run_simulation(server_app=_pq_server_app(ledger, result, tmp_path / "pq.key"),
                   client_app=_pq_client_app(tmp_path), num_supernodes=SIM_NODES,
                   backend_config=backend(tmp_path))
    assert result, "the ServerApp did not finish"
    part = node_map(tmp_path)
    with Ledger(ledger, create=False) as led:
        assert led.verify().ok
        entries = [le.entry for le in led.iter_entries()]
        run = next(e for e in entries if isinstance(e, E.Run))
        assert run.policy["require_post_quantum"] is True
        refused = {(e.round, part[e.node]): (e.reason, e.detail)
                   for e in entries if isinstance(e, E.Rejected)}
        assert set(refused) == {(r, ED25519_ONLY) for r in range(1, SIM_ROUNDS + 1)}
        for reason, detail in refused.values():
            assert reason == "not_post_quantum"
            assert detail.startswith("post_quantum: the statement is signed with Ed25519 only")
        updates = [e for e in entries if isinstance(e, E.Update)]
        assert {(u.round, part[u.node]) for u in updates} == {
            (r, p) for r in range(1, SIM_ROUNDS + 1) for p in (*ML_DSA_ALONE, HYBRID)}
        for u in updates:
            key = notes.Verifier.parse(u.key)
            if part[u.node] == HYBRID:
                assert key.sig_type == notes.ED25519
                assert notes.Verifier.parse(u.pq_key).sig_type == notes.ML_DSA_44
            else:
                assert key.sig_type == notes.ML_DSA_44 and u.pq_key is None
        members = {part[e.node]: e.key for e in entries if isinstance(e, E.Member)}
        assert set(members) == {*ML_DSA_ALONE, HYBRID}
        lin = lineage(led, result["model"])
        assert lin.ok, lin.problems
        checked = lin.accepted_updates()
        assert len(checked) == 3 * SIM_ROUNDS and all(u.signature is True for u in checked)
        # every round's checkpoint carries the log's Ed25519 and ML-DSA-44 signatures
        stored = led.store.checkpoints()
        assert len(stored) >= SIM_ROUNDS + 1
        ed, pq = notes.Verifier.parse(result["key"]), notes.Verifier.parse(result["pq_key"])
        for size, note in stored:
            _, opened = open_checkpoint(note, ed, [pq])
            assert [s.verifier for s in opened.signatures] == [ed, pq]
            assert open_checkpoint(note, pq)[0].size == size  # PQ alone suffices too


# -- the CLI: keygen --alg ml-dsa-44, cosign and verify with a 0x06 witness ---------------------


def test_cli_keygen_ml_dsa_and_a_subtree_v1_witness_cosigns_and_verifies(tmp_path):
    import json

    from test_cli import Flchain

    fl = Flchain(tmp_path)
    assert fl("init", "--origin", ORIGIN).exit_code == 0
    log_vkey = fl.json("keygen", "--out", str(tmp_path / "log.key"))["verifier"]
    doc = fl.json("keygen", "client-0", "--alg", "ml-dsa-44", "--out", str(tmp_path / "c.key"))
    assert doc["type"] == "ml-dsa-44"
    assert notes.Verifier.parse(doc["verifier"]).sig_type == notes.ML_DSA_44
    assert isinstance(notes.load_private_key(tmp_path / "c.key"), notes.MLDSASigner)
    w = fl.json("keygen", "w.example/pq", "--alg", "ml-dsa-44", "--witness", "--out",
                str(tmp_path / "w.key"), "--passphrase-env", "W_PW", env={"W_PW": "pw"})
    assert w["type"] == "subtree/v1" and w["encrypted"] is True
    assert notes.Verifier.parse(w["verifier"]).sig_type == notes.SUBTREE_V1
    r = fl("keygen", "x", "--alg", "rsa", "--out", str(tmp_path / "x.key"))
    assert r.exit_code == 2 and "rsa" in r.stderr

    cp = tmp_path / "cp.note"
    cp.write_text(fl("checkpoint", "sign", "--key", str(tmp_path / "log.key")).stdout)
    r = fl("checkpoint", "cosign", str(cp), "--key", str(tmp_path / "w.key"), "--log-verifier",
           log_vkey, "--state", str(tmp_path / "state.json"), "--passphrase-env", "W_PW",
           env={"W_PW": "pw"})
    assert r.exit_code == 0, r.stderr
    v = fl.json("checkpoint", "verify", str(cp), "--key-verifier", log_vkey,
                "--witness-verifier", w["verifier"])
    assert [s["role"] for s in v["signatures"]] == ["log", "witness"]
    assert v["signatures"][1]["timestamp"] > 0
    other = notes.generate_subtree_cosignature_key("w.example/pq").verifier_key
    r = fl("checkpoint", "verify", str(cp), "--key-verifier", log_vkey,
           "--witness-verifier", other, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False


# -- the log's second, ML-DSA-44 checkpoint signature -----------------------------------------


def test_ledger_adds_an_ml_dsa_signature_to_its_checkpoints(tmp_path):
    from test_cli import Flchain

    from flchain_plugin import entries as E
    from flchain_plugin.commit import commit, log_pq_signer
    from flchain_plugin.ledger import Ledger

    with Ledger(tmp_path / "ledger.db") as led:
        ed, pq = notes.generate_key(led.origin), notes.generate_ml_dsa_key(led.origin)
        notes.save_private_key(pq, tmp_path / "pq.key", None)
        assert log_pq_signer(led, tmp_path / "pq.key").verifier == pq.verifier
        assert log_pq_signer(led, None) is None
        entry = E.Dataset(dataset=UPDATE, owner="o", scheme="s", examples=1)
        done = commit(led, [entry], signer=ed, pq_signer=pq)
        cp, opened = open_checkpoint(done.checkpoint, ed.verifier, [pq.verifier])
        assert [s.verifier for s in opened.signatures] == [ed.verifier, pq.verifier]
        note = led.sign_checkpoint(ed, pq_signer=pq)
        assert open_checkpoint(note, pq.verifier)[0] == cp
        assert led.latest_checkpoint() == note
        with pytest.raises(ValueError, match="pq_signer: want an ML-DSA-44 key named"):
            led.append([entry], signer=ed, pq_signer=notes.generate_ml_dsa_key("other"))
        with pytest.raises(ValueError, match="want an ML-DSA-44 key"):
            log_pq_signer(led, notes.generate_key(led.origin))
        with pytest.raises(ValueError, match="must be Ed25519 \\(tlog-tiles\\)"):
            led.sign_checkpoint(pq)
        assert led.size == 1  # nothing refused was written
    fl = Flchain(tmp_path)
    (tmp_path / "cp.note").write_text(note)
    for vkey in (ed.verifier_key, pq.verifier_key):  # either log key checks the checkpoint
        assert fl.json("checkpoint", "verify", str(tmp_path / "cp.note"),
                       "--key-verifier", vkey)["ok"] is True


def test_cli_refuses_bad_ml_dsa_keys_in_one_line(tmp_path):
    from test_cli import Flchain, one_line_error

    fl = Flchain(tmp_path)
    assert fl("init", "--origin", ORIGIN).exit_code == 0
    log_vkey = fl.json("keygen", "--out", str(tmp_path / "log.key"))["verifier"]
    cp = tmp_path / "cp.note"
    cp.write_text(fl("checkpoint", "sign", "--key", str(tmp_path / "log.key")).stdout)
    w = notes.generate_subtree_cosignature_key("w.example/pq")
    raw = bytearray(base64.b64decode(w.verifier_key.split("+", 2)[2]))
    short = base64.b64encode(bytes(raw[:-1])).decode()
    bad = f"w.example/pq+{w.key_id:08x}+{short}"
    one_line_error(fl("checkpoint", "verify", str(cp), "--key-verifier", log_vkey,
                      "--witness-verifier", bad), 2, "1311 bytes, want 1312")
    private = base64.b64encode(b"\xffsomeone-else/ml-dsa-44\n" + bytes(1312)).decode()
    one_line_error(fl("checkpoint", "verify", str(cp), "--key-verifier", log_vkey,
                      "--witness-verifier", f"x+00000000+{private}"), 2,
                   "unknown private signature type")
    key = tmp_path / "w.key"
    notes.save_private_key(w, key, None)
    key.write_bytes(key.read_bytes().replace(b"# type: subtree/v1", b"# type: ed25519"))
    one_line_error(fl("checkpoint", "cosign", str(cp), "--key", str(key), "--log-verifier",
                      log_vkey, "--state", str(tmp_path / "s.json")), 2,
                   "holds an ML-DSA-44 private key, want Ed25519")
