"""The update vault and erasure, without Flower: keys, ciphertexts, crashes, tampering.

Fast unit tests on real files and a real SQLite ledger; the end-to-end erasure of a
simulated run's update is in test_replay.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin.blobs import BlobStore
from flchain_plugin.digest import model_digest
from flchain_plugin.erasure import ErasureError, erase
from flchain_plugin.ledger import Ledger
from flchain_plugin.vault import MAGIC, UpdateVault, VaultError


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((3, 4)).astype(np.float32),
            "b/with slash": rng.standard_normal(4).astype(np.float64)}


def npy(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """What a Flower Array carries: np.save bytes."""
    import io

    out = {}
    for k, v in arrays.items():
        buf = io.BytesIO()
        np.save(buf, v, allow_pickle=False)
        out[k] = buf.getvalue()
    return out


def test_vault_round_trip_from_npy_bytes_and_arrays(tmp_path: Path):
    vault = UpdateVault(tmp_path)
    t = tensors()
    d = model_digest(t)
    assert vault.put(d, npy(t)) == d
    got = vault.get(d)
    assert list(got) == list(t) and all(np.array_equal(got[k], t[k]) for k in t)
    assert list(vault) == [d] and vault.has(d)
    t2 = tensors(1)
    d2 = vault.put(model_digest(t2), t2)
    assert sorted(vault) == sorted([d, d2])
    assert vault.path(d).read_bytes().startswith(MAGIC)
    assert len(vault.key_path(d).read_bytes()) == 32


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8),
                          st.lists(st.floats(allow_nan=False, width=32), min_size=1,
                                   max_size=6)), min_size=1, max_size=4, unique_by=lambda p: p[0]))
def test_vault_keeps_any_tensor_names_and_values(tmp_path_factory: pytest.TempPathFactory,
                                                  named: list[tuple[str, list[float]]]):
    vault = UpdateVault(tmp_path_factory.mktemp("v"))
    t = {name: np.asarray(vals, dtype=np.float32) for name, vals in named}
    d = vault.put(model_digest(t), npy(t))
    got = vault.get(d)
    assert list(got) == list(t)
    assert all(got[k].tobytes() == t[k].tobytes() for k in t)


def test_ciphertext_swapped_to_another_digest_does_not_decrypt(tmp_path: Path):
    vault = UpdateVault(tmp_path)
    a, b = tensors(0), tensors(1)
    da, db = vault.put(model_digest(a), a), vault.put(model_digest(b), b)
    vault.path(db).write_bytes(vault.path(da).read_bytes())
    vault.key_path(db).write_bytes(vault.key_path(da).read_bytes())
    with pytest.raises(VaultError, match="does not decrypt"):
        vault.get(db)


def test_update_stored_under_a_wrong_digest_is_caught(tmp_path: Path):
    vault = UpdateVault(tmp_path)
    wrong = "sha256:" + "12" * 32
    vault.put(wrong, tensors())
    with pytest.raises(VaultError, match="altered before it was encrypted"):
        vault.get(wrong)
    assert vault.get(wrong, check=False)  # decrypts: the digest check is what refuses it


def test_damaged_files_are_refused_in_one_message(tmp_path: Path):
    vault = UpdateVault(tmp_path)
    d = vault.put(model_digest(tensors()), tensors())
    vault.path(d).write_bytes(b"garbage")
    with pytest.raises(VaultError, match="damaged"):
        vault.get(d)
    vault.key_path(d).write_bytes(b"short")
    with pytest.raises(VaultError, match="damaged"):
        vault.get(d)


def test_erase_shreds_the_key_then_the_ciphertext(tmp_path: Path):
    vault = UpdateVault(tmp_path)
    d = vault.put(model_digest(tensors()), tensors())
    key_file = vault.key_path(d)
    inode_dir = key_file.parent
    same_inode = tmp_path / "key-link"  # sees the key's blocks after its name is unlinked
    os.link(key_file, same_inode)
    assert vault.erase(d) is True
    assert same_inode.read_bytes() == b"\0" * 32  # overwritten before unlinking, not just unlinked
    assert not key_file.exists() and not vault.path(d).exists() and not vault.has(d)
    assert list(inode_dir.iterdir()) == []  # no temporary copy of the key left behind
    with pytest.raises(VaultError, match="key is not in"):
        vault.get(d)
    assert vault.erase(d) is False


def test_a_crash_between_key_and_ciphertext_leaves_no_unreadable_update(tmp_path: Path):
    vault = UpdateVault(tmp_path)
    d = vault.put(model_digest(tensors()), tensors())
    os.unlink(vault.path(d))  # as if the process died after writing the key
    assert not vault.has(d) and list(vault) == []
    assert vault.put(d, tensors()) == d and vault.has(d)  # keeping it again completes it
    assert np.array_equal(vault.get(d)["w"], tensors()["w"])


def test_new_optional_fields_keep_old_bytes():
    old_erasure = b'{"blob":"sha256:' + b"0" * 64 + b'","reason":"x","type":"erasure","v":1}'
    assert E.decode(old_erasure).encode() == old_erasure
    assert E.decode(old_erasure).kind is None  # type: ignore[attr-defined]
    run = E.Run(run="r", strategy="FedAvg", config="sha256:" + "1" * 64,
                model="sha256:" + "2" * 64)
    assert b"aggregation" not in run.encode()
    with_agg = E.Run(run="r", strategy="FedAvg", config="sha256:" + "1" * 64,
                     model="sha256:" + "2" * 64, aggregation={"strategy": [], "updates": "kept"})
    assert E.decode(with_agg.encode()) == with_agg
    with pytest.raises(E.EntryError, match=r"run\.aggregation"):
        E.Run(run="r", strategy="FedAvg", config="sha256:" + "1" * 64,
              model="sha256:" + "2" * 64, aggregation=[1])  # type: ignore[arg-type]


def _ledger_with_update(tmp_path: Path) -> tuple[Ledger, BlobStore, str]:
    led = Ledger(tmp_path / "l.db")
    blobs = BlobStore(tmp_path / "l.db.blobs")
    t = tensors()
    d = model_digest(t)
    led.append([E.Update(run="r", round=1, node="7", update=d, parent="sha256:" + "3" * 64,
                         num_examples=5, metrics={}, dataset=None, nonce="n", key=None,
                         signature=None)])
    UpdateVault(blobs.root).put(d, t)
    return led, blobs, d


def test_erase_records_then_destroys_and_finishes_after_a_crash(tmp_path: Path):
    led, blobs, d = _ledger_with_update(tmp_path)
    with pytest.raises(ErasureError, match="not recorded"):
        erase(led, "sha256:" + "9" * 64, blobs)
    # a crash after the entry was committed and before anything was destroyed
    led.append([E.Erasure(blob=d, reason="request", kind="update")])
    size = led.size
    done = erase(led, d, blobs)
    assert done.committed is None and led.size == size and done.index == size - 1
    assert done.destroyed == ("update",) and not UpdateVault(blobs.root).has(d)
    with pytest.raises(ErasureError, match="already erased"):
        erase(led, d, blobs)
    assert led.verify().ok
    led.close()


def test_erase_destroys_plain_copies_too(tmp_path: Path):
    led, blobs, d = _ledger_with_update(tmp_path)
    blobs.put(tensors(), d)  # e.g. update arrays another component stored in the clear
    done = erase(led, d, blobs, reason="GDPR art. 17 request")
    assert done.destroyed == ("update", "weights") and not blobs.has(d)
    entry = led.get(done.index).entry
    assert json.loads(entry.encode())["kind"] == "update+weights"
    assert led.verify().ok
    led.close()
