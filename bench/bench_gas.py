"""Gas per round on an EVM chain: flchain's one anchor (plus one mint of the round's credits)
against one transaction per client update, as per-update FL chains (FLChain, BlockFL)
record training.

Both run on the same in-process chain (eth-tester, py-evm, Prague rules; the contracts are
compiled for Cancun) in the same run, for 10, 100 and 1,000 clients a round:

- flchain: a ledger holding each round's `credit` entries (one per client); the round's
  checkpoint anchored and its credits minted to every client in one transaction
  (`flchain_plugin.anchor.publish`, as `LedgerStrategy(anchor=...)` does each round);
- baseline: `update_record.vy`, each client's update digest stored and logged in its own
  transaction (the gas of a transaction does not depend on which account sends it: all
  are sent from one account to keep the run short).

Gas is deterministic but for calldata (a zero byte of the root or note hash, which differ
run to run, costs 12 gas less), so one round is measured per size after a first round
(which pays for new storage: new origins, first balances), and the first round is given
in the notes.

    python bench/bench_gas.py            # 10, 100 and 1,000 clients
    python bench/bench_gas.py --quick    # 10 clients: a smoke run
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import click
from run_all import Result, report

from flchain_plugin import entries as E
from flchain_plugin.anchor import publish
from flchain_plugin.chain.client import Chain
from flchain_plugin.commit import commit, log_signer
from flchain_plugin.ledger import Ledger

RECORD_GAS = 100_000
"""Gas limit of one baseline transaction (it uses about half): no estimate per update."""


def credits(rnd: int, clients: int) -> list[E.Entry]:
    return [E.Credit(run="bench", round=rnd, node=str(i), rule="quantity", amount=100 + i,
                     basis={}) for i in range(clients)]


def flchain_round(chain: Chain, ledger: Ledger, rnd: int, clients: int) -> tuple[int, int]:
    """Gas of anchoring round `rnd`'s checkpoint and of minting its credits."""
    commit(ledger, credits(rnd, clients), signer=log_signer(ledger))
    since = ledger.size - clients
    entry = publish(ledger, chain, mint_since=since)
    anchor_gas = chain.w3.eth.get_transaction_receipt(entry.tx)["gasUsed"]
    mints = entry.minted or []
    assert len(mints) == 1, mints
    mint_gas = chain.w3.eth.get_transaction_receipt(mints[0]["tx"])["gasUsed"]
    commit(ledger, [entry], signer=log_signer(ledger))
    return int(anchor_gas), int(mint_gas)


def per_update_round(chain: Chain, address: str, rnd: int, clients: int) -> int:
    """Gas of `clients` transactions, one per client update."""
    record = chain.contract("update_record", address).functions.record
    total = 0
    for i in range(clients):
        digest = hashlib.sha256(f"update {rnd} {i}".encode()).digest()
        total += int(chain.transact(record(rnd, digest), "record", gas=RECORD_GAS)["gasUsed"])
    return total


def measure(clients: int, workdir: Path) -> dict[str, int]:
    chain = Chain.tester()
    chain.deploy()
    recorder, _ = chain.deploy_contract("update_record")
    ledger = Ledger(workdir / f"gas-{clients}.db", create=True, origin=f"bench.gas/{clients}")
    out: dict[str, int] = {}
    for rnd in (1, 2):
        anchor_gas, mint_gas = flchain_round(chain, ledger, rnd, clients)
        baseline = per_update_round(chain, recorder, rnd, clients)
        out.update({f"anchor_{rnd}": anchor_gas, f"mint_{rnd}": mint_gas,
                    f"updates_{rnd}": baseline})
        print(f"  {clients} clients, round {rnd}: anchor {anchor_gas:,} + mint {mint_gas:,} "
              f"gas; per update {baseline:,} gas", file=sys.stderr)
    ledger.close()
    return out


def rows(clients: int, g: dict[str, int]) -> list[Result]:
    flchain = g["anchor_2"] + g["mint_2"]
    return [
        Result(key=f"anchor_mint_{clients}", name=f"{clients} clients: anchor + mint a round",
               value=flchain, unit="gas", baseline=g["updates_2"],
               baseline_name="one tx per update", ratio=g["updates_2"] / flchain),
        Result(key=f"anchor_only_{clients}", name=f"{clients} clients: anchor only",
               value=g["anchor_2"], unit="gas", baseline=g["updates_2"],
               baseline_name="one tx per update", ratio=g["updates_2"] / g["anchor_2"]),
    ]


@click.command()
@click.option("--quick", is_flag=True, help="10 clients only: a smoke run.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line on stdout.")
def main(quick: bool, as_json: bool) -> None:
    logging.getLogger("web3").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    sizes = (10,) if quick else (10, 100, 1000)
    results: list[Result] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        measured = {n: measure(n, Path(tmp)) for n in sizes}
    for n, g in measured.items():
        results += rows(n, g)
        notes.append(f"{n} clients, first round (new storage): anchor {g['anchor_1']:,} + "
                     f"mint {g['mint_1']:,} gas vs {g['updates_1']:,} gas per update")
    ratios = [measured[n]["updates_2"] / (measured[n]["anchor_2"] + measured[n]["mint_2"])
              for n in sizes]
    grows = all(b > a for a, b in itertools.pairwise(ratios))
    results.append(Result(key="ratio_grows", name="ratio grows with the clients", value=grows,
                           unit="", target="grows", passed=None if quick else grows))
    notes.append("ratio = gas of one tx per update / gas of flchain's round (higher: "
                 "flchain cheaper); mint gas grows with the clients paid, an anchor's does not")
    report("gas", results, as_json=as_json, quick=quick,
           params={"clients": list(sizes), "chain": "eth-tester (py-evm)"}, notes=notes)


if __name__ == "__main__":
    main()
