"""Lightning resumes against a hostile ledger writer, with real Trainers on CPU.

- Every batch the callback commits carries a signed checkpoint (tree head).
- A resume pins the log's verifier key: a ledger rewritten and re-signed with another key
  is refused, whatever the rewritten history says.
- The file digest vouches for the bytes, the model digest for the weights: a recorded file
  whose weights are not the model digest its entry records is refused after torch.load
  returned and before Lightning put those weights into the module.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from test_lightning_callback import loaders, module_class, trainer

from flchain_plugin import entries as E
from flchain_plugin.checkpoint import open_checkpoint
from flchain_plugin.commit import commit, key_path, log_signer
from flchain_plugin.digest import file_digest, model_digest
from flchain_plugin.ledger import Ledger
from flchain_plugin.lightning import LedgerCallback, UnverifiedCheckpointError, checkpoint_lineage
from flchain_plugin.notes import Signer, generate_key, load_private_key, save_private_key

pytestmark = [pytest.mark.lightning, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    monkeypatch.delenv("FLCHAIN_LOG_VERIFIER", raising=False)


def fit(root: Path, ledger: Any, epochs: int, ckpt_path: Path | None = None,
        **cb: Any) -> tuple[Any, Any, Any]:
    import lightning.pytorch as L

    model = tiny(L)
    callback = LedgerCallback(ledger, progress=False, **cb)
    mc = L.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, save_last=True,
                                     monitor="val_loss")
    t = trainer(L, root, [callback, mc], epochs)
    t.fit(model, *loaders(), ckpt_path=None if ckpt_path is None else str(ckpt_path))
    return model, callback, mc


def refused(root: Path, ledger: Any, ckpt: Path, **cb: Any) -> UnverifiedCheckpointError:
    """Resume from `ckpt` must stop before the module's weights change."""
    import lightning.pytorch as L

    model = tiny(L)
    weights = model_digest(model.state_dict())
    t = trainer(L, root, [LedgerCallback(ledger, progress=False, **cb)], 5)
    with pytest.raises(UnverifiedCheckpointError) as err:
        t.fit(model, *loaders(), ckpt_path=str(ckpt))
    assert model.loads == 0 and t.global_step == 0
    assert model_digest(model.state_dict()) == weights
    return err.value


def tiny(L: Any) -> Any:
    torch.manual_seed(0)
    return module_class(L)()


def forge(src: Path, dst: Path) -> dict[str, Any]:
    """What a party that can write files does: change the weights, save a valid checkpoint."""
    ck = torch.load(src, weights_only=True)
    ck["state_dict"]["net.0.weight"] = ck["state_dict"]["net.0.weight"] + 1.0
    torch.save(ck, dst)
    return ck


def trained_and_forged(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, Any]]:
    """(ledger, its last recorded checkpoint file, a forged copy, the forged contents)
    after two epochs: the starting point of every forgery below."""
    path = tmp_path / "ledger.db"
    _, _, mc = fit(tmp_path, path, epochs=2)
    last, forged = Path(mc.last_model_path), tmp_path / "forged.ckpt"
    return path, last, forged, forge(last, forged)


def test_every_batch_is_signed_by_the_ledger_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    fit(tmp_path, path, epochs=2)
    key = load_private_key(key_path(path))
    with Ledger(path, create=False) as led:
        heads = [h.size for h in led.heads()]
        assert len(heads) == 1 + 3  # the datasets, two epoch saves, last
        assert led.checkpoint_sizes(100) == heads
        for size, note in led.store.checkpoints():
            cp, _ = open_checkpoint(note, key.verifier, origin=led.origin)
            assert cp.size == size and cp.root_hash == led.root_at(size)


def rewrite(path: Path, honest: Path, forged: Path, ck: dict[str, Any]) -> Signer:
    """Rewrite the ledger file so that it records `forged` where it recorded `honest`, and
    sign the new history with a fresh key named after the log (what a party able to
    rewrite the SQLite file can do). Returns the attacker's key."""
    with Ledger(path, create=False) as led:
        origin = led.origin
        old = [e.entry for e in led.iter_entries()]
    want = file_digest(honest)
    new = [replace(e, file=file_digest(forged), model=model_digest(ck["state_dict"]))
           if isinstance(e, E.TrainingCheckpoint) and e.file == want else e for e in old]
    attacker = generate_key(origin)
    fake = path.with_name("rewritten.db")
    with Ledger(fake, origin=origin) as led:
        for e in new:
            commit(led, [e], signer=attacker)
        assert led.verify().ok  # on its own, the rewritten file is a well-formed ledger
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    os.replace(fake, path)
    return attacker


def test_a_history_rewritten_and_resigned_with_another_key_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, last, forged, ck = trained_and_forged(tmp_path)
    writer = load_private_key(key_path(path)).verifier_key
    assert "not in the ledger" in refused(tmp_path, path, forged).reason  # before the rewrite

    attacker = rewrite(path, last, forged, ck)
    with Ledger(path, create=False) as led:  # the forged file now has a perfect lineage...
        assert checkpoint_lineage(led, file_digest(forged)).chain
    # ...in a tree the writer's key never signed: pinned by argument, by the environment,
    # or, for the writer itself, by the key it signs with.
    for cb in ({"verifier_key": writer}, {}):
        err = refused(tmp_path, path, forged, **cb)
        assert "not signed by the pinned log key" in err.reason and writer in err.reason
    monkeypatch.setenv("FLCHAIN_LOG_VERIFIER", writer)
    assert "re-signed" in refused(tmp_path, path, forged).reason
    monkeypatch.delenv("FLCHAIN_LOG_VERIFIER")

    # Control: it is the key that decides. Whoever pins the attacker's key (and signs with
    # it) loads the forged weights: pin the writer's key where the writer is not you.
    stolen = tmp_path / "attacker.key"
    save_private_key(attacker, stolen, None)
    model, cb, _ = fit(tmp_path / "b", path, 4, ckpt_path=forged,
                       signer=stolen, verifier_key=attacker.verifier_key)
    assert model.loads == 1 and cb.resumed is not None
    assert cb.resumed.entry.model == model_digest(ck["state_dict"])


def test_a_party_that_is_not_the_writer_must_be_told_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.db"
    _, _, mc = fit(tmp_path, path, epochs=2)
    writer_key = key_path(path)
    copy = tmp_path / "auditor" / "ledger.db"  # the ledger file without its key beside it
    copy.parent.mkdir()
    for suffix in ("", "-wal"):  # the file as it is, its write-ahead log included
        if Path(f"{path}{suffix}").exists():
            shutil.copy(f"{path}{suffix}", f"{copy}{suffix}")
    last = Path(mc.last_model_path)
    err = refused(tmp_path / "auditor", copy, last)
    assert "no log key is pinned" in err.reason and "FLCHAIN_LOG_VERIFIER" in err.reason
    assert not key_path(copy).exists()  # refusing made no key

    monkeypatch.setenv("FLCHAIN_LOG_VERIFIER", load_private_key(writer_key).verifier_key)
    model, cb, _ = fit(tmp_path / "auditor", copy, 3, ckpt_path=last, signer=writer_key)
    assert model.loads == 1 and cb.resumed is not None
    assert cb.resumed.verifier == load_private_key(writer_key).verifier_key

    # A pinned key the callback does not sign with is refused before the fit starts.
    other = tmp_path / "other.key"
    with Ledger(copy, create=False) as led:
        save_private_key(generate_key(led.origin), other, None)
    with pytest.raises(ValueError, match=r"^verifier_key: the pinned key"):
        fit(tmp_path / "auditor", copy, 3, signer=other)


def test_weights_that_are_not_the_recorded_model_are_refused(tmp_path: Path) -> None:
    path, last, forged, ck = trained_and_forged(tmp_path)
    with Ledger(path, create=False) as led:
        honest = led.find(file_digest(last), type="checkpoint")[0].entry
        # The writer's own key records the forged file under the honest weights' digest
        # (an insider, or a buggy writer): its file digest is recorded, its lineage holds.
        commit(led, [replace(honest, file=file_digest(forged), name="forged.ckpt")],
               signer=log_signer(led))
        assert checkpoint_lineage(led, file_digest(forged)).entry.model == honest.model
    err = refused(tmp_path, path, forged)
    assert f"is not the model digest {honest.model}" in err.reason
    assert model_digest(ck["state_dict"]) in err.reason

    # Asked to load it anyway, the run continues from the weights it really loaded.
    with Ledger(path, create=False) as led:
        before = led.size
    with pytest.warns(UserWarning, match="is not the model digest"):
        model, cb, _ = fit(tmp_path / "w", path, 3, ckpt_path=forged, on_unverified="warn")
    assert model.loads == 1 and cb.resumed is None
    with Ledger(path, create=False) as led:
        new = list(led.iter_entries(before, type="checkpoint"))
    assert new and new[0].entry.parent == model_digest(ck["state_dict"]) != honest.model


def test_a_batch_appended_without_the_key_is_not_vouched_for(tmp_path: Path) -> None:
    """A party that can write the file but not read the key appends an honest-looking
    record of a forged file: no signed checkpoint covers it."""
    path, last, forged, ck = trained_and_forged(tmp_path)
    with Ledger(path, create=False) as led:
        honest = led.find(file_digest(last), type="checkpoint")[0].entry
        led.append([replace(honest, file=file_digest(forged),
                            model=model_digest(ck["state_dict"]))])
        assert led.verify().ok  # a well-formed append, just never signed
        signed = led.checkpoint_sizes(1)[-1]
    err = refused(tmp_path, path, forged)
    assert f"after the newest checkpoint the pinned key signed (size {signed})" in err.reason
