"""What LedgerStrategy enforces before it aggregates a reply. Defaults are the safe ones."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..digest import json_digest
from ..notes import NoteError, Verifier
from .protocol import DEFAULT_WEIGHT_KEY


@dataclass(frozen=True)
class Policy:
    """The verification policy, recorded in the run's `run` entry.

    - `require_signatures`: refuse replies without a signed statement (`unsigned`). Off
      only for clients that cannot run `signing_mod`; their updates are then recorded
      unsigned.
    - `allowed_keys`: verifier keys (`name+id+base64`) that may sign; any other key is
      `unknown_client`. None means trust on first use: a node's first valid key is
      registered (a `member` entry) and must sign everything after.
    - `max_update_norm`: L2 norm bound on (update - global model), over floating tensors
      (`out_of_bounds`). None: no bound.
    - `max_update_bytes`: bound on the reply's array bytes, checked before hashing.
    - `max_examples`: bound on the weight a client claims (`num-examples`): stops one
      client from dominating a weighted average.
    - `weight_key`: the MetricRecord key holding the client's weight; it must be a
      positive finite number (`malformed` otherwise).
    - `require_dataset`: refuse statements without a dataset commitment.
    """

    require_signatures: bool = True
    allowed_keys: frozenset[str] | None = None
    max_update_norm: float | None = None
    max_update_bytes: int | None = None
    max_examples: int | None = None
    weight_key: str = DEFAULT_WEIGHT_KEY
    require_dataset: bool = False
    _verifiers: dict[str, Verifier] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.require_signatures, bool):
            raise ValueError("require_signatures must be True or False")
        if self.allowed_keys is not None:
            keys = self.allowed_keys
            if isinstance(keys, str) or not isinstance(keys, Iterable):
                raise ValueError("allowed_keys must be a collection of verifier key strings")
            keys = frozenset(keys)
            for k in keys:
                try:
                    self._verifiers[k] = Verifier.parse(k)
                except (NoteError, TypeError, AttributeError) as e:
                    raise ValueError(f"allowed_keys: {k!r} is not a verifier key: {e}") from None
            if not keys:
                raise ValueError("allowed_keys is empty: no client could sign; use None for "
                                 "trust on first use")
            object.__setattr__(self, "allowed_keys", keys)
        if self.max_update_norm is not None and not (
            isinstance(self.max_update_norm, (int, float))
            and math.isfinite(self.max_update_norm) and self.max_update_norm > 0
        ):
            raise ValueError(f"max_update_norm must be a positive number, "
                             f"got {self.max_update_norm!r}")
        for name in ("max_update_bytes", "max_examples"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if not isinstance(self.weight_key, str) or not self.weight_key:
            raise ValueError("weight_key must be a non-empty string")
        if not isinstance(self.require_dataset, bool):
            raise ValueError("require_dataset must be True or False")

    def verifier(self, key: str) -> Verifier | None:
        """The parsed allow-listed key (None: not allow-listed, or trust on first use)."""
        return self._verifiers.get(key)

    @property
    def trust_on_first_use(self) -> bool:
        return self.allowed_keys is None

    def _keys_json(self) -> Any:
        if self.allowed_keys is None:
            return "tofu"
        keys = sorted(self.allowed_keys)
        if len(keys) <= 32:
            return keys
        return {"allowlist": len(keys), "digest": json_digest(keys)}

    def to_json(self) -> dict[str, Any]:
        """The policy as the `run` entry records it."""
        return {
            "require_signatures": self.require_signatures,
            "keys": self._keys_json(),
            "max_update_norm": self.max_update_norm,
            "max_update_bytes": self.max_update_bytes,
            "max_examples": self.max_examples,
            "weight_key": self.weight_key,
            "require_dataset": self.require_dataset,
        }
