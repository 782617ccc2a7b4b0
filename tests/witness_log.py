"""A small honest log for the witness tests (not collected by pytest): leaves in memory,
checkpoints signed with a real Ed25519 key, requests built the way a log client sends them."""

from __future__ import annotations

from flchain_plugin import merkle, notes
from flchain_plugin.checkpoint import Checkpoint, sign_checkpoint
from flchain_plugin.witness import AddCheckpoint


class TestLog:
    """A log of `origin` whose leaves are b"<origin> <i>"; `fork` changes every leaf from it."""

    __test__ = False  # not a test class

    def __init__(self, origin: str = "example.com/log", signer: notes.Signer | None = None):
        self.origin = origin
        self.signer = signer or notes.generate_key(origin)
        self.leaves: list[bytes] = []

    @property
    def verifier(self) -> notes.Verifier:
        return self.signer.verifier

    def grow(self, n: int, tag: str = "") -> None:
        start = len(self.leaves)
        self.leaves += [merkle.leaf_hash(f"{self.origin} {i}{tag}".encode())
                        for i in range(start, start + n)]

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        size = len(self.leaves) if size is None else size
        return Checkpoint(self.origin, size, merkle.root(self.leaves[:size]))

    def note(self, size: int | None = None) -> str:
        return sign_checkpoint(self.checkpoint(size), self.signer)

    def request(self, old: int, size: int | None = None) -> bytes:
        """An honest add-checkpoint body from `old` to `size` (default: all leaves)."""
        size = len(self.leaves) if size is None else size
        proof = merkle.consistency_proof(self.leaves[:size], old) if old else []
        return AddCheckpoint(old, tuple(proof), self.note(size)).encode()

    def forked(self, at: int) -> TestLog:
        """The same key and origin, with the same first `at` leaves and others after."""
        other = TestLog(self.origin, self.signer)
        other.leaves = self.leaves[:at]
        other.grow(len(self.leaves) - at, tag=" forked")
        return other
