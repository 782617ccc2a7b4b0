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


senders: public(HashMap[bytes32, address])


@external
def record(round: uint64, update: bytes32):
    """@notice Record update digest `update` of round `round`, sent by its client."""
    assert self.senders[update] == empty(address), "update already recorded"
    self.senders[update] = msg.sender
    log UpdateRecorded(sender=msg.sender, round=round, update=update)
