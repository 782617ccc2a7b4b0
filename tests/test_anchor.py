"""Anchoring checkpoints and minting credits on the in-process EVM (eth-tester, py-evm).

`scenario_*` functions take a `Chain` and run unchanged against anvil in test_anvil.py:
the same code path (local signing, `send_raw_transaction`, receipts) on both backends.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("web3")
pytest.importorskip("eth_tester")

from flchain_plugin import entries as E
from flchain_plugin.anchor import (
    AnchorConfig,
    anchor_checkpoint,
    anchored_trees,
    anchors,
    balances_on_chain,
    derived_payee,
    latest_anchor,
    publish,
    round_credits,
    verify_anchors,
    verify_mints,
)
from flchain_plugin.chain.client import Chain, ChainError
from flchain_plugin.chain.compiled import CONTRACTS, artifact, compile_sources
from flchain_plugin.checkpoint import unverified_checkpoint
from flchain_plugin.commit import commit, log_signer
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import Signer

ORIGIN = "example.com/anchor-test"
D = "sha256:" + "ab" * 32


def credit(rnd: int, node: str, amount: int, rule: str = "quantity") -> E.Credit:
    return E.Credit(run="run-1", round=rnd, node=node, rule=rule, amount=amount, basis={})


def round_batch(rnd: int, awards: dict[str, int], salt: str = "") -> list[E.Entry]:
    """A round's batch as the strategy writes it, reduced to what anchoring reads."""
    batch: list[E.Entry] = [E.Evaluation(run="run-1", round=rnd, model=D,
                                         metrics={"acc": rnd / 10, "salt": salt})]
    for node, amount in awards.items():
        batch += [credit(rnd, node, amount - amount // 3), credit(rnd, node, amount // 3,
                                                                  "timeliness")]
    return batch


ROUNDS = {1: {"7": 50, "8": 30, "9": 0}, 2: {"7": 10, "8": 45, "9": 21}}


def build_ledger(path: Path, signer: Signer | None = None, salt: str = "",
                 rounds: dict[int, dict[str, int]] = ROUNDS) -> Ledger:
    led = Ledger(path, create=True, origin=ORIGIN)
    key = log_signer(led, signer)
    for rnd, awards in rounds.items():
        commit(led, round_batch(rnd, awards, salt), signer=key)
    return led


def fund(chain: Chain, address: str, wei: int = 10**18) -> None:
    """Send ether from the chain's account, signed locally like every transaction."""
    w3 = chain.w3
    tx = {"to": address, "value": wei, "gas": 21000, "chainId": w3.eth.chain_id,
          "nonce": w3.eth.get_transaction_count(chain.address, "pending"),
          "maxFeePerGas": w3.eth.gas_price * 2, "maxPriorityFeePerGas": 10**9}
    w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(chain.account.sign_transaction(tx).raw_transaction))


# -- the scenario both backends run ------------------------------------------------------


def scenario_anchor_and_mint(chain: Chain, tmp: Path) -> Ledger:
    """Two anchors, each minting its rounds: anchored roots equal the checkpoints, the
    anchor entries name real transactions, minted balances equal the ledger's credits."""
    chain.deploy()
    led = Ledger(tmp / "log.db", create=True, origin=ORIGIN)
    key = log_signer(led)
    commit(led, round_batch(1, ROUNDS[1]), signer=key)
    first = anchor_checkpoint(led, chain, mint=True)
    commit(led, round_batch(2, ROUNDS[2]), signer=key)
    second = anchor_checkpoint(led, chain, mint=True)

    trees = anchored_trees(led, chain)
    recorded = anchors(led)
    assert [t.size for t in trees] == [e.size for _, e in recorded] == [
        first.first, second.first]  # each anchored the checkpoint just before its entry
    for (_, entry), tree in zip(recorded, trees, strict=True):
        cp = unverified_checkpoint(dict(led.store.checkpoints())[tree.size])
        assert tree.root == cp.root_hash == led.root_at(tree.size)
        assert entry.root == "sha256:" + tree.root.hex() and entry.tx == tree.tx
        assert entry.chain == chain.id and entry.contract == chain.anchors
    assert [(m["run"], m["round"]) for _, e in recorded for m in e.minted or []] == [
        ("run-1", 1), ("run-1", 2)]
    latest = latest_anchor(led, chain)
    assert latest is not None and latest.size == trees[-1].size

    report = verify_anchors(led, chain)
    assert report.ok, report.problems
    assert len(report.anchored) == 2 and report.entries == 2
    mints = verify_mints(led, chain)
    assert mints.ok and mints.rounds == 2, mints.problems
    totals = {n: ROUNDS[1][n] + ROUNDS[2][n] for n in ROUNDS[1]}
    assert balances_on_chain(chain, totals) == totals
    assert sum(sum(v.values()) for v in round_credits(led).values()) == mints.total
    return led


def scenario_reverts(chain: Chain, led: Ledger) -> None:
    """A non-growing anchor, a foreign account's anchor, a second mint of a round and a
    mint against a checkpoint that is not the latest anchor all revert as ChainError."""
    note = led.latest_checkpoint()
    assert note is not None
    size = unverified_checkpoint(note).size
    latest = latest_anchor(led, chain)
    assert latest is not None and latest.size < size
    publish(led, chain, note=note)
    with pytest.raises(ChainError, match="size does not grow"):
        publish(led, chain, note=note)
    older = dict(led.store.checkpoints())[latest.size]
    with pytest.raises(ChainError, match="size does not grow"):
        publish(led, chain, note=older)

    from eth_account import Account

    stranger = Chain(chain.w3, Account.create(), anchors=chain.anchors, token=chain.token,
                     from_block=chain.from_block)
    fund(chain, stranger.address)
    commit(led, round_batch(3, {"7": 1}), signer=log_signer(led))
    with pytest.raises(ChainError, match="not the owner"):
        publish(led, stranger)
    token = chain.contract("credit_token").functions
    cp = unverified_checkpoint(note)
    with pytest.raises(ChainError, match="round already minted"):
        chain.transact(token.mint_round(cp.origin, cp.size, cp.root_hash, "run-1", 1,
                                        [derived_payee("7")], [1]), "minting again")
    with pytest.raises(ChainError, match="not the latest anchor"):
        chain.transact(token.mint_round(cp.origin, latest.size, latest.root, "run-1", 3,
                                        [derived_payee("7")], [1]), "minting on an old anchor")
    with pytest.raises(ChainError, match="not the owner"):
        stranger.transact(token.mint_round(cp.origin, cp.size, cp.root_hash, "run-1", 3,
                                           [stranger.address], [10**6]), "minting as a stranger")


def scenario_rewritten_history(chain: Chain, led: Ledger, tmp: Path) -> None:
    """A history rewritten everywhere local (same origin, same key, every hash and
    checkpoint recomputed and re-signed) passes `verify` but fails against the chain;
    an edited credit fails the mint replay naming the round and node."""
    key = log_signer(led)
    rewritten = build_ledger(tmp / "rewritten.db", key, salt="edited")
    for _ in range(led.size - rewritten.size):
        commit(rewritten, [E.Erasure(blob=D, reason="padding")], signer=key)
    assert rewritten.size == led.size
    assert rewritten.verify(verifier=key.verifier).problem is None
    report = verify_anchors(rewritten, chain)
    assert not report.ok
    assert "rewritten" in report.problems[0] and f"size {report.anchored[0].size}" in \
        report.problems[0]

    edited = {1: ROUNDS[1], 2: {**ROUNDS[2], "8": 46}}
    forged = build_ledger(tmp / "forged.db", key, rounds=edited)
    mints = verify_mints(forged, chain)
    assert not mints.ok
    assert "run run-1 round 2: node 8 is credited 46 in the ledger but 45" in mints.problems[0]

    truncated = build_ledger(tmp / "truncated.db", key, rounds={1: ROUNDS[1]})
    problems = verify_anchors(truncated, chain).problems
    assert any("entries were removed" in p for p in problems)


# -- the in-process chain ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tester() -> Chain:
    return Chain.tester()


@pytest.fixture
def chain(tester: Chain) -> Chain:
    """A fresh deployment on the module's chain (events scanned from its block)."""
    return Chain(tester.w3, tester.account)


def test_anchor_and_mint_in_process(chain: Chain, tmp_path: Path) -> None:
    led = scenario_anchor_and_mint(chain, tmp_path)
    scenario_reverts(chain, led)
    scenario_rewritten_history(chain, led, tmp_path)


def test_a_ledger_entry_naming_a_fake_transaction_is_named(chain: Chain, tmp_path: Path) -> None:
    chain.deploy()
    led = build_ledger(tmp_path / "l.db")
    entry = publish(led, chain)
    fake = E.Anchor(chain=entry.chain, contract=entry.contract, tx="0x" + "77" * 32,
                    block=entry.block, origin=entry.origin, size=entry.size, root=entry.root)
    commit(led, [entry, fake], signer=log_signer(led))
    problems = verify_anchors(led, chain).problems
    assert len(problems) == 1
    assert problems[0].startswith(f"anchor entry {led.size - 1} names transaction 0x7777")


def test_an_entry_anchored_elsewhere_is_named_not_hidden(chain: Chain, tmp_path: Path) -> None:
    chain.deploy()
    led = build_ledger(tmp_path / "l.db")
    entry = publish(led, chain)
    other = E.Anchor(chain="eip155:999999", contract=entry.contract, tx="0x" + "77" * 32,
                     block=entry.block, origin=entry.origin, size=entry.size, root=entry.root)
    commit(led, [entry, other], signer=log_signer(led))
    report = verify_anchors(led, chain)
    assert report.ok, report.problems
    assert report.entries == 2 and report.elsewhere == (led.size - 1,)


def test_quorum_contract_refuses_an_unwitnessed_anchor(chain: Chain, tmp_path: Path) -> None:
    chain.deploy(quorum=2)
    led = build_ledger(tmp_path / "l.db")
    with pytest.raises(ChainError, match="too few witness cosignatures"):
        publish(led, chain)
    assert latest_anchor(led, chain) is None


def test_a_witnessed_checkpoint_states_its_cosignatures(chain: Chain, tmp_path: Path) -> None:
    from flchain_plugin.checkpoint import Witness
    from flchain_plugin.notes import generate_cosignature_key

    chain.deploy(quorum=2)
    led = build_ledger(tmp_path / "l.db")
    key = log_signer(led)
    led.pin_verifier(key.verifier)
    witnesses = [generate_cosignature_key(f"w{i}.example") for i in range(3)]
    vkeys = tuple(w.verifier.vkey for w in witnesses)
    note = led.latest_checkpoint()
    assert note is not None
    for w in witnesses[:1]:
        note, _ = Witness(w).cosign(note, key.verifier, [], None)
    config = AnchorConfig(chain, witness_keys=vkeys, quorum=2)
    with pytest.raises(ValueError, match=r"not anchored: .* 1 witness"):
        config.publish(led, note)
    note, _ = Witness(witnesses[2]).cosign(note, key.verifier, [], None)
    entry = config.publish(led, note)
    tree = anchored_trees(led, chain)[-1]
    assert (tree.size, tree.witnesses, tree.tx) == (entry.size, 2, entry.tx)


def test_configured_payees_are_paid(chain: Chain, tmp_path: Path) -> None:
    chain.deploy()
    led = build_ledger(tmp_path / "l.db", rounds={1: ROUNDS[1]})
    payees = {"7": "0x" + "11" * 20}
    anchor_checkpoint(led, chain, mint=True, payees=payees)
    assert balances_on_chain(chain, ["7", "8"], payees) == {"7": 50, "8": 30}
    assert verify_mints(led, chain, payees).ok
    assert not verify_mints(led, chain).ok  # the replay must use the same payees


def test_nodes_sharing_a_payee_replay_as_minted(chain: Chain, tmp_path: Path) -> None:
    chain.deploy()
    led = build_ledger(tmp_path / "l.db", rounds={1: ROUNDS[1]})
    payees = {"7": "0x" + "11" * 20, "8": "0x" + "11" * 20, "9": "0x" + "11" * 20}
    anchor_checkpoint(led, chain, mint=True, payees=payees)
    assert balances_on_chain(chain, ["7"], payees) == {"7": 80}
    mints = verify_mints(led, chain, payees)
    assert mints.ok and mints.total == 80, mints.problems


def test_a_checkpoint_that_is_not_the_ledgers_is_refused(chain: Chain, tmp_path: Path) -> None:
    chain.deploy()
    led = build_ledger(tmp_path / "a.db")
    other = build_ledger(tmp_path / "b.db", log_signer(led), salt="other")
    with pytest.raises(ValueError, match="does not match the ledger's root"):
        publish(led, chain, note=other.latest_checkpoint())
    empty = Ledger(tmp_path / "empty.db", create=True, origin=ORIGIN)
    with pytest.raises(ValueError, match="no signed checkpoint"):
        publish(empty, chain)


def test_anchor_config_validates_its_arguments(chain: Chain) -> None:
    with pytest.raises(ValueError, match="deployed contracts"):
        AnchorConfig(chain)
    chain.deploy()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"^every must be"):
            AnchorConfig(chain, every=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"payees\['7'\]"):
        AnchorConfig(chain, payees={"7": "nowhere"})
    with pytest.raises(ValueError, match=r"^quorum must be"):
        AnchorConfig(chain, quorum=1)
    assert AnchorConfig(chain, every=3).due(6) and not AnchorConfig(chain, every=3).due(7)


def test_derived_payees_are_distinct_and_stable() -> None:
    addrs = {derived_payee(str(n)) for n in range(1000)}
    assert len(addrs) == 1000
    assert derived_payee("7") == derived_payee("7") != derived_payee("07")


def test_connect_refuses_a_bad_url_and_an_unreachable_node(tmp_path: Path) -> None:
    from flchain_plugin.chain.client import ChainUnreachable

    key = tmp_path / "key"
    key.write_text("0x" + "11" * 32)
    with pytest.raises(ValueError, match="http"):
        Chain.connect("ftp://x", key)
    with pytest.raises(ChainUnreachable, match="no EVM node answers"):
        Chain.connect("http://127.0.0.1:9", key, timeout=2)
    key.write_text("not a key")
    with pytest.raises(ValueError, match="64 hex digits"):
        Chain.connect("http://127.0.0.1:9", key)


# -- the shipped contracts ----------------------------------------------------------------


def test_shipped_contracts_equal_a_fresh_compile() -> None:
    """compiled.json is what the sources compile to (regenerate:
    python -m flchain_plugin.chain.compiled)."""
    pytest.importorskip("vyper")
    fresh = compile_sources()
    from flchain_plugin.chain.compiled import COMPILED, source_path

    shipped = json.loads(source_path("anchor_log").with_name(COMPILED).read_text())
    assert shipped["compiler"] == fresh["compiler"]
    for name in CONTRACTS:
        assert fresh["contracts"][name]["abi"] == artifact(name).abi, name
        assert fresh["contracts"][name]["bytecode"] == artifact(name).bytecode, name


def test_sources_pin_one_evm_version() -> None:
    from flchain_plugin.anchor import MAX_RECIPIENTS
    from flchain_plugin.chain.compiled import source_path

    for name in CONTRACTS:
        text = source_path(name).read_text()
        assert "# pragma evm-version cancun" in text and "# pragma version ~=0.4.3" in text
    bound = f"MAX_RECIPIENTS: constant(uint256) = {MAX_RECIPIENTS}\n"
    assert bound in source_path("credit_token").read_text()


def test_a_round_beyond_the_token_bound_is_refused_before_sending(chain: Chain,
                                                                  tmp_path: Path) -> None:
    from flchain_plugin.anchor import MAX_RECIPIENTS

    chain.deploy()
    many = {str(n): 1 for n in range(MAX_RECIPIENTS + 1)}
    led = build_ledger(tmp_path / "l.db", rounds={1: many})
    with pytest.raises(ValueError, match=f"{MAX_RECIPIENTS + 1} nodes credited"):
        anchor_checkpoint(led, chain, mint=True)


# -- the command's bad input, before any node is reached -----------------------------------


@pytest.mark.parametrize(("args", "needle"), [
    (["anchor"], "no anchor contract"),
    (["anchor", "verify"], "no anchor contract"),
    (["anchor", "--contract", "0x" + "11" * 20], "no EVM node"),
    (["anchor", "--contract", "0x" + "11" * 20, "--rpc", "http://127.0.0.1:9"],
     "no signing key"),
    (["anchor", "--contract", "nowhere", "--rpc", "ftp://x", "--key", "KEY"], "http"),
    (["anchor", "verify", "--contract", "0x" + "11" * 20, "--payees", "PAYEES"],
     "payees file"),
    (["anchor", "deploy"], "no EVM node"),
])
def test_anchor_command_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str],
                                                      needle: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from flchain_plugin.cli.root import cli

    for var in ("FLCHAIN_RPC", "FLCHAIN_CHAIN_KEY", "FLCHAIN_ANCHOR_CONTRACT",
                "FLCHAIN_CREDIT_TOKEN", "FLCHAIN_ANCHOR_FROM_BLOCK"):
        monkeypatch.delenv(var, raising=False)
    build_ledger(tmp_path / "l.db").close()
    (tmp_path / "key").write_text("0x" + "11" * 32)
    (tmp_path / "payees.json").write_text("[1, 2]")
    args = [a.replace("KEY", str(tmp_path / "key")).replace("PAYEES", str(tmp_path / "payees.json"))
            for a in args]
    r = CliRunner().invoke(cli, [*args, "--ledger", str(tmp_path / "l.db")], prog_name="flchain")
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("flchain: error: ")
    assert needle in r.stderr, r.stderr
