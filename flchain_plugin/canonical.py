"""Canonical JSON (RFC 8785, JCS) for ledger entries and signed statements.

Two encoders that must agree byte for byte: the `rfc8785` package for everything, and
`json.dumps` for the subset ledger entries mostly are (strings, safe integers, booleans,
null, lists, objects with ASCII keys, no floats), which is about three times faster. The
fast path is taken only after `_plain` has checked the value is in that subset; the tests
prove the two equal with hypothesis.
"""

from __future__ import annotations

import json
import math
from typing import Any

import rfc8785

MAX_SAFE_INT = 2**53 - 1

_dumps = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


class CanonicalError(ValueError):
    """A value has no canonical JSON form (non-finite number, unsafe integer, bad key)."""


def _plain(value: Any, path: str) -> bool:
    """True if `value` is in the fast-path subset; raise for values JCS cannot encode."""
    t = type(value)
    if t is str or value is None or t is bool:
        return True
    if t is int:
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return True
        raise CanonicalError(f"{path}: integer {value} is beyond 2^53; encode it as a string")
    if t is float:
        if not math.isfinite(value):
            raise CanonicalError(f"{path}: non-finite number {value!r}")
        return False
    if t is list or t is tuple:
        ok = True
        for i, v in enumerate(value):
            ok = _plain(v, f"{path}[{i}]") and ok
        return ok
    if t is dict:
        ok = True
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalError(f"{path}: object key {k!r} is not a string")
            ok = _plain(v, f"{path}.{k}") and ok and k.isascii()
        return ok
    raise CanonicalError(f"{path}: {t.__name__} has no JSON form")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 encoding of `value`. Raises CanonicalError for values JCS cannot carry."""
    try:
        if _plain(value, "$"):
            return _dumps(value).encode()
        return rfc8785.dumps(value)
    except UnicodeEncodeError as e:
        raise CanonicalError(f"string is not valid Unicode (lone surrogate?): {e}") from e
    except (rfc8785.CanonicalizationError, ValueError) as e:
        if isinstance(e, CanonicalError):
            raise
        raise CanonicalError(str(e)) from e
