"""Salted dataset commitments: deterministic, salt-hiding, openable one example at a time."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest

from flchain_plugin import merkle
from flchain_plugin.datasets import (
    DatasetError,
    dataset_commitment,
    example_bytes,
    leaf_key,
    new_salt,
    open_example,
    verify_example,
)
from flchain_plugin.digest import format_digest


def test_commitment_matches_the_documented_construction():
    salt = bytes(range(32))
    items = [b"a", b"bb", b""]
    leaves = []
    for i, it in enumerate(items):
        k = hmac.new(salt, b"flchain-dataset/v1" + i.to_bytes(8, "big"), hashlib.sha256).digest()
        leaves.append(hashlib.sha256(b"\x00" + k + hashlib.sha256(it).digest()).digest())
    want = format_digest(merkle.root(leaves))
    assert dataset_commitment(items, salt) == want
    assert dataset_commitment(iter(items), salt) == want


def test_salt_order_and_content_change_the_commitment():
    salt = new_salt()
    base = dataset_commitment([b"x", b"y"], salt)
    assert dataset_commitment([b"x", b"y"], new_salt()) != base
    assert dataset_commitment([b"y", b"x"], salt) != base
    assert dataset_commitment([b"x", b"z"], salt) != base


def test_opening_reveals_one_example_and_not_the_salt():
    salt = new_salt()
    items = [bytes([i]) * i for i in range(11)]
    c = dataset_commitment(items, salt)
    for i in range(11):
        op = open_example(items, salt, i)
        assert op.key == leaf_key(salt, i) and salt not in op.key
        verify_example(c, items[i], op)
        with pytest.raises(DatasetError, match="does not open"):
            verify_example(c, items[i] + b"!", op)
    with pytest.raises(DatasetError, match="not in a dataset"):
        open_example(items, salt, 11)


def test_example_bytes_is_container_and_byte_order_independent():
    x = np.arange(12, dtype="<f4").reshape(4, 3)
    y = np.array([0, 1, 1, 0], dtype="<i8")
    a = list(example_bytes(x, y))
    b = list(example_bytes(np.asfortranarray(x).astype(">f4"), y.tolist()))
    assert len(a) == 4 and a == b
    salt = new_salt()
    assert dataset_commitment(a, salt) == dataset_commitment(b, salt)
    x2 = x.copy()
    x2[2, 1] += 1
    assert list(example_bytes(x2, y))[2] != a[2]


def test_bad_input_is_refused_clearly():
    with pytest.raises(DatasetError, match="salt"):
        dataset_commitment([b"a"], b"short")
    with pytest.raises(DatasetError, match="empty"):
        dataset_commitment([], new_salt())
    with pytest.raises(DatasetError, match="want bytes"):
        dataset_commitment(["text"], new_salt())  # type: ignore[list-item]
    with pytest.raises(DatasetError, match="different lengths"):
        list(example_bytes(np.zeros((3, 2)), np.zeros(2)))
