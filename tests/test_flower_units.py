"""The pieces under LedgerStrategy: ArrayRecord digests in place, signed statements, the
announcement clients check, the blob store, the lineage graph and its commands."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytest.importorskip("flwr")
from click.testing import CliRunner
from flwr.app import Array, ArrayRecord

from flchain_plugin import entries as E
from flchain_plugin import merkle
from flchain_plugin.blobs import BlobError, BlobStore
from flchain_plugin.cli.lineage import lineage as lineage_cmd
from flchain_plugin.cli.lineage import rollback as rollback_cmd
from flchain_plugin.digest import model_digest
from flchain_plugin.flower.arrays import (
    ArrayFormatError,
    _numpy_header,
    _plain_header,
    arrayrecord_digest,
    record_views,
    tensor_view,
)
from flchain_plugin.flower.protocol import Announcement, AnnouncementError
from flchain_plugin.ledger import Ledger
from flchain_plugin.lineage import LineageError, latest_model, lineage
from flchain_plugin.notes import generate_key
from flchain_plugin.statement import (
    SignedStatement,
    Statement,
    StatementError,
    verify_update,
)

D = "sha256:" + "11" * 32
D2 = "sha256:" + "22" * 32


# -- ArrayRecord digests -------------------------------------------------------------------


def test_torch_state_dict_and_its_arrayrecord_have_one_digest():
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    m = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2))
    sd = m.state_dict()  # includes an int64 buffer (num_batches_tracked)
    rec = ArrayRecord(sd)
    assert arrayrecord_digest(rec) == model_digest(sd) == model_digest(rec.to_torch_state_dict())
    sd2 = {k: v.clone() for k, v in sd.items()}
    sd2["2.bias"][1] = torch.nextafter(sd2["2.bias"][1], torch.tensor(1.0))  # one ulp
    assert arrayrecord_digest(ArrayRecord(sd2)) != model_digest(sd)


def test_layouts_and_byte_orders_digest_as_their_values():
    x = np.arange(24, dtype="<f8").reshape(4, 6)
    rec = ArrayRecord({"f": Array(np.asfortranarray(x)), "be": Array(x.astype(">f8")),
                       "c": Array(x), "e": Array(np.zeros((0, 3), np.float32))})
    assert tensor_view("f", rec["f"].data).fortran_order
    assert arrayrecord_digest(rec) == model_digest({"f": x, "be": x, "c": x,
                                                    "e": np.zeros((0, 3), np.float32)})
    assert arrayrecord_digest(ArrayRecord([x, x[:2]])) == model_digest([x, x[:2]])


def test_views_read_the_received_bytes_in_place():
    arr = Array(np.ones((256, 256), np.float32))
    view = record_views(ArrayRecord({"w": arr}))["w"]
    assert view.data.obj is arr.data  # a memoryview of Flower's bytes, not a copy
    assert view.raw().data.obj is arr.data
    assert np.shares_memory(view.numpy(), np.frombuffer(arr.data, np.uint8))


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b"junk" + b, "magic"),
    (lambda b: b[:-4], "data bytes"),
    (lambda b: b + b"\0" * 4, "data bytes"),
    (lambda b: b.replace(b"'<f4'", b"'|O1'"), "header|dtype"),
    (lambda b: b[:8] + b"\xff\xff" + b[10:], "truncated|oversized|header"),
])
def test_malformed_array_bytes_are_refused(mutate, match):
    data = Array(np.ones(3, np.float32)).data
    with pytest.raises(ArrayFormatError, match=match):
        tensor_view("w", mutate(data))


def _header(data: bytes) -> bytes:
    return data[10:10 + int.from_bytes(data[8:10], "little")]


_NUMERIC = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                     hnp.floating_dtypes(), hnp.complex_number_dtypes())


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(_NUMERIC, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
       st.booleans())
def test_headers_np_save_writes_are_read_without_numpy_and_alike(arr, fortran):
    if fortran:
        arr = np.asfortranarray(arr)
    data = Array(arr).data
    fast = _plain_header(_header(data))
    assert fast is not None
    shape, fortran_order, dtype = _numpy_header("a", data[:10 + len(_header(data))], 1)
    assert fast == (tuple(shape), fortran_order, dtype) and fast[2].str == dtype.str
    assert tensor_view("a", data).numpy().tobytes() == np.asarray(arr).tobytes()


_TOKENS = [b"'<f4'", b"'>f8'", b"'=i2'", b"'|u1'", b"'|b1'", b"'<c16'", b"'<i3'", b"'<U4'",
           b"'|O8'", b"'<f99'", b"'|f4'", b"(3,)", b"(3)", b"()", b"(007,)", b"(2, 3)",
           b"(2,3)", b"(-1,)", b"(2, 3,)", b"True", b"False", b"1", b"None", b" ", b"\n",
           b", ", b"}", b"{", b"'shape': ", b"'descr': ", b"'fortran_order': "]


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_header_read_without_numpy_reads_as_numpy_reads_it(data):
    """Mutated headers: whenever the fast reader accepts one, numpy's parser gives the
    same shape, order and dtype (and refuses nothing the fast reader accepts)."""
    base = _header(Array(np.ones((2, 3), np.float32)).data)
    for _ in range(data.draw(st.integers(1, 3))):
        tok = data.draw(st.sampled_from(_TOKENS))
        i = data.draw(st.integers(0, len(base)))
        j = data.draw(st.integers(i, min(len(base), i + 12)))
        base = base[:i] + tok + base[j:]
    fast = _plain_header(base)
    if fast is None:
        return
    pad = b"\x93NUMPY\x01\x00" + len(base).to_bytes(2, "little") + base
    shape, fortran_order, dtype = _numpy_header("a", pad, 1)
    assert fast == (tuple(shape), fortran_order, dtype)


def test_non_numpy_serialization_is_refused():
    rec = ArrayRecord({"w": Array(dtype="float32", shape=(1,), stype="custom", data=b"x")})
    with pytest.raises(ArrayFormatError, match="serialization"):
        arrayrecord_digest(rec)


# -- signed statements ---------------------------------------------------------------------


def statement(**kw) -> Statement:
    base = dict(run="7", round=1, node=str(2**63 + 1), parent=D, update=D2, num_examples=5,
                metrics={"loss": 0.5, "num-examples": 5}, dataset=None)
    base.update(kw)
    return Statement(**base)


def test_statements_sign_verify_and_detect_any_change():
    key = generate_key("client-0")
    signed = statement().sign(key)
    again = SignedStatement.parse(signed.data, signed.key, signed.signature)
    again.verify()
    assert again.statement == signed.statement and len(signed.statement.nonce) == 32
    for change in ({"round": 2}, {"update": D}, {"metrics": {"loss": 0.4}}, {"node": "3"}):
        forged = dataclasses.replace(signed.statement, **change).encode()
        with pytest.raises(StatementError, match="does not verify"):
            SignedStatement(Statement.decode(forged), forged, signed.key,
                            signed.signature).verify()
    with pytest.raises(StatementError, match="does not verify"):
        signed.verify(generate_key("client-0").verifier)


def test_statement_decoding_is_strict():
    good = statement().encode()
    with pytest.raises(StatementError, match="canonical"):
        Statement.decode(json.dumps(json.loads(good), indent=1).encode())
    with pytest.raises(StatementError, match="fields"):
        Statement.decode(b'{"run":"1"}')
    with pytest.raises(StatementError, match="parent"):
        Statement.decode(good.replace(D.encode(), b"sha256:nope"))
    with pytest.raises(StatementError, match="canonical form"):
        statement(metrics={"x": float("nan")}).encode()


def test_a_recorded_update_can_be_re_verified():
    key = generate_key("client-1")
    signed = statement(dataset=D).sign(key)
    s = signed.statement
    entry = E.Update(run=s.run, round=s.round, node=s.node, update=s.update, parent=s.parent,
                     num_examples=s.num_examples, metrics=s.metrics, dataset=s.dataset,
                     nonce=s.nonce, key=signed.key, signature=signed.signature_b64)
    assert verify_update(entry) is True
    assert verify_update(dataclasses.replace(entry, num_examples=6)) is False
    assert verify_update(dataclasses.replace(entry, key=None, signature=None)) is None
    bad = base64.b64encode(b"\0" * 64).decode()
    assert verify_update(dataclasses.replace(entry, signature=bad)) is False


# -- what clients check ----------------------------------------------------------------------


@pytest.fixture
def announced(tmp_path: Path):
    led = Ledger(tmp_path / "l.db")
    key = generate_key(led.origin)
    model = model_digest({"w": np.ones(3, np.float32)})
    entry = E.Run(run="1", strategy="FedAvg", config=D, model=model)
    led.append([entry, E.Model(run="1", round=1, model=D2, parent=model, inputs=[],
                               aggregator="x")])
    note = led.sign_checkpoint(key)
    proof = led.inclusion_proof(0).hashes
    ann = Announcement("1", 1, model, note, entry.encode(), 0, proof, key.verifier_key)
    yield led, key, ann
    led.close()


def test_a_faithful_announcement_verifies(announced):
    led, key, ann = announced
    cp = ann.verify(ann.model, key.verifier)
    assert cp.size == 2 and cp.root_hash == led.head().root


@pytest.mark.parametrize("change, match", [
    ({"model": D2}, "mismatch"),
    ({"checkpoint": None}, "no signed checkpoint"),
    ({"index": 5}, "not in the checkpoint"),
    ({"index": 1}, "not in the signed log"),
    ({"proof": ()}, "not in the signed log"),
])
def test_announcements_that_do_not_match_the_log_are_refused(announced, change, match):
    _led, key, ann = announced
    bad = dataclasses.replace(ann, **change)
    with pytest.raises(AnnouncementError, match=match):
        bad.verify(ann.model, key.verifier)


def test_a_model_entry_for_another_model_is_refused(announced):
    led, key, ann = announced
    other = led.get(1)
    proof = led.inclusion_proof(1).hashes
    bad = dataclasses.replace(ann, entry=other.data, index=1, proof=proof)
    with pytest.raises(AnnouncementError, match="does not record model"):
        bad.verify(ann.model, key.verifier)
    forged = ann.entry.replace(b'"FedAvg"', b'"FedAvX"')
    with pytest.raises(AnnouncementError, match="not in the signed log"):
        dataclasses.replace(ann, entry=forged).verify(ann.model, key.verifier)


def test_a_checkpoint_signed_by_another_key_is_refused(announced):
    led, _key, ann = announced
    with pytest.raises(AnnouncementError, match="checkpoint does not verify"):
        ann.verify(ann.model, generate_key(led.origin).verifier)


def test_consistency_proofs_travel_by_size_and_malformed_ones_are_named(announced):
    from flwr.app import ConfigRecord

    from flchain_plugin.flower.protocol import CONSISTENCY, CONSISTENCY_FROM

    led, _key, ann = announced
    proofs = ((1, led.consistency_proof(1, 2).hashes), (2, ()))
    cfg = ConfigRecord()
    dataclasses.replace(ann, consistency=proofs).write(cfg)
    back = Announcement.read(cfg)
    assert back is not None and back.consistency == proofs
    assert back.consistency_from(1) == proofs[0][1] and back.consistency_from(3) is None
    for key, value, match in [(CONSISTENCY_FROM, [1], "one proof"),
                              (CONSISTENCY, [b"x" * 31, b""], "one proof"),
                              (CONSISTENCY_FROM, 1, "list of integers")]:
        bad = ConfigRecord(dict(cfg))
        bad[key] = value
        with pytest.raises(AnnouncementError, match=match):
            Announcement.read(bad)


# -- blobs ---------------------------------------------------------------------------------


def test_blobs_are_content_addressed_atomic_and_checked(tmp_path: Path):
    store = BlobStore(tmp_path / "blobs")
    arrays = {"a/b": np.arange(6, dtype=">f4").reshape(2, 3), "0": np.ones(2, np.int64)}
    d = store.put(arrays)
    assert d == model_digest(arrays) and d in store and list(store) == [d]
    assert store.put(arrays) == d  # idempotent
    got = store.get(d)
    assert set(got) == set(arrays) and np.array_equal(got["a/b"], arrays["a/b"])
    assert not list(store.path(d).parent.glob(".*.tmp"))
    other = store.put({"x": np.zeros(1)})
    store.path(other).replace(store.path(d))  # swap the file under the digest
    with pytest.raises(BlobError, match="altered"):
        store.get(d)
    store.path(d).write_bytes(b"not a zip")
    with pytest.raises(BlobError, match="damaged"):
        store.get(d)
    with pytest.raises(BlobError, match="no blob"):
        store.get(D)


def test_erasure_removes_weights_and_keeps_the_log_verifiable(tmp_path: Path):
    led = Ledger(tmp_path / "l.db")
    store = BlobStore(tmp_path / "blobs")
    d = store.put({"w": np.ones(4)})
    led.append([E.Run(run="1", strategy="FedAvg", config=D, model=d)])
    entry = store.delete(d, led, reason="data owner's request")
    assert entry.blob == d and not store.has(d)
    assert led.verify().ok
    (v,) = lineage(led, d, blobs=store).versions
    assert v.blob == "erased"
    with pytest.raises(BlobError, match="nothing to erase"):
        store.delete(d)
    led.close()


# -- the lineage graph and its commands ---------------------------------------------------------


def build(tmp: Path) -> tuple[Path, list[str]]:
    """A two-round run: round 1 aggregates two signed updates and refuses one; round 2
    keeps the model (all refused)."""
    path = tmp / "l.db"
    store = BlobStore(str(path) + ".blobs")
    m0 = store.put({"w": np.zeros(2)})
    m1 = store.put({"w": np.ones(2)})
    keys = [generate_key(f"client-{i}") for i in range(2)]
    with Ledger(path) as led:
        led.append([E.Run(run="1", strategy="FedAvg", config=D, model=m0)])
        batch: list[E.Entry] = []
        for i, k in enumerate(keys):
            s = Statement("1", 1, str(2**60 + i), m0, model_digest({"w": np.full(2, i + 0.5)}),
                          3, {"num-examples": 3}, D if i == 0 else None).sign(k)
            st = s.statement
            batch.append(E.Update(run="1", round=1, node=st.node, update=st.update,
                                  parent=m0, num_examples=3, metrics=st.metrics,
                                  dataset=st.dataset, nonce=st.nonce, key=s.key,
                                  signature=s.signature_b64))
        batch.append(E.Rejected(run="1", round=1, node="9", reason="replay", detail="seen"))
        batch.append(E.Model(run="1", round=1, model=m1, parent=m0, inputs=[1, 2],
                             aggregator="FedAvg"))
        led.append(batch)
        led.append([E.Rejected(run="1", round=2, node="9", reason="unsigned", detail="x"),
                    E.Model(run="1", round=2, model=m1, parent=m1, inputs=[],
                            aggregator="FedAvg", metrics={"kept": "no reply passed"})])
        led.append([E.Evaluation(run="1", round=2, model=m1, metrics={"acc": 0.9})])
    return path, [m0, m1]


def test_lineage_walks_rounds_refusals_and_datasets(tmp_path: Path):
    path, (m0, m1) = build(tmp_path)
    with Ledger(path, create=False) as led:
        lin = lineage(led, m1, blobs=BlobStore(str(path) + ".blobs"))
        assert lin.ok, lin.problems
        assert [v.model for v in lin.versions] == [m1, m0]
        v1 = lin.versions[0]
        assert [r.kept for r in v1.rounds] == [False, True]
        assert [u.index for u in lin.accepted_updates()] == [1, 2]
        assert all(u.signature for u in lin.accepted_updates())
        assert [x.reason for x in lin.rejections()] == ["replay", "unsigned"]
        assert lin.datasets[0]["dataset"] == D and v1.evaluations[0]["metrics"] == {"acc": 0.9}
        assert v1.blob == "stored" and lin.versions[1].source == "run"
        assert latest_model(led) == m1
        dot = lin.to_dot()
        assert dot.startswith("digraph lineage {") and f'"{m0}" -> "{m1}"' in dot
        assert "arrowhead=tee" in dot and dot.count("shape=ellipse") == 2
        doc = json.loads(json.dumps(lin.to_json()))
        assert doc["ok"] and doc["versions"][0]["rounds"][0]["updates"][0]["index"] == 1
        with pytest.raises(LineageError, match="not in the ledger"):
            lineage(led, D2)


def test_lineage_reports_inconsistent_records(tmp_path: Path):
    path, (_m0, m1) = build(tmp_path)
    m2 = "sha256:" + "33" * 32
    with Ledger(path) as led:
        led.append([E.Model(run="1", round=3, model=m2, parent=m1, inputs=[0, 99],
                            aggregator="FedAvg")])
        lin = lineage(led, m2)
        assert not lin.ok
        assert any("input 0 is not an update" in p for p in lin.problems)
        assert any("input 99 is beyond" in p for p in lin.problems)


def test_lineage_command_tree_json_and_dot(tmp_path: Path):
    path, (_m0, m1) = build(tmp_path)
    runner = CliRunner()
    res = runner.invoke(lineage_cmd, [m1, "--ledger", str(path)])
    assert res.exit_code == 0, res.output
    assert "replay" in res.output and "lineage consistent" in res.output
    res = runner.invoke(lineage_cmd, ["latest", "--ledger", str(path), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["model"] == m1
    res = runner.invoke(lineage_cmd, [m1, "--ledger", str(path), "--dot"])
    assert res.exit_code == 0 and res.output.startswith("digraph")
    res = runner.invoke(lineage_cmd, ["sha256:zz", "--ledger", str(path)])
    assert res.exit_code == 2 and "not a digest" in res.output
    res = runner.invoke(lineage_cmd, [m1, "--ledger", str(tmp_path / "none.db")])
    assert res.exit_code == 2 and "no ledger" in res.output


def test_rollback_command_records_the_rollback(tmp_path: Path):
    path, (m0, m1) = build(tmp_path)
    runner = CliRunner()
    res = runner.invoke(rollback_cmd, [m0, "--ledger", str(path), "--json",
                                       "--reason", "round 1 was poisoned"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["model"] == m0 and doc["previous"] == m1 and "resume_from" in doc["resume"]
    with Ledger(path, create=False) as led:
        rb = led.get(doc["index"]).entry
        assert isinstance(rb, E.Rollback) and rb.reason == "round 1 was poisoned"
        assert led.verify().ok and latest_model(led) == m0
        assert merkle.leaf_hash(led.get(doc["index"]).data) == led.get(doc["index"]).leaf_hash
    BlobStore(str(path) + ".blobs").path(m1).unlink()
    res = runner.invoke(rollback_cmd, [m1, "--ledger", str(path)])
    assert res.exit_code == 2 and "cannot roll back" in res.output
    res = runner.invoke(rollback_cmd, [D2, "--ledger", str(path)])
    assert res.exit_code == 2 and "not a model version" in res.output


def test_commands_mount_in_the_flchain_cli(tmp_path: Path):
    cli_mod = pytest.importorskip("flchain_plugin.cli")
    path, (_m0, m1) = build(tmp_path)
    res = CliRunner().invoke(cli_mod.cli, ["--ledger", str(path), "--json", "lineage", m1])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["model"] == m1
