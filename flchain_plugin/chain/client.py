"""`Chain`: the flchain contracts on one EVM chain, through web3.py.

Every transaction is sent the way a real deployment sends it: built, signed with a local
key, `send_raw_transaction`, and its receipt's status checked, so the in-process chain
(`Chain.tester()`, eth-tester and py-evm) runs exactly the code path a JSON-RPC node
(`Chain.connect(url, key)`) does. Reverts differ by backend (eth-tester raises
`TransactionFailed`, a node `ContractLogicError`, a mined failure has status 0): all are
one `ChainError` naming the contract's reason.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.exceptions import ValidationError
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, Web3Exception

from .compiled import artifact

GAS_MARGIN = 1.2
"""Gas limit sent = estimate x this: the estimate is exact for the state it was made on,
and a block's state may differ slightly by the time the transaction runs."""

TESTER_FUNDS = 10**23
"""Wei given to the signing account of an in-process chain (100,000 ether: eth-tester's
accounts hold a million each)."""

class ChainError(Exception):
    """A transaction reverted or failed, or a call was refused; the message says which
    contract function and why (the contract's reason when it gave one)."""


class ChainUnreachable(ChainError):
    """The node could not be reached or answered nonsense: nothing was sent."""


@contextlib.contextmanager
def chain_errors(what: str) -> Iterator[None]:
    """Every backend's failure as a ChainError naming `what` was attempted."""
    try:
        yield
    except ChainError:
        raise
    except ContractLogicError as e:  # a JSON-RPC node's revert
        raise ChainError(f"{what} reverted: {_reason(e)}") from None
    except (Web3Exception, ValidationError) as e:  # ValidationError: the node refused it
        raise ChainError(f"{what} failed: {e}") from None
    except OSError as e:  # requests' connection errors are OSErrors
        raise ChainUnreachable(f"{what}: the node is unreachable: {e}") from None
    except Exception as e:
        if type(e).__name__ == "TransactionFailed":  # eth-tester's revert (an optional extra)
            raise ChainError(f"{what} reverted: {_reason(e)}") from None
        raise


def _reason(e: Exception) -> str:
    text = str(e.args[0] if e.args else e)
    text = text.removeprefix("execution reverted: ").removeprefix("execution reverted")
    return text or "no reason"


def load_key(path: str | os.PathLike[str]) -> LocalAccount:
    """The signing account in a key file: one line of 64 hex digits (0x optional)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the chain key file {path}: {e}") from None
    try:
        return Account.from_key(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"chain key file {path}: want one line of 64 hex digits (a secp256k1 "
                         f"private key): {e}") from None


@dataclass(frozen=True)
class Deployment:
    """The contract addresses of one flchain deployment and the block it started at
    (where event scans begin)."""

    anchors: str
    token: str
    block: int


class Chain:
    """A connection to one EVM chain with a signing account, and the contracts on it.

    `anchors` and `token` are the addresses of the anchor and credit token contracts
    (`deploy` sets both); `from_block` is where event scans start.
    """

    def __init__(self, w3: Web3, account: LocalAccount, *, anchors: str | None = None,
                 token: str | None = None, from_block: int = 0) -> None:
        self.w3 = w3
        self.account = account
        self.anchors = None if anchors is None else _address(anchors, "anchors")
        self.token = None if token is None else _address(token, "token")
        self.from_block = from_block
        with chain_errors("reading the chain id"):
            self.id = f"eip155:{int(w3.eth.chain_id)}"

    @classmethod
    def tester(cls) -> Chain:
        """A fresh in-process chain (eth-tester, py-evm) with a funded new account."""
        from web3 import EthereumTesterProvider  # needs web3[tester]

        w3 = Web3(EthereumTesterProvider())
        account = Account.create()
        w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account.address,
                                 "value": TESTER_FUNDS})
        return cls(w3, account)

    @classmethod
    def connect(cls, rpc: str, key: LocalAccount | str | os.PathLike[str], *,
                anchors: str | None = None, token: str | None = None, from_block: int = 0,
                timeout: float = 30.0) -> Chain:
        """A JSON-RPC node at `rpc` (http(s) URL), sending with `key` (an account or a
        key file); fails with ChainUnreachable when the node does not answer."""
        if not rpc.startswith(("http://", "https://")):
            raise ValueError(f"rpc: want an http(s):// JSON-RPC URL, got {rpc!r}")
        account = key if isinstance(key, LocalAccount) else load_key(key)
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": timeout}))
        try:
            return cls(w3, account, anchors=anchors, token=token, from_block=from_block)
        except ChainError as e:
            raise ChainUnreachable(f"no EVM node answers at {rpc}: {e}") from None

    @property
    def address(self) -> str:
        """The signing account: the owner of what it deploys."""
        return str(self.account.address)

    # -- transactions --------------------------------------------------------------------

    def transact(self, fn: ContractFunction | Any, what: str, gas: int | None = None) -> Any:
        """Build, sign and send one transaction; its receipt once mined with status 1.

        `gas` None: estimated (a revert then fails before anything is sent)."""
        with chain_errors(what):
            params: dict[str, Any] = {"from": self.address,
                                      "nonce": self.w3.eth.get_transaction_count(
                                          self.address, "pending")}
            if gas is not None:
                params["gas"] = gas
            else:  # with the margin, but never beyond what a block holds
                estimate = fn.estimate_gas({"from": self.address})
                limit = self.w3.eth.get_block("latest")["gasLimit"]
                params["gas"] = max(estimate, min(int(estimate * GAS_MARGIN), limit))
            tx = fn.build_transaction(params)
            signed = self.account.sign_transaction(tx)
            receipt = self.w3.eth.wait_for_transaction_receipt(
                self.w3.eth.send_raw_transaction(signed.raw_transaction))
        if receipt["status"] != 1:
            tx = receipt["transactionHash"].to_0x_hex()
            raise ChainError(f"{what} failed: transaction {tx} was mined with status "
                             f"{receipt['status']} (reverted)")
        return receipt

    def deploy_contract(self, name: str, *args: Any) -> tuple[str, Any]:
        """Deploy contract `name` (compiled.CONTRACTS); its address and receipt."""
        art = artifact(name)
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = self.transact(factory.constructor(*args), f"deploying {name}")
        return str(receipt["contractAddress"]), receipt

    def deploy(self, *, quorum: int = 0, name: str = "flchain credit",
               symbol: str = "FLC") -> Deployment:
        """Deploy the anchor contract (`quorum`: witness cosignatures each anchor must
        state) and a credit token minting against it; this Chain then uses both."""
        anchors, receipt = self.deploy_contract("anchor_log", quorum)
        token, _ = self.deploy_contract("credit_token", name, symbol, anchors)
        self.anchors, self.token = anchors, token
        self.from_block = int(receipt["blockNumber"])
        return Deployment(anchors, token, self.from_block)

    def contract(self, name: str, address: str | None = None) -> Contract:
        """A deployed contract by name: the anchor log and the token default to this
        Chain's addresses."""
        if address is None:
            address = {"anchor_log": self.anchors, "credit_token": self.token}.get(name)
            if address is None:
                raise ValueError(f"no {name} contract address: deploy first, or give it "
                                 "(--contract / --token)")
        return self.w3.eth.contract(address=_address(address, name), abi=artifact(name).abi)

    def call(self, fn: ContractFunction | Any, what: str) -> Any:
        with chain_errors(what):
            return fn.call()

    def logs(self, event: Any, what: str, **filters: Any) -> list[Any]:
        """Every log of `event` since `from_block`, oldest first."""
        with chain_errors(what):
            return list(event.get_logs(from_block=self.from_block, argument_filters=filters
                                       or None))


def _address(value: str, name: str) -> str:
    if not isinstance(value, str) or not Web3.is_address(value):
        raise ValueError(f"{name}: {value!r} is not an EVM address (0x + 40 hex digits)")
    return str(Web3.to_checksum_address(value))


__all__ = ["Chain", "ChainError", "ChainUnreachable", "Deployment", "chain_errors", "load_key"]
