# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title flchain contribution credits
@notice An ERC-20 token (integer units, 0 decimals) that the owner mints a training
        round's credits with, in one transaction, to every credited contributor. Each
        mint names the checkpoint (origin, size, root) whose log holds the round's credit
        entries; it must be the origin's latest anchor in `anchors`, and a round is minted
        once: anyone can replay the awards from the log and compare.
        At most MAX_RECIPIENTS a round: Vyper copies the arrays into memory sized for the
        bound, whose expansion every mint pays (about 30k gas more at 2048), and a 30M-gas
        block holds about 1,200 first-time recipients anyway.
"""

from ethereum.ercs import IERC20

implements: IERC20

MAX_ORIGIN: constant(uint256) = 256
MAX_RUN: constant(uint256) = 128
MAX_RECIPIENTS: constant(uint256) = 1024


interface AnchorLog:
    def latest(origin: String[MAX_ORIGIN]) -> (uint64, bytes32, uint256, uint256): view


event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256


event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256


event Minted:
    round_key: indexed(bytes32)
    origin: String[MAX_ORIGIN]
    size: uint64
    root: bytes32
    run: String[MAX_RUN]
    round: uint64
    recipients: uint256
    total: uint256


name: public(String[32])
symbol: public(String[8])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
owner: public(address)
anchors: public(AnchorLog)
minted: public(HashMap[bytes32, bool])


@deploy
def __init__(name: String[32], symbol: String[8], anchors: address):
    self.name = name
    self.symbol = symbol
    self.decimals = 0
    self.owner = msg.sender
    self.anchors = AnchorLog(anchors)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    assert self.allowance[sender][msg.sender] >= amount, "allowance exceeded"
    self.allowance[sender][msg.sender] -= amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "transfer to the zero address"
    assert self.balanceOf[sender] >= amount, "balance exceeded"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@view
@external
def round_key(run: String[MAX_RUN], round: uint64) -> bytes32:
    """@notice The key under which a round's mint is recorded."""
    return keccak256(abi_encode(run, round))


@external
def mint_round(origin: String[MAX_ORIGIN], size: uint64, root: bytes32,
               run: String[MAX_RUN], round: uint64,
               recipients: DynArray[address, MAX_RECIPIENTS],
               amounts: DynArray[uint256, MAX_RECIPIENTS]):
    """
    @notice Mint round `round` of `run`: `amounts[i]` to `recipients[i]`, against the
            anchored checkpoint (origin, size, root) whose log records these credits.
    """
    assert msg.sender == self.owner, "not the owner"
    assert len(recipients) == len(amounts), "recipients and amounts differ in length"
    anchored_size: uint64 = 0
    anchored_root: bytes32 = empty(bytes32)
    block_number: uint256 = 0
    timestamp: uint256 = 0
    anchored_size, anchored_root, block_number, timestamp = staticcall self.anchors.latest(origin)
    assert anchored_size == size and anchored_root == root, "checkpoint is not the latest anchor"
    key: bytes32 = keccak256(abi_encode(run, round))
    assert not self.minted[key], "round already minted"
    self.minted[key] = True
    total: uint256 = 0
    for i: uint256 in range(len(recipients), bound=MAX_RECIPIENTS):
        receiver: address = recipients[i]
        assert receiver != empty(address), "mint to the zero address"
        self.balanceOf[receiver] += amounts[i]
        total += amounts[i]
        log Transfer(sender=empty(address), receiver=receiver, value=amounts[i])
    self.totalSupply += total
    log Minted(round_key=key, origin=origin, size=size, root=root, run=run, round=round,
               recipients=len(recipients), total=total)
