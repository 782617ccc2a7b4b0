"""`flchain erase DIGEST`: crypto-shred a kept update (or delete a blob), keep the log whole.

See `flchain_plugin.erasure` for the order of events and `flchain_plugin.vault` for what
destroying a key does and does not reach on a filesystem.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.panel import Panel

from ..blobs import BlobStore, default_root
from ..commit import key_path, log_signer
from ..erasure import ErasureError, erase
from .errors import Command, InputError
from .root import Output, Settings, common_options, kv_table, open_ledger


@click.command("erase", cls=Command)
@click.argument("digest")
@click.option("--blobs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Blob store directory (default: <ledger>.blobs).")
@click.option("--reason", default="erasure request", show_default=True,
              help="Why (recorded in the erasure entry; say no personal data here).")
@common_options
def erase_(settings: Settings, out: Output, digest: str, blobs: Path | None,
           reason: str) -> None:
    """Destroy what is stored under DIGEST (a kept update's key and ciphertext, or model
    weights) and record an `erasure` entry; the log still verifies.

    Replay then reports the rounds that used it as "erased", and rollback to it fails.
    """
    store = BlobStore(blobs if blobs is not None else default_root(settings.ledger))
    with open_ledger(settings, read_only=False) as led:
        signer = log_signer(led) if key_path(settings.ledger).exists() else None
        try:
            done = erase(led, digest, store, reason=reason, signer=signer)
        except ErasureError as e:
            raise InputError(str(e)) from None
    doc = {"digest": digest, "index": done.index, "destroyed": list(done.destroyed),
           "reason": done.entry.reason, "new_entry": done.committed is not None,
           "checkpoint": done.committed.checkpoint if done.committed else None}
    out.emit(doc, lambda: out.console.print(Panel(kv_table([
        ("digest", digest), ("erasure entry", done.index),
        ("destroyed", ", ".join(done.destroyed)), ("reason", done.entry.reason)]),
        title="erased", expand=False)))
