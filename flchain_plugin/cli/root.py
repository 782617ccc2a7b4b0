"""The `flchain` root group, what every command shares with it, and the whole-ledger
commands (init, verify, head, info).

Every command takes `--ledger` and `--json` from `common_options` (before or after the
command name) and prints a readable rich view, or with `--json` one JSON document on
stdout for scripts. Errors are one line on stderr (see `errors`); long listings stream,
so no command holds the whole ledger in memory. The other commands are imported only when
called (entries and proofs in `log`, keys and checkpoints in `checkpoint`, model lineage
and rollback in `lineage`, the integrations in `mlflow` and `lightning`), so `--help` stays
fast and a missing framework (only `mlflow` needs one) never breaks the rest.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .. import notes
from ..commit import LEDGER_ENV, key_path, load_or_create_key
from ..ledger import Ledger
from ..ledger_audit import VerifyReport, known_verifier, verify_ledger
from ..pinning import VERIFIER_ENV, PinError, parse_verifier
from ..store import StoreError
from .errors import JSON_META, Group, InputError, VerificationFailed, library_errors

DEFAULT_LEDGER = "flchain.db"

MAX_INDEX = 2**63 - 1
"""The largest entry index or tree size: SQLite keys are signed 64-bit integers."""
INDEX = click.IntRange(0, MAX_INDEX)


# -- settings, output, the two options every command takes ------------------------------------


@dataclass(frozen=True)
class Settings:
    """The ledger and output a command works with, from its options or the root's.

    `chosen` is the --ledger value as the user gave it (or $FLCHAIN_LEDGER), None when
    defaulted: `mlflow verify` then finds the ledger from the tracking URI instead.
    """

    ledger: Path
    json: bool
    chosen: str | None = None


class Output:
    """Human (rich) or machine (one JSON document) output for one command."""

    def __init__(self, as_json: bool):
        self.json = as_json
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def emit(self, doc: dict[str, Any], human: Callable[[], None]) -> None:
        if self.json:
            click.echo(json.dumps(doc, ensure_ascii=False))
        else:
            human()


def ledger_option(**extra: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--ledger`, spelled once: the root group adds the environment variable."""
    return click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False),
                        metavar="PATH", default=None, **extra,
                        help=f"Ledger file (default: ${LEDGER_ENV}, else ./{DEFAULT_LEDGER}).")


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout.")
"""`--json`, spelled once."""


def _parse_key_verifier(ctx: click.Context, param: click.Parameter,
                        value: str | None) -> notes.Verifier | None:
    if value is None or not value.strip():
        return None
    try:
        return parse_verifier(value, "--key-verifier")
    except PinError as e:
        raise click.BadParameter(str(e).removeprefix("--key-verifier: ")) from None


def key_verifier_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--key-verifier VKEY` (the log's verifier key, or a file holding it; default
    $FLCHAIN_LOG_VERIFIER), spelled once: the key a reader that is not the writer pins."""
    return click.option("--key-verifier", "key_verifier", metavar="VKEY", envvar=VERIFIER_ENV,
                        callback=_parse_key_verifier, help=help)


def _settings(ctx: click.Context, ledger_path: str | None, as_json: bool) -> Settings:
    """The command's own option wins, then the root's (which read the environment)."""
    root = ctx.find_object(Settings)
    chosen = ledger_path
    if chosen is None:
        chosen = root.chosen if root is not None else os.environ.get(LEDGER_ENV) or None
    return Settings(Path(chosen or DEFAULT_LEDGER), as_json or bool(root and root.json), chosen)


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command `--ledger` and `--json`; it is called with its Settings and Output.

    The library's errors it raises become one-line CLI errors (`errors.library_errors`).
    """

    @functools.wraps(f)
    def wrapper(*args: Any, ledger_path: str | None, as_json: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        settings = _settings(ctx, ledger_path, as_json)
        ctx.meta[JSON_META] = settings.json
        with library_errors(settings.ledger):
            return f(settings, Output(settings.json), *args, **kwargs)

    return ledger_option()(json_option(wrapper))


def open_ledger(settings: Settings | Path, *, read_only: bool | None = None) -> Ledger:
    """The existing ledger the settings (or a path) name; a clear error if there is none.

    `read_only` None: opened read-only when the file or its directory is not writable (an
    archive, an auditor's mount), so every reading command works there and never tries
    to change the journal mode; a writing command then fails with a one-line error.
    """
    if isinstance(settings, Path):
        settings = Settings(settings, False)
    path = settings.ledger
    if not path.exists():
        raise InputError(
            f"no ledger at {path}: create one with `flchain init`, or point --ledger "
            f"or ${LEDGER_ENV} at an existing ledger"
        )
    if read_only is None:
        read_only = not _writable(path)
    try:
        return Ledger(path, create=False, read_only=read_only)
    except StoreError as e:
        raise InputError(str(e)) from e


def _writable(path: Path) -> bool:
    """Whether SQLite could write `path` and create its -wal and -shm beside it. access(2)
    also answers for root on a read-only mount or an immutable (chattr +i) file."""
    return os.access(path, os.W_OK) and os.access(path.parent.resolve(), os.W_OK)


def short_digest(digest: str) -> str:
    return digest[:19] + "…" if digest.startswith("sha256:") else digest


def kv_table(rows: list[tuple[str, Any]], title: str | None = None) -> Table:
    t = Table(box=box.SIMPLE, show_header=False, title=title, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(k, v if isinstance(v, Text) else Text(str(v)))
    return t


def hashes_text(hashes: tuple[bytes, ...] | list[bytes]) -> Text:
    return Text("\n".join(h.hex() for h in hashes) or "(none)")


def write_atomic(path: Path, data: str) -> None:
    """Replace `path` whole: a reader sees the old file or the new one, never half."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.",
                                   suffix=".tmp")
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}: choose a path in a "
                         "writable directory") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {what} {path}: {e}") from None


# -- the root group; commands imported on demand ----------------------------------------


@dataclass(frozen=True)
class LazyCommand:
    """A command defined elsewhere as `module:attr`.

    `extra` names the pip extra that provides the framework a command needs, if any;
    `help` is shown in `flchain --help` without importing the command's module.
    """

    module: str
    attr: str
    extra: str | None = None
    help: str | None = None


LAZY_COMMANDS: dict[str, LazyCommand] = {
    "append": LazyCommand("flchain_plugin.cli.log", "append"),
    "log": LazyCommand("flchain_plugin.cli.log", "log_"),
    "show": LazyCommand("flchain_plugin.cli.log", "show"),
    "prove": LazyCommand("flchain_plugin.cli.log", "prove"),
    "consistency": LazyCommand("flchain_plugin.cli.log", "consistency"),
    "keygen": LazyCommand("flchain_plugin.cli.checkpoint", "keygen"),
    "checkpoint": LazyCommand("flchain_plugin.cli.checkpoint", "checkpoint"),
    "lineage": LazyCommand("flchain_plugin.cli.lineage", "lineage", None,
                           "Trace a model version back through rounds and updates."),
    "rollback": LazyCommand("flchain_plugin.cli.lineage", "rollback", None,
                            "Restart training from an earlier recorded model."),
    "mlflow": LazyCommand("flchain_plugin.cli.mlflow", "mlflow", "mlflow",
                          "Check MLflow models and versions against the ledger."),
    "mirror": LazyCommand("flchain_plugin.cli.mirror", "mirror"),
    "lightning": LazyCommand("flchain_plugin.cli.lightning", "lightning", None,
                             "Check Lightning checkpoint files against the ledger."),
    "tiles": LazyCommand("flchain_plugin.cli.tiles", "tiles"),
    "serve": LazyCommand("flchain_plugin.cli.tiles", "serve"),
    "witness": LazyCommand("flchain_plugin.cli.witness", "witness"),
    "report": LazyCommand("flchain_plugin.cli.report", "report", None, "Write the audit report."),
    "audit": LazyCommand("flchain_plugin.cli.audit", "audit"),
    "erase": LazyCommand("flchain_plugin.cli.erase", "erase_"),
}


def _unavailable(name: str, message: str) -> click.Command:
    def fail() -> NoReturn:
        raise InputError(message)

    return click.Command(
        name, callback=fail, help=message, add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def _load(name: str, spec: LazyCommand) -> click.Command:
    """The command `spec` names, or one that fails with what to install."""
    if spec.extra is None:  # no framework needed: an import error is a bug, and says so
        cmd = getattr(importlib.import_module(spec.module), spec.attr)
        assert isinstance(cmd, click.Command)
        return cmd
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as e:
        if e.name and (spec.module == e.name or spec.module.startswith(e.name + ".")):
            return _unavailable(name, f"`flchain {name}` is not in this version "
                                      f"of flchain-plugin ({spec.module} is missing)")
        return _unavailable(name, f"`flchain {name}` needs the {spec.extra} integration: "
                                  f"pip install 'flchain-plugin[{spec.extra}]' "
                                  f"(missing module {e.name})")
    except Exception as e:  # a broken framework install must not break the CLI
        return _unavailable(name, f"`flchain {name}` failed to load {spec.module}: "
                                  f"{type(e).__name__}: {e}; reinstall with "
                                  f"pip install 'flchain-plugin[{spec.extra}]'")
    cmd = getattr(module, spec.attr, None)
    if not isinstance(cmd, click.Command):
        return _unavailable(name, f"`flchain {name}`: {spec.module} defines no click "
                                  f"command {spec.attr!r}; upgrade flchain-plugin")
    return cmd


class LazyGroup(Group):
    """The root group: imports a command's module only when that command is called."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = LAZY_COMMANDS.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        return _load(cmd_name, spec)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if (spec := LAZY_COMMANDS.get(name)) is not None and spec.help is not None:
                rows.append((name, spec.help))
            elif (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@ledger_option(envvar=LEDGER_ENV, show_envvar=True)
@json_option
@click.version_option(package_name="flchain-plugin", prog_name="flchain")
@click.pass_context
def cli(ctx: click.Context, ledger_path: str | None, as_json: bool) -> None:
    """A verifiable, append-only ledger of training events (RFC 9162 Merkle log).

    Every command takes --ledger and --json, here or after its name. Exit status: 0 done,
    1 something does not verify, 2 bad or unreadable input; errors are one line on stderr.
    """
    ctx.obj = Settings(Path(ledger_path or DEFAULT_LEDGER), as_json, ledger_path)


# -- init ----------------------------------------------------------------------------------


@cli.command()
@click.option("--origin", help="The log's origin line (default: flchain.local/<random>); "
                               "name signing keys after it.")
@click.option("--key-verifier", "pin", metavar="VKEY",
              help="Pin this verifier key (the log key kept elsewhere) instead of creating "
                   "<ledger>.key.")
@common_options
def init(settings: Settings, out: Output, origin: str | None, pin: str | None) -> None:
    """Create a new ledger, its checkpoint key <ledger>.key, and pin the key's verifier.

    The pin in the file saves auditors a look-up; it is no defence against whoever can
    write the file. Give the verifier key to the parties who check the log.
    """
    path = settings.ledger
    if path.exists():
        raise InputError(f"{path} already exists: choose another --ledger path, "
                         f"or use the ledger that is there")
    if origin is not None and not notes.valid_name(origin):
        raise InputError(f"--origin {origin!r} is invalid: want non-empty, no spaces, no '+' "
                         "(it is also the signing key's name), e.g. example.com/my-run")
    verifier = _init_pin(pin, origin)
    key_file = key_path(path)
    if verifier is None and key_file.exists():
        raise InputError(f"{key_file} already exists: remove it, or pin its verifier key with "
                         "--key-verifier VKEY")
    with Ledger(path, create=True, origin=origin or (verifier.name if verifier else None)) as led:
        if verifier is None:
            verifier = load_or_create_key(key_file, led.origin).verifier
        led.pin_verifier(verifier)
        head = led.head()
        doc = {"ledger": str(path), "origin": led.origin, "size": head.size,
               "root": head.root.hex(), "verifier": verifier.vkey,
               "key_file": None if pin else str(key_file)}
    hint = (f"next: flchain append, then flchain checkpoint sign --key {key_file}"
            if pin is None else "next: flchain append, then sign with the pinned key")
    def human() -> None:
        out.console.print(Panel(kv_table([
            ("ledger", path), ("origin", doc["origin"]), ("size", 0),
            ("key file", doc["key_file"] or "(kept elsewhere)"), ("verifier", doc["verifier"])]),
            title="ledger created", expand=False))
        out.console.print(Text("give the verifier key to whoever checks this log; keep the "
                               "key file secret", style="dim"))
        out.console.print(Text(hint, style="dim"))

    out.emit(doc, human)


def _init_pin(pin: str | None, origin: str | None) -> notes.Verifier | None:
    """The verifier key `init --key-verifier` pins, checked against `--origin`."""
    if pin is None:
        return None
    try:
        verifier = parse_verifier(pin, "--key-verifier")  # a vkey or a file holding one
    except PinError as e:
        raise InputError(str(e)) from None
    if origin is not None and verifier.name != origin:
        raise InputError(f"--key-verifier is named {verifier.name!r}, not --origin {origin!r}: "
                         "a log key is named after its origin")
    return verifier


# -- verify, head, info ----------------------------------------------------------------------


def _stored_entry_text(led: Ledger, index: int) -> str | None:
    row = led.store.entry(index)
    if row is None:
        return None
    text = row.data.decode("utf-8", "replace")
    return text if len(text) <= 2000 else text[:2000] + "…"


@cli.command()
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: on a terminal for large ledgers).")
@key_verifier_option("Check every stored checkpoint's signature with this log key (default: "
                     f"${VERIFIER_ENV}, else the key pinned in the ledger, else <ledger>.key's).")
@common_options
def verify(settings: Settings, out: Output, progress: bool | None,
           key_verifier: notes.Verifier | None) -> None:
    """Recompute and check the whole ledger.

    Every leaf, node, tree head, stored row and stored checkpoint; exits 1 naming the first
    fault. Warns when the newest tree head is covered by no signed checkpoint.
    """
    given = key_verifier
    with open_ledger(settings) as led:
        size = led.size
        show_bar = progress if progress is not None else (out.err.is_terminal and size >= 50_000)
        with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=out.err, transient=True,
                      disable=not show_bar) as bar:
            task = bar.add_task("verify", total=size)
            report = verify_ledger(led, verifier=given, progress=lambda done, total: bar.update(
                task, completed=done, total=total))
        problem = _problem_doc(led, report)
    doc = {"ok": problem is None, "size": report.size, "root": report.root.hex(),
           "heads": report.heads, "checkpoints": report.checkpoints, "problem": problem,
           "signed_size": report.signed_size, "head_signed": report.head_signed,
           "verifier": report.verifier, "verifier_source": report.verifier_source,
           "warnings": report.warnings}
    if problem is not None:
        if not out.json:
            rows = [("problem", problem["detail"])]
            if problem.get("stored") is not None:
                rows.append(("stored entry", problem["stored"]))
            out.console.print(Panel(kv_table(rows), title="verification FAILED",
                                    border_style="red", expand=False))
        raise VerificationFailed(f"ledger does not verify: {problem['detail']}", doc)
    out.emit(doc, lambda: out.console.print(Panel(kv_table([
        ("entries", report.size), ("tree heads", report.heads),
        ("checkpoints", report.checkpoints), ("signatures", _signatures_text(report)),
        ("signed head", "-" if report.signed_size is None else f"size {report.signed_size}"),
        ("root", doc["root"])]), title="ledger verified", border_style="green", expand=False)))
    for warning in report.warnings:
        click.echo(f"flchain: warning: {warning}", err=True)


def _problem_doc(led: Ledger, report: VerifyReport) -> dict[str, Any] | None:
    """The report's problem as JSON, with the stored entry's text where an entry is named."""
    p = report.problem
    if p is None:
        return None
    doc: dict[str, Any] = {"kind": p.kind, "index": p.index, "level": p.level,
                           "detail": p.detail}
    if p.kind in ("entry", "leaf"):
        doc["stored"] = _stored_entry_text(led, p.index)
    return doc


def _signatures_text(report: VerifyReport) -> str:
    if report.verifier is None:
        return "not checked: no verifier key pinned, given or in <ledger>.key"
    return f"checked with the {report.verifier_source} key {report.verifier}"


@cli.command()
@common_options
def head(settings: Settings, out: Output) -> None:
    """Print the latest tree head (size, root, time)."""
    with open_ledger(settings) as led:
        h = led.head()
        origin = led.origin
    doc = {"origin": origin, "size": h.size, "root": h.root.hex(), "timestamp": h.timestamp}
    out.emit(doc, lambda: out.console.print(kv_table([
        ("origin", origin), ("size", h.size), ("root", doc["root"]),
        ("time", format_time(h.timestamp))], title="tree head")))


def format_time(ts: float) -> str:
    """A stored head time for people; a hand-edited one is shown as it is, not trusted."""
    if not ts:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return f"{ts!r} (not a time)"


@cli.command()
@common_options
def info(settings: Settings, out: Output) -> None:
    """Describe the ledger, its latest checkpoint and the log's verifier key (the key to
    give mirrors, witnesses and clients): pinned at `init`, else `<ledger>.key`'s."""
    with open_ledger(settings) as led:
        h = led.head()
        cps = led.store.checkpoints()
        key, key_from = known_verifier(led)
        origin = led.origin
    latest = cps[-1][0] if cps else None
    doc = {"ledger": str(settings.ledger), "origin": origin, "size": h.size,
           "root": h.root.hex(), "timestamp": h.timestamp,
           "file_bytes": settings.ledger.stat().st_size, "checkpoints": len(cps),
           "latest_checkpoint_size": latest, "verifier": key.vkey if key else None,
           "verifier_from": key_from}
    out.emit(doc, lambda: out.console.print(kv_table([
        ("ledger", settings.ledger), ("origin", origin), ("size", h.size),
        ("root", doc["root"]), ("updated", format_time(h.timestamp)),
        ("file size", f"{doc['file_bytes']:,} bytes"), ("checkpoints", len(cps)),
        ("latest checkpoint", "-" if latest is None else f"size {latest}"),
        ("log key", f"{key.vkey} ({key_from})" if key else "-")],
        title="ledger")))


def main() -> None:
    """Console script entry point."""
    cli(prog_name="flchain")
