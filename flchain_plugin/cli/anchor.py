"""`flchain anchor`: publish checkpoints to an EVM chain, mint credits, verify both.

`flchain anchor` anchors the latest signed checkpoint (and mints every credited round not
minted yet), `flchain anchor verify` proves the ledger consistent with every anchored root
and replays every mint, `flchain anchor deploy` deploys the contracts. The node is a
JSON-RPC URL (`--rpc`, $FLCHAIN_RPC) and transactions are signed with a local key file
(`--key`, $FLCHAIN_CHAIN_KEY: one line of hex). Exit 2 for bad input, an unreachable node
or a reverted transaction; 1 when the ledger or a mint does not verify.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.table import Table

from ..anchor import (
    AnchorReport,
    MintReport,
    anchor_checkpoint,
    anchors,
    checkpoint_to_anchor,
    verify_anchors,
    verify_mints,
)
from ..canonical import parse_json
from ..chain.client import Chain, ChainError, ChainUnreachable
from .errors import Group, InputError, VerificationFailed
from .root import (
    INDEX,
    Output,
    Settings,
    common_options,
    kv_table,
    open_ledger,
    read_text,
    short_digest,
)

CHAIN_META = "flchain.anchor.chain"
"""ctx.meta key: the chain options given to the `anchor` group, for its subcommands."""

OPTIONS = ("rpc", "key", "contract", "token", "from_block", "payees")


def chain_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The node, the signing key, the contracts and the payees, spelled once; given
    before a subcommand (`flchain anchor --rpc URL verify`) or after it."""
    for opt in reversed([
        click.option("--rpc", metavar="URL", envvar="FLCHAIN_RPC",
                     help="JSON-RPC URL of an EVM node (default: $FLCHAIN_RPC)."),
        click.option("--key", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     envvar="FLCHAIN_CHAIN_KEY",
                     help="File holding the sending account's private key, one line of hex "
                          "(default: $FLCHAIN_CHAIN_KEY)."),
        click.option("--contract", metavar="ADDR", envvar="FLCHAIN_ANCHOR_CONTRACT",
                     help="The anchor contract (default: $FLCHAIN_ANCHOR_CONTRACT)."),
        click.option("--token", metavar="ADDR", envvar="FLCHAIN_CREDIT_TOKEN",
                     help="The credit token contract (default: $FLCHAIN_CREDIT_TOKEN); "
                          "without it nothing is minted or replayed."),
        click.option("--from-block", type=INDEX, envvar="FLCHAIN_ANCHOR_FROM_BLOCK",
                     help="Block the contracts were deployed in: event scans start there."),
        click.option("--payees", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE", help="JSON object: node id -> payee address (default: "
                                          "an address derived from the node id)."),
    ]):
        f = opt(f)
    return f


def _merged(given: dict[str, Any]) -> dict[str, Any]:
    """This command's chain options, else the ones given to the `anchor` group."""
    ctx = click.get_current_context()
    outer = ctx.meta.get(CHAIN_META, {})
    return {k: given.get(k) if given.get(k) is not None else outer.get(k) for k in OPTIONS}


@contextmanager
def chain_errors() -> Iterator[None]:
    try:
        yield
    except ChainUnreachable as e:
        raise InputError(f"{e}: check --rpc and that the node is running") from None
    except ChainError as e:
        raise InputError(f"{e}: nothing was changed by it") from None
    except ValueError as e:
        raise InputError(str(e)) from None


def _connect(opts: dict[str, Any], need_key: bool = True) -> Chain:
    if not opts["rpc"]:
        raise InputError("no EVM node: give --rpc URL (or set $FLCHAIN_RPC)")
    key = opts["key"]
    if key is None:
        if need_key:
            raise InputError("no signing key: give --key FILE (or set $FLCHAIN_CHAIN_KEY)")
        from eth_account import Account
        key = Account.create()  # reads only: any account will do
    with chain_errors():
        return Chain.connect(opts["rpc"], key, anchors=opts["contract"], token=opts["token"],
                             from_block=opts["from_block"] or 0)


def _payees(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        doc = parse_json(read_text(path, "payees file"))
    except ValueError as e:
        raise InputError(f"payees file {path} is not JSON ({e}): want an object mapping "
                         "node ids to addresses") from None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise InputError(f"payees file {path}: want an object mapping node ids to addresses")
    return doc


def _needs_contract(opts: dict[str, Any]) -> None:
    if not opts["contract"]:
        raise InputError("no anchor contract: give --contract ADDR (or set "
                         "$FLCHAIN_ANCHOR_CONTRACT); deploy one with `flchain anchor deploy`")


@click.group(cls=Group, invoke_without_command=True)
@chain_options
@click.option("--mint/--no-mint", default=True,
              help="Mint every credited round not minted yet (needs --token; default on).")
@common_options
def anchor(settings: Settings, out: Output, mint: bool, **given: Any) -> None:
    """Anchor the latest signed checkpoint on an EVM chain and record an `anchor` entry.

    With --token, also mints each credited round not minted yet, one transaction a round,
    against that anchor. Subcommands: verify, deploy.
    """
    ctx = click.get_current_context()
    if ctx.invoked_subcommand is not None:
        ctx.meta[CHAIN_META] = given
        return
    opts = _merged(given)
    _needs_contract(opts)
    payees = _payees(opts["payees"])
    with open_ledger(settings, read_only=False) as led:
        with chain_errors():
            note, _ = checkpoint_to_anchor(led)  # the ledger's faults first, then the node's
        chain = _connect(opts)
        with chain_errors():
            done = anchor_checkpoint(led, chain, note=note,
                                     mint=mint and chain.token is not None, payees=payees)
    entry = done.entries[0]
    doc = {"ok": True, **entry.to_json(), "index": done.first}
    out.emit(doc, lambda: out.console.print(kv_table([
        ("anchored", f"{entry.origin} at size {entry.size}"),  # type: ignore[attr-defined]
        ("root", entry.root), ("chain", entry.chain),  # type: ignore[attr-defined]
        ("transaction", f"{entry.tx} (block {entry.block})"),  # type: ignore[attr-defined]
        ("minted", ", ".join(f"round {m['round']}: {m['total']}"
                             for m in entry.minted or []) or "-"),  # type: ignore[attr-defined]
        ("recorded", f"anchor entry {done.first}")], title="checkpoint anchored")))


def _verify_doc(report: AnchorReport, mints: MintReport | None) -> dict[str, Any]:
    return {"ok": report.ok and (mints is None or mints.ok), "size": report.size,
            "anchors": [{"size": t.size, "root": "sha256:" + t.root.hex(), "block": t.block,
                         "tx": t.tx, "witnesses": t.witnesses, "timestamp": t.timestamp}
                        for t in report.anchored],
            "anchor_entries": report.entries,
            "anchor_entries_elsewhere": list(report.elsewhere),
            "minted_rounds": None if mints is None else mints.rounds,
            "minted_total": None if mints is None else mints.total,
            "problems": [*report.problems, *(mints.problems if mints else ())]}


def _anchors_table(doc: dict[str, Any]) -> Table:
    t = Table(box=box.SIMPLE, title=f"{len(doc['anchors'])} anchored roots", title_justify="left")
    for col in ("size", "block", "witnesses", "root"):
        t.add_column(col, no_wrap=True)
    t.add_column("transaction", overflow="fold")
    for a in doc["anchors"]:
        t.add_row(str(a["size"]), str(a["block"]), str(a["witnesses"]), short_digest(a["root"]),
                  a["tx"])
    return t


@anchor.command()
@chain_options
@common_options
def verify(settings: Settings, out: Output, **given: Any) -> None:
    """Prove the ledger consistent with every root anchored for its origin, check each
    anchor entry's transaction, and (with --token) replay every mint against the ledger's
    credits. Exits 1 naming the first anchor, round or node that differs."""
    opts = _merged(given)
    _needs_contract(opts)
    payees = _payees(opts["payees"])
    with open_ledger(settings) as led:
        anchors(led)  # the ledger's faults first, then the node's
        chain = _connect(opts, need_key=False)
        with chain_errors():
            report = verify_anchors(led, chain)
            mints = verify_mints(led, chain, payees) if chain.token is not None else None
    doc = _verify_doc(report, mints)
    if not out.json:
        out.console.print(_anchors_table(doc))
        if mints is not None:
            out.console.print(f"{mints.rounds} minted rounds replayed ({mints.total} units)")
        if report.elsewhere:
            out.console.print(f"{len(report.elsewhere)} anchor entries of another chain or "
                              f"contract not checked here: entries "
                              f"{', '.join(map(str, report.elsewhere))}")
    if not doc["ok"]:
        raise VerificationFailed(f"does not verify against the chain: {doc['problems'][0]}", doc)
    out.emit(doc, lambda: out.console.print(
        f"ledger of {report.size} entries consistent with every anchored root"))


@anchor.command()
@chain_options
@click.option("--quorum", type=click.IntRange(0, 2**16 - 1), default=0,
              help="Witness cosignatures every anchor must state (default 0).")
@common_options
def deploy(settings: Settings, out: Output, quorum: int, **given: Any) -> None:
    """Deploy the anchor contract and a credit token minting against it; prints their
    addresses (set them as $FLCHAIN_ANCHOR_CONTRACT and $FLCHAIN_CREDIT_TOKEN)."""
    opts = _merged(given)
    chain = _connect(opts)
    with chain_errors():
        d = chain.deploy(quorum=quorum)
    doc = {"ok": True, "chain": chain.id, "owner": chain.address, "anchor_contract": d.anchors,
           "credit_token": d.token, "block": d.block, "quorum": quorum}
    out.emit(doc, lambda: (out.console.print(kv_table([
        ("chain", chain.id), ("owner", chain.address), ("anchor contract", d.anchors),
        ("credit token", d.token), ("block", d.block)], title="contracts deployed")),
        click.echo(f"export FLCHAIN_ANCHOR_CONTRACT={d.anchors} FLCHAIN_CREDIT_TOKEN={d.token} "
                   f"FLCHAIN_ANCHOR_FROM_BLOCK={d.block}")))


__all__ = ["anchor"]
