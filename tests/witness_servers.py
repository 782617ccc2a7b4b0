"""Real witnesses for tests: `flchain witness serve` processes, and addresses that fail.

Each witness is a separate process on loopback with its own key file and state file,
started with `--port 0 --json` so the URL it prints names the port it got. `dead_url`
is a port nothing listens on (connection refused); `BlackHole` listens but never
answers, as a hung witness does (the client's timeout is what ends the wait).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flchain_plugin import notes

START_SECONDS = 30


@dataclass
class WitnessProcess:
    name: str
    url: str
    vkey: str
    state: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_witness(directory: Path, name: str, log_vkeys: list[str]) -> WitnessProcess:
    """A `flchain witness serve` process cosigning as `name` for the logs of `log_vkeys`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}.key"
    if not key.exists():
        notes.save_private_key(notes.generate_cosignature_key(name), key, None)
    state = directory / f"{name}.db"
    cmd = [sys.executable, "-m", "flchain_plugin.cli", "witness", "serve", "--key", str(key),
           "--state", str(state), "--port", "0", "--json"]
    for vkey in log_vkeys:
        cmd += ["--log", vkey]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ready, _, _ = select.select([proc.stdout], [], [], START_SECONDS)
    line = proc.stdout.readline() if ready else b""  # type: ignore[union-attr]
    if not line:
        proc.kill()
        err = proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
        raise RuntimeError(f"witness {name} did not start: {err[-2000:]}")
    doc = json.loads(line)
    return WitnessProcess(name, doc["url"], doc["verifiers"][0], state, proc)


@contextlib.contextmanager
def witnesses(directory: Path, names: list[str], log_vkeys: list[str]
              ) -> Iterator[list[WitnessProcess]]:
    procs: list[WitnessProcess] = []
    try:
        for name in names:
            procs.append(start_witness(directory, name, log_vkeys))
        yield procs
    finally:
        for p in procs:
            p.stop()


def dead_url() -> str:
    """A loopback URL whose port was free a moment ago: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class BlackHole:
    """A listening socket that never accepts: requests to it hang until they time out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()
