"""The `flchain` command, run through click's CliRunner on real SQLite ledgers and real keys,
plus one run of the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from flchain_plugin import entries as E
from flchain_plugin import merkle, notes
from flchain_plugin.cli import cli
from flchain_plugin.cli import root as cli_module
from flchain_plugin.ledger import Ledger

ORIGIN = "example.com/cli-test"


def digest(i: int) -> str:
    return f"sha256:{i:064x}"


def dataset(i: int) -> E.Entry:
    return E.Dataset(dataset=digest(i), owner=f"owner{i}", scheme="salted-merkle/v1",
                     examples=10 + i, name=f"set{i}")


def credit(i: int) -> E.Entry:
    return E.Credit(run="r1", round=i, node=str(i), rule="equal", amount=5, basis={"n": i})


def lines(entries: list[E.Entry]) -> str:
    return "".join(json.dumps(e.to_json()) + "\n" for e in entries)


class Flchain:
    """Runs `flchain --ledger <path> ...` in-process and returns click's Result."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.ledger = tmp_path / "ledger.db"
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, ledger: Path | None = None,
                 env: dict[str, str] | None = None) -> Result:
        env = {"COLUMNS": "200", **(env or {})}
        return self.runner.invoke(cli, ["--ledger", str(ledger or self.ledger), *args],
                                  input=input, env=env, catch_exceptions=False)

    def json(self, *args: str, input: str | None = None, ledger: Path | None = None,
             env: dict[str, str] | None = None) -> dict:
        r = self(*args, "--json", input=input, ledger=ledger, env=env)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def fl(tmp_path: Path) -> Flchain:
    return Flchain(tmp_path)


@pytest.fixture
def filled(fl: Flchain) -> Flchain:
    """A ledger with 7 entries in two batches: datasets 0..3, then credits 4..6."""
    assert fl("init", "--origin", ORIGIN).exit_code == 0
    assert fl("append", input=lines([dataset(i) for i in range(4)])).exit_code == 0
    assert fl("append", input=lines([credit(i) for i in range(4, 7)])).exit_code == 0
    return fl


def one_line_error(r: Result, code: int, *needles: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "\n" not in err and err.startswith("flchain: error: "), err
    for n in needles:
        assert n in err, (n, err)


# -- init ------------------------------------------------------------------------------------


def test_init_human_and_json(fl: Flchain, tmp_path: Path):
    r = fl("init", "--origin", ORIGIN)
    assert r.exit_code == 0, r.stderr
    assert ORIGIN in r.stdout and "ledger created" in r.stdout
    with Ledger(fl.ledger, create=False) as led:
        assert led.origin == ORIGIN and led.size == 0

    doc = fl.json("init", ledger=tmp_path / "other.db")
    assert doc["origin"].startswith("flchain.local/") and doc["size"] == 0
    assert doc["root"] == merkle.SHA256.empty_root().hex()

    one_line_error(fl("init"), 2, "already exists")
    one_line_error(fl("init", "--origin", "has space", ledger=tmp_path / "x.db"), 2, "--origin")
    assert not (tmp_path / "x.db").exists()


def test_ledger_path_from_environment(fl: Flchain, tmp_path: Path):
    path = tmp_path / "env.db"
    r = fl.runner.invoke(cli, ["init", "--json"], env={"FLCHAIN_LEDGER": str(path)})
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["ledger"] == str(path) and path.exists()
    # --ledger after the command name works too
    r = fl.runner.invoke(cli, ["head", "--ledger", str(path), "--json"])
    assert json.loads(r.stdout)["size"] == 0


@pytest.mark.parametrize("args", [
    ["log"], ["show", "0"], ["prove", "0"], ["consistency", "0"], ["verify"], ["head"],
    ["info"], ["append"], ["checkpoint", "latest"],
])
def test_missing_ledger_says_to_init(fl: Flchain, args: list[str]):
    r = fl(*args, input="")
    one_line_error(r, 2, "no ledger at", "flchain init")
    assert not fl.ledger.exists()


# -- append ----------------------------------------------------------------------------------


def test_append_is_one_batch_by_default(fl: Flchain):
    fl("init", "--origin", ORIGIN)
    text = lines([dataset(0), dataset(1)]) + "\n   \n" + lines([credit(2)])
    doc = fl.json("append", input=text)
    assert doc["appended"] == 3 and doc["size"] == 3 and len(doc["batches"]) == 1
    with Ledger(fl.ledger, create=False) as led:
        assert [h.size for h in led.heads()] == [3]
        assert doc["root"] == led.head().root.hex()
        assert led.get(1).data == dataset(1).encode()

    r = fl("append", input=lines([credit(3)]))
    assert r.exit_code == 0 and "appended 1 entries; tree size 4" in r.stdout


def test_append_batch_size_splits(fl: Flchain):
    fl("init", "--origin", ORIGIN)
    doc = fl.json("append", "--batch-size", "2", input=lines([credit(i) for i in range(5)]))
    assert [(b["first"], b["count"], b["size"]) for b in doc["batches"]] == [
        (0, 2, 2), (2, 2, 4), (4, 1, 5)]
    with Ledger(fl.ledger, create=False) as led:
        assert [h.size for h in led.heads()] == [2, 4, 5]
        assert [h.root.hex() for h in led.heads()] == [b["root"] for b in doc["batches"]]


@pytest.mark.parametrize(("bad", "needles"), [
    ('{"v":1,"type":"dataset","dataset":"sha256:zz","owner":"a","scheme":"s",'
     '"examples":null,"name":null}', ["line 3", "dataset.dataset", "not a digest"]),
    ('{"v":1,"type":"gossip","x":1}', ["line 3", "type", "unknown entry type 'gossip'"]),
    ('{"v":1,"type":"credit","run":"r","round":"1","node":"n","rule":"x","amount":1,'
     '"basis":{}}', ["line 3", "credit.round", "integer"]),
    ('{"v":1,"type":"erasure","blob":"' + digest(1) + '"}', ["line 3", "erasure.reason",
                                                             "missing"]),
    ("{not json", ["line 3", "not JSON"]),
    ('{"v":2,"type":"erasure"}', ["line 3", "v:"]),
])
@pytest.mark.parametrize("batch_size", [None, "1"])
def test_bad_line_appends_nothing(filled: Flchain, bad: str, needles: list[str],
                                  batch_size: str | None):
    before = filled.json("head")
    text = lines([credit(10), credit(11)]) + bad + "\n" + lines([credit(12)])
    args = ["append"] + (["--batch-size", batch_size] if batch_size else [])
    r = filled(*args, input=text)
    one_line_error(r, 2, *needles, "nothing was appended")
    assert filled.json("head") == before


def test_append_empty_input(filled: Flchain):
    one_line_error(filled("append", input="\n\n"), 2, "no entries in stdin")
    one_line_error(filled("append", "--batch-size", "3", input=""), 2, "no entries in stdin")


def test_append_from_a_file(filled: Flchain, tmp_path: Path):
    src = tmp_path / "entries.jsonl"
    src.write_text(lines([credit(20), credit(21)]))
    assert filled.json("append", str(src))["size"] == 9
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one_line_error(filled("append", str(empty)), 2, f"no entries in {empty}")
    assert filled("append", str(tmp_path / "absent.jsonl")).exit_code == 2
    r = filled("append", "--batch-size", "0", input=lines([credit(1)]))
    assert r.exit_code == 2  # click's usage error


# -- log, show -------------------------------------------------------------------------------


def test_log_human(filled: Flchain):
    r = filled("log")
    assert r.exit_code == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert rows[0].split()[:4] == ["index", "type", "subjects", "summary"]
    assert rows[1].split()[:3] == ["0", "dataset", "sha256:000000000000…"]
    assert "owner=owner0" in rows[1] and "examples=10" in rows[1]
    assert rows[5].split()[:2] == ["4", "credit"] and "rule=equal" in rows[5]
    assert rows[-1] == "7 entries shown; tree size 7"

    r = filled("log", "--type", "credit", "--from", "5")
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:-1]] == ["5", "6"]


def test_log_json_streams_every_entry(filled: Flchain):
    doc = filled.json("log")
    assert doc["size"] == 7 and [e["index"] for e in doc["entries"]] == list(range(7))
    with Ledger(filled.ledger, create=False) as led:
        for e in doc["entries"]:
            logged = led.get(e["index"])
            assert E.from_json(e["entry"]).encode() == logged.data
            assert e["leaf_hash"] == logged.leaf_hash.hex()
            assert e["subjects"] == list(logged.entry.subjects)
    assert [e["index"] for e in filled.json("log", "--from", "-2")["entries"]] == [5, 6]
    assert [e["index"] for e in filled.json("log", "--limit", "3")["entries"]] == [0, 1, 2]
    assert [e["index"] for e in
            filled.json("log", "--type", "dataset", "--from", "1", "--limit", "2")
            ["entries"]] == [1, 2]
    assert filled.json("log", "--from", "7")["entries"] == []
    assert filled("log", "--type", "nosuch").exit_code == 2


def test_log_over_several_table_chunks(fl: Flchain):
    fl("init", "--origin", ORIGIN)
    n = 600  # > 2 rendered chunks
    assert fl("append", input=lines([credit(i) for i in range(n)])).exit_code == 0
    out = fl("log").stdout.splitlines()
    assert sum(ln.lstrip().startswith("index") for ln in out) == 1
    assert [int(ln.split()[0]) for ln in out[1:-1]] == list(range(n))
    assert len({ln.index("credit") for ln in out[1:-1]}) == 1  # columns stay aligned


def test_show(filled: Flchain):
    doc = filled.json("show", "5")
    assert doc["index"] == 5 and doc["type"] == "credit"
    assert doc["entry"] == credit(5).to_json()
    inc = doc["inclusion"]
    merkle.verify_inclusion(5, inc["size"], bytes.fromhex(doc["leaf_hash"]),
                            [bytes.fromhex(h) for h in inc["hashes"]], bytes.fromhex(inc["root"]))
    assert inc["size"] == 7

    r = filled("show", "2")
    assert r.exit_code == 0 and "entry 2 (dataset)" in r.stdout
    assert merkle.leaf_hash(dataset(2).encode()).hex() in r.stdout
    one_line_error(filled("show", "7"), 2, "no entry 7")


# -- proofs ----------------------------------------------------------------------------------


def test_prove_by_index_and_size(filled: Flchain):
    for size in (None, 4, 6):
        args = ["prove", "3"] + (["--size", str(size)] if size else [])
        doc = filled.json(*args)
        assert doc["size"] == (size or 7)
        merkle.verify_inclusion(3, doc["size"], bytes.fromhex(doc["leaf_hash"]),
                                [bytes.fromhex(h) for h in doc["hashes"]],
                                bytes.fromhex(doc["root"]))
    with Ledger(filled.ledger, create=False) as led:
        assert filled.json("prove", "0", "--size", "4")["root"] == led.heads()[0].root.hex()
    r = filled("prove", "1")
    assert r.exit_code == 0 and "inclusion proof" in r.stdout and "verified" in r.stdout
    one_line_error(filled("prove", "3", "--size", "3"), 2, "not in a tree of size 3")
    one_line_error(filled("prove", "0", "--size", "99"), 2, "beyond")


def test_prove_by_digest(fl: Flchain):
    fl("init", "--origin", ORIGIN)
    model = digest(42)
    fl("append", input=lines([
        dataset(1),
        E.Model(run="r", round=1, model=model, parent=None, inputs=[], aggregator="fedavg"),
        credit(2),
        E.Evaluation(run="r", round=1, model=model, metrics={"acc": 0.9}),
    ]))
    doc = fl.json("prove", "--digest", model)
    assert [(p["index"], p["type"]) for p in doc["proofs"]] == [(1, "model"), (3, "evaluation")]
    for p in doc["proofs"]:
        merkle.verify_inclusion(p["index"], p["size"], bytes.fromhex(p["leaf_hash"]),
                                [bytes.fromhex(h) for h in p["hashes"]], bytes.fromhex(p["root"]))
    assert [p["index"] for p in
            fl.json("prove", "--digest", model, "--type", "evaluation")["proofs"]] == [3]
    r = fl("prove", "--digest", model)
    assert r.exit_code == 0 and r.stdout.count("inclusion proof") == 2

    r = fl("prove", "--digest", digest(7), "--json")
    one_line_error(r, 1, "no entry about")
    assert json.loads(r.stdout) == {"digest": digest(7), "proofs": []}
    one_line_error(fl("prove", "--digest", "sha256:XY"), 2, "not a digest")
    one_line_error(fl("prove"), 2, "INDEX or --digest")
    one_line_error(fl("prove", "1", "--digest", model), 2, "not both")


def test_consistency(filled: Flchain):
    doc = filled.json("consistency", "4")
    assert (doc["size1"], doc["size2"]) == (4, 7)
    merkle.verify_consistency(4, 7, [bytes.fromhex(h) for h in doc["hashes"]],
                              bytes.fromhex(doc["root1"]), bytes.fromhex(doc["root2"]))
    doc = filled.json("consistency", "2", "5")
    merkle.verify_consistency(2, 5, [bytes.fromhex(h) for h in doc["hashes"]],
                              bytes.fromhex(doc["root1"]), bytes.fromhex(doc["root2"]))
    r = filled("consistency", "3", "6")
    assert r.exit_code == 0 and "consistency proof" in r.stdout
    with Ledger(filled.ledger, create=False) as led:
        assert led.root_at(3).hex() in r.stdout and led.root_at(6).hex() in r.stdout
    one_line_error(filled("consistency", "5", "3"), 2, "size1 5")
    one_line_error(filled("consistency", "1", "70"), 2, "beyond")


# -- verify, head, info ----------------------------------------------------------------------


def test_verify_ok(filled: Flchain):
    r = filled("verify")
    assert r.exit_code == 0 and "ledger verified" in r.stdout
    doc = filled.json("verify")
    head = filled.json("head")
    warnings = doc.pop("warnings")
    assert doc.pop("verifier").startswith("example.com/cli-test+")
    assert doc == {"ok": True, "size": 7, "root": head["root"], "heads": 2, "checkpoints": 0,
                   "problem": None, "head_signed": False, "signed_size": None,
                   "verifier_source": "pinned"}
    # Nothing was signed: the newest tree head is covered by no checkpoint, and verify says so.
    assert len(warnings) == 1 and "size 7" in warnings[0]


def test_verify_names_the_tampered_entry(filled: Flchain):
    with sqlite3.connect(filled.ledger) as db:
        data = db.execute("SELECT data FROM entries WHERE idx = 5").fetchone()[0]
        db.execute("UPDATE entries SET data = ? WHERE idx = 5",
                   (bytes(data).replace(b'"equal"', b'"EQUAL"'),))
    r = filled("verify")
    one_line_error(r, 1, "ledger does not verify", "entry 5")
    assert "verification FAILED" in r.stdout and '"EQUAL"' in r.stdout

    r = filled("verify", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["size"] == 7
    assert doc["problem"]["kind"] == "entry" and doc["problem"]["index"] == 5
    assert '"EQUAL"' in doc["problem"]["stored"]


def test_verify_names_a_tampered_node(fl: Flchain):
    fl("init", "--origin", ORIGIN)
    fl("append", input=lines([credit(i) for i in range(40)]))
    with sqlite3.connect(fl.ledger) as db:
        key = (4 << 40) | 1  # level 4, index 1: entries 16..31 (levels below 4 are not stored)
        assert db.execute("UPDATE nodes SET hash = ? WHERE id = ?", (b"\x00" * 32, key)).rowcount
    r = fl("verify", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["problem"]["kind"] == "node"
    assert "level 4 index 1" in r.stderr


def test_verify_with_progress_on_a_larger_ledger(fl: Flchain):
    fl("init", "--origin", ORIGIN)
    fl("append", "--batch-size", "5000", input=lines([credit(i) for i in range(12_000)]))
    r = fl("verify", "--progress", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["size"] == 12_000  # the bar goes to stderr, stdout stays JSON


def test_head_and_info(filled: Flchain):
    head = filled.json("head")
    with Ledger(filled.ledger, create=False) as led:
        assert head == {"origin": ORIGIN, "size": 7, "root": led.head().root.hex(),
                        "timestamp": led.head().timestamp}
    assert head["root"] in filled("head").stdout
    info = filled.json("info")
    assert info["origin"] == ORIGIN and info["size"] == 7 and info["checkpoints"] == 0
    assert info["latest_checkpoint_size"] is None and info["file_bytes"] > 0
    with Ledger(filled.ledger, create=False) as led:  # the key for mirrors and clients
        assert led.pinned_verifier is not None
        assert info["verifier"] == led.pinned_verifier.vkey
        assert info["verifier_from"] == "pinned"
    r = filled("info")
    assert r.exit_code == 0 and ORIGIN in r.stdout and "checkpoints" in r.stdout


# -- keys ------------------------------------------------------------------------------------


def test_keygen_writes_0600_and_prints_the_verifier(filled: Flchain, tmp_path: Path):
    key = tmp_path / "log.pem"
    doc = filled.json("keygen", "--out", str(key))  # NAME defaults to the ledger origin
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = notes.load_private_key(key)
    assert doc == {"name": ORIGIN, "verifier": signer.verifier_key, "key_file": str(key),
                   "type": "ed25519", "encrypted": False}
    assert notes.Verifier.parse(doc["verifier"]) == signer.verifier

    one_line_error(filled("keygen", "--out", str(key)), 2, "exists", "--force")
    r = filled("keygen", "--force", "--out", str(key))
    assert r.exit_code == 0 and "log key" in r.stdout
    assert notes.load_private_key(key).verifier_key in r.stdout.replace("\n", "")
    assert notes.load_private_key(key).verifier_key != signer.verifier_key

    w = tmp_path / "w.pem"
    doc = filled.json("keygen", "witness.example/w", "--witness", "--out", str(w))
    assert doc["type"] == "cosignature/v1"
    assert isinstance(notes.load_private_key(w), notes.CosignatureSigner)
    one_line_error(filled("keygen", "bad+name", "--out", str(tmp_path / "b.pem")), 2, "invalid")
    one_line_error(filled("keygen", "--witness", "--out", str(tmp_path / "c.pem")), 2, "NAME")


def test_keygen_passphrase_file_env_and_prompt(filled: Flchain, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    k1 = tmp_path / "k1.pem"
    assert filled.json("keygen", "--out", str(k1), "--passphrase-file", str(pw))["encrypted"]
    assert stat.S_IMODE(k1.stat().st_mode) == 0o600
    assert notes.load_private_key(k1, b"correct horse").name == ORIGIN
    with pytest.raises(notes.KeyFileError, match="wrong passphrase"):
        notes.load_private_key(k1, b"wrong")

    k2 = tmp_path / "k2.pem"
    filled.json("keygen", "--out", str(k2), "--passphrase-env", "FLK_PW",
                env={"FLK_PW": "from env"})
    assert notes.load_private_key(k2, b"from env").name == ORIGIN
    one_line_error(filled("keygen", "--out", str(tmp_path / "k3.pem"),
                          "--passphrase-env", "FLK_UNSET_VAR"), 2, "FLK_UNSET_VAR")
    one_line_error(filled("keygen", "--out", str(tmp_path / "k3.pem"), "--passphrase-env",
                          "X", "--passphrase-file", str(pw)), 2, "not both")

    # Interactive: asked twice, the passphrase encrypts the key.
    monkeypatch.setattr("flchain_plugin.cli.checkpoint._interactive", lambda: True)
    k4 = tmp_path / "k4.pem"
    r = filled("keygen", "--out", str(k4), input="typed pw\ntyped pw\n")
    assert r.exit_code == 0, r.stderr
    assert notes.load_private_key(k4, b"typed pw").name == ORIGIN
    k5 = tmp_path / "k5.pem"
    assert filled("keygen", "--out", str(k5), input="\n\n").exit_code == 0  # empty: none
    assert notes.load_private_key(k5).name == ORIGIN


# -- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_sign_verify_cosign_round_trip(filled: Flchain, tmp_path: Path):
    fl = filled
    log_key, w_key = tmp_path / "log.pem", tmp_path / "w.pem"
    pw = tmp_path / "pw"
    pw.write_text("s3cret")
    log_vkey = fl.json("keygen", "--out", str(log_key), "--passphrase-file", str(pw))["verifier"]
    w_vkey = fl.json("keygen", "w.example/1", "--witness", "--out", str(w_key),
                     "--passphrase-env", "W_PW", env={"W_PW": "wpw"})["verifier"]
    state = tmp_path / "witness-state.json"
    cp7 = tmp_path / "cp7.note"

    # sign: an encrypted key needs its passphrase; without a terminal that is an error
    one_line_error(fl("checkpoint", "sign", "--key", str(log_key)), 2, "encrypted",
                   "--passphrase-file")
    one_line_error(fl("checkpoint", "sign", "--key", str(log_key), "--passphrase-file",
                      str(tmp_path / "nope")), 2, "passphrase file")
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    one_line_error(fl("checkpoint", "sign", "--key", str(log_key), "--passphrase-file",
                      str(wrong)), 2, "wrong passphrase")
    r = fl("checkpoint", "sign", "--key", str(log_key), "--passphrase-file", str(pw))
    assert r.exit_code == 0 and r.stdout.startswith(f"{ORIGIN}\n7\n")
    cp7.write_text(r.stdout)
    doc = fl.json("checkpoint", "sign", "--key", str(log_key), "--passphrase-file", str(pw),
                  "--out", str(tmp_path / "again.note"))
    assert doc["size"] == 7 and doc["verifier"] == log_vkey
    assert (tmp_path / "again.note").read_text() == doc["note"]
    assert fl.json("info")["checkpoints"] == 2
    assert fl.json("checkpoint", "latest")["note"] == doc["note"]
    assert fl("checkpoint", "latest").stdout == doc["note"]

    # verify: right key, wrong key, other witness
    r = fl("checkpoint", "verify", str(cp7), "--key-verifier", log_vkey)
    assert r.exit_code == 0 and "checkpoint verified" in r.stdout and "matches" in r.stdout
    v = fl.json("checkpoint", "verify", str(cp7), "--key-verifier", log_vkey)
    assert v["ok"] and v["size"] == 7 and [s["role"] for s in v["signatures"]] == ["log"]
    other = notes.generate_key(ORIGIN).verifier_key
    r = fl("checkpoint", "verify", str(cp7), "--key-verifier", other, "--json")
    one_line_error(r, 1, "does not verify", "no signature by log key")
    assert json.loads(r.stdout)["ok"] is False
    one_line_error(fl("checkpoint", "verify", str(cp7), "--key-verifier", log_vkey,
                      "--witness-verifier", w_vkey), 1, "no cosignature by witness")
    one_line_error(fl("checkpoint", "verify", str(cp7), "--key-verifier", "garbage"), 2,
                   "verifier key")

    # cosign: first cosignature, from the empty tree
    args = ["--log-verifier", log_vkey, "--state", str(state), "--passphrase-env", "W_PW"]
    env = {"W_PW": "wpw"}
    r = fl("checkpoint", "cosign", str(cp7), "--key", str(w_key), *args, env=env)
    assert r.exit_code == 0, r.stderr
    assert "checkpoint cosigned" in r.stdout and "first cosignature" in r.stdout
    v = fl.json("checkpoint", "verify", str(cp7), "--key-verifier", log_vkey,
                "--witness-verifier", w_vkey)
    assert [s["role"] for s in v["signatures"]] == ["log", "witness"]
    assert v["signatures"][1]["timestamp"] > 0
    saved = json.loads(state.read_text())
    assert saved["witness"] == w_vkey and saved["logs"][ORIGIN]["size"] == 7

    # the log operator stores the cosigned note; `latest` hands it out
    assert fl.json("checkpoint", "add", str(cp7), "--key-verifier", log_vkey)["signatures"] == 2
    assert fl("checkpoint", "latest").stdout == cp7.read_text()

    # the log grows; the witness checks 7 -> 9 and cosigns
    fl("append", input=lines([credit(7), credit(8)]))
    cp9 = tmp_path / "cp9.note"
    cp9.write_text(fl("checkpoint", "sign", "--key", str(log_key), "--passphrase-file",
                      str(pw)).stdout)
    out9 = tmp_path / "cp9.cosigned"
    doc = fl.json("checkpoint", "cosign", str(cp9), "--key", str(w_key), "--out", str(out9),
                  *args, env=env)
    assert doc["previous_size"] == 7 and doc["size"] == 9 and out9.read_text() == doc["note"]
    assert json.loads(state.read_text())["logs"][ORIGIN]["size"] == 9

    # a rollback to the older checkpoint is refused, the state is kept
    before = state.read_text()
    r = fl("checkpoint", "cosign", str(cp7), "--key", str(w_key), *args, "--json", env=env)
    one_line_error(r, 1, "refusing to cosign", "rollback from size 9 to 7")
    assert json.loads(r.stdout)["ok"] is False and state.read_text() == before

    # a fork: same origin and log key, other history. The witness refuses it.
    fork = tmp_path / "fork.db"
    fl("init", "--origin", ORIGIN, ledger=fork)
    fl("append", input=lines([credit(100 + i) for i in range(12)]), ledger=fork)
    cp_fork = tmp_path / "fork.note"
    cp_fork.write_text(fl("checkpoint", "sign", "--key", str(log_key), "--passphrase-file",
                          str(pw), ledger=fork).stdout)
    r = fl("checkpoint", "cosign", str(cp_fork), "--key", str(w_key), *args, ledger=fork,
           env=env)
    one_line_error(r, 1, "refusing to cosign", "not consistent with last cosigned size 9")
    assert state.read_text() == before and "w.example/1" not in cp_fork.read_text()

    # the fork's checkpoint does not match the real ledger, and vice versa
    one_line_error(fl("checkpoint", "verify", str(cp9), "--key-verifier", log_vkey,
                      ledger=fork), 1, "differs from the ledger's tree at size 9")
    one_line_error(fl("checkpoint", "verify", str(cp_fork), "--key-verifier", log_vkey), 1,
                   "size 12", "ledger has 9 entries")
    assert fl.json("checkpoint", "verify", str(cp_fork), "--key-verifier", log_vkey,
                   "--no-ledger")["ledger_checked"] is False
    r = fl("checkpoint", "add", str(cp_fork), "--key-verifier", log_vkey)
    one_line_error(r, 1, "not storing")


def test_checkpoint_key_errors(filled: Flchain, tmp_path: Path):
    fl = filled
    log_key, w_key, stranger = tmp_path / "log.pem", tmp_path / "w.pem", tmp_path / "s.pem"
    log_vkey = fl.json("keygen", "--out", str(log_key))["verifier"]
    fl.json("keygen", "w.example/1", "--witness", "--out", str(w_key))
    fl.json("keygen", "someone.else/log", "--out", str(stranger))
    one_line_error(fl("checkpoint", "sign", "--key", str(w_key)), 2, "is a witness key")
    one_line_error(fl("checkpoint", "sign", "--key", str(stranger)), 2,
                   "not the ledger origin", f"flchain keygen {ORIGIN}")
    one_line_error(fl("checkpoint", "sign", "--key", str(tmp_path / "none.pem")), 2,
                   "does not exist")
    os.chmod(log_key, 0o644)
    one_line_error(fl("checkpoint", "sign", "--key", str(log_key)), 2, "chmod 600")
    os.chmod(log_key, 0o600)
    one_line_error(fl("checkpoint", "latest"), 2, "no signed checkpoint")

    note = tmp_path / "cp.note"
    note.write_text(fl("checkpoint", "sign", "--key", str(log_key)).stdout)
    state = tmp_path / "state.json"
    one_line_error(fl("checkpoint", "cosign", str(note), "--key", str(log_key), "--log-verifier",
                      log_vkey, "--state", str(state)), 2, "is a log key")
    other_w = tmp_path / "w2.pem"
    fl.json("keygen", "w.example/2", "--witness", "--out", str(other_w))
    assert fl("checkpoint", "cosign", str(note), "--key", str(w_key), "--log-verifier",
              log_vkey, "--state", str(state)).exit_code == 0
    one_line_error(fl("checkpoint", "cosign", str(note), "--key", str(other_w), "--log-verifier",
                      log_vkey, "--state", str(state)), 2, "belongs to witness")
    state.write_text("{broken")
    one_line_error(fl("checkpoint", "cosign", str(note), "--key", str(w_key), "--log-verifier",
                      log_vkey, "--state", str(state)), 2, "not valid")
    # a note not signed by the log key is refused before any cosignature
    wrong_log = notes.generate_key(ORIGIN).verifier_key
    (tmp_path / "s2.json").unlink(missing_ok=True)
    one_line_error(fl("checkpoint", "cosign", str(note), "--key", str(w_key), "--log-verifier",
                      wrong_log, "--state", str(tmp_path / "s2.json")), 1, "refusing to cosign")
    assert not (tmp_path / "s2.json").exists()


def test_verify_checks_stored_checkpoints(filled: Flchain, tmp_path: Path):
    key = tmp_path / "log.pem"
    vkey = filled.json("keygen", "--out", str(key))["verifier"]
    filled("checkpoint", "sign", "--key", str(key))
    doc = filled.json("verify", "--key-verifier", vkey)
    assert doc["ok"] and doc["checkpoints"] == 1
    with sqlite3.connect(filled.ledger) as db:  # a note whose root is not the tree's
        note = db.execute("SELECT note FROM checkpoints").fetchone()[0]
        forged = notes.sign_note(note.split("\n\n")[0].replace("\n7\n", "\n6\n", 1) + "\n",
                                 notes.load_private_key(key))
        db.execute("UPDATE checkpoints SET note = ?", (forged,))
    r = filled("verify", "--key-verifier", vkey, "--json")
    one_line_error(r, 1, "stored checkpoint at size 7")
    assert json.loads(r.stdout)["problem"]["kind"] == "checkpoint"


# -- integration commands ------------------------------------------------------------------


def test_help_lists_integration_commands_without_importing_them(fl: Flchain):
    r = fl.runner.invoke(cli, ["--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for name in ("init", "append", "checkpoint", "verify", "lineage", "rollback", "mlflow"):
        assert f"\n  {name} " in r.stdout


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    return d


def test_lazy_command_whose_framework_is_missing(fl: Flchain, plugin_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch):
    (plugin_dir / "fl_needs_missing.py").write_text("import no_such_framework_xyz\n")
    monkeypatch.setitem(cli_module.LAZY_COMMANDS, "fancy", cli_module.LazyCommand(
        "fl_needs_missing", "fancy", "fancy", "Needs a framework."))
    monkeypatch.setitem(cli_module.LAZY_COMMANDS, "ghost", cli_module.LazyCommand(
        "fl_no_such_module", "ghost", "ghost", "Not shipped."))
    one_line_error(fl("fancy", "--any", "args"), 2,
                   "pip install 'flchain-plugin[fancy]'", "no_such_framework_xyz")
    one_line_error(fl("ghost"), 2, "not in this version")
    assert fl("head", "--json").exit_code == 2  # the rest of the CLI is unaffected
    r = fl.runner.invoke(cli, ["--help"])
    assert r.exit_code == 0 and "Needs a framework." in r.stdout


def test_lazy_command_gets_root_ledger_and_json(fl: Flchain, plugin_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    (plugin_dir / "fl_plugin_ok.py").write_text(textwrap.dedent("""
        import click
        from flchain_plugin.cli.errors import Group, VerificationFailed
        from flchain_plugin.cli.root import common_options

        @click.group(cls=Group)
        def tool():
            "A plugin group."

        @tool.command()
        @common_options
        def where(settings, out):
            click.echo(f"{settings.chosen or 'default.db'} {settings.json}")

        @tool.command()
        @common_options
        def check(settings, out):
            raise VerificationFailed("the thing does not verify", {"ok": False})
    """))
    monkeypatch.setitem(cli_module.LAZY_COMMANDS, "tool", cli_module.LazyCommand(
        "fl_plugin_ok", "tool", "tool", "A plugin."))
    r = fl.runner.invoke(cli, ["--ledger", "x.db", "--json", "tool", "where"])
    assert r.exit_code == 0 and r.stdout == "x.db True\n"
    r = fl.runner.invoke(cli, ["--ledger", "x.db", "tool", "where", "--ledger", "y.db"])
    assert r.stdout == "y.db False\n"
    r = fl.runner.invoke(cli, ["tool", "where"], env={"FLCHAIN_LEDGER": None})
    assert r.stdout == "default.db False\n"  # no --ledger chosen: the command's own default
    r = fl.runner.invoke(cli, ["tool", "where"], env={"FLCHAIN_LEDGER": "env.db"})
    assert r.stdout == "env.db False\n"

    for args in (["--json", "tool", "check"], ["tool", "check", "--json"]):
        r = fl.runner.invoke(cli, args)
        one_line_error(r, 1, "the thing does not verify")
        assert json.loads(r.stdout) == {"ok": False}
    r = fl.runner.invoke(cli, ["tool", "check"])
    assert r.exit_code == 1 and r.stdout == ""


@pytest.mark.parametrize(("args", "framework", "needle"), [
    (["mlflow", "verify", "--help"], "mlflow", "MODEL_URI"),
    (["lineage", "--help"], "flwr", "DIGEST"),
    (["rollback", "--help"], "flwr", "DIGEST"),
    (["lightning", "verify", "--help"], "lightning", "CHECKPOINTS"),
])
def test_integration_commands_are_mounted(fl: Flchain, args: list[str], framework: str,
                                          needle: str):
    pytest.importorskip(framework)
    r = fl.runner.invoke(cli, args)
    assert r.exit_code == 0, r.stderr
    assert needle in r.stdout and "--json" in r.stdout


# -- the installed console script ------------------------------------------------------------


def test_console_script_subprocess(tmp_path: Path):
    exe = Path(sys.executable).with_name("flchain")
    assert exe.exists(), "install the package: pip install -e ."
    env = {**os.environ, "FLCHAIN_LEDGER": str(tmp_path / "sub.db"), "COLUMNS": "200"}

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], input=input, capture_output=True, text=True,
                              env=env, timeout=60)

    assert json.loads(run("init", "--origin", ORIGIN, "--json").stdout)["origin"] == ORIGIN
    p = run("append", "--json", input=lines([dataset(1), credit(2), credit(3)]))
    assert p.returncode == 0 and json.loads(p.stdout)["size"] == 3
    p = run("append", input="{oops\n")
    assert p.returncode == 2 and p.stderr.startswith("flchain: error: line 1")
    p = run("verify", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["ok"] is True
    p = run("log")
    assert p.returncode == 0 and "3 entries shown" in p.stdout
    with sqlite3.connect(tmp_path / "sub.db") as db:
        db.execute("UPDATE entries SET data = CAST(? AS BLOB) WHERE idx = 1", ('{"v":1}',))
    p = run("verify")
    assert p.returncode == 1 and "entry 1" in p.stderr


# -- one spelling of the shared options; rollback keeps the newest head signed ---------------


def test_every_command_takes_ledger_and_json_spelled_once():
    import click

    def leaves(group: click.Group, ctx: click.Context) -> list[click.Command]:
        out: list[click.Command] = []
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None
            if isinstance(cmd, click.Group):
                out += leaves(cmd, click.Context(cmd, parent=ctx, info_name=name))
            else:
                out.append(cmd)
        return out

    root_ctx = click.Context(cli, info_name="flchain")
    root = {p.name: p for p in cli.params}
    commands = leaves(cli, root_ctx)
    assert {c.name for c in commands} >= {"lineage", "rollback", "verify", "init"}
    for cmd in commands:
        opts = {o: p for p in cmd.params for o in getattr(p, "opts", ())}
        for flag, name in (("--ledger", "ledger_path"), ("--json", "as_json")):
            assert flag in opts, (cmd.name, flag)
            p = opts[flag]
            assert p.name == name and p.help == root[name].help, (cmd.name, flag, p.help)


def _model_ledger(tmp_path: Path) -> tuple[Path, str, str]:
    import numpy as np

    from flchain_plugin.blobs import BlobStore

    path = tmp_path / "fl.db"
    store = BlobStore(str(path) + ".blobs")
    m0, m1 = store.put({"w": np.zeros(2)}), store.put({"w": np.ones(2)})
    with Ledger(path) as led:
        led.append([E.Run(run="1", strategy="FedAvg", config=digest(9), model=m0)])
        led.append([E.Model(run="1", round=1, model=m1, parent=m0, inputs=[],
                            aggregator="FedAvg")])
    return path, m0, m1


def test_rollback_signs_the_new_head_with_the_ledger_key(fl: Flchain, tmp_path: Path):
    from flchain_plugin.commit import key_path, log_signer

    path, m0, _ = _model_ledger(tmp_path)
    doc = fl.json("rollback", m0, ledger=path)
    assert doc["checkpoint"] is None and not key_path(path).exists(), "no key made by the CLI"
    with Ledger(path, create=False) as led:
        verifier = log_signer(led).verifier  # creates <ledger>.key, as a Flower run does
    doc = fl.json("rollback", m0, "--reason", "again", ledger=path)
    assert doc["index"] == 3 and doc["size"] == 4
    with Ledger(path, create=False) as led:
        note = led.latest_checkpoint()
        assert note == doc["checkpoint"]
        cp = notes.open_note(note, [verifier])
        assert cp.signed_by(verifier) and "\n4\n" in note
