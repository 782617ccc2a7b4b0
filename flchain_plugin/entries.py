"""Typed ledger entries and their strict canonical encoding (formats v1).

Every entry is a frozen dataclass; its JSON form is `{"v": 1, "type": ..., <fields>}`
encoded per RFC 8785. Decoding is strict so that what the log holds is exactly what
this module can produce: unknown types, missing or extra fields, wrong types,
non-finite numbers and oversized entries are refused with the field named.
Entries carry digests and metadata only, never data or weights.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, ClassVar, NewType, Union

from .canonical import CanonicalError, canonical_json, canonical_object, check_depth
from .digest import is_digest

FORMAT_VERSION = 1
MAX_ENTRY_BYTES = 64 * 1024

Digest = NewType("Digest", str)
"""`sha256:` + 64 lowercase hex."""

JsonObject = dict[str, Any]
"""A JSON object (e.g. metrics); numbers must be finite."""


class Reason(str, Enum):
    """Why a reply was refused: the `reason` of a `rejected` entry (format v1: a code, once
    written, keeps its meaning; a new rule gets a new code). Which check raises which code,
    and in what order, is `flchain_plugin.verification.CHECKS`."""

    CLIENT_ERROR = "client_error"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_CLIENT = "unknown_client"
    WRONG_RUN = "wrong_run"
    WRONG_ROUND = "wrong_round"
    STALE_PARENT = "stale_parent"
    DIGEST_MISMATCH = "digest_mismatch"
    REPLAY = "replay"
    MALFORMED = "malformed"
    NON_FINITE = "non_finite"
    OUT_OF_BOUNDS = "out_of_bounds"
    NOT_POST_QUANTUM = "not_post_quantum"


REJECT_REASONS = frozenset(r.value for r in Reason)
"""Every valid `rejected.reason` (the values of `Reason`)."""


class EntryError(ValueError):
    """An entry is malformed; the message names the field and what was expected."""


def check_digest(value: object, name: str = "digest") -> str:
    """Return `value` if it is a digest string, else raise EntryError naming `name`."""
    if not is_digest(value):
        raise EntryError(f"{name}: {value!r} is not a digest ('sha256:' + 64 lowercase hex)")
    return value


Checker = typing.Callable[[object, str], Any]
"""Checks one field's value and returns it as the entry holds it (normalised)."""


def _fail(path: str, want: str, value: object) -> typing.NoReturn:
    raise EntryError(f"{path}: want {want}, got {type(value).__name__}")


def _check_str(value: object, path: str) -> object:
    if type(value) is not str:
        _fail(path, "a string", value)
    return value


def _beyond_2_53(path: str, value: int | None) -> EntryError:
    """The one message for an integer that JSON numbers cannot carry exactly."""
    shown = "" if value is None else f" {value}"
    return EntryError(f"{path}: integer{shown} beyond 2^53: write it as a string")


def _check_int(value: object, path: str) -> object:
    if type(value) is float and abs(value) >= 2**53:
        # An integer literal beyond 2^53 parses as the double it equals, or as infinity
        # past 400 digits (`_parse_int`): it is still an integer, not a float, to the user.
        raise _beyond_2_53(path, int(value) if math.isfinite(value) else None)
    if type(value) is not int:
        _fail(path, "an integer", value)
    if not -(2**53) < value < 2**53:  # type: ignore[operator]
        raise _beyond_2_53(path, value)  # type: ignore[arg-type]
    return value


def _check_bool(value: object, path: str) -> object:
    if type(value) is not bool:
        _fail(path, "a boolean", value)
    return value


def _exact_double(value: int) -> bool:
    try:
        return float(value) == value
    except OverflowError:
        return False


def _check_number(value: object, path: str) -> object:
    """JCS numbers are doubles: a large integral number becomes the double it equals."""
    if type(value) is int:
        if -(2**53) < value < 2**53:
            return value
        if not _exact_double(value):
            raise _beyond_2_53(path, value)
        return float(value)
    if type(value) is not float:
        _fail(path, "a number", value)
    if not math.isfinite(value):  # type: ignore[arg-type]
        raise EntryError(f"{path}: non-finite number {value!r}")
    return value


def _check_object(value: object, path: str) -> object:
    # Contents (finite numbers, safe integers, string keys) are checked by the canonical
    # encoder, which walks the value anyway when the entry is encoded at construction.
    if type(value) is not dict:
        _fail(path, "an object", value)
    return value


def _checker(tp: Any) -> Checker:
    """A validator for one field annotation, built once per entry class."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) != 1:  # pragma: no cover - a programming error in an entry class
            raise TypeError(f"unsupported union {tp!r}")
        check = _checker(inner[0])

        def optional(value: object, path: str) -> object:
            return None if value is None else check(value, path)

        return optional
    if origin is list or origin is tuple:
        item = _checker(typing.get_args(tp)[0])

        def each(value: object, path: str) -> object:
            if type(value) is not list:
                _fail(path, "a list", value)
            out = [item(v, f"{path}[{i}]") for i, v in enumerate(value)]  # type: ignore[arg-type]
            return value if all(a is b for a, b in zip(out, value, strict=True)) else out

        return each
    simple: dict[Any, Checker] = {
        Digest: check_digest,
        str: _check_str,
        int: _check_int,
        bool: _check_bool,
        float: _check_number,
        dict: _check_object,
    }
    if origin is dict:
        return _check_object
    if tp in simple:
        return simple[tp]
    raise TypeError(f"unsupported field type {tp!r}")  # pragma: no cover


@dataclass(frozen=True)
class Entry:
    """Base of all entry types. `TYPE` is the JSON `type`; `SUBJECTS` name the digest fields
    the ledger indexes for lookup by digest.

    Lineage is declared here, on the types, so that every integration agrees on which
    entries record a model (`flchain_plugin.lineage` reads only these three names):
    `MODEL` names the field holding the model digest a type records (it vouches that these
    weights existed and says how they came to be); `PARENTS` the field naming what that
    model was made from (a digest or a list of them; None: the record is an origin);
    `NAMED_BY` other digest fields a child's `PARENTS` may name the record by.

    `OMITTED_WHEN_NONE` names fields added to a type after format v1 was first written:
    absent from the JSON when None (and so absent from stored entries that predate them),
    so an old entry's canonical bytes, and every leaf hash, stay exactly as they were.
    """

    TYPE: ClassVar[str] = ""
    SUBJECTS: ClassVar[tuple[str, ...]] = ()
    MODEL: ClassVar[str | None] = None
    PARENTS: ClassVar[str | None] = None
    NAMED_BY: ClassVar[tuple[str, ...]] = ()
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()
    _NAMES: ClassVar[tuple[str, ...]] = ()
    _CHECKS: ClassVar[tuple[tuple[str, str, Checker], ...]] = ()
    _PLAIN: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        for name, path, check in self._CHECKS:
            v = getattr(self, name)
            if type(v) is tuple:  # accept tuples where lists are meant
                v = list(v)
                object.__setattr__(self, name, v)
            checked = check(v, path)
            if checked is not v:
                object.__setattr__(self, name, checked)
        self._check(self.__dict__)
        # Encode once, at construction: an entry that exists can be logged, and appending
        # (hot path, under the write lock's shadow) reuses these bytes.
        object.__setattr__(self, "_bytes", self._encode())

    @classmethod
    def _check(cls, values: Mapping[str, Any]) -> None:
        """Value rules beyond the field types; runs before encoding, on the fields of an
        entry being built or of stored bytes being checked."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object, `v` and `type` included."""
        out: dict[str, Any] = {"v": FORMAT_VERSION, "type": self.TYPE}
        for name in self._NAMES:
            value = getattr(self, name)
            if value is not None or name not in self.OMITTED_WHEN_NONE:
                out[name] = value
        return out

    def encode(self) -> bytes:
        """Canonical bytes (RFC 8785): what the Merkle leaf hashes."""
        return self._bytes  # type: ignore[attr-defined,no-any-return]

    def _encode(self) -> bytes:
        try:
            data = canonical_object(self.to_json(), self._PLAIN)
        except CanonicalError as e:
            for name in self._NAMES:  # name the field (error path only)
                try:
                    canonical_json(getattr(self, name))
                except CanonicalError as fe:
                    raise EntryError(f"{self.TYPE}.{name}: {fe}") from e
            raise EntryError(f"{self.TYPE}: {e}") from e
        if len(data) > MAX_ENTRY_BYTES:
            raise EntryError(
                f"{self.TYPE}: entry is {len(data)} bytes, limit {MAX_ENTRY_BYTES}; "
                "put large data in the blob store and log its digest"
            )
        return data

    def rebased(self, delta: int) -> Entry:
        """This entry with every leaf index it names moved by `delta`: how a batch built
        for one log size is appended after another writer grew the log. Entries that name
        no leaf index are returned as they are."""
        return self

    @property
    def subjects(self) -> tuple[str, ...]:
        """Digests this entry is about (indexed for `Ledger.find`)."""
        return tuple(v for n in self.SUBJECTS if (v := getattr(self, n)) is not None)


ENTRY_TYPES: dict[str, type[Entry]] = {}


def entry_type(cls: type[Entry]) -> type[Entry]:
    """Register an entry class under its TYPE and resolve its field annotations once."""
    if not cls.TYPE or cls.TYPE in ENTRY_TYPES:
        raise TypeError(f"entry type {cls.TYPE!r} missing or registered twice")
    hints = typing.get_type_hints(cls)
    cls._NAMES = tuple(f.name for f in fields(cls))
    cls._CHECKS = tuple((n, f"{cls.TYPE}.{n}", _checker(hints[n])) for n in cls._NAMES)
    scalar = {str, Digest, int, bool, str | None, Digest | None, int | None, bool | None}
    cls._PLAIN = frozenset(["v", "type", *(n for n in cls._NAMES if hints[n] in scalar)])
    ENTRY_TYPES[cls.TYPE] = cls
    return cls


@entry_type
@dataclass(frozen=True)
class Run(Entry):
    """A training run began: its strategy, configuration and starting model."""

    TYPE: ClassVar[str] = "run"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("model",)
    MODEL: ClassVar[str | None] = "model"  # the initial model: an origin
    run: str
    strategy: str
    config: Digest
    model: Digest
    policy: JsonObject = field(default_factory=dict)
    # The aggregator chain's parameters ({"strategy": [{"class", "params"}...], "updates":
    # "kept"}) that `flchain audit replay` rebuilds it from; optional, so run entries
    # recorded before replay existed keep their bytes.
    aggregation: JsonObject | None = None

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"aggregation"})


@entry_type
@dataclass(frozen=True)
class Member(Entry):
    """A client key registered for a run (`via`: "allowlist" or "tofu")."""

    TYPE: ClassVar[str] = "member"
    run: str
    node: str
    key: str
    via: str = "allowlist"


@entry_type
@dataclass(frozen=True)
class Update(Entry):
    """An accepted client update: the signed statement's fields and its signature.

    The statement a client signs is exactly {run, round, node, parent, update,
    num_examples, metrics, dataset, nonce}, so an auditor can re-check `signature`
    (Ed25519 or ML-DSA-44, by `key`'s type) and `pq_signature` (ML-DSA-44, by `pq_key`).
    """

    TYPE: ClassVar[str] = "update"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("update",)
    MODEL: ClassVar[str | None] = "update"
    PARENTS: ClassVar[str | None] = "parent"
    run: str
    round: int
    node: str
    update: Digest
    parent: Digest
    num_examples: int
    metrics: JsonObject
    dataset: Digest | None
    nonce: str
    key: str | None
    signature: str | None
    # A second, ML-DSA-44 signature beside an Ed25519 one (statement.py): optional, so
    # updates recorded before it existed keep their bytes.
    pq_key: str | None = None
    pq_signature: str | None = None

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"pq_key", "pq_signature"})

    @classmethod
    def _check(cls, values: Mapping[str, Any]) -> None:
        pq = (values.get("pq_key"), values.get("pq_signature"))
        if (pq[0] is None) != (pq[1] is None):
            raise EntryError("update.pq_key: pq_key and pq_signature go together: both or "
                             "neither")
        if pq[0] is not None and values["key"] is None:
            raise EntryError("update.pq_key: a second signature needs a first: key is null")


@entry_type
@dataclass(frozen=True)
class Rejected(Entry):
    """A refused update and why (`reason`: a `Reason` value; `detail` names the check)."""

    TYPE: ClassVar[str] = "rejected"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("update",)
    run: str
    round: int
    node: str
    reason: str
    detail: str
    update: Digest | None = None
    parent: Digest | None = None

    @classmethod
    def _check(cls, values: Mapping[str, Any]) -> None:
        if values["reason"] not in REJECT_REASONS:
            raise EntryError(
                f"rejected.reason: {values['reason']!r} is not one of {sorted(REJECT_REASONS)}"
            )


@entry_type
@dataclass(frozen=True)
class Model(Entry):
    """A model version and what it was made from (`inputs`: leaf indices of updates)."""

    TYPE: ClassVar[str] = "model"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("model",)
    MODEL: ClassVar[str | None] = "model"
    PARENTS: ClassVar[str | None] = "parent"  # a kept round names its own model: no parent
    run: str
    round: int
    model: Digest
    parent: Digest | None
    inputs: list[int]
    aggregator: str
    metrics: JsonObject = field(default_factory=dict)

    def rebased(self, delta: int) -> Model:
        if not self.inputs or not delta:
            return self
        return replace(self, inputs=[i + delta for i in self.inputs])


@entry_type
@dataclass(frozen=True)
class Evaluation(Entry):
    """Evaluation metrics of a model version (federated or centralised)."""

    TYPE: ClassVar[str] = "evaluation"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("model",)
    run: str
    round: int
    model: Digest
    metrics: JsonObject
    source: str = "federated"


@entry_type
@dataclass(frozen=True)
class Dataset(Entry):
    """A salted dataset commitment; the salt stays with the data owner."""

    TYPE: ClassVar[str] = "dataset"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("dataset",)
    dataset: Digest
    owner: str
    scheme: str
    examples: int | None = None
    name: str | None = None


@entry_type
@dataclass(frozen=True)
class Credit(Entry):
    """A contract rule's award to a contributor, replayable from the log."""

    TYPE: ClassVar[str] = "credit"
    run: str
    round: int
    node: str
    rule: str
    amount: float
    basis: JsonObject = field(default_factory=dict)


@entry_type
@dataclass(frozen=True)
class Rollback(Entry):
    """Training restarted from an earlier recorded model version."""

    TYPE: ClassVar[str] = "rollback"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("model",)
    MODEL: ClassVar[str | None] = "model"  # an earlier version restored; `previous` is no parent
    model: Digest
    previous: Digest | None
    reason: str
    run: str | None = None


@entry_type
@dataclass(frozen=True)
class Erasure(Entry):
    """An off-chain blob was destroyed; the log keeps its digest.

    `kind` (optional, omitted when None so older erasures keep their bytes): "update" (a
    kept update's key and ciphertext were destroyed), "weights" (a plain blob was deleted)
    or "update+weights" (both)."""

    TYPE: ClassVar[str] = "erasure"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("blob",)
    blob: Digest
    reason: str
    kind: str | None = None

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"kind"})


@entry_type
@dataclass(frozen=True)
class Mlflow(Entry):
    """An MLflow logged model (`kind` "logged_model") or registered version ("model_version").

    `files` is the directory digest of the model's files; `model` the model digest of its
    weights where known, which links it to Flower and Lightning entries.
    """

    TYPE: ClassVar[str] = "mlflow"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("files", "model")
    MODEL: ClassVar[str | None] = "model"
    PARENTS: ClassVar[str | None] = "parents"  # parent logged models, by their files digest
    NAMED_BY: ClassVar[tuple[str, ...]] = ("files",)
    kind: str
    model_id: str
    files: Digest
    model: Digest | None = None
    run_id: str | None = None
    name: str | None = None
    version: str | None = None
    params: Digest | None = None
    datasets: list[dict] = field(default_factory=list)
    parents: list[Digest] = field(default_factory=list)
    status: str = "ok"
    detail: JsonObject = field(default_factory=dict)


@entry_type
@dataclass(frozen=True)
class TrainingCheckpoint(Entry):
    """A Lightning training checkpoint: file digest, weights digest, progress and parent.

    Not `checkpoint.Checkpoint`, the log's signed tree head; the JSON type stays
    "checkpoint" (format v1).
    """

    TYPE: ClassVar[str] = "checkpoint"
    SUBJECTS: ClassVar[tuple[str, ...]] = ("file", "model")
    MODEL: ClassVar[str | None] = "model"
    PARENTS: ClassVar[str | None] = "parent"
    file: Digest
    model: Digest
    epoch: int
    step: int
    name: str
    parent: Digest | None = None
    monitor: str | None = None
    score: float | None = None
    hparams: Digest | None = None
    datasets: list[Digest] = field(default_factory=list)


@entry_type
@dataclass(frozen=True)
class Anchor(Entry):
    """A signed checkpoint of this log anchored on an external chain."""

    TYPE: ClassVar[str] = "anchor"
    chain: str
    tx: str
    size: int
    root: str


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise EntryError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse_int(text: str) -> int | float:
    """JCS numbers are IEEE doubles: an integer literal beyond 2^53 that is the canonical
    form of a double is that double (a diverging loss of 3.5e17 is written
    `350000000000000000`); any other, e.g. a 64-bit id written as a number, stays an int,
    which the field checks refuse by name."""
    digits = len(text) - (text[0] == "-")
    if digits <= 15:
        return int(text)
    if digits > 400:  # no finite double has that many integer digits
        return float("inf") if text[0] != "-" else float("-inf")
    value = int(text)
    if -(2**53) < value < 2**53:
        return value
    try:
        as_float = float(value)
    except OverflowError:
        return value
    return as_float if canonical_json(as_float).decode() == text else value


# NaN and Infinity literals parse to floats so that field validation names the field.
_loads = json.JSONDecoder(object_pairs_hook=_pairs, parse_int=_parse_int).decode
# Stored bytes must re-encode to themselves, which already refuses duplicate keys (the
# re-encoding drops one), so `decode` skips the Python-level pairs hook: 5x faster.
_loads_stored = json.JSONDecoder(parse_int=_parse_int).decode


def from_json(obj: object) -> Entry:
    """Build a typed entry from a parsed JSON object, strictly."""
    cls = _entry_class(obj)
    assert isinstance(obj, dict)
    return cls(**{k: obj[k] for k in cls._NAMES if k in obj})


def _entry_class(obj: object) -> type[Entry]:
    """The entry class a parsed JSON object claims to be, after checking its field names."""
    if not isinstance(obj, dict):
        raise EntryError(f"entry: want a JSON object, got {type(obj).__name__}")
    if obj.get("v") != FORMAT_VERSION:
        raise EntryError(f"v: {obj.get('v')!r}, want {FORMAT_VERSION}")
    name = obj.get("type")
    cls = ENTRY_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise EntryError(f"type: unknown entry type {name!r}, want one of {sorted(ENTRY_TYPES)}")
    names = set(cls._NAMES)
    given = set(obj) - {"v", "type"}
    if extra := sorted(given - names):
        raise EntryError(f"{name}.{extra[0]}: unknown field")
    if missing := sorted(n for n in names - given - cls.OMITTED_WHEN_NONE):
        raise EntryError(f"{name}.{missing[0]}: missing field")
    return cls


def _parse(loads: typing.Callable[[str], Any], data: bytes) -> Any:
    """JSON text parsed by `loads`, every failure an EntryError: bad UTF-8 or JSON, and
    nesting beyond MAX_DEPTH, refused before the recursive parser can overflow."""
    try:
        check_depth(data)
        return loads(data.decode("utf-8"))
    except CanonicalError as e:
        raise EntryError(f"entry: {e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EntryError(f"entry is not JSON: {e}") from e
    except RecursionError:  # pragma: no cover - check_depth bounds the nesting first
        raise EntryError("entry: JSON nests too deep") from None


def decode(data: bytes) -> Entry:
    """Parse stored entry bytes; they must be the canonical encoding of a valid entry."""
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError(f"entry is {len(data)} bytes, limit {MAX_ENTRY_BYTES}")
    entry = from_json(_parse(_loads_stored, bytes(data)))
    if entry.encode() != bytes(data):
        raise EntryError(f"{entry.TYPE}: bytes are not in canonical form (RFC 8785)")
    return entry


def check_stored(data: bytes) -> tuple[str, list[str]]:
    """What `decode` checks, without building the entry: the type and subject digests of
    stored bytes that are the canonical encoding of a valid entry. `verify` runs this on
    every entry, so it skips the dataclass; any doubt falls back to `decode`'s verdict."""
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError(f"entry is {len(data)} bytes, limit {MAX_ENTRY_BYTES}")
    try:
        obj = _parse(_loads_stored, data)
        cls = _entry_class(obj)
        for name, path, check in cls._CHECKS:
            check(obj.get(name), path)  # an omitted field is None: refused unless optional
        cls._check(obj)
        canonical = canonical_object(obj, cls._PLAIN) == data
    except (UnicodeDecodeError, json.JSONDecodeError, EntryError, CanonicalError):
        canonical = False
    if not canonical:
        entry = decode(data)  # raises with the field named, or proves the fast check wrong
        return entry.TYPE, list(entry.subjects)
    return cls.TYPE, [d for n in cls.SUBJECTS if (d := obj[n]) is not None]


def parse_json(text: str | bytes) -> Entry:
    """Parse one entry from JSON text in any formatting (e.g. a line of `flchain append`)."""
    if len(text) > MAX_ENTRY_BYTES:
        raise EntryError(f"entry is {len(text)} bytes, limit {MAX_ENTRY_BYTES}")
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    entry = from_json(_parse(_loads, raw))
    entry.encode()  # size and canonical-form checks happen here, before any append
    return entry
