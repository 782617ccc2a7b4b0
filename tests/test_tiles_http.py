"""`flchain serve` as a real subprocess on a free port, fetched with httpx: the same bytes
as `tiles export`, the spec's content types and cache headers, 404 for every tile the
published tree does not have, a new checkpoint served without a restart, a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tiles_reader import TileReader, grow, signed_ledger, spec_paths

from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import Signer
from flchain_plugin.tiles_export import export_tiles

FLCHAIN = Path(sys.executable).with_name("flchain")
SIZES = [1, 255, 257, 66_000]


def start(ledger: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`flchain serve --port 0 --json`: the URL is the one JSON line it prints."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([str(FLCHAIN), "--ledger", str(ledger), "serve", "--port", "0",
                             "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    return proc, json.loads(line)["url"]


def stop(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C: the server stops cleanly (exit 0, no traceback); returns its stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Ledger, Signer, Path, httpx.Client]]:
    tmp = tmp_path_factory.mktemp("serve")
    led, key = signed_ledger(tmp / "l.db", SIZES)
    export_tiles(led, tmp / "tiles")
    proc, url = start(tmp / "l.db")
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield led, key, tmp / "tiles", client
    finally:
        stop(proc)
        led.close()


def test_every_exported_file_served_byte_for_byte(
        served: tuple[Ledger, Signer, Path, httpx.Client]) -> None:
    _, _, out, client = served
    paths = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                   if p.is_file() and not p.name.startswith("."))  # the exporter's state
    assert len(paths) == len(set().union(*(spec_paths(s) for s in SIZES))) + 1
    for path in paths:
        r = client.get("/" + path)
        assert r.status_code == 200, (path, r.text)
        assert r.content == (out / path).read_bytes(), path
        if path == "checkpoint":
            assert r.headers["content-type"] == "text/plain; charset=utf-8"
            assert r.headers["cache-control"] == "public, max-age=5"
        else:
            assert r.headers["content-type"] == "application/octet-stream"
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_reader_over_http_rebuilds_root(served: tuple[Ledger, Signer, Path, httpx.Client]
                                        ) -> None:
    led, _, _, client = served

    def fetch(path: str) -> bytes:
        r = client.get("/" + path)
        assert r.status_code == 200, path
        return r.content

    for size in SIZES:
        assert TileReader(fetch, size).root() == led.root_at(size)


@pytest.mark.parametrize("path", [
    "tile/0/999",             # beyond the tree
    "tile/0/257",             # the full tile the latest size has not completed
    "tile/0/001.p/3",         # a width no checkpoint was signed at
    "tile/0/000.p/200",       # a partial of a tile that is full
    "tile/entries/257.p/201", # a bundle width no checkpoint has
    "tile/3/000.p/1",         # a level the tree does not reach
    "tile/0/1",               # index not in 3-digit form
    "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/007",
    "tile/64/000", "tile/entries", "tile/", "checkpoint/x", "index.html",
])
def test_missing_or_malformed_is_404(served: tuple[Ledger, Signer, Path, httpx.Client],
                                     path: str) -> None:
    r = served[3].get("/" + path)
    assert r.status_code == 404, path
    assert "immutable" not in r.headers.get("cache-control", "")


def test_read_only(served: tuple[Ledger, Signer, Path, httpx.Client]) -> None:
    client = served[3]
    assert client.post("/checkpoint", content=b"x").status_code == 405
    assert client.delete("/tile/0/000").status_code == 405
    head = client.head("/tile/0/000")
    assert head.status_code == 200 and head.headers["content-length"] == str(256 * 32)


def test_no_checkpoint_then_growth_without_restart(tmp_path: Path) -> None:
    """An unsigned ledger serves no checkpoint and no tile; once signed (by another
    process, while serving), the new checkpoint and its tiles are served."""
    led, key = signed_ledger(tmp_path / "l.db", [])
    grow(led, 600, None)
    proc, url = start(tmp_path / "l.db")
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/checkpoint").status_code == 404
            assert client.get("/tile/0/000").status_code == 404
            led.sign_checkpoint(key)
            r = client.get("/checkpoint")
            assert r.status_code == 200 and r.text == led.latest_checkpoint()
            assert "\n600\n" in r.text
            assert client.get("/tile/0/002.p/88").status_code == 200
            grow(led, 1_000, key)
            assert "\n1000\n" in client.get("/checkpoint").text
            assert client.get("/tile/0/002").status_code == 200
            assert client.get("/tile/0/003.p/232").status_code == 200
            assert client.get("/tile/0/002.p/88").status_code == 200  # still: size 600 signed
    finally:
        stop(proc)
        led.close()


def test_busy_port_is_one_line_error(tmp_path: Path) -> None:
    led, _ = signed_ledger(tmp_path / "l.db", [10])
    led.close()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run([str(FLCHAIN), "--ledger", str(tmp_path / "l.db"), "serve",
                               "--port", str(port)], capture_output=True, text=True, env=env,
                              timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"flchain: error: cannot listen on 127.0.0.1:{port}")
    assert proc.stderr.count("\n") == 1


def test_human_output_prints_url(tmp_path: Path) -> None:
    led, _ = signed_ledger(tmp_path / "l.db", [10])
    led.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"}
    proc = subprocess.Popen([str(FLCHAIN), "--ledger", str(tmp_path / "l.db"), "serve",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("serving ") and " at http://127.0.0.1:" in line
    url = line.split(" at ")[1].split()[0]
    assert httpx.get(url + "checkpoint", timeout=10).status_code == 200
    assert "stopped" in stop(proc)
