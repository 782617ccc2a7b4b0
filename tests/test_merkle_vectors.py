"""RFC 6962 / RFC 9162 Merkle tree test vectors, checked against flchain_plugin.merkle.

Every vector below is transcribed as Python literals (the probe tables mechanically, then
checked field by field against the JSON) from
https://github.com/transparency-dev/merkle at commit 417fb0c:

* testonly/constants.go        LeafInputs, NodeHashes, RootHashes, CompactTrees, EmptyRootHash
* rfc6962/rfc6962_test.go      TestRFC6962Hasher
* proof/proof_test.go          TestInclusion, TestConsistency (proof node layouts)
* testdata/inclusion/**.json   inclusion probes incl. corrupted variants (proof/verify_test.go)
* testdata/consistency/**.json consistency probes incl. corrupted variants
* testonly/vectors_test.go     accumulated subtree-hash / subtree-inclusion vectors of
                               draft-ietf-plants-merkle-tree-certs ("Subtree Test Vectors")

Hashes in the probe tables keep the base64 spelling of the JSON files, so each line can
be grepped in the source. No fetched file is read at test time.
"""

from __future__ import annotations

import base64
import hashlib
from typing import NamedTuple

import pytest

from flchain_plugin.merkle import (
    Frontier,
    ProofError,
    consistency_proof,
    consistency_ranges,
    fold_range,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    perfect_subtrees,
    root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

# --- testonly/constants.go -------------------------------------------------------------

LEAF_INPUTS = [
    bytes.fromhex(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]

# NODE_HASHES[level][index]: every complete subtree of the 8-leaf tree.
NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    [
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ],
]

EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# ROOTS[n]: root of the tree over the first n LEAF_INPUTS.
ROOTS = [
    EMPTY_ROOT,
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# COMPACT_TREES[n]: (level, index) into NODE_HASHES of the compact range [0, n).
COMPACT_TREES = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]

# --- proof/proof_test.go: TestInclusion / TestConsistency -------------------------------
# (a, b, node ids, rehash span). The Go proof lists node ids; the ids in `rehash`
# [begin, end) are folded into one proof hash (listed lowest level first).

INCLUSION_LAYOUTS = [  # (size, index, ids, rehash)
    (1, 0, [], None),
    (2, 0, [(0, 1)], None),
    (2, 1, [(0, 0)], None),
    (3, 1, [(0, 0), (0, 2)], (1, 2)),
    (7, 0, [(0, 1), (1, 1), (0, 6), (1, 2)], (2, 4)),
    (7, 1, [(0, 0), (1, 1), (0, 6), (1, 2)], (2, 4)),
    (7, 2, [(0, 3), (1, 0), (0, 6), (1, 2)], (2, 4)),
    (7, 3, [(0, 2), (1, 0), (0, 6), (1, 2)], (2, 4)),
    (7, 4, [(0, 5), (0, 6), (2, 0)], (1, 2)),
    (7, 5, [(0, 4), (0, 6), (2, 0)], (1, 2)),
    (7, 6, [(1, 2), (2, 0)], None),
    (4, 2, [(0, 3), (1, 0)], None),
    (5, 3, [(0, 2), (1, 0), (0, 4)], (2, 3)),
    (6, 3, [(0, 2), (1, 0), (1, 2)], (2, 3)),
    (6, 4, [(0, 5), (2, 0)], None),
    (15, 10, [(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)], (2, 4)),
    (31, 24, [(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)], (2, 4)),
    (95, 81, [(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)], (3, 6)),
]
INCLUSION_LAYOUT_ERRORS = [(0, 0), (0, 1), (1, 2), (0, 3), (7, 8)]  # (size, index)

CONSISTENCY_LAYOUTS = [  # (size1, size2, ids, rehash)
    (1, 2, [(0, 1)], None),
    (1, 4, [(0, 1), (1, 1)], None),
    (1, 6, [(0, 1), (1, 1), (1, 2)], (2, 3)),
    (2, 3, [(0, 2)], (0, 1)),
    (2, 8, [(1, 1), (2, 1)], None),
    (3, 7, [(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)], (3, 5)),
    (4, 7, [(0, 6), (1, 2)], (0, 2)),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)], (2, 3)),
    (6, 7, [(1, 2), (0, 6), (2, 0)], (1, 2)),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)], None),
    (1, 1, [], None),
    (2, 2, [], None),
    (3, 3, [], None),
    (4, 4, [], None),
    (5, 5, [], None),
    (7, 7, [], None),
    (8, 8, [], None),
    (2, 4, [(1, 1)], None),
    (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)], (3, 4)),
    (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)], (3, 4)),
    (4, 6, [(1, 2)], (0, 1)),
    (1, 7, [(0, 1), (1, 1), (0, 6), (1, 2)], (2, 4)),
    (10, 15, [(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)], (2, 4)),
    (24, 31, [(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)], (1, 4)),
    (81, 95, [(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)],
     (4, 7)),
]
# Go also rejects (0, 5) and (0, 0): there a consistency proof from the empty tree is an
# error, while consistency_ranges documents it as the empty proof (tested below).
CONSISTENCY_LAYOUT_ERRORS = [(5, 0), (9, 8)]  # (size1, size2)

# --- testdata/{inclusion,consistency}/**.json (verified by proof/verify_test.go) -------


class _P(NamedTuple):
    """One probe: name is the JSON path without .json; a, b = (leafIdx, treeSize) for
    inclusion and (size1, size2) for consistency. proof None is a JSON null."""

    name: str
    a: int
    b: int
    want_err: bool
    root: str = ""
    leaf: str = ""
    root1: str = ""
    root2: str = ""
    proof: list[str] | None = None


INCLUSION_PROBES = [
    _P("inclusion/0/empty-root", 0, 1, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("inclusion/0/happy-path", 0, 1, False,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("inclusion/0/leafIdx-XOR-@2", 2, 1, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("inclusion/0/leafIdx-plus-@1", 1, 1, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("inclusion/0/leafIdx-sub-@1", 18446744073709551615, 1, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("inclusion/0/preceding-garbage", 0, 1, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=[""]),
    _P("inclusion/0/preceding-root", 0, 1, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="]),
    _P("inclusion/0/random-root", 0, 1, True,
       root="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("inclusion/0/trailing-garbage", 0, 1, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=[""]),
    _P("inclusion/0/trailing-root", 0, 1, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="]),
    _P("inclusion/0/treeSize-div-@2", 0, 0, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("inclusion/0/treeSize-mul-@2", 0, 2, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("inclusion/0/wrong-leaf", 0, 1, True,
       root="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       leaf="V3JvbmdMZWFm",
       proof=None),
    _P("inclusion/1/empty-root", 0, 8, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/happy-path", 0, 8, False,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/inserted-component", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/leafIdx-XOR-@2", 2, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/leafIdx-plus-@1", 1, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/leafIdx-sub-@1", 18446744073709551615, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/modified-proof[0]-bit-@3", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["nqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/modified-proof[1]-bit-@3", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Vwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/modified-proof[2]-bit-@3", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "Y0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/preceding-garbage", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["",
              "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/preceding-root", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
              "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/random-root", 0, 8, True,
       root="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/removed-component", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4="]),
    _P("inclusion/1/trailing-garbage", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
              ""]),
    _P("inclusion/1/trailing-root", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
              "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="]),
    _P("inclusion/1/treeSize-div-@2", 0, 4, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/treeSize-mul-@2", 0, 16, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/1/wrong-leaf", 0, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="V3JvbmdMZWFm",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("inclusion/2/empty-root", 5, 8, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/happy-path", 5, 8, False,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/inserted-component", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/leafIdx-XOR-@2", 7, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/leafIdx-plus-@1", 6, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/leafIdx-sub-@1", 4, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/modified-proof[0]-bit-@3", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["tBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/modified-proof[1]-bit-@3", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "woVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/modified-proof[2]-bit-@3", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "237kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/preceding-garbage", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/preceding-root", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/random-root", 5, 8, True,
       root="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/removed-component", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA="]),
    _P("inclusion/2/trailing-garbage", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
              ""]),
    _P("inclusion/2/trailing-root", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
              "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="]),
    _P("inclusion/2/treeSize-div-@2", 5, 4, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/treeSize-mul-@2", 5, 16, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/2/wrong-leaf", 5, 8, True,
       root="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       leaf="V3JvbmdMZWFm",
       proof=["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("inclusion/3/empty-root", 2, 3, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/happy-path", 2, 3, False,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/leafIdx-XOR-@2", 0, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/leafIdx-plus-@1", 3, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/leafIdx-sub-@1", 1, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/modified-proof[0]-bit-@3", 2, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["8sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/preceding-garbage", 2, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["",
              "+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/preceding-root", 2, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
              "+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/random-root", 2, 3, True,
       root="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/removed-component", 2, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=[]),
    _P("inclusion/3/trailing-garbage", 2, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
              ""]),
    _P("inclusion/3/trailing-root", 2, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
              "rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc="]),
    _P("inclusion/3/treeSize-div-@2", 2, 1, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/treeSize-mul-@2", 2, 6, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/3/wrong-leaf", 2, 3, True,
       root="rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
       leaf="V3JvbmdMZWFm",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("inclusion/4/empty-root", 1, 5, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/happy-path", 1, 5, False,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/inserted-component", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/leafIdx-XOR-@2", 3, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/leafIdx-plus-@1", 2, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/leafIdx-sub-@1", 0, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/modified-proof[0]-bit-@3", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["ZjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/modified-proof[1]-bit-@3", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Vwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/modified-proof[2]-bit-@3", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "tBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/preceding-garbage", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["",
              "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/preceding-root", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
              "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/random-root", 1, 5, True,
       root="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/removed-component", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4="]),
    _P("inclusion/4/trailing-garbage", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              ""]),
    _P("inclusion/4/trailing-root", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ="]),
    _P("inclusion/4/treeSize-div-@2", 1, 2, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/treeSize-mul-@2", 1, 10, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/4/wrong-leaf", 1, 5, True,
       root="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       leaf="V3JvbmdMZWFm",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("inclusion/additional/0/empty-root-and-random-leaf", 0, 0, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       proof=[]),
    _P("inclusion/additional/0/empty-root", 0, 0, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="",
       proof=[]),
    _P("inclusion/additional/0/random-leaf", 0, 0, True,
       root="",
       leaf="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       proof=[]),
    _P("inclusion/additional/1/empty-root-and-random-leaf", 0, 1, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       proof=[]),
    _P("inclusion/additional/1/empty-root", 0, 1, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="",
       proof=[]),
    _P("inclusion/additional/1/random-leaf", 0, 1, True,
       root="",
       leaf="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       proof=[]),
    _P("inclusion/additional/2/empty-root-and-random-leaf", 1, 0, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       proof=[]),
    _P("inclusion/additional/2/empty-root", 1, 0, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="",
       proof=[]),
    _P("inclusion/additional/2/random-leaf", 1, 0, True,
       root="",
       leaf="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       proof=[]),
    _P("inclusion/additional/3/empty-root-and-random-leaf", 2, 1, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       proof=[]),
    _P("inclusion/additional/3/empty-root", 2, 1, True,
       root="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       leaf="",
       proof=[]),
    _P("inclusion/additional/3/random-leaf", 2, 1, True,
       root="",
       leaf="q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
       proof=[]),
    _P("inclusion/single-entry/empty-leaf", 0, 1, True,
       root="DTrtAjFI/9KiWfvQzcf7PPl1ZYdg03dbgq9vkKrMLfw=",
       leaf="",
       proof=[]),
    _P("inclusion/single-entry/empty-root-and-leaf", 0, 1, True,
       root="",
       leaf="",
       proof=[]),
    _P("inclusion/single-entry/empty-root", 0, 1, True,
       root="",
       leaf="DTrtAjFI/9KiWfvQzcf7PPl1ZYdg03dbgq9vkKrMLfw=",
       proof=[]),
    _P("inclusion/single-entry/matching-root-and-leaf", 0, 1, False,
       root="DTrtAjFI/9KiWfvQzcf7PPl1ZYdg03dbgq9vkKrMLfw=",
       leaf="DTrtAjFI/9KiWfvQzcf7PPl1ZYdg03dbgq9vkKrMLfw=",
       proof=[]),
]

CONSISTENCY_PROBES = [
    _P("consistency/0/happy-path", 1, 1, False,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=None),
    _P("consistency/1/empty-proof", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=[]),
    _P("consistency/1/happy-path", 1, 8, False,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/modified-proof@0-bit-@4", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["hqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/modified-proof@1-bit-@4", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Twg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/modified-proof@2-bit-@4", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "e0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/preceding-garbage", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["",
              "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/preceding-proof-@0", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/preceding-root1", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
              "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/preceding-root2", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
              "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/size1-XOR-@2", 3, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/size1-plus-@1", 2, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/size1-sub-@1", 0, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/size2-div-@2", 1, 4, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/size2-mul-@2", 1, 16, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/swapped-roots", 1, 8, True,
       root1="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       root2="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/trailing-garbage", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
              ""]),
    _P("consistency/1/trailing-root1", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
              "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="]),
    _P("consistency/1/trailing-root2", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
              "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="]),
    _P("consistency/1/truncated-proof", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4="]),
    _P("consistency/1/wrong-root1", 1, 8, True,
       root1="V3JvbmdSb290",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/1/wrong-root2", 1, 8, True,
       root1="bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
       root2="V3JvbmdSb290",
       proof=["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),
    _P("consistency/2/empty-proof", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=[]),
    _P("consistency/2/happy-path", 6, 8, False,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/modified-proof@0-bit-@4", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["HrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/modified-proof@1-bit-@4", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "2oVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/modified-proof@2-bit-@4", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "w37kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/preceding-garbage", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["",
              "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/preceding-proof-@0", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/preceding-root1", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
              "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/preceding-root2", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
              "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/size1-XOR-@2", 4, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/size1-plus-@1", 7, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/size1-sub-@1", 5, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/size2-div-@2", 6, 4, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/size2-mul-@2", 6, 16, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/swapped-roots", 6, 8, True,
       root1="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       root2="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/trailing-garbage", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
              ""]),
    _P("consistency/2/trailing-root1", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
              "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8="]),
    _P("consistency/2/trailing-root2", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
              "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="]),
    _P("consistency/2/truncated-proof", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA="]),
    _P("consistency/2/wrong-root1", 6, 8, True,
       root1="V3JvbmdSb290",
       root2="XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/2/wrong-root2", 6, 8, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="V3JvbmdSb290",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/3/empty-proof", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=[]),
    _P("consistency/3/happy-path", 2, 5, False,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/modified-proof@0-bit-@4", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Twg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/modified-proof@1-bit-@4", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "rBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/preceding-garbage", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/preceding-proof-@0", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/preceding-root1", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/preceding-root2", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
              "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/size1-XOR-@2", 0, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/size1-plus-@1", 3, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/size1-sub-@1", 1, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/size2-div-@2", 2, 2, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/size2-mul-@2", 2, 10, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/swapped-roots", 2, 5, True,
       root1="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       root2="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/trailing-garbage", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              ""]),
    _P("consistency/3/trailing-root1", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
    _P("consistency/3/trailing-root2", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
              "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ="]),
    _P("consistency/3/truncated-proof", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4="]),
    _P("consistency/3/wrong-root1", 2, 5, True,
       root1="V3JvbmdSb290",
       root2="Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/3/wrong-root2", 2, 5, True,
       root1="+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
       root2="V3JvbmdSb290",
       proof=["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),
    _P("consistency/4/empty-proof", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=[]),
    _P("consistency/4/happy-path", 6, 7, False,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/modified-proof@0-bit-@4", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["HrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/modified-proof@1-bit-@4", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "oIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/modified-proof@2-bit-@4", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "w37kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/preceding-garbage", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["",
              "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/preceding-proof-@0", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/preceding-root1", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
              "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/preceding-root2", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
              "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/size1-XOR-@2", 4, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/size1-plus-@1", 7, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/size1-sub-@1", 5, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/size2-div-@2", 6, 3, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/size2-mul-@2", 6, 14, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/swapped-roots", 6, 7, True,
       root1="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       root2="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/trailing-garbage", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
              ""]),
    _P("consistency/4/trailing-root1", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
              "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8="]),
    _P("consistency/4/trailing-root2", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
              "3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw="]),
    _P("consistency/4/truncated-proof", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8="]),
    _P("consistency/4/wrong-root1", 6, 7, True,
       root1="V3JvbmdSb290",
       root2="3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/4/wrong-root2", 6, 7, True,
       root1="duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
       root2="V3JvbmdSb290",
       proof=["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
              "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),
    _P("consistency/additional/consistency-check-on-empty-tree-size1-is-zero-is-useless",
       0, 1, True,
       root1="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       root2="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       proof=["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]),
    _P("consistency/additional/roots-do-not-match-and-sizes-are-zero", 0, 0, True,
       root1="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/roots-do-not-not-match-and-sizes-are-one", 1, 1, True,
       root1="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/size1-is-greater-than-size2-again", 2, 1, True,
       root1="ZG9uJ3QgY2FyZSAx",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/size1-is-greater-than-size2", 1, 0, True,
       root1="ZG9uJ3QgY2FyZSAx",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/size1-is-zero-and-does-not-equal-size2", 0, 1, True,
       root1="ZG9uJ3QgY2FyZSAx",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/size1-is-zero-and-size2-is-not-zero", 0, 1, True,
       root1="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/sizes-are-equal-one-and-proof-is-empty", 1, 1, False,
       root1="ZG9uJ3QgY2FyZSAy",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/sizes-are-equal-one-but-roots-are-not", 1, 1, True,
       root1="ZG9uJ3QgY2FyZSAx",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/sizes-are-equal-zero-and-proof-is-empty", 0, 0, True,
       root1="ZG9uJ3QgY2FyZSAx",
       root2="ZG9uJ3QgY2FyZSAx",
       proof=[]),
    _P("consistency/additional/sizes-are-equal-zero-but-roots-are-not", 0, 0, True,
       root1="ZG9uJ3QgY2FyZSAx",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/sizes-do-not-watch-and-proof-is-empty", 1, 2, True,
       root1="ZG9uJ3QgY2FyZSAx",
       root2="ZG9uJ3QgY2FyZSAy",
       proof=[]),
    _P("consistency/additional/sizes-match-but-proof-is-not-empty-and-sizes-are-one", 1, 1, True,
       root1="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       root2="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       proof=["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]),
    _P("consistency/additional/sizes-match-but-proof-is-not-empty-and-sizes-are-zero", 0, 0, True,
       root1="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       root2="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
       proof=["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]),
]


# Where our verifier deliberately disagrees with the Go verdict.
DEVIATIONS = {
    # Go accepts size1 == size2 == 1 with equal 12-byte "roots" (b"don't care 2") because it
    # never checks root lengths; verify_consistency rejects hashes that are not 32 bytes.
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty": True,
}

HAPPY_INCLUSION = [p for p in INCLUSION_PROBES if p.name.endswith("happy-path")]
HAPPY_CONSISTENCY = [p for p in CONSISTENCY_PROBES if p.name.endswith("happy-path")]


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def _proof(p: _P) -> list[bytes]:
    return [_b64(x) for x in p.proof or []]


def _h(x: str) -> bytes:
    return bytes.fromhex(x)


LEAVES = [leaf_hash(d) for d in LEAF_INPUTS]


# --- hashing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("got", "want"),
    [
        # rfc6962/rfc6962_test.go TestRFC6962Hasher
        (root([]), EMPTY_ROOT),
        (leaf_hash(b""), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        (leaf_hash(b"L123456"), "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"),
        (node_hash(b"N123", b"N456"),
         "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"),
    ],
    ids=["empty-root", "empty-leaf", "leaf", "node"],
)
def test_rfc6962_hasher(got, want):
    assert got.hex() == want


def test_hasher_domain_separation():
    # rfc6962/rfc6962_test.go TestRFC6962HasherCollisions
    h1, h2 = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert h1 != h2
    assert node_hash(h1, h2) != leaf_hash(h1 + h2)
    assert node_hash(h1, h2) != node_hash(h2, h1)
    assert leaf_hash(b"") != root([])


def test_leaf_hashes():
    assert [h.hex() for h in LEAVES] == NODE_HASHES[0]


@pytest.mark.parametrize("level", range(len(NODE_HASHES)))
def test_node_hashes(level):
    for index, want in enumerate(NODE_HASHES[level]):
        a, b = index << level, (index + 1) << level
        assert root(LEAVES[a:b]).hex() == want
        parts = [_h(NODE_HASHES[lv][i]) for lv, i in perfect_subtrees(a, b)]
        assert fold_range(parts).hex() == want
    if level:
        for index, want in enumerate(NODE_HASHES[level]):
            left, right = NODE_HASHES[level - 1][2 * index : 2 * index + 2]
            assert node_hash(_h(left), _h(right)).hex() == want


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_roots(size):
    assert root(LEAVES[:size]).hex() == ROOTS[size]
    nodes = [_h(NODE_HASHES[lv][i]) for lv, i in perfect_subtrees(0, size)]
    assert (fold_range(nodes) if nodes else root([])).hex() == ROOTS[size]


def test_frontier_matches_compact_trees():
    fr = Frontier()
    emitted = {}
    assert fr.root().hex() == ROOTS[0] and fr.hashes == []
    for size in range(1, len(ROOTS)):
        for level, index, h in fr.append(LEAVES[size - 1]):
            assert (level, index) not in emitted
            emitted[level, index] = h.hex()
        assert fr.size == size
        assert Frontier.nodes_for(size) == COMPACT_TREES[size]
        assert [h.hex() for h in fr.hashes] == [NODE_HASHES[lv][i] for lv, i in COMPACT_TREES[size]]
        assert fr.root().hex() == ROOTS[size]
        restored = Frontier(size, [_h(NODE_HASHES[lv][i]) for lv, i in COMPACT_TREES[size]])
        assert restored.root().hex() == ROOTS[size]
    # Appending 8 leaves completes exactly the 15 published nodes, and nothing else.
    assert emitted == {(lv, i): h for lv, row in enumerate(NODE_HASHES) for i, h in enumerate(row)}


# --- proof layouts (proof/proof_test.go) ------------------------------------------------


def _layout(ranges: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Flatten ranges into Go's node-id order; return ids and each range's [begin, end)."""
    ids: list[tuple[int, int]] = []
    spans = []
    for a, b in ranges:
        nodes = perfect_subtrees(a, b)
        spans.append((len(ids), len(ids) + len(nodes)))
        ids.extend(reversed(nodes))  # Go lists a rehashed group lowest level first
    return ids, spans


def _check_layout(ranges, want_ids, want_rehash):
    ids, spans = _layout(ranges)
    assert ids == want_ids
    multi = [s for s in spans if s[1] - s[0] > 1]
    assert len(multi) <= 1  # at most one folded group, as in Go
    if want_rehash is None:
        assert not multi
    else:
        assert want_rehash in spans
        assert multi in ([], [want_rehash])


@pytest.mark.parametrize(("size", "index", "ids", "rehash"), INCLUSION_LAYOUTS)
def test_inclusion_layout(size, index, ids, rehash):
    _check_layout(inclusion_ranges(index, size), ids, rehash)


@pytest.mark.parametrize(("size", "index"), INCLUSION_LAYOUT_ERRORS)
def test_inclusion_layout_errors(size, index):
    with pytest.raises(ValueError, match="out of range"):
        inclusion_ranges(index, size)


@pytest.mark.parametrize(("size1", "size2", "ids", "rehash"), CONSISTENCY_LAYOUTS)
def test_consistency_layout(size1, size2, ids, rehash):
    _check_layout(consistency_ranges(size1, size2), ids, rehash)


@pytest.mark.parametrize(("size1", "size2"), CONSISTENCY_LAYOUT_ERRORS)
def test_consistency_layout_errors(size1, size2):
    with pytest.raises(ValueError, match="bad consistency sizes"):
        consistency_ranges(size1, size2)


def test_consistency_from_empty_tree_is_empty_proof():
    assert consistency_ranges(0, 0) == consistency_ranges(0, 5) == []


# --- published probes --------------------------------------------------------------------


def test_probe_counts():
    assert len(INCLUSION_PROBES) == 98 and len(CONSISTENCY_PROBES) == 98
    assert len(HAPPY_INCLUSION) == 5 and len(HAPPY_CONSISTENCY) == 5


@pytest.mark.parametrize("p", HAPPY_INCLUSION, ids=lambda p: p.name)
def test_generated_inclusion_proof_equals_published(p):
    leaves = LEAVES[: p.b]
    assert root(leaves) == _b64(p.root)
    assert leaves[p.a] == _b64(p.leaf)
    assert inclusion_proof(leaves, p.a) == _proof(p)
    assert root_from_inclusion_proof(p.a, p.b, leaves[p.a], _proof(p)) == _b64(p.root)


@pytest.mark.parametrize("p", HAPPY_CONSISTENCY, ids=lambda p: p.name)
def test_generated_consistency_proof_equals_published(p):
    assert root(LEAVES[: p.a]) == _b64(p.root1)
    assert root(LEAVES[: p.b]) == _b64(p.root2)
    assert consistency_proof(LEAVES[: p.b], p.a) == _proof(p)


@pytest.mark.parametrize("p", INCLUSION_PROBES, ids=lambda p: p.name)
def test_inclusion_probe(p):
    want_err = DEVIATIONS.get(p.name, p.want_err)
    args = (p.a, p.b, _b64(p.leaf), _proof(p), _b64(p.root))
    if want_err:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("p", CONSISTENCY_PROBES, ids=lambda p: p.name)
def test_consistency_probe(p):
    want_err = DEVIATIONS.get(p.name, p.want_err)
    args = (p.a, p.b, _proof(p), _b64(p.root1), _b64(p.root2))
    if want_err:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_deviation_is_only_the_length_check():
    # The one Go-accepted probe we reject fails on hash length, not on the proof logic.
    (p,) = [p for p in CONSISTENCY_PROBES if p.name in DEVIATIONS]
    with pytest.raises(ProofError, match="root1 has 12 bytes, want 32"):
        verify_consistency(p.a, p.b, _proof(p), _b64(p.root1), _b64(p.root2))


# --- testonly/vectors_test.go: draft-ietf-plants-merkle-tree-certs subtree vectors -------

SUBTREE_VECTOR_MAX = 130
SUBTREE_HASH_VECTOR = "b82806ad4265bb151c1119c0f4db437bb4d1a1f887b3a7fba1cd4ebf552e3e81"
SUBTREE_INCLUSION_VECTOR = "ac2a8f989e44d99e399db448050ff5f19757df53cfb716aa81015d3955d8163f"


def _is_subtree_valid(start: int, end: int) -> bool:
    """testonly/tree.go isSubtreeValid: start is a multiple of bit_ceil(end - start)."""
    if start == 0 or start == end:
        return True
    return start % (1 << (end - start - 1).bit_length()) == 0


def _valid_subtrees():
    for end in range(SUBTREE_VECTOR_MAX + 1):
        for start in range(end + 1):
            if _is_subtree_valid(start, end):
                yield start, end


def test_subtree_hash_vector():
    # Leaves d[i] = bytes([i]); the draft folds "[start, end) <hash hex>\n" for every valid
    # subtree into one SHA-256. Checks root() and perfect_subtrees() + fold_range() (over
    # the nodes a Frontier emits) on 4,000+ ranges, most of them not starting at 0.
    leaves = [leaf_hash(bytes([i])) for i in range(SUBTREE_VECTOR_MAX)]
    nodes: dict[tuple[int, int], bytes] = {}
    fr = Frontier()
    for h in leaves:
        nodes.update(((lv, i), x) for lv, i, x in fr.append(h))
    acc = hashlib.sha256()
    for start, end in _valid_subtrees():
        want = root(leaves[start:end])
        if start < end:
            assert fold_range([nodes[n] for n in perfect_subtrees(start, end)]) == want
        acc.update(f"[{start}, {end}) {want.hex()}\n".encode())
    assert acc.hexdigest() == SUBTREE_HASH_VECTOR


def test_subtree_inclusion_vector():
    # A subtree inclusion proof of a valid subtree [start, end) is the RFC 9162 inclusion
    # proof of index - start in the tree over leaves[start:end].
    leaves = [leaf_hash(bytes([i])) for i in range(SUBTREE_VECTOR_MAX)]
    acc = hashlib.sha256()
    for start, end in _valid_subtrees():
        sub = leaves[start:end]
        for index in range(start, end):
            proof = inclusion_proof(sub, index - start)
            acc.update(f"{index} [{start}, {end})".encode())
            acc.update("".join(f" {h.hex()}" for h in proof).encode() + b"\n")
    assert acc.hexdigest() == SUBTREE_INCLUSION_VECTOR
