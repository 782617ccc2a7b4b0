"""The on-chain side: Vyper contracts (anchors of checkpoints, a credit token), their
compiled ABI and bytecode, and `Chain`, the web3.py connection that deploys and calls them.

Needs the `evm` extra (web3); `flchain_plugin.anchor` is the ledger's side and imports
this package only when a chain is used.
"""
