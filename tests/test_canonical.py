"""canonical_json is RFC 8785 (JCS): its json.dumps fast path must agree with the `rfc8785`
package byte for byte, and values JCS cannot carry must raise CanonicalError.

Entries are hashed as these bytes, so any disagreement between the two encoders would make
the same entry hash differently depending on which path it took.
"""

from __future__ import annotations

import json
import math
import struct

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flchain_plugin import canonical
from flchain_plugin.canonical import CanonicalError, canonical_json

SAFE = 2**53 - 1
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bits(hex64: str) -> float:
    return struct.unpack(">d", bytes.fromhex(hex64))[0]


# Floats chosen to hit every formatting regime: subnormals, the 1e-7 / 1e21 exponent
# thresholds of ECMAScript, the [1e-4, 1e16) window of the fast path, integral floats at
# and above 2^53 (printed as integers by ECMAScript up to 1e21), -0.0 and the extremes.
SPECIAL_FLOATS = [
    0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,
    1e-7, 1.5e-7, 9.999999999999999e-8, 1e-6, 1e-5, 1e-4, 9.999999999999999e-5, 0.1, 0.5,
    1.0, -1.0, 1e15, 1e16, 9999999999999998.0, 1.5e16, 2.0**53 - 1, 2.0**53, 2.0**53 + 2,
    -(2.0**53), 2.0**63, 2.0**64, 1e20, 123456789012345680000.0, 1e21, 1e22, 1e23,
    1.7976931348623157e308, -1.7976931348623157e308, 333333333.3333333, 1 / 3,
]

floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(SPECIAL_FLOATS),
    # subnormals
    st.floats(min_value=-2.2250738585072014e-308, max_value=2.2250738585072014e-308),
    # integral floats beyond 2^53
    st.builds(lambda m, e: float(m) * 2.0**e, st.integers(-(2**53), 2**53), st.integers(1, 970)),
    # around the fast path's window edges
    st.floats(min_value=1e-8, max_value=1e-3),
    st.floats(min_value=1e15, max_value=1e22),
)
ints = st.one_of(st.integers(-SAFE, SAFE), st.sampled_from([0, 1, -1, SAFE, -SAFE, 2**31]))
# st.text excludes lone surrogates; it includes control characters, non-BMP characters,
# U+2028/9, DEL and so on.
texts = st.text()
ascii_keys = st.text(alphabet=st.characters(max_codepoint=127), max_size=8)
any_keys = st.one_of(ascii_keys, st.text(max_size=8))

scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.dictionaries(keys, children, max_size=6),
        ),
        max_leaves=30,
    )


@SETTINGS
@given(json_values(any_keys))
def test_canonical_json_equals_rfc8785(value: object) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@SETTINGS
@given(json_values(ascii_keys))
def test_fast_path_equals_rfc8785_where_it_applies(value: object) -> None:
    """The json.dumps path itself, not only the combined function, agrees with rfc8785."""
    try:
        prepared = canonical._fast(value)
    except canonical._Slow:
        return  # the combined function is covered above; here only the fast path counts
    assert canonical._dumps(prepared).encode() == rfc8785.dumps(value)


@SETTINGS
@given(st.recursive(
    st.one_of(st.none(), st.booleans(), ints, texts,
              st.floats(min_value=1e-4, max_value=1e15),
              st.floats(min_value=-1e15, max_value=-1e-4),
              st.integers(-SAFE, SAFE).map(float)),
    lambda c: st.one_of(st.lists(c, max_size=5), st.dictionaries(ascii_keys, c, max_size=5)),
    max_leaves=25,
))
def test_entry_like_values_take_the_fast_path(value: object) -> None:
    """Values shaped like ledger entries never fall back to the slow encoder."""
    assert canonical._dumps(canonical._fast(value)).encode() == rfc8785.dumps(value)


@SETTINGS
@given(floats)
def test_every_finite_float(x: float) -> None:
    assert canonical_json(x) == rfc8785.dumps(x)
    assert canonical_json([x]) == rfc8785.dumps([x])
    assert canonical_json({"k": x}) == rfc8785.dumps({"k": x})
    # JCS numbers round-trip exactly
    assert float(json.loads(canonical_json(x))) == x


# RFC 8785 Appendix B: IEEE 754 bit patterns and their required serialisation.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("hex64", "want"), RFC8785_NUMBERS)
def test_rfc8785_appendix_b_numbers(hex64: str, want: str) -> None:
    x = bits(hex64)
    assert canonical_json(x) == want.encode()
    assert canonical_json({"n": [x]}) == b'{"n":[' + want.encode() + b"]}"


def test_rfc8785_string_and_key_order_examples() -> None:
    # §3.2.2.2: escaping
    s = json.loads(r'"\u20ac$\u000F\u000aA' + "'" + r'\u0042\u0022\u005c\\\"\/"')
    assert canonical_json(s) == '"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'.encode()
    # §3.2.3: properties sorted by UTF-16 code units (the emoji's surrogates sort before
    # U+FB33 although its code point is larger)
    obj = json.loads(
        r'{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With '
        r'Dagesh", "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",'
        r' "\u00f6": "Latin Small Letter O With Diaeresis"}'
    )
    got = canonical_json(obj).decode()
    order = [k for k, _ in json.loads(got, object_pairs_hook=lambda p: p)]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_integral_floats_print_as_integers_and_negative_zero_as_zero() -> None:
    assert canonical_json({"a": 2.0, "b": -0.0, "c": 1e15}) == b'{"a":2,"b":0,"c":1000000000000000}'
    assert canonical_json(2.0**53) == b"9007199254740992"
    assert canonical_json(1e-7) == b"1e-7"


NON_FINITE = [math.nan, math.inf, -math.inf]
UNSAFE_INTS = [2**53, -(2**53), 2**53 + 1, 2**64, -(2**64), 10**400]
BAD_KEYS = [1, None, 1.5, True, (1, 2), b"k"]
LONE_SURROGATES = ["\ud800", "\udfff", "a\udc00b", "\ud83d"]  # high/low, not paired


def _placements(bad: object) -> list[object]:
    """`bad` at the top level, nested in lists/objects, and beside a non-ASCII key (which
    sends the whole value down the slow rfc8785 path)."""
    return [
        bad,
        [1, [bad]],
        {"a": {"b": [bad]}},
        {"é": 1, "x": [bad]},
        {"é": {"z": bad}},
    ]


@pytest.mark.parametrize("bad", NON_FINITE + UNSAFE_INTS, ids=repr)
def test_rejects_unrepresentable_numbers(bad: object) -> None:
    for value in _placements(bad):
        with pytest.raises(CanonicalError):
            canonical_json(value)


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_rejects_non_string_keys(key: object) -> None:
    for value in ({key: 1}, [{"a": {key: 1}}], {"é": {key: 1}}):
        with pytest.raises(CanonicalError):
            canonical_json(value)


@pytest.mark.parametrize("s", LONE_SURROGATES, ids=repr)
def test_rejects_lone_surrogates(s: str) -> None:
    for value in (*_placements(s), {s: 1}, {"é": {s: 1}}, {"a": {s: 1}}):
        with pytest.raises(CanonicalError):
            canonical_json(value)


@pytest.mark.parametrize("bad", [b"bytes", {1, 2}, object(), 1j],
                         ids=["bytes", "set", "object", "complex"])
def test_rejects_non_json_types(bad: object) -> None:
    for value in _placements(bad):
        with pytest.raises(CanonicalError):
            canonical_json(value)


bad_values = st.one_of(
    st.sampled_from(NON_FINITE + UNSAFE_INTS + LONE_SURROGATES),
    st.integers(min_value=2**53).flatmap(lambda n: st.sampled_from([n, -n])),
)


@SETTINGS
@given(json_values(any_keys), bad_values, st.data())
def test_one_bad_value_anywhere_is_rejected(good: object, bad: object, data: st.DataObject) -> None:
    """Wrap `bad` in random containers next to valid siblings: always CanonicalError."""
    value = bad
    for _ in range(data.draw(st.integers(0, 4))):
        if data.draw(st.booleans()):
            items = [good, good]
            items.insert(data.draw(st.integers(0, 2)), value)
            value = items
        else:
            key = data.draw(any_keys)
            siblings = data.draw(st.dictionaries(any_keys, scalars, max_size=3))
            siblings[key] = value
            value = siblings
    with pytest.raises(CanonicalError):
        canonical_json(value)


def _plain_keys(obj: dict[str, object]) -> frozenset[str]:
    return frozenset(
        k for k, v in obj.items()
        if v is None or type(v) in (str, bool) or (type(v) is int and abs(v) <= SAFE)
    )


@settings(SETTINGS, max_examples=200)
@given(st.dictionaries(ascii_keys, st.one_of(scalars, json_values(any_keys)), max_size=6))
def test_canonical_object_equals_rfc8785(obj: dict[str, object]) -> None:
    """The entry encoder's shortcut (values under `plain` keys are not walked) is still JCS."""
    assert canonical.canonical_object(obj, _plain_keys(obj)) == rfc8785.dumps(obj)


@pytest.mark.parametrize("bad", [*NON_FINITE, 2**60, "\ud800"], ids=repr)
def test_canonical_object_rejects_with_canonical_error(bad: object) -> None:
    for obj in ({"a": bad}, {"a": [bad]}, {"a": {"b": bad}}):
        with pytest.raises(CanonicalError):
            canonical.canonical_object(obj, _plain_keys(obj))


@pytest.mark.parametrize("bad", [*NON_FINITE, 2**60, "\ud800"], ids=repr)
def test_canonical_object_slow_path_rejects_with_canonical_error(bad: object) -> None:
    obj = {"a": {"é": bad}}
    with pytest.raises(CanonicalError):
        canonical.canonical_object(obj, _plain_keys(obj))


def test_json_value_is_one_deterministic_form() -> None:
    import enum
    from pathlib import Path

    import numpy as np

    class Color(enum.Enum):
        RED = 1

    got = canonical.json_value({
        "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "big": 2**60,
        "b": b"x", "e": Color.RED, "s": {3, 1, 2}, "p": Path("/a/b"), "n": np.float32(0.5),
        "t": (1, 2.5), 7: None, "o": object(),
    })
    assert got["nan"] == "NaN" and got["inf"] == "Infinity" and got["-inf"] == "-Infinity"
    assert got["big"] == str(2**60) and got["b"].startswith("sha256:") and got["e"] == 1
    assert got["s"] == [1, 2, 3] and got["p"] == "/a/b" and got["n"] == 0.5
    assert got["t"] == [1, 2.5] and got["7"] is None and got["o"] == "<builtins.object>"
    canonical.canonical_json(got)  # and it encodes


@pytest.mark.parametrize("depth", [129, 5000, 100_000])
def test_nesting_beyond_max_depth_has_no_canonical_form(depth: int) -> None:
    """However deep the caller's stack lets Python recurse, the answer is the same."""
    from flchain_plugin.canonical import MAX_DEPTH, check_depth

    value: object = 1
    for _ in range(depth):
        value = [value]
    with pytest.raises(CanonicalError, match=f"nests deeper than {MAX_DEPTH}"):
        canonical_json(value)
    with pytest.raises(CanonicalError, match=f"nests deeper than {MAX_DEPTH}"):
        check_depth(b"[" * depth + b"]" * depth)
    check_depth(b'["' + b"[" * depth + b'"]')  # brackets inside a string do not nest
    check_depth(b'["\\"' + b"[" * depth + b'"]')  # nor after an escaped quote


def test_deep_json_is_refused_even_where_a_library_raised_the_recursion_limit() -> None:
    """py_ecc (under web3) sets the recursion limit to 100,000 at import; Python's JSON
    parser then overflows the C stack on deep input and the process dies. parse_json bounds
    the nesting first, so every reader of untrusted JSON refuses it with an error."""
    import subprocess
    import sys

    code = ("import sys; sys.setrecursionlimit(100_000)\n"
            "from flchain_plugin.canonical import CanonicalError, parse_json\n"
            "for text in ('[' * 200_000, '{\"a\":' * 100_000, b'[' * 200_000):\n"
            "    try:\n"
            "        parse_json(text)\n"
            "    except CanonicalError as e:\n"
            "        print('refused', e)\n"
            "print(parse_json('{\"a\": [[1]]}'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("refused JSON nests deeper than 128") == 3
    assert done.stdout.strip().endswith("{'a': [[1]]}")
