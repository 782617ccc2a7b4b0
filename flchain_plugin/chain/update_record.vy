# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title One transaction per client update (the baseline of bench/bench_gas.py)
@notice How per-update FL chains (FLChain, BlockFL) record training: each client sends
        its update's digest in its own transaction, stored and logged. Not used by
        flchain; kept to measure what anchoring one root per round saves.
"""

event UpdateRecorded:
    sender: indexed(address)
    round: uint64
    update: bytes32


updates: public(HashMap[address, HashMap[uint64, bytes32]])


@external
def record(round: uint64, update: bytes32):
    self.updates[msg.sender][round] = update
    log UpdateRecorded(sender=msg.sender, round=round, update=update)
