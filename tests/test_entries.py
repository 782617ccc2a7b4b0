"""Typed entries: every type round-trips through its canonical bytes, and decoding is
strict, so the log can only ever hold bytes this module would produce itself.

The strictness matters because the leaf hash is over the bytes: two encodings of one entry
would be two different leaves, and a lenient decoder would let a tampered or hand-written
row pass as valid.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import types
import typing
from pathlib import Path
from typing import Any, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin.entries import EntryError
from flchain_plugin.ledger import Ledger

SAFE = 2**53 - 1
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def dg(c: str) -> str:
    return "sha256:" + c * 64


# One valid entry per type with every optional field set, so that each field can be broken.
SAMPLES: list[E.Entry] = [
    E.Run(run="run-1", strategy="FedAvg", config=dg("1"), model=dg("2"),
          policy={"max_norm": 10.0, "require_signature": True},
          aggregation={"strategy": [{"class": "FedAvg", "params": {}}], "updates": "kept"}),
    E.Member(run="run-1", node="17", key="ed25519:AAAA", via="tofu"),
    E.Update(run="run-1", round=3, node="9223372036854775807", update=dg("3"), parent=dg("2"),
             num_examples=100, metrics={"loss": 0.25, "n": [1, 2]}, dataset=dg("4"), nonce="n-1",
             key="ed25519:AAAA", signature="c2ln", pq_key="pq:AAAA", pq_signature="cHE="),
    E.Rejected(run="run-1", round=3, node="18", reason="replay", detail="nonce seen in round 2",
               update=dg("3"), parent=dg("2")),
    E.Model(run="run-1", round=3, model=dg("5"), parent=dg("2"), inputs=[4, 5], aggregator="FedAvg",
            metrics={"accuracy": 0.9}),
    E.Evaluation(run="run-1", round=3, model=dg("5"), metrics={"accuracy": 0.91}, source="central"),
    E.Dataset(dataset=dg("4"), owner="client-1", scheme="hmac-sha256-merkle-v1", examples=1000,
              name="mnist-shard-1"),
    E.Credit(run="run-1", round=3, node="17", rule="shapley", amount=1.5, basis={"share": 0.5}),
    E.Rollback(model=dg("2"), previous=dg("5"), reason="diverged", run="run-1"),
    E.Erasure(blob=dg("5"), reason="right to erasure", kind="update"),
    E.Mlflow(kind="model_version", model_id="m-1", files=dg("6"), model=dg("5"), run_id="abc",
             name="net", version="2", params=dg("7"), datasets=[{"name": "mnist"}],
             parents=[dg("2")], status="ok", detail={"flavor": "pytorch"}),
    E.TrainingCheckpoint(file=dg("6"), model=dg("5"), epoch=1, step=10, name="epoch=1.ckpt",
                         parent=dg("2"), monitor="val_loss", score=0.125, hparams=dg("7"),
                         datasets=[dg("4")]),
    E.Anchor(chain="eip155:1", tx="0xabc", size=10, root="sha256:" + "0" * 64),
]
BY_TYPE = {e.TYPE: e for e in SAMPLES}


def hints(cls: type[E.Entry]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def test_samples_cover_every_entry_type() -> None:
    """A new entry type must get a sample here, so the strictness tests reach it."""
    assert set(BY_TYPE) == set(E.ENTRY_TYPES)
    for e in SAMPLES:
        assert all(getattr(e, n) is not None for n in e._NAMES), e.TYPE


# -- round trip ---------------------------------------------------------------------------

def _json_floats() -> st.SearchStrategy[float]:
    # Integral doubles in [2^53, 1e21) are the interesting ones: JCS prints them as long
    # integers, which must read back as the same doubles.
    return st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(2**53, 10**21).map(float).map(lambda x: st.sampled_from([x, -x])).flatmap(
            lambda s: s),
    )


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-SAFE, SAFE), _json_floats(),
                         st.text(max_size=10))
json_values = st.recursive(
    json_scalars,
    lambda c: st.one_of(st.lists(c, max_size=4),
                        st.dictionaries(st.text(max_size=6), c, max_size=4)),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
digests = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())


def strategy_for(tp: Any, cls: type[E.Entry], name: str) -> st.SearchStrategy[Any]:
    """Valid values for a field annotation, read from the entry class itself so every field
    of every type is exercised without listing them."""
    if cls is E.Rejected and name == "reason":
        return st.sampled_from(sorted(E.REJECT_REASONS))
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return st.one_of(st.none(), *(strategy_for(a, cls, name) for a in inner))
    if tp is E.Digest:
        return digests
    if tp is str:
        return st.text(max_size=20)
    if tp is int:
        return st.integers(-SAFE, SAFE)
    if tp is float:
        return _json_floats()
    if tp is bool:
        return st.booleans()
    if origin is list:
        return st.lists(strategy_for(typing.get_args(tp)[0], cls, name), max_size=4)
    if tp is dict or origin is dict:
        return json_objects
    raise AssertionError(f"no strategy for {tp!r} ({cls.TYPE}.{name})")


def _paired(kw: dict[str, object]) -> dict[str, object]:
    """Update's second signature: pq_key and pq_signature both or neither, after a key."""
    if "pq_key" in kw and (kw["pq_key"] is None or kw["pq_signature"] is None
                           or kw["key"] is None):
        kw["pq_key"] = kw["pq_signature"] = None
    return kw


def entry_strategy(cls: type[E.Entry]) -> st.SearchStrategy[E.Entry]:
    return st.fixed_dictionaries(
        {n: strategy_for(hints(cls)[n], cls, n) for n in cls._NAMES}
    ).map(lambda kw: cls(**_paired(kw)))


any_entry = st.sampled_from(sorted(E.ENTRY_TYPES)).flatmap(
    lambda t: entry_strategy(E.ENTRY_TYPES[t])
)


@SETTINGS
@given(any_entry)
def test_round_trip_every_type(entry: E.Entry) -> None:
    data = entry.encode()
    back = E.decode(data)
    assert type(back) is type(entry)
    assert back == entry
    assert back.encode() == data
    # parse_json accepts any formatting of the same object and yields the same entry
    loose = json.dumps(entry.to_json(), indent=2, ensure_ascii=True)
    assert E.parse_json(loose) == entry
    assert E.parse_json(loose).encode() == data
    assert back.subjects == entry.subjects
    assert all(E.check_digest(s) for s in entry.subjects)


@pytest.mark.parametrize("entry", SAMPLES, ids=lambda e: e.TYPE)
def test_sample_round_trip_and_json_shape(entry: E.Entry) -> None:
    data = entry.encode()
    obj = json.loads(data)
    assert obj["v"] == 1 and obj["type"] == entry.TYPE
    assert set(obj) == {"v", "type", *entry._NAMES}
    assert list(obj) == sorted(obj)  # JCS key order
    assert E.decode(data) == entry


def test_tuples_become_lists() -> None:
    m = E.Model(run="r", round=1, model=dg("a"), parent=None, inputs=(1, 2), aggregator="x")
    assert m.inputs == [1, 2]
    assert E.decode(m.encode()) == m


@pytest.mark.parametrize("x", [2.0**53, 3.5e17, -1e20, 9.99e20], ids=repr)
def test_large_integral_float_round_trips(x: float, tmp_path: Path) -> None:
    """A diverging loss of 3.5e17 is written `350000000000000000` by JCS and must read back
    as that double (it once made the ledger call its own entry corrupt)."""
    es = [E.Evaluation(run="r", round=1, model=dg("a"), metrics={"loss": x}),
          dataclasses.replace(BY_TYPE["credit"], amount=x),
          dataclasses.replace(BY_TYPE["checkpoint"], score=x)]
    for e in es:
        assert str(int(x)).encode() in e.encode()
        back = E.decode(e.encode())
        assert back == e and back.encode() == e.encode()
        assert E.parse_json(json.dumps(e.to_json())) == e
    with Ledger(tmp_path / "l.db") as led:
        led.append(es)
        assert [x.entry for x in led.iter_entries()] == es
        assert led.verify().ok


def test_a_large_integral_int_in_any_number_field_is_the_double_it_equals() -> None:
    """Optional (`float | None`) and plain `float` fields alike: 2**60 is stored as 2.0**60."""
    for e in (dataclasses.replace(BY_TYPE["credit"], amount=2**60),
              dataclasses.replace(BY_TYPE["checkpoint"], score=2**60)):
        value = getattr(e, "amount", None) or e.score  # type: ignore[attr-defined]
        assert type(value) is float and value == 2.0**60
        assert E.decode(e.encode()) == e


def test_python_ints_beyond_2_53_are_refused() -> None:
    """In Python values an int is an int: beyond 2^53 it must be given as a string."""
    for big in (2**53, -(2**53), 2**64):
        with pytest.raises(EntryError, match=r"^update\.metrics: .*2\^53"):
            dataclasses.replace(BY_TYPE["update"], metrics={"node": big})
        with pytest.raises(EntryError, match=r"^update\.round: integer .* beyond 2\^53"):
            dataclasses.replace(BY_TYPE["update"], round=big)


# A 64-bit id written as a number (12345678901234567891) must not be silently rounded:
# ARCHITECTURE.md says such integers are strings, so a literal that is not the canonical
# form of a double is refused, naming the field.
@pytest.mark.parametrize("literal", ["9007199254740993", "12345678901234567891"])
def test_inexact_integer_literal_is_refused(literal: str) -> None:
    text = json.dumps({**BY_TYPE["update"].to_json(), "metrics": {"node": 0}})
    text = text.replace('"node": 0', f'"node": {literal}')
    assert literal in text
    with pytest.raises(EntryError, match=r"update\.metrics"):
        E.parse_json(text)


# -- strict decoding ----------------------------------------------------------------------

def wrong_values(tp: Any) -> list[Any]:
    """Values of the wrong JSON type (or an invalid form) for a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return [v for v in wrong_values(inner) if v is not None]
    if tp is E.Digest:
        return [1, None, [], "sha256:" + "A" * 64, "sha256:" + "0" * 63, "md5:" + "0" * 64,
                "sha256:" + "0" * 64 + "\n", "0" * 64]
    if tp is str:
        return [1, 1.5, True, None, [], {}]
    if tp is int:
        return ["1", 1.5, True, None, [], 2**53, -(2**53)]
    if tp is float:
        return ["1.5", True, None, [], {}]
    if origin is list:
        item = typing.get_args(tp)[0]
        return ["x", {}, 1, None, *[[w] for w in wrong_values(item) if w is not None][:3]]
    if tp is dict or origin is dict:
        return [[], "x", 1, None, True, {"a": math.nan}, {"a": {"b": [-math.inf]}}]
    raise AssertionError(tp)


WRONG_CASES = [
    pytest.param(e, n, w, id=f"{e.TYPE}.{n}={w!r}"[:80])
    for e in SAMPLES for n in e._NAMES for w in wrong_values(hints(type(e))[n])
]


@pytest.mark.parametrize(("sample", "name", "wrong"), WRONG_CASES)
def test_wrong_type_names_the_field(sample: E.Entry, name: str, wrong: Any) -> None:
    field = f"{sample.TYPE}.{name}"
    obj = sample.to_json()
    obj[name] = wrong
    with pytest.raises(EntryError, match=rf"^{field}\b"):
        E.from_json(obj)
    with pytest.raises(EntryError, match=rf"^{field}\b"):
        E.parse_json(json.dumps(obj))
    with pytest.raises(EntryError, match=rf"^{field}\b"):
        dataclasses.replace(sample, **{name: wrong})


def test_rejected_reason_must_be_known() -> None:
    obj = BY_TYPE["rejected"].to_json()
    obj["reason"] = "because"
    with pytest.raises(EntryError, match=r"^rejected\.reason: 'because' is not one of"):
        E.from_json(obj)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda e: e.TYPE)
def test_missing_and_extra_fields_name_the_field(sample: E.Entry) -> None:
    for name in sample._NAMES:
        obj = sample.to_json()
        del obj[name]
        if name in sample.OMITTED_WHEN_NONE and name.startswith("pq_"):  # only as a pair
            with pytest.raises(EntryError, match=rf"^{sample.TYPE}\.pq_key: .*both or neither"):
                E.from_json(obj)
            continue
        if name in sample.OMITTED_WHEN_NONE:  # absent in entries written before it existed
            assert getattr(E.from_json(obj), name) is None
            continue
        with pytest.raises(EntryError, match=rf"^{sample.TYPE}\.{name}: missing field"):
            E.from_json(obj)
        with pytest.raises(EntryError, match=rf"^{sample.TYPE}\.{name}: missing field"):
            E.decode(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
    obj = sample.to_json()
    obj["zzz_extra"] = 1
    with pytest.raises(EntryError, match=rf"^{sample.TYPE}\.zzz_extra: unknown field"):
        E.from_json(obj)
    with pytest.raises(EntryError, match=rf"^{sample.TYPE}\.zzz_extra: unknown field"):
        E.parse_json(json.dumps(obj))


def test_unknown_or_missing_type_and_version() -> None:
    base = BY_TYPE["erasure"].to_json()
    for bad in ("nope", "Erasure", "", 1, None):
        with pytest.raises(EntryError, match=r"^type: unknown entry type"):
            E.from_json({**base, "type": bad})
    with pytest.raises(EntryError, match=r"^type: unknown entry type None"):
        E.from_json({k: v for k, v in base.items() if k != "type"})
    for bad in (2, 0, "1", None):
        with pytest.raises(EntryError, match=r"^v: "):
            E.from_json({**base, "v": bad})
    with pytest.raises(EntryError, match=r"^v: None"):
        E.from_json({k: v for k, v in base.items() if k != "v"})
    for not_object in ([], "x", 1, None):
        with pytest.raises(EntryError, match=r"^entry: want a JSON object"):
            E.from_json(not_object)
    with pytest.raises(EntryError, match="want a JSON object"):
        E.parse_json("[1]")


NON_FINITE_LITERALS = ["NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("literal", NON_FINITE_LITERALS)
@pytest.mark.parametrize("where", ["credit.amount", "credit.basis"])
def test_non_finite_literals_are_refused(literal: str, where: str) -> None:
    obj = BY_TYPE["credit"].to_json()
    if where == "credit.amount":
        text = json.dumps({**obj, "amount": 0.0}).replace("0.0", literal)
    else:
        text = json.dumps({**obj, "basis": {"share": {"deep": [0.0]}}}).replace("0.0", literal)
    assert literal in text
    with pytest.raises(EntryError, match=rf"^{where}: non-finite number"):
        E.parse_json(text)
    with pytest.raises(EntryError, match=rf"^{where}: non-finite number"):
        E.decode(text.encode())


def test_overflowing_numbers_and_nan_values_name_the_field() -> None:
    obj = BY_TYPE["credit"].to_json()
    text = json.dumps({**obj, "amount": 0.0}).replace("0.0", "1e999")  # parses as inf
    with pytest.raises(EntryError, match=r"^credit\.amount: non-finite number inf"):
        E.parse_json(text)
    text = json.dumps({**obj, "basis": {"share": {"deep": [0.0]}}}).replace("0.0", "-1e400")
    with pytest.raises(EntryError, match=r"^credit\.basis: non-finite number -inf"):
        E.parse_json(text)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(EntryError, match=r"^credit\.amount: non-finite"):
            dataclasses.replace(BY_TYPE["credit"], amount=bad)
        with pytest.raises(EntryError, match=r"^update\.metrics: non-finite"):
            dataclasses.replace(BY_TYPE["update"], metrics={"loss": bad})
        with pytest.raises(EntryError, match=r"^checkpoint\.score: non-finite"):
            dataclasses.replace(BY_TYPE["checkpoint"], score=bad)


def test_huge_integer_literal_is_an_entry_error() -> None:
    """More than 4300 digits fit in 64 KiB; Python's int() would raise its own ValueError."""
    for digits in (400, 401, 5000, 60_000):
        text = BY_TYPE["anchor"].encode().decode().replace('"size":10', '"size":' + "1" * digits)
        assert len(text) > digits
        with pytest.raises(EntryError, match=r"^anchor\.size"):
            E.parse_json(text)
        with pytest.raises(EntryError):
            E.decode(text.encode())
        credit = BY_TYPE["credit"].encode().decode()
        big = credit.replace('"amount":1.5', '"amount":' + "9" * digits)
        with pytest.raises(EntryError, match=r"^credit\.amount"):
            E.parse_json(big)


@pytest.mark.parametrize("key", ["v", "type", "run", "amount"])
def test_duplicate_keys_are_refused(key: str) -> None:
    data = BY_TYPE["credit"].encode().decode()
    obj = json.loads(data)
    dup = json.dumps(obj[key], separators=(",", ":"))
    text = data[:-1] + f',"{key}":{dup}' + "}"
    with pytest.raises(EntryError, match=rf"duplicate key '{key}'"):
        E.parse_json(text)
    with pytest.raises(EntryError):  # stored bytes: the re-encoding differs
        E.decode(text.encode())


def test_duplicate_nested_key_is_refused() -> None:
    text = BY_TYPE["credit"].encode().decode().replace('{"share":0.5}', '{"share":0.5,"share":1}')
    assert '"share":1' in text
    with pytest.raises(EntryError, match="duplicate key 'share'"):
        E.parse_json(text)
    with pytest.raises(EntryError):
        E.decode(text.encode())
    same = BY_TYPE["credit"].encode().decode().replace('{"share":0.5}', '{"share":0.5,"share":0.5}')
    with pytest.raises(EntryError):
        E.decode(same.encode())


def _non_canonical_forms(entry: E.Entry) -> list[bytes]:
    data = entry.encode()
    obj = json.loads(data)
    text = data.decode()
    return [
        json.dumps(obj, indent=1, sort_keys=True).encode(),  # whitespace
        json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":")).encode(),
        data + b"\n",
        b" " + data,
        text.replace('"v":1', '"v":1.0').encode(),
        text.replace('"v":1', '"v":1e0').encode(),
        text.replace('"v":1', '"v":true').encode(),
        text.replace('"type"', '"\\u0074ype"').encode(),  # needless escape
        text.replace('"amount":1.5', '"amount":15e-1').encode(),
        text.replace('"share":0.5', '"share":0.50').encode(),
        "\ufeff".encode() + data,  # BOM
    ]


def test_non_canonical_bytes_are_refused_by_decode() -> None:
    entry = BY_TYPE["credit"]
    data = entry.encode()
    forms = _non_canonical_forms(entry)
    assert len(set(forms)) == len(forms) and data not in forms
    for form in forms:
        with pytest.raises(EntryError):
            E.decode(form)


def test_non_ascii_is_stored_as_utf8_not_escaped() -> None:
    e = dataclasses.replace(BY_TYPE["erasure"], reason="Löschung 消去 🙂")
    data = e.encode()
    assert "Löschung 消去 🙂".encode() in data
    escaped = data.decode().replace("ö", "\\u00f6").encode()
    assert E.parse_json(escaped) == e
    with pytest.raises(EntryError, match="not in canonical form"):
        E.decode(escaped)


def test_invalid_utf8_and_not_json() -> None:
    data = BY_TYPE["erasure"].encode()
    for bad in (data.replace(b"erasure", b"eras\xffre"), b"\xc3", b"", b"{", b"null"):
        with pytest.raises(EntryError):
            E.decode(bad)


def _entry_of_size(n: int) -> E.Rejected:
    base = dataclasses.replace(BY_TYPE["rejected"], detail="")
    pad = n - len(base.encode())
    return dataclasses.replace(base, detail="x" * pad)


def test_size_limit_boundary() -> None:
    limit = E.MAX_ENTRY_BYTES
    ok = _entry_of_size(limit)
    data = ok.encode()
    assert len(data) == limit
    assert E.decode(data) == ok
    # an entry that cannot be logged cannot be built
    with pytest.raises(EntryError, match=rf"^rejected: entry is {limit + 1} bytes, limit {limit}"):
        _entry_of_size(limit + 1)
    over = data[:-2] + b'x"}'
    assert len(over) == limit + 1
    with pytest.raises(EntryError, match=rf"entry is {limit + 1} bytes, limit {limit}"):
        E.decode(over)
    with pytest.raises(EntryError, match="limit"):
        E.parse_json(over)
    loose = json.dumps(ok.to_json(), indent=1)  # over the limit as text, fine once canonical
    assert len(loose) > limit
    with pytest.raises(EntryError, match="limit"):
        E.parse_json(loose)


def test_check_digest() -> None:
    assert E.check_digest(dg("a")) == dg("a")
    for bad in (dg("A"), "sha256:" + "a" * 65, "sha512:" + "a" * 64, None, 5, dg("g")):
        with pytest.raises(EntryError, match=r"^model: .* is not a digest"):
            E.check_digest(bad, "model")


# -- nothing appended on a bad batch -------------------------------------------------------

def _row_counts(path: Path) -> tuple[int, ...]:
    with sqlite3.connect(path) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return tuple(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in sorted(tables))


# Entries validate and encode at construction, so what can reach `append` broken is
# something that is not an entry at all.
NOT_ENTRIES: dict[str, Any] = {
    "dict": BY_TYPE["credit"].to_json(),
    "json text": BY_TYPE["credit"].encode().decode(),
    "bytes": BY_TYPE["credit"].encode(),
    "None": None,
    "class": E.Credit,
}


def _append_refused(path: Path, bad: Any, position: int, match: str) -> None:
    led = Ledger(path)
    led.append(SAMPLES[:3])
    before_head, before_heads, before_rows = led.head(), led.heads(), _row_counts(path)
    batch: list[Any] = list(SAMPLES[3:7])
    batch.insert(position, bad)
    try:
        with pytest.raises(EntryError, match=match):
            led.append(batch)
        assert led.head() == before_head
        assert led.heads() == before_heads
        assert _row_counts(path) == before_rows
        assert led.verify().ok
        good = [e for i, e in enumerate(batch) if i != position]
        assert led.append(good).size == 3 + len(good)
        assert [x.entry for x in led.iter_entries()] == SAMPLES[:3] + good
        assert led.verify().ok
    finally:
        led.close()


@pytest.mark.parametrize("position", [0, 2, 4])
@pytest.mark.parametrize("kind", list(NOT_ENTRIES))
def test_one_bad_item_appends_nothing(tmp_path: Path, kind: str, position: int) -> None:
    _append_refused(tmp_path / "ledger.db", NOT_ENTRIES[kind], position,
                    rf"^batch\[{position}\]: \w+ is not a")


def test_empty_batch_appends_nothing(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "ledger.db")
    led.append(SAMPLES[:2])
    head = led.head()
    for empty in ([], (), iter([])):
        with pytest.raises(EntryError, match="empty batch"):
            led.append(empty)
    assert led.head() == head and len(led.heads()) == 1
    led.close()


@dataclasses.dataclass(frozen=True)
class _Unregistered(E.Credit):
    """A subclass the registry does not know: its bytes claim type "credit" but carry an
    extra field, so they could never be decoded again."""

    extra: int = 0


@pytest.mark.parametrize("bad", ["base", "subclass"])
def test_unregistered_entry_class_appends_nothing(tmp_path: Path, bad: str) -> None:
    """E.Entry() or an unregistered subclass encodes, but its bytes never decode again."""
    entry = E.Entry() if bad == "base" else _Unregistered(**{
        n: getattr(BY_TYPE["credit"], n) for n in E.Credit._NAMES})
    _append_refused(tmp_path / "ledger.db", entry, 1, r"^batch\[1\]: ")


@pytest.mark.parametrize("value", [math.nan, math.inf, 2**60, "\ud800"], ids=repr)
def test_bad_value_under_non_ascii_key_is_an_entry_error(value: Any) -> None:
    """Non-ASCII keys take the rfc8785 path, whose own exceptions must not escape."""
    with pytest.raises(EntryError, match=r"^update\.metrics"):
        dataclasses.replace(BY_TYPE["update"], metrics={"précision": value})


@pytest.mark.parametrize("value", [math.nan, math.inf, 2**60, "\ud800", {1: 2}, {3}], ids=repr)
def test_bad_value_in_metrics_is_an_entry_error(value: Any) -> None:
    with pytest.raises(EntryError, match=r"^update\.metrics"):
        dataclasses.replace(BY_TYPE["update"], metrics={"a": {"b": [value]}})


@pytest.mark.parametrize("name", ["reason", "run"])
def test_lone_surrogate_in_plain_string_field_names_it(name: str) -> None:
    with pytest.raises(EntryError, match=rf"^rollback\.{name}"):
        dataclasses.replace(BY_TYPE["rollback"], **{name: "a\udc00"})


# -- check_stored: decode's verdict without building the entry (verify's hot path) -------

@SETTINGS
@given(any_entry, st.data())
def test_check_stored_agrees_with_decode(entry: E.Entry, data: st.DataObject) -> None:
    good = entry.encode()
    assert E.check_stored(good) == (entry.TYPE, list(entry.subjects))
    # any single-byte change: both accept (and agree) or both refuse
    i = data.draw(st.integers(0, len(good) - 1))
    b = data.draw(st.integers(0, 255))
    bad = good[:i] + bytes([b]) + good[i + 1 :]
    try:
        want = E.decode(bad)
    except E.EntryError:
        with pytest.raises(E.EntryError):
            E.check_stored(bad)
    else:
        assert E.check_stored(bad) == (want.TYPE, list(want.subjects))


def test_check_stored_refuses_non_canonical_and_bad_reason() -> None:
    good = BY_TYPE["rejected"].encode()
    with pytest.raises(E.EntryError, match="canonical"):
        E.check_stored(good.replace(b'","', b'", "', 1))
    bad_reason = good.replace(b'"reason":"' + BY_TYPE["rejected"].reason.encode(), b'"reason":"x')
    with pytest.raises(E.EntryError, match=r"rejected\.reason"):
        E.check_stored(bad_reason)


# -- hostile input: deep nesting, integers beyond 2^53 --------------------------------------

def nested(depth: int, inner: str = "0") -> str:
    """JSON text nesting `depth` levels around `inner`: an object, then arrays (two bytes
    a level, so 20,000 levels fit in an entry)."""
    return '{"k":' + "[" * (depth - 1) + inner + "]" * (depth - 1) + "}"


def with_metrics(metrics_text: str) -> str:
    text = json.dumps({**BY_TYPE["update"].to_json(), "metrics": {"m": 0}})
    return text.replace('{"m": 0}', metrics_text)


@pytest.mark.parametrize("depth", [128, 1000, 20_000])
def test_deep_json_under_the_size_limit_is_an_entry_error(depth: int) -> None:
    """Nested beyond MAX_DEPTH but within 65,535 bytes: EntryError, never RecursionError,
    from parsing text, decoding stored bytes and building the entry in Python."""
    from flchain_plugin.canonical import MAX_DEPTH

    assert depth + 1 > MAX_DEPTH  # the entry object is one more level
    text = with_metrics(nested(depth))
    assert len(text) <= E.MAX_ENTRY_BYTES
    with pytest.raises(EntryError, match=f"nests deeper than {MAX_DEPTH}"):
        E.parse_json(text)
    with pytest.raises(EntryError, match=f"nests deeper than {MAX_DEPTH}"):
        E.decode(text.encode())
    with pytest.raises(EntryError, match=f"nests deeper than {MAX_DEPTH}"):
        E.check_stored(text.encode())
    value: Any = 0
    for _ in range(depth):
        value = [value]
    with pytest.raises(EntryError, match=r"^update\.metrics: .*nests deeper"):
        dataclasses.replace(BY_TYPE["update"], metrics={"m": value})


def test_nesting_up_to_the_limit_round_trips_and_brackets_in_strings_do_not_count() -> None:
    from flchain_plugin.canonical import MAX_DEPTH

    # the entry object is one of the levels
    text = with_metrics(nested(MAX_DEPTH - 1, json.dumps("[{" * 500)))
    entry = E.parse_json(text)
    assert E.decode(entry.encode()) == entry
    with pytest.raises(EntryError, match="nests deeper"):
        E.parse_json(with_metrics(nested(MAX_DEPTH)))


def test_a_deep_entry_planted_in_the_file_is_named_by_verify(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path) as led:
        led.append([BY_TYPE["update"], BY_TYPE["credit"]])
    deep = with_metrics(nested(5000)).encode()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE entries SET data = ? WHERE idx = 1", (deep,))
    c.close()
    with Ledger(path, create=False) as led:
        problem = led.verify().problem
    assert problem is not None and (problem.kind, problem.index) == ("entry", 1)
    assert "nests deeper" in problem.detail


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.integers(2**53, 10**40), st.integers(-(10**40), -(2**53))),
       field=st.sampled_from(["round", "num_examples"]))
def test_an_integer_beyond_2_53_is_named_as_such(value: int, field: str) -> None:
    """Whether the literal parses as a double (canonical form of one) or stays an int, the
    error names an integer beyond 2^53, never a float."""
    text = json.dumps({**BY_TYPE["update"].to_json(), field: value})
    with pytest.raises(EntryError) as info:
        E.parse_json(text)
    msg = str(info.value)
    assert msg.startswith(f"update.{field}: integer") and "beyond 2^53: write it as a string" in msg
    assert "float" not in msg


@pytest.mark.parametrize("literal", [str(2**53), "350000000000000000", "1" * 401, "-" + "9" * 500])
def test_integer_literals_beyond_2_53_in_an_integer_field(literal: str) -> None:
    text = BY_TYPE["anchor"].encode().decode().replace('"size":10', '"size":' + literal)
    with pytest.raises(EntryError, match=r"^anchor\.size: integer.* beyond 2\^53: write it as a"):
        E.parse_json(text)


def test_the_append_command_refuses_deep_json_and_big_integers_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flchain_plugin.cli import cli

    path = tmp_path / "l.db"
    runner = CliRunner()
    assert runner.invoke(cli, ["--ledger", str(path), "init"]).exit_code == 0
    big = json.dumps({**BY_TYPE["update"].to_json(), "round": 2**60})
    for line, needle in ((with_metrics(nested(20_000)), "nests deeper"),
                         (big, "integer 1152921504606846976 beyond 2^53")):
        r = runner.invoke(cli, ["--ledger", str(path), "append"], input=line + "\n",
                          catch_exceptions=False)
        assert r.exit_code == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr
    with Ledger(path, create=False) as led:
        assert led.size == 0
