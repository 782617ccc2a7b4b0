"""The `flchain` command; `main` is the console script."""

from .ledger import cli, main

__all__ = ["cli", "main"]
