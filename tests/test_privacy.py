"""Nothing private leaves through the ledger's side doors: dataset commitments are salted,
kept updates are ciphertext. (The scan of a whole simulated run's ledger and tiles for the
clients' training values is in test_replay.py, beside the run it scans.)"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from flchain_plugin.datasets import dataset_commitment, example_bytes, new_salt
from flchain_plugin.digest import model_digest
from flchain_plugin.vault import UpdateVault


def examples() -> list[bytes]:
    x = np.random.default_rng(3).standard_normal((20, 5)).astype(np.float32)
    y = np.arange(20) % 2
    return list(example_bytes(x, y))


def test_equal_datasets_at_two_clients_are_not_linkable():
    data = examples()
    a, b = new_salt(), new_salt()
    assert dataset_commitment(data, a) != dataset_commitment(data, b)
    assert dataset_commitment(data, a) == dataset_commitment(list(data), a)  # binding


def test_a_guessed_dataset_cannot_be_confirmed_without_the_salt():
    data, salt = examples(), new_salt()
    recorded = dataset_commitment(data, salt)
    guesses = [dataset_commitment(data, new_salt()) for _ in range(20)]
    guesses.append(dataset_commitment(data, bytes(32)))  # an all-zero "salt"
    assert recorded not in guesses


def test_kept_updates_hold_no_plaintext(tmp_path: Path):
    w = np.random.default_rng(4).standard_normal(4096).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, w, allow_pickle=False)
    vault = UpdateVault(tmp_path)
    d = vault.put(model_digest({"w": w}), {"w": buf.getvalue()})
    stored = vault.path(d).read_bytes()
    for chunk in (w[:8].tobytes(), w[2000:2008].tobytes(), b"NUMPY", b"names.txt"):
        assert chunk not in stored
    assert np.array_equal(vault.get(d)["w"], w)


def test_salts_derived_from_an_owner_secret():
    from flchain_plugin.datasets import DatasetError, owner_salt

    data, secret = examples(), new_salt()
    s1 = owner_salt(secret, "hospital-a/2026")
    assert s1 == owner_salt(secret, "hospital-a/2026") and len(s1) == 32
    assert s1 != owner_salt(secret, "hospital-a/2027") != owner_salt(new_salt(), "hospital-a/2026")
    assert dataset_commitment(data, s1) != dataset_commitment(data, owner_salt(new_salt(),
                                                                              "hospital-a/2026"))
    import pytest

    with pytest.raises(DatasetError, match="at least 16"):
        owner_salt(b"short", "x")
    with pytest.raises(DatasetError, match="non-empty name"):
        owner_salt(secret, "")
