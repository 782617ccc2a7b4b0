"""The log's verifier key, as a party other than the writer pins it.

Whoever can rewrite the ledger file can also re-sign it with the key that sits beside it,
so the key that counts is the one a reader holds in its own configuration: an argument,
else the environment variable FLCHAIN_LOG_VERIFIER (the vkey `flchain keygen` prints, or a
file holding it). MLflow loads, Lightning resumes and any other reader that is not the
writer read it here, so there is one variable and one parsing rule for the whole project.
"""

from __future__ import annotations

import os

from .notes import NoteError, Verifier

VERIFIER_ENV = "FLCHAIN_LOG_VERIFIER"
"""The environment variable holding the log's verifier key (`<name>+<id>+<key>`, or the
path of a file holding it)."""


class PinError(ValueError):
    """A pinned verifier key cannot be read; the message names where it came from."""


def parse_verifier(value: Verifier | str, name: str = "verifier") -> Verifier:
    """`value` as a Verifier: a Verifier, a vkey string, or the path of a file holding one.
    PinError naming `name` (the argument or variable it came from) otherwise."""
    if isinstance(value, Verifier):
        return value
    if not isinstance(value, str):
        raise PinError(f"{name}: want a verifier key string or notes.Verifier, "
                       f"got {type(value).__name__}")
    text = value.strip()
    try:
        if os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                text = f.read(4096).strip()
        return Verifier.parse(text)
    except (NoteError, ValueError, OSError) as e:
        raise PinError(
            f"{name}: {value[:100]!r} is not a verifier key ({e}); give the log's vkey "
            "(`flchain keygen` prints it) or a file holding it"
        ) from None


def configured_verifier(given: Verifier | str | None, name: str = "verifier") -> Verifier | None:
    """The key a reader pins: `given` (named `name` in errors), else FLCHAIN_LOG_VERIFIER,
    else None (nothing pinned)."""
    if given is not None and (not isinstance(given, str) or given.strip()):
        return parse_verifier(given, name)
    env = os.environ.get(VERIFIER_ENV, "")
    return parse_verifier(env, VERIFIER_ENV) if env.strip() else None


__all__ = ["VERIFIER_ENV", "PinError", "configured_verifier", "parse_verifier"]
