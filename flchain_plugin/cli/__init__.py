"""The `flchain` command, one package: `main` is the console script.

`root` holds the root group, the options every command shares (`--ledger`, `--json`) and
the whole-ledger commands, and loads the other commands' modules when they are called;
`errors` is how every command fails (one line, exit 2 or 1); `log`, `checkpoint`,
`lineage`, `mlflow` and `lightning` hold the other commands. Only `mlflow` needs a
framework installed.
"""

from .root import cli, main

__all__ = ["cli", "main"]
