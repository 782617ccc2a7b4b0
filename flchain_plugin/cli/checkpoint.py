"""`flchain keygen|checkpoint`: signing keys, and C2SP checkpoints signed and cosigned.

A witness (`checkpoint cosign`) keeps, per log, the last checkpoint it cosigned in a state
file and cosigns a new one only after checking the ledger's consistency proof from it, so
it never vouches for two versions of history.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .. import checkpoint as tlog
from .. import notes
from ..canonical import parse_json
from .errors import Command, Group, InputError, VerificationFailed
from .root import (
    MAX_INDEX,
    Output,
    Settings,
    common_options,
    kv_table,
    open_ledger,
    read_text,
    write_atomic,
)

STATE_VERSION = 1


def _passphrase_from(file: Path | None, env: str | None) -> bytes | None:
    if file is not None and env is not None:
        raise InputError("give one of --passphrase-file and --passphrase-env, not both")
    if file is not None:
        try:
            raw = file.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read passphrase file {file}: {e}") from None
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if not raw:
            raise InputError(f"passphrase file {file} is empty")
        return raw
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise InputError(f"environment variable {env} is not set or empty: export the "
                             "passphrase in it, or use --passphrase-file")
        return value.encode("utf-8")
    return None


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _load_key(path: Path, file: Path | None, env: str | None) -> notes.Signer:
    """Load a key file, asking for its passphrase only if it is encrypted and none was given."""
    passphrase = _passphrase_from(file, env)
    try:
        encrypted = b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"key file {path} does not exist: make one with `flchain keygen`"
                         ) from None
    if encrypted and passphrase is None:
        if not _interactive():
            raise InputError(f"key file {path} is encrypted: pass --passphrase-file or "
                             "--passphrase-env")
        passphrase = click.prompt(f"Passphrase for {path}", hide_input=True,
                                  err=True).encode("utf-8")
    if not encrypted and passphrase is not None:
        passphrase = None  # an unencrypted key needs none; not worth failing over
    return notes.load_private_key(path, passphrase)


def _passphrase_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--passphrase-env", metavar="VAR",
                     help="Read the key passphrase from this environment variable.")(f)
    return click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
                        help="Read the key passphrase from this file (first line).")(f)


_KEYGEN: dict[tuple[str, bool], Callable[[str], notes.Signer]] = {
    ("ed25519", False): notes.generate_key,
    ("ed25519", True): notes.generate_cosignature_key,
    ("ml-dsa-44", False): notes.generate_ml_dsa_key,
    ("ml-dsa-44", True): notes.generate_subtree_cosignature_key,
}
"""(--alg, --witness) -> the key `keygen` makes."""


@click.command(cls=Command)
@click.argument("name", required=False)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file to create (mode 0600).")
@click.option("--witness", is_flag=True,
              help="Make a witness key (cosignature/v1; subtree/v1 with ml-dsa-44) for "
                   "`checkpoint cosign`.")
@click.option("--alg", type=click.Choice(["ed25519", "ml-dsa-44"]), default="ed25519",
              show_default=True, help="Signature algorithm: ml-dsa-44 is post-quantum "
              "(FIPS 204), 1,312-byte keys and 2,420-byte signatures.")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@_passphrase_options
@common_options
def keygen(settings: Settings, out: Output, name: str | None, out_path: Path, witness: bool,
           alg: str, force: bool, passphrase_file: Path | None,
           passphrase_env: str | None) -> None:
    """Make an Ed25519 or ML-DSA-44 key; print its verifier key.

    NAME defaults to the ledger's origin, which a log key must be named after. Without
    --passphrase-file/--passphrase-env, an interactive run asks for an optional passphrase.
    An ml-dsa-44 key signs client statements (signing_mod) and a log's second checkpoint
    signature; with --witness, ML-DSA-44 subtree/v1 cosignatures (tlog-cosignature v1.1).
    """
    if name is None:
        if witness or not settings.ledger.exists():
            raise InputError("give the key a NAME (a log key is named after the ledger origin "
                             "that `flchain init` printed)")
        with open_ledger(settings) as led:
            name = led.origin
    if not notes.valid_name(name):
        raise InputError(f"key name {name!r} is invalid: want non-empty, no spaces, no '+'")
    passphrase = _passphrase_from(passphrase_file, passphrase_env)
    if passphrase is None and passphrase_file is None and passphrase_env is None and _interactive():
        typed = click.prompt("Passphrase (empty for none)", default="", show_default=False,
                             hide_input=True, confirmation_prompt=True, err=True)
        passphrase = typed.encode("utf-8") or None
    signer = _KEYGEN[alg, witness](name)
    if out_path.exists() and not force:
        raise InputError(f"{out_path} exists: pass --force to replace it, or choose another --out")
    try:
        notes.save_private_key(signer, out_path, passphrase, overwrite=force)
    except OSError as e:  # the error names save_private_key's temporary file
        raise InputError(f"cannot write key file {out_path}: {e.strerror or e}: choose --out "
                         "in a writable directory") from None
    kind = next(k for k, t in notes.KEY_FILE_TYPES.items() if t == signer.SIG_TYPE)
    doc = {"name": name, "verifier": signer.verifier_key, "key_file": str(out_path),
           "type": kind, "encrypted": passphrase is not None}
    out.emit(doc, lambda: out.console.print(Panel(kv_table(
        [("name", name), ("type", doc["type"]), ("key file", f"{out_path} (0600)"),
         ("encrypted", "yes" if passphrase else "no"), ("verifier", signer.verifier_key)]),
        title="witness key" if witness else "log key" if alg == "ed25519" else f"{alg} key",
        expand=False),
        Text("share the verifier key; keep the key file secret", style="dim")))


@click.group(cls=Group)
def checkpoint() -> None:
    """Sign, verify and cosign checkpoints.

    A checkpoint is the ledger's tree head as a C2SP signed note, for others to hold the
    log to its history.
    """


def _signatures_doc(opened: notes.Note, log: notes.Verifier) -> list[dict[str, Any]]:
    return [{"name": s.name, "key_id": f"{s.key_id:08x}", "verified": s.verified,
             "role": ("log" if s.verifier == log else "witness" if s.verified else "unknown"),
             "timestamp": s.timestamp} for s in opened.signatures]


@checkpoint.command(name="sign")
@click.option("--key", "key_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The log's private key.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the signed note to this file.")
@_passphrase_options
@common_options
def checkpoint_sign(settings: Settings, out: Output, key_path: Path, out_path: Path | None,
                    passphrase_file: Path | None, passphrase_env: str | None) -> None:
    """Sign the tree head as a checkpoint; store it.

    Without --out and --json the note itself is printed, ready to redirect to a file.
    """
    signer = _load_key(key_path, passphrase_file, passphrase_env)
    if isinstance(signer, notes.CosignatureSigner):
        raise InputError(f"{key_path} is a witness key: sign checkpoints with the log key "
                         "(`flchain keygen` without --witness); witnesses use `checkpoint cosign`")
    with open_ledger(settings) as led:
        if signer.name != led.origin:
            raise InputError(f"key {key_path} is named {signer.name!r}, not the ledger origin "
                             f"{led.origin!r}: make the log key with `flchain keygen "
                             f"{led.origin} --out KEY`")
        note = led.sign_checkpoint(signer)
    cp = tlog.unverified_checkpoint(note)
    if out_path is not None:
        write_atomic(out_path, note)
    doc = {"origin": cp.origin, "size": cp.size, "root": cp.root_hash.hex(),
           "verifier": signer.verifier_key, "note": note,
           "file": None if out_path is None else str(out_path)}
    if out.json:
        out.emit(doc, lambda: None)
    elif out_path is None:
        click.echo(note, nl=False)
    else:
        out.console.print(Panel(kv_table([
            ("origin", cp.origin), ("size", cp.size), ("root", doc["root"]),
            ("note", out_path), ("verifier", signer.verifier_key)]),
            title="checkpoint signed", expand=False))


@checkpoint.command(name="latest")
@common_options
def checkpoint_latest(settings: Settings, out: Output) -> None:
    """Print the latest stored checkpoint note."""
    with open_ledger(settings) as led:
        note = led.latest_checkpoint()
    if note is None:
        raise InputError("the ledger has no signed checkpoint yet: run "
                         "`flchain checkpoint sign --key KEY`")
    cp = tlog.unverified_checkpoint(note)
    if out.json:
        out.emit({"size": cp.size, "root": cp.root_hash.hex(), "note": note}, lambda: None)
    else:
        click.echo(note, nl=False)


@checkpoint.command(name="add")
@click.argument("note_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key-verifier", required=True, metavar="VKEY",
              help="The log's verifier key; the note must carry its signature.")
@common_options
def checkpoint_add(settings: Settings, out: Output, note_file: Path, key_verifier: str) -> None:
    """Store a cosigned checkpoint in the ledger.

    So `checkpoint latest` hands out the note with its witnesses' cosignatures. The note
    must be signed by the log key and match the ledger's tree at its size.
    """
    note = read_text(note_file, "note file")
    log = notes.Verifier.parse(key_verifier)
    with open_ledger(settings) as led:
        try:
            cp = led.add_checkpoint_note(note, log)
        except (tlog.CheckpointError, ValueError) as e:
            raise VerificationFailed(f"not storing {note_file}: {e}",
                                     {"ok": False, "problem": str(e)}) from None
    doc = {"ok": True, "size": cp.size, "root": cp.root_hash.hex(),
           "signatures": len(notes.open_note(note, [log]).signatures)}
    out.emit(doc, lambda: out.console.print(
        f"stored checkpoint at size {cp.size} with {doc['signatures']} signatures"))


@checkpoint.command(name="verify")
@click.argument("note_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key-verifier", required=True, metavar="VKEY",
              help="The log's verifier key (name+id+key), as `flchain keygen` printed it.")
@click.option("--witness-verifier", "witness_keys", multiple=True, metavar="VKEY",
              help="A witness verifier key whose cosignature to check (repeatable).")
@click.option("--quorum", type=click.IntRange(1, None), default=None, metavar="K",
              help="Require cosignatures of K distinct witnesses among --witness-verifier "
                   "instead of all of them.")
@click.option("--no-ledger", is_flag=True,
              help="Check the signature only, not the ledger's tree at that size.")
@common_options
def checkpoint_verify(settings: Settings, out: Output, note_file: Path, key_verifier: str,
                      witness_keys: tuple[str, ...], quorum: int | None, no_ledger: bool
                      ) -> None:
    """Check a checkpoint's signatures and root.

    The log key must have signed it, each --witness-verifier must have cosigned it (or K
    of them with --quorum K, counted by `quorum.verify_quorum` as clients count them), and
    the ledger's tree at the checkpoint's size must have its root.
    """
    note = read_text(note_file, "note file")
    log = notes.Verifier.parse(key_verifier)
    witnesses = [notes.Verifier.parse(w) for w in witness_keys]

    def fail(message: str) -> NoReturn:
        raise VerificationFailed(message, {"ok": False, "problem": message})

    led = None if no_ledger else open_ledger(settings)
    try:
        origin = led.origin if led is not None else None
        try:
            cp, opened = tlog.open_checkpoint(note, log, witnesses, origin=origin)
        except tlog.CheckpointError as e:
            fail(f"checkpoint {note_file} does not verify: {e}")
        if led is not None:
            if cp.size > led.size:
                fail(f"checkpoint is for size {cp.size} but the ledger has {led.size} entries: "
                     "this copy of the ledger is behind or the log forked")
            if led.root_at(cp.size) != cp.root_hash:
                fail(f"checkpoint root {cp.root_hash.hex()} differs from the ledger's tree at "
                     f"size {cp.size} ({led.root_at(cp.size).hex()}): the ledger was altered "
                     "or the log forked")
    finally:
        if led is not None:
            led.close()
    _check_witnesses(note, log, witnesses, quorum, opened, fail)
    sigs = _signatures_doc(opened, log)
    doc = {"ok": True, "origin": cp.origin, "size": cp.size, "root": cp.root_hash.hex(),
           "ledger_checked": led is not None, "signatures": sigs}

    def human() -> None:
        t = Table("signer", "key id", "role", "verified", box=box.SIMPLE)
        for s in sigs:
            t.add_row(s["name"], s["key_id"], s["role"], "yes" if s["verified"] else "-")
        out.console.print(Panel(kv_table([
            ("origin", cp.origin), ("size", cp.size), ("root", doc["root"]),
            ("ledger", "matches" if led is not None else "not checked")]),
            title="checkpoint verified", border_style="green", expand=False))
        out.console.print(t)

    out.emit(doc, human)


def _check_witnesses(note: str, log: notes.Verifier, witnesses: list[notes.Verifier],
                     quorum: int | None, opened: notes.Note,
                     fail: Callable[[str], NoReturn]) -> None:
    """Every named witness cosigned, or with `quorum`, that many distinct ones did."""
    if quorum is None:
        missing = [w.vkey for w in witnesses if not opened.signed_by(w)]
        if missing:
            fail(f"checkpoint has no cosignature by witness {missing[0]}")
        return
    from ..quorum import QuorumError, verify_quorum

    names = {w.name for w in witnesses}
    if quorum > len(names):
        raise InputError(f"--quorum {quorum} is more than the {len(names)} witness(es) "
                         "named by --witness-verifier")
    try:
        verify_quorum(note, log, witnesses, quorum)
    except QuorumError as e:
        fail(f"checkpoint is not witnessed: {e}")


def _last_cosigned(origin: str, last: Any) -> tlog.Checkpoint:
    """One log's record in a witness state file, checked as strictly as a checkpoint."""
    if not isinstance(last, dict) or not isinstance(last.get("root"), str):
        raise ValueError(f"log {origin!r}: want an object with a size and a hex root")
    size = last.get("size")
    if type(size) is not int or not 0 <= size <= MAX_INDEX:
        raise ValueError(f"log {origin!r}: size {size!r} is not an integer from 0 to 2^63-1")
    return tlog.Checkpoint(origin, size, bytes.fromhex(last["root"]))


def _load_state(path: Path, witness: notes.Verifier) -> dict[str, Any]:
    if not path.exists():
        return {"version": STATE_VERSION, "witness": witness.vkey, "logs": {}}
    try:
        state = parse_json(read_text(path, "witness state file"))
        if (not isinstance(state, dict) or state.get("version") != STATE_VERSION
                or not isinstance(state.get("logs"), dict)):
            raise ValueError(f"want an object with version {STATE_VERSION} and a 'logs' object")
        for origin, last in state["logs"].items():
            _last_cosigned(origin, last)
    except (ValueError, KeyError, TypeError, RecursionError, tlog.CheckpointError) as e:
        raise InputError(f"witness state file {path} is not valid ({e}): restore it from "
                         "a backup; never reset it, or the witness can be made to fork") from None
    if state.get("witness") != witness.vkey:
        raise InputError(f"witness state file {path} belongs to witness {state.get('witness')}, "
                         f"not {witness.vkey}: use that witness's own state file")
    return state


@checkpoint.command(name="cosign")
@click.argument("note_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The witness's private key (from `flchain keygen NAME --witness`).")
@click.option("--log-verifier", required=True, metavar="VKEY",
              help="The log's verifier key; the note must carry its signature.")
@click.option("--state", "state_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The witness's state file: the last checkpoint it cosigned per log.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the cosigned note here (default: replace NOTE_FILE).")
@_passphrase_options
@common_options
def checkpoint_cosign(settings: Settings, out: Output, note_file: Path, key_path: Path,
                      log_verifier: str, state_path: Path, out_path: Path | None,
                      passphrase_file: Path | None, passphrase_env: str | None) -> None:
    """Cosign a checkpoint as a witness.

    Only after checking the ledger's consistency proof from the last checkpoint this
    witness cosigned for the log (kept in --state), so it never vouches for a fork.
    """
    note = read_text(note_file, "note file")
    log = notes.Verifier.parse(log_verifier)
    signer = _load_key(key_path, passphrase_file, passphrase_env)
    if signer.SIG_TYPE not in notes.TIMESTAMPED:
        raise InputError(f"{key_path} is a log key: witnesses cosign with a witness key from "
                         "`flchain keygen NAME --witness [--alg ml-dsa-44] --out KEY`")
    with _locked(state_path):
        state = _load_state(state_path, signer.verifier)
        doc = _cosign(settings, note, note_file, log, signer, state, state_path, out_path)
    out.emit(doc, lambda: out.console.print(Panel(kv_table([
        ("origin", doc["origin"]), ("size", doc["size"]), ("root", doc["root"]),
        ("consistent with", "empty tree (first cosignature)" if doc["previous_size"] is None
         else f"last cosigned size {doc['previous_size']}"),
        ("witness", signer.verifier_key), ("note", doc["file"])]),
        title="checkpoint cosigned", border_style="green", expand=False)))


@contextlib.contextmanager
def _locked(state_path: Path) -> Iterator[None]:
    """Hold the witness's state lock, so two cosign runs cannot both extend one state."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = state_path.with_name(state_path.name + ".lock")
    try:
        f = open(lock, "a")  # noqa: SIM115 - closed by the with below
    except OSError as e:
        raise InputError(f"cannot lock witness state file {state_path} ({lock}: "
                         f"{e.strerror or e}): keep the state in a writable directory") from None
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _cosign(settings: Settings, note: str, note_file: Path, log: notes.Verifier,
            signer: notes.Signer, state: dict[str, Any], state_path: Path,
            out_path: Path | None) -> dict[str, Any]:
    """Check, cosign, write the note, then record it in the state; returns the JSON doc."""

    def refuse(message: str) -> NoReturn:
        raise VerificationFailed(message, {"ok": False, "problem": message})

    with open_ledger(settings) as led:
        try:
            new, _ = tlog.open_checkpoint(note, log, origin=led.origin)
        except tlog.CheckpointError as e:
            refuse(f"refusing to cosign: {e}")
        entry = state["logs"].get(new.origin)
        last = _last_cosigned(new.origin, entry) if entry else None
        last_size = last.size if last else 0
        if new.size > led.size:
            refuse(f"refusing to cosign: checkpoint size {new.size} is beyond the ledger's "
                   f"{led.size} entries, so no consistency proof exists")
        proof = (led.consistency_proof(last_size, new.size).hashes
                 if last_size <= new.size else ())
        try:
            cosigned, _ = tlog.Witness(signer).cosign(note, log, proof, last, origin=led.origin)
        except tlog.WitnessError as e:
            refuse(str(e))
    # State first: a crash in between loses a cosignature, never the witness's memory.
    state["logs"][new.origin] = {"size": new.size, "root": new.root_hash.hex(),
                                 "cosigned_at": int(time.time())}
    write_atomic(state_path, json.dumps(state, indent=2) + "\n")
    target = out_path or note_file
    write_atomic(target, cosigned)
    return {"ok": True, "origin": new.origin, "size": new.size, "root": new.root_hash.hex(),
            "previous_size": last.size if last else None, "witness": signer.verifier_key,
            "note": cosigned, "file": str(target)}
