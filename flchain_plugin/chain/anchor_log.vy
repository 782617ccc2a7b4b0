# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title flchain checkpoint anchors
@notice Publishes the tree heads (origin, size, root) of RFC 9162 transparency logs.
        Per origin, only the owner may anchor, and only a strictly larger tree: the
        chain then holds a timestamped history of roots that no log operator can rewrite.
        `quorum` > 0 makes every anchor state how many witness cosignatures were verified
        off chain (and the digest of the cosigned note), and refuses fewer.
"""

MAX_ORIGIN: constant(uint256) = 256


struct Tree:
    size: uint64
    root: bytes32
    block: uint256
    timestamp: uint256


event Anchored:
    origin_key: indexed(bytes32)
    origin: String[MAX_ORIGIN]
    size: uint64
    root: bytes32
    witnesses: uint16
    note: bytes32
    timestamp: uint256


owner: public(address)
quorum: public(uint16)
trees: HashMap[String[MAX_ORIGIN], Tree]


@deploy
def __init__(quorum: uint16):
    self.owner = msg.sender
    self.quorum = quorum


@external
def anchor(origin: String[MAX_ORIGIN], size: uint64, root: bytes32, witnesses: uint16,
           note: bytes32):
    """
    @notice Anchor the tree of `size` leaves with root hash `root` for log `origin`.
    @param witnesses how many witness cosignatures of this checkpoint were verified
    @param note the SHA-256 of the cosigned checkpoint note (zero when none)
    """
    assert msg.sender == self.owner, "not the owner"
    assert len(origin) > 0, "empty origin"
    assert size > self.trees[origin].size, "size does not grow"
    assert witnesses >= self.quorum, "too few witness cosignatures"
    self.trees[origin] = Tree(size=size, root=root, block=block.number,
                              timestamp=block.timestamp)
    log Anchored(origin_key=keccak256(origin), origin=origin, size=size, root=root,
                 witnesses=witnesses, note=note, timestamp=block.timestamp)


@view
@external
def latest(origin: String[MAX_ORIGIN]) -> (uint64, bytes32, uint256, uint256):
    """
    @notice The latest anchored tree of `origin`: size, root, block and timestamp
            (all zero when none).
    """
    t: Tree = self.trees[origin]
    return t.size, t.root, t.block, t.timestamp
