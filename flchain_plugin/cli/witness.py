"""`flchain witness serve|evidence`: a C2SP tlog-witness over HTTP, and what it caught.

`serve` binds its socket before anything else can fail late, so a bad key, a bad log key
or a port in use is one line and exit 2 before the first request; it then prints the URL
and the witness's verifier keys (the keys the logs' clients pin) and runs uvicorn until
SIGINT or SIGTERM, finishing the requests in flight.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from pathlib import Path

import click
from rich import box
from rich.table import Table
from rich.text import Text

from .. import notes
from ..pinning import PinError, parse_verifier
from ..witness import WitnessService, WitnessState
from ..witness_http import check_prefix, create_app
from .checkpoint import _load_key, _passphrase_options
from .errors import Group, InputError
from .root import Output, json_option


@click.group(cls=Group)
def witness() -> None:
    """Run a C2SP tlog-witness that cosigns logs' checkpoints; show the evidence it kept."""


def parse_log(value: str, where: str) -> tuple[str, notes.Verifier]:
    """`VKEY` (origin = the key's name) or `ORIGIN=VKEY`; VKEY may be a file holding one."""
    try:
        key = parse_verifier(value, where)
        return key.name, key
    except PinError:
        pass
    origin, sep, vkey = value.partition("=")
    if not sep or not notes.valid_name(origin):
        raise InputError(f"{where}: {value[:100]!r} is not VKEY or ORIGIN=VKEY (a log's "
                         "verifier key, as `flchain keygen` prints it)")
    try:
        return origin, parse_verifier(vkey, where)
    except PinError as e:
        raise InputError(str(e)) from None


def _logs(values: tuple[str, ...], files: tuple[Path, ...]) -> dict[str, list[notes.Verifier]]:
    pairs = [parse_log(v, "--log") for v in values]
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read --logs-file {path}: {e}") from None
        for n, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                pairs.append(parse_log(line.strip(), f"{path} line {n}"))
    if not pairs:
        raise InputError("give the logs to witness: --log VKEY (or ORIGIN=VKEY), "
                         "or --logs-file FILE with one per line")
    logs: dict[str, list[notes.Verifier]] = {}
    for origin, key in pairs:
        logs.setdefault(origin, []).append(key)
    return logs


def _signers(paths: tuple[Path, ...], pass_file: Path | None,
             pass_env: str | None) -> list[notes.Signer]:
    signers = []
    for path in paths:
        try:
            signer = _load_key(path, pass_file, pass_env)
        except (notes.KeyFileError, OSError) as e:
            raise InputError(f"cannot load --key {path}: {e}") from None
        if signer.SIG_TYPE == notes.ED25519:
            raise InputError(f"--key {path} is a log key (ed25519); a witness cosigns with a "
                             "witness key: flchain keygen NAME --witness --out FILE")
        signers.append(signer)
    return signers


def _bind(host: str, port: int) -> socket.socket:
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as e:
        hint = ": choose another --port" if e.errno == errno.EADDRINUSE else ""
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
    return sock


def _url(sock: socket.socket, prefix: str) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}{prefix}"


@witness.command()
@click.option("--key", "keys", multiple=True, required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Witness key file (flchain keygen --witness); repeat to cosign with each.")
@click.option("--log", "logs", multiple=True, metavar="[ORIGIN=]VKEY",
              help="A log to witness: its verifier key (origin = the key name), or "
                   "ORIGIN=VKEY; repeatable, several keys per origin allowed.")
@click.option("--logs-file", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A file with one [ORIGIN=]VKEY per line ('#' comments).")
@click.option("--state", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="SQLite file for the latest cosigned checkpoints and the evidence.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7380, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port; the URL printed names it).")
@click.option("--prefix", default="", help="URL path prefix, e.g. /witness.")
@_passphrase_options
@json_option
def serve(keys: tuple[Path, ...], logs: tuple[str, ...], logs_file: tuple[Path, ...],
          state: Path, host: str, port: int, prefix: str, passphrase_file: Path | None,
          passphrase_env: str | None, as_json: bool) -> None:
    """Cosign the checkpoints of the given logs over HTTP (POST <prefix>/add-checkpoint)."""
    import uvicorn

    try:
        prefix = check_prefix(prefix)
    except ValueError as e:
        raise InputError(f"--{e}") from None
    signers = _signers(keys, passphrase_file, passphrase_env)
    trusted = _logs(logs, logs_file)
    try:
        store = WitnessState(state)
    except (sqlite3.Error, OSError) as e:
        raise InputError(f"cannot open --state {state}: {e}: give a writable SQLite file") from None
    service = WitnessService(store, signers, trusted)
    sock = _bind(host, port)
    url = _url(sock, prefix)
    out = Output(as_json)
    doc = {"url": url, "verifiers": [v.vkey for v in service.verifiers],
           "logs": sorted(trusted), "state": str(state)}
    out.emit(doc, lambda: out.console.print(
        f"witness listening on {url}\n" + "".join(f"verifier {v}\n" for v in doc["verifiers"])
        + f"witnessing {len(trusted)} log(s); state in {state}; Ctrl-C to stop",
        soft_wrap=True))
    config = uvicorn.Config(create_app(service, prefix=prefix), log_level="warning",
                            access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        store.close()


@witness.command()
@click.option("--state", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The witness's state file (flchain witness serve --state).")
@json_option
def evidence(state: Path, as_json: bool) -> None:
    """List the conflicting checkpoints a witness kept: forks, rollbacks, bad proofs."""
    if not state.exists():
        raise InputError(f"no witness state at {state}: give the --state of `witness serve`")
    try:
        store = WitnessState(state)
        rows = store.evidence()
        origins = store.origins()
        store.close()
    except (sqlite3.Error, OSError, ValueError) as e:
        raise InputError(f"cannot read witness state {state}: {e}") from None
    out = Output(as_json)
    doc = {"state": str(state), "logs": [{"origin": o, "size": s} for o, s in origins],
           "evidence": [{"id": r.id, "origin": r.origin, "kind": r.kind, "time": r.time,
                         "detail": r.detail, "cosigned": r.cosigned,
                         "conflicting": r.conflicting} for r in rows]}

    def human() -> None:
        if not rows:
            out.console.print(Text(f"no evidence: {len(origins)} log(s) witnessed, none "
                                   "contradicted its cosigned checkpoint"))
            return
        t = Table(box=box.SIMPLE, title=f"{len(rows)} conflicting checkpoint(s)",
                  title_justify="left")
        for col in ("id", "origin", "kind", "detail"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(str(r.id), r.origin, r.kind, r.detail)
        out.console.print(t)
        out.console.print(Text("both notes of each pair: flchain witness evidence --json",
                               style="dim"))

    out.emit(doc, human)
