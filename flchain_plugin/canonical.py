"""Canonical JSON (RFC 8785, JCS) for ledger entries and signed statements.

Two encoders that must agree byte for byte: the `rfc8785` package for everything, and
`json.dumps` for the subset ledger entries mostly are (strings, safe integers, booleans,
null, lists, objects with ASCII keys, floats whose Python repr is their ECMAScript form),
which is several times faster. `_fast` checks the value is in that subset; the tests prove
the two encoders equal with hypothesis.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import rfc8785

MAX_SAFE_INT = 2**53 - 1

MAX_DEPTH = 128
"""Arrays and objects nest at most this deep in an entry or statement. Without a bound,
how deep a value may nest would depend on the caller's stack (Python's JSON parser and
encoders recurse), so one process could log an entry another cannot read back."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}

_dumps = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


class CanonicalError(ValueError):
    """A value has no canonical JSON form (non-finite number, unsafe integer, bad key)."""


def check_depth(data: bytes) -> None:
    """Raise CanonicalError if JSON text `data` nests arrays/objects beyond MAX_DEPTH.

    Linear and mostly in C: strings are cut out first so brackets inside them do not
    count; text with few brackets is passed without that.
    """
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return
    steps = (_STEP[b[0]] for b in _BRACKETS.findall(_STRING.sub(b"", data)))
    if max(itertools.accumulate(steps), default=0) > MAX_DEPTH:
        raise CanonicalError(f"JSON nests deeper than {MAX_DEPTH} arrays/objects")


def parse_json(text: str | bytes) -> Any:
    """`json.loads` of untrusted text with its nesting bounded first (CanonicalError beyond
    MAX_DEPTH). Python's parser recurses in C: its only guard is the recursion limit, which
    libraries raise at import (py_ecc to 100,000, py-evm to 12,288), and then deep input
    overflows the C stack and kills the process instead of raising RecursionError."""
    check_depth(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text))
    return json.loads(text)


class _Slow(Exception):
    """The value needs the full encoder (float formatting or key order differ)."""


def _fast(value: Any) -> Any:
    """`value` with integral floats made ints, ready for json.dumps; raise _Slow where
    json.dumps would differ from JCS, CanonicalError where JCS has no encoding.

    Python's float repr equals ECMAScript's Number-to-String for non-integral values in
    [1e-4, 1e16) (both print the shortest round-trip digits, without exponent), and an
    integral float up to 2^53 prints in ECMAScript as the integer it equals.
    """
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return value
        raise CanonicalError(f"integer {value} beyond 2^53: write it as a string")
    if t is float:
        if value != value or value in (math.inf, -math.inf):
            raise CanonicalError(f"non-finite number {value!r}")
        a = abs(value)
        if value == int(value):
            if a <= MAX_SAFE_INT:
                return int(value)
            raise _Slow
        if 1e-4 <= a < 1e16:
            return value
        raise _Slow
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalError(f"object key {k!r} is not a string")
            if not k.isascii():
                raise _Slow
            tv = type(v)
            if (
                tv is str
                or v is None
                or tv is bool
                or (tv is int and -MAX_SAFE_INT <= v <= MAX_SAFE_INT)
            ):
                out[k] = v
            else:
                out[k] = _fast(v)
        return out
    if t is list or t is tuple:
        return [_fast(v) for v in value]
    raise CanonicalError(f"{t.__name__} has no JSON form")


def _full(value: Any) -> bytes:
    """The `rfc8785` encoder, its errors turned into CanonicalError."""
    try:
        return rfc8785.dumps(value)
    except UnicodeEncodeError as e:
        raise CanonicalError(f"string is not valid Unicode (lone surrogate?): {e}") from e
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as e:
        raise CanonicalError(str(e) or type(e).__name__) from e


def _encode(value: Any, prepare: Callable[[Any], Any]) -> bytes:
    """json.dumps of `prepare(value)`, or the full encoder where `prepare` says the fast
    path would differ from JCS; refused beyond MAX_DEPTH, however deep the stack allows."""
    try:
        try:
            prepared = prepare(value)
        except _Slow:
            data = _full(value)
        else:
            data = _dumps(prepared).encode()
    except UnicodeEncodeError as e:
        raise CanonicalError(f"string is not valid Unicode (lone surrogate?): {e}") from e
    except RecursionError:
        raise CanonicalError(f"value nests deeper than {MAX_DEPTH} arrays/objects") from None
    check_depth(data)
    return data


def canonical_json(value: Any) -> bytes:
    """RFC 8785 encoding of `value`. Raises CanonicalError for values JCS cannot carry."""
    return _encode(value, _fast)


def canonical_object(obj: dict[str, Any], plain: frozenset[str]) -> bytes:
    """`canonical_json(obj)` for an object with ASCII keys whose values under the keys in
    `plain` are already known to be strings, safe integers, booleans or null (validated
    entry fields): only the other values are walked."""
    return _encode(
        obj, lambda o: {k: (v if k in plain or v is None else _fast(v)) for k, v in o.items()}
    )


def json_value(value: Any) -> Any:
    """A deterministic JSON form of a Python value, for metrics and hyper-parameters that
    go into entries and signed statements: every integration records the same value as
    the same bytes.

    Non-finite floats become the strings "NaN", "Infinity", "-Infinity"; integers beyond
    2^53 strings; bytes their `sha256:` digest; numpy/torch scalars their value; sets are
    sorted; anything else its repr, without memory addresses.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INT else str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, Enum):
        return json_value(value.value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((json_value(v) for v in value), key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy/torch scalars
        return json_value(value.item())
    if type(value).__name__ == "Namespace" and hasattr(value, "__dict__"):
        return json_value(vars(value))
    text = repr(value)
    # a repr with a memory address differs from run to run: keep only the type
    return f"<{type(value).__module__}.{type(value).__qualname__}>" if " at 0x" in text else text
