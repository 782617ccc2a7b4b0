"""How every `flchain` command fails: one line on stderr that says what to do.

Exit status 2 for bad or unreadable input (usage, arguments, files, a damaged ledger file),
1 for something that does not verify. Nothing else reaches the user: click's usage errors
are cut to one line, the library's errors are mapped here once, and anything unforeseen
is reported as one line naming it as a bug (set FLCHAIN_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from .. import merkle, notes
from ..digest import DigestError
from ..entries import EntryError
from ..store import StoreError
from ..store.sqlite import store_error

PREFIX = "flchain: error: "
JSON_META = "flchain.json"
"""ctx.meta key: the running command was asked for --json (set by `common_options`)."""


def json_requested() -> bool:
    """Whether the running command prints JSON, so an error prints its document too."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(JSON_META))


def one_line(message: str) -> str:
    return " ".join(message.split())


class InputError(click.ClickException):
    """Bad usage or input (exit 2): a one-line message saying what to do.

    `doc`, if given, is printed on stdout as the command's JSON document when the command
    runs with --json, so scripts get {"ok": false, ...} as well as the exit status.
    """

    exit_code = 2

    def __init__(self, message: str, doc: dict[str, Any] | None = None):
        super().__init__(one_line(message))
        self.doc = doc
        self.json = doc is not None and json_requested()

    def show(self, file: Any = None) -> None:
        if self.json:
            click.echo(json.dumps(self.doc, ensure_ascii=False))
        click.echo(PREFIX + self.message, err=True)


class VerificationFailed(InputError):
    """Something does not verify (exit 1); `doc` is printed on stdout in --json mode."""

    exit_code = 1


def _os_message(e: OSError, ledger: Path | None = None) -> str:
    where = f" {e.filename}" if e.filename else ""
    if ledger is not None and e.filename and Path(e.filename) in (ledger, *ledger.parents):
        where = f" ledger {ledger} ({e.filename})"
    return f"cannot use{where}: {e.strerror or e}: check the path and its permissions"


@contextlib.contextmanager
def library_errors(ledger: Path) -> Iterator[None]:
    """Turn the library's errors into one-line CLI errors with the right exit status."""
    try:
        yield
    except (EntryError, DigestError, notes.KeyFileError, notes.NoteError) as e:
        raise InputError(str(e)) from e
    except StoreError as e:  # opening errors are raised as InputError by open_ledger
        if _database_error(e.__cause__):  # the store already said what to do
            raise InputError(str(e)) from e
        raise VerificationFailed(f"{e}") from e
    except merkle.ProofError as e:
        raise VerificationFailed(f"proof does not verify: {e}") from e
    except sqlite3.Error as e:  # raised outside the store: read it the store's way
        raise InputError(str(store_error(ledger, e))) from e
    except OverflowError as e:
        raise InputError(f"a number is out of range ({e}): ledger indices and sizes are "
                         "integers from 0 to 2^63-1") from e
    except RecursionError as e:
        raise InputError("the input is nested too deeply to read: flatten it") from e
    except OSError as e:
        if e.errno == errno.EPIPE:
            raise
        raise InputError(_os_message(e, ledger)) from e


def _database_error(cause: BaseException | None) -> bool:
    """An error of the database under the store (SQLite, or psycopg for a server ledger,
    told apart without importing psycopg): unreadable input, exit 2, not a failed check."""
    return isinstance(cause, sqlite3.Error) or (
        cause is not None and type(cause).__module__.split(".")[0] == "psycopg")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(PREFIX + one_line(message), err=True)
    sys.exit(code)


def _usage_message(e: click.UsageError) -> str:
    where = f"`{e.ctx.command_path} --help`" if e.ctx is not None else "`flchain --help`"
    return f"{e.format_message()} (see {where})"


def _needs_a_command(e: click.UsageError) -> NoReturn:
    """A group run without a command: its help on stdout, one error line on stderr."""
    ctx = e.ctx
    if ctx is None or not isinstance(ctx.command, click.Group):
        _fail(_usage_message(e), 2)
    click.echo(ctx.get_help())
    names = ", ".join(ctx.command.list_commands(ctx))
    _fail(f"`{ctx.command_path}` needs a command: one of {names}", 2)


class OneLineErrors(click.Command):
    """click's standalone `main`, except that every failure is one line (see module doc)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args,
                              **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            _needs_a_command(e)
        except click.UsageError as e:
            _fail(_usage_message(e), 2)
        except InputError as e:
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), 2)
        except click.Abort:
            _fail("aborted: nothing more was done", 2)
        except OSError as e:
            if e.errno != errno.EPIPE:
                _fail(_os_message(e), 2)
            # a closed pipe (`flchain log | head`): stop quietly, as click does
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed pipe
            sys.exit(1)
        except Exception as e:
            if os.environ.get("FLCHAIN_DEBUG"):
                raise
            _fail(f"internal error ({type(e).__name__}: {e}); this is a bug in "
                  "flchain-plugin: please report it with the command that caused it", 2)
        sys.exit(rv if isinstance(rv, int) else 0)


class Command(OneLineErrors, click.Command):
    """Every `flchain` command: one-line errors even when run on its own."""


class Group(OneLineErrors, click.Group):
    """Every `flchain` group: its commands and subgroups are of these classes too."""

    command_class = Command
    group_class = type
