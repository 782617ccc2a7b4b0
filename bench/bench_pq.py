"""ML-DSA-44 against Ed25519: what post-quantum signatures cost, measured in one run.

Four figures, each with its Ed25519 twin measured beside it (interleaved, so drift hits
both alike); ratio = Ed25519 time / ML-DSA-44 time (below 1: ML-DSA-44 is slower):

1. sign a client statement (Statement.sign: canonical JSON + signature);
2. verify it (SignedStatement.verify, the key parsed once per run as History does);
3. a subtree/v1 (0x06) witness cosignature against a cosignature/v1 (0x04) one, verified
   through notes.open_note as a client checks a checkpoint;
4. the signature work of one round with 10 clients: 10 statements signed, 10 verified
   by the server and one checkpoint signed by the log, which with ML-DSA-44 also adds its
   second signature (Ed25519 + ML-DSA-44 against Ed25519 alone). In a real round clients
   sign in parallel on their own machines; the server's share is the 10 verifies.

Sizes (bytes, exact, from the keys made here) are printed in the notes.

    python bench/bench_pq.py            # median of 31 runs
    python bench/bench_pq.py --quick    # 3 runs: proves the script works
"""

from __future__ import annotations

import base64
import hashlib

import click
from run_all import Result, median_seconds, report

from flchain_plugin import notes
from flchain_plugin.checkpoint import Checkpoint, sign_checkpoint
from flchain_plugin.statement import SignedStatement, Statement

CLIENTS = 10


def statement(i: int) -> Statement:
    """A statement the size of the demo's (a few metrics, a dataset commitment)."""
    d = "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()
    return Statement(run="run-1", round=3, node=str(1000 + i), parent=d, update=d,
                     num_examples=57, metrics={"num-examples": 57, "train_loss": 0.4123},
                     dataset=d, nonce=f"{i:032x}")


def per_op(ed: notes.Signer, pq: notes.Signer, runs: int) -> list[Result]:
    st = statement(0)
    signed = {k: st.sign(s) for k, s in (("ed", ed), ("pq", pq))}
    keys = {k: s.verifier() for k, s in signed.items()}
    t = median_seconds({
        "sign_ed": lambda: st.sign(ed), "sign_pq": lambda: st.sign(pq),
        "verify_ed": lambda: signed["ed"].verify(keys["ed"]),
        "verify_pq": lambda: signed["pq"].verify(keys["pq"]),
    }, runs)
    return [_pair("sign", "statement sign", t["sign_pq"], t["sign_ed"], "µs"),
            _pair("verify", "statement verify", t["verify_pq"], t["verify_ed"], "µs")]


def cosign(runs: int) -> Result:
    body = Checkpoint("example.com/log", 1234567, hashlib.sha256(b"r").digest()).body()
    log = notes.generate_key("example.com/log")
    note = sign_checkpoint(Checkpoint.parse(body), log)
    w_ed = notes.generate_cosignature_key("w.example/ed")
    w_pq = notes.generate_subtree_cosignature_key("w.example/pq")

    def one(w: notes.Signer) -> None:
        cosigned = notes.add_signature(note, w, 1700000000)
        opened = notes.open_note(cosigned, [log.verifier, w.verifier])
        assert opened.signed_by(w.verifier)

    t = median_seconds({"ed": lambda: one(w_ed), "pq": lambda: one(w_pq)}, runs)
    return _pair("cosign", "witness cosign + client verify (0x06 vs 0x04)", t["pq"], t["ed"],
                 "µs")


def round_work(ed: notes.Signer, runs: int) -> Result:
    clients_ed = [notes.generate_key(f"client-{i}") for i in range(CLIENTS)]
    clients_pq = [notes.generate_ml_dsa_key(f"client-{i}") for i in range(CLIENTS)]
    log_pq = notes.generate_ml_dsa_key(ed.name)
    sts = [statement(i) for i in range(CLIENTS)]
    cp = Checkpoint(ed.name, 1000, hashlib.sha256(b"root").digest())

    def one(clients: list[notes.Signer], pq_log: notes.Signer | None) -> None:
        signed = [s.sign(c) for s, c in zip(sts, clients, strict=True)]
        for s in signed:
            SignedStatement.parse(s.data, s.key, s.signature).verify()
        sign_checkpoint(cp, ed, pq_log)

    t = median_seconds({"ed": lambda: one(clients_ed, None),
                        "pq": lambda: one(clients_pq, log_pq)}, runs)
    return _pair("round10", f"signature work of a {CLIENTS}-client round", t["pq"], t["ed"],
                 "ms")


def _pair(key: str, name: str, pq: float, ed: float, unit: str) -> Result:
    scale = {"µs": 1e6, "ms": 1e3}[unit]
    return Result(key=key, name=f"{name}, ML-DSA-44", value=pq * scale, unit=unit,
                  baseline=ed * scale, baseline_name="Ed25519", ratio=ed / pq)


def sizes(ed: notes.Signer, pq: notes.Signer) -> list[str]:
    st = statement(0)
    ed_sig, pq_sig = st.sign(ed).signature, st.sign(pq).signature
    w = notes.generate_subtree_cosignature_key("w.example/pq")
    line = notes.add_signature(sign_checkpoint(Checkpoint(ed.name, 1, bytes(32)), ed), w, 1)
    return [
        f"public key: Ed25519 {len(ed.public_key)} B, ML-DSA-44 {len(pq.public_key)} B; "
        f"verifier key text: {len(ed.verifier_key)} vs {len(pq.verifier_key)} chars",
        f"signature: Ed25519 {len(ed_sig)} B, ML-DSA-44 {len(pq_sig)} B; "
        f"as base64 in an update entry: {len(base64.b64encode(ed_sig))} vs "
        f"{len(base64.b64encode(pq_sig))} chars",
        f"a 0x06 cosignature line: {len(line.splitlines()[-1].encode())} B "
        f"(8-byte timestamp + 2,420-byte signature + key id, base64)",
    ]


@click.command()
@click.option("--runs", default=31, show_default=True, help="Timed runs; the median is kept.")
@click.option("--quick", is_flag=True, help="3 runs: a smoke run, judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(runs: int, quick: bool, as_json: bool) -> None:
    if quick:
        runs = 3
    if runs < 1:
        raise click.BadParameter("--runs must be >= 1")
    ed, pq = notes.generate_key("example.com/log"), notes.generate_ml_dsa_key("example.com/log")
    results = [*per_op(ed, pq, runs), cosign(runs), round_work(ed, runs)]
    report("pq", results, as_json=as_json, quick=quick,
           params={"runs": runs, "clients": CLIENTS},
           notes=[f"median of {runs} runs; ratio = Ed25519 time / ML-DSA-44 time",
                  *sizes(ed, pq)])


if __name__ == "__main__":
    main()
