"""Model digest throughput against one plain SHA-256 pass over the same bytes.

The digest hashes every 1 MiB chunk with a header and folds the chunk hashes into a Merkle
root; the baseline is `hashlib.sha256` updated once with each tensor's memory. Issue 2's
targets: at least 0.9× the baseline on one thread (the chunking and headers cost little)
and 1.6× on two threads (hashlib releases the GIL, so chunks hash in parallel).

    python bench/bench_digest.py            # 256 MiB model, median of 7 runs
    python bench/bench_digest.py --quick    # 8 MiB, 3 runs: proves the script works
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile

import click
import numpy as np
from run_all import Result, median_seconds, report

from flchain_plugin.digest import file_digest, model_digest

MiB = 1 << 20
# A few tensors of uneven sizes, as a real state_dict has (fractions of the total).
LAYOUT = (("embed.weight", 0.25), ("encoder.0.weight", 0.375), ("encoder.1.weight", 0.25),
          ("head.weight", 0.125 - 1 / 4096), ("head.bias", 1 / 4096))


def make_model(total_mib: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 tensors of `total_mib` MiB in all, filled with random values."""
    rng = np.random.default_rng(seed)
    floats = total_mib * MiB // 4
    model: dict[str, np.ndarray] = {}
    left = floats
    for i, (name, frac) in enumerate(LAYOUT):
        n = left if i == len(LAYOUT) - 1 else int(floats * frac)
        left -= n
        cols = 1024 if n % 1024 == 0 else 1
        model[name] = rng.standard_normal((n // cols, cols), dtype=np.float32)
    assert sum(a.nbytes for a in model.values()) == total_mib * MiB
    return model


def sha256_pass(model: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for arr in model.values():
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def file_rows(model: dict[str, np.ndarray], runs: int, in_memory: float,
              nbytes: int) -> list[Result]:
    """`file_digest` of the model's bytes as one file in the page cache (its read-ahead on a
    second thread) against `hashlib.file_digest` of the same file and the in-memory pass."""
    with tempfile.TemporaryDirectory(prefix="bench-digest-") as tmp:
        path = os.path.join(tmp, "model.bin")
        with open(path, "wb") as f:
            for arr in model.values():
                f.write(memoryview(arr).cast("B"))

        def plain() -> str:
            with open(path, "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()

        secs = median_seconds({"plain": plain, "ours": lambda: file_digest(path)}, runs)
        if file_digest(path) != "sha256:" + plain():
            sys.exit("file_digest differs from hashlib.file_digest")
    return [
        Result("file_digest", "file_digest, page-cached file (reads ahead on a thread)",
               secs["ours"] * 1e3, "ms", secs["plain"] * 1e3, "hashlib.file_digest",
               secs["plain"] / secs["ours"]),  # higher is better: the speed-up
        Result("file_digest_vs_memory", "… against hashing the same bytes in memory",
               secs["ours"] * 1e3, "ms", in_memory * 1e3, "hashlib.sha256, in memory",
               in_memory / secs["ours"]),
    ]


@click.command()
@click.option("--mib", default=256, show_default=True, help="Model size in MiB (float32).")
@click.option("--runs", default=7, show_default=True, help="Timed runs; the median is reported.")
@click.option("--quick", is_flag=True, help="8 MiB, 3 runs: a smoke run, judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(mib: int, runs: int, quick: bool, as_json: bool) -> None:
    """Model digest vs one hashlib.sha256 pass over the same bytes."""
    if quick:
        mib, runs = 8, 3
    if mib < 2 or runs < 1:
        raise click.BadParameter("--mib must be >= 2 and --runs >= 1")
    model = make_model(mib)
    nbytes = mib * MiB
    secs = median_seconds({
        "sha256": lambda: sha256_pass(model),
        "t1": lambda: model_digest(model, threads=1),
        "t2": lambda: model_digest(model, threads=2),
        "default": lambda: model_digest(model),
    }, runs)
    digests = {model_digest(model, threads=t) for t in (1, 2, None)}
    if len(digests) != 1:
        sys.exit(f"model_digest differs with the thread count: {sorted(digests)}")

    def gbps(s: float) -> float:
        return nbytes / s / 1e9

    base = gbps(secs["sha256"])
    out = []
    for key, label, want in (("digest_threads1", "model digest, threads=1", 0.9),
                             ("digest_threads2", "model digest, threads=2", 1.6),
                             ("digest_default", f"model digest, default threads "
                                                f"({min(8, os.cpu_count() or 1)})", None)):
        rate = gbps(secs[key.removeprefix("digest_").replace("threads", "t")])
        ratio = rate / base
        out.append(Result(key, label, rate, "GB/s", base, "sha256, one pass", ratio,
                          f"≥ {want}× sha256" if want else None,
                          None if want is None or quick else ratio >= want))
    out.append(Result("sha256_one_pass", "hashlib.sha256, one pass (baseline)", base, "GB/s"))
    out += file_rows(model, runs, secs["sha256"], nbytes)
    report("digest", out, as_json=as_json, quick=quick,
           params={"model_mib": mib, "tensors": len(LAYOUT), "dtype": "float32",
                   "runs": runs, "cpus": os.cpu_count()},
           notes=[f"median of {runs} runs over a {mib} MiB float32 model of {len(LAYOUT)} tensors; "
                  f"digest {digests.pop()}"])


if __name__ == "__main__":
    main()
