"""A real Flower deployment on loopback: one `flower-superlink`, several `flower-supernode`
processes, TLS and SuperNode authentication, driven with the `flwr` CLI as an operator does.

The SuperLink serves the Fleet, Control and Runtime APIs on one port with a certificate
signed by a CA made here (`cryptography`, EC P-256; SANs localhost, 127.0.0.1, ::1); each
SuperNode has its own Runtime API port, its own `FLWR_HOME`, an `ssh-keygen -t ecdsa -b
384` identity registered with `flwr supernode register`, and a flchain signing key named
in its `--node-config`. `flwr` finds the SuperLink through `$FLWR_HOME/config.toml`.
Every process runs in its own session, so `kill()` takes a node down as a machine
failure would (SIGKILL to the SuperNode and the ClientApp processes it started).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flchain_plugin.notes import generate_key, save_private_key

BIN = Path(sys.executable).parent
CONNECTION = "local-tls"
START_SECONDS = 30.0


def program(name: str) -> str:
    """A program of this environment (beside the Python running the tests), else PATH's."""
    here = BIN / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port} after {START_SECONDS} s: {log}")


# -- TLS ------------------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for loopback: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("flchain test CA"))
          .issuer_name(_name("flchain test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder().subject_name(_name("localhost"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


# -- the processes --------------------------------------------------------------------------


@dataclass
class Node:
    """One SuperNode: its auth key (ssh), its flchain key, and its process."""

    name: str
    partition: int
    auth_key: Path
    flchain_key: Path
    vkey: str
    port: int
    home: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL to the SuperNode's whole session: a machine that went away."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class Federation:
    """A SuperLink with TLS and node authentication, and the SuperNodes started on it."""

    root: Path
    port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)
    superlink: subprocess.Popen[bytes] | None = None
    server_key: str = ""  # the ledger's verifier key, pinned by every SuperNode

    def __post_init__(self) -> None:
        self.ca, self.cert, self.key = make_tls(self.root / "tls")
        self.flwr_home = self.root / "flwr"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.ca}"\n')

    def env(self, home: Path | None = None) -> dict[str, str]:
        root = str(Path(__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "FLWR_HOME": str(home or self.flwr_home),
                "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # flwr-* helpers
                "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}

    def _spawn(self, cmd: list[str], log: Path, home: Path | None = None
               ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    env=self.env(home), start_new_session=True)

    def start_superlink(self) -> None:
        log = self.root / "superlink.log"
        self.superlink = self._spawn([
            program("flower-superlink"), "--ssl-ca-certfile", str(self.ca),
            "--ssl-certfile", str(self.cert), "--ssl-keyfile", str(self.key),
            "--enable-supernode-auth", "--database", str(self.root / "state.db"),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation"], log)
        wait_listening(self.port, self.superlink, log)

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([program("flwr"), *args], capture_output=True, text=True,
                              env=self.env(), timeout=timeout, check=False)

    def new_node(self, name: str, partition: int) -> Node:
        """Keys for a SuperNode (not registered, not started)."""
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        auth = d / "auth"
        subprocess.run([program("ssh-keygen"), "-q", "-t", "ecdsa", "-b", "384", "-N", "",
                        "-C", name, "-f", str(auth)], check=True, capture_output=True)
        signer = generate_key(name)
        save_private_key(signer, d / "flchain.key", None)
        return Node(name, partition, auth, d / "flchain.key", signer.verifier_key,
                    free_port(), d / "flwr", d / "supernode.log")

    def register(self, node: Node) -> None:
        done = self.flwr("supernode", "register", str(node.auth_key) + ".pub", CONNECTION,
                         "--name", node.name)
        if done.returncode != 0:
            raise RuntimeError(f"flwr supernode register {node.name}: {done.stdout}"
                               f"{done.stderr}")

    def start_node(self, node: Node) -> None:
        node.home.mkdir(parents=True, exist_ok=True)
        config = (f'partition-id={node.partition} flchain-key="{node.flchain_key}" '
                  f'flchain-server-key="{self.server_key}"')
        node.proc = self._spawn([
            program("flower-supernode"), "--root-certificates", str(self.ca),
            "--superlink", f"127.0.0.1:{self.port}", "--port", str(node.port),
            "--auth-supernode-private-key", str(node.auth_key),
            "--node-config", config], node.log, node.home)
        self.nodes.append(node)

    def run(self, app: Path, config: str) -> int:
        """`flwr run APP local-tls -c CONFIG`: the run id."""
        done = self.flwr("run", str(app), CONNECTION, "--format", "json", "-c", config,
                         timeout=120)
        try:
            return int(json.loads(done.stdout)["run-id"])
        except (ValueError, KeyError) as e:
            raise RuntimeError(f"flwr run gave no run id ({e}): {done.stdout}{done.stderr}"
                               ) from None

    def status(self, run_id: int) -> dict[str, Any]:
        """The run's row of `flwr list --run-id N --format json` (status, status-details):
        what says whether the ServerApp failed, as `flwr run --stream` exits 0 anyway."""
        done = self.flwr("list", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            runs = json.loads(done.stdout)["runs"]
        except (ValueError, KeyError):
            raise RuntimeError(f"flwr list: {done.stdout}{done.stderr}") from None
        return next(r for r in runs if int(r["run-id"]) == run_id)

    def wait_finished(self, run_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.status(run_id)
            if str(row.get("status", "")).startswith("finished"):
                return row
            time.sleep(1)
        self.flwr("stop", str(run_id), CONNECTION)
        raise TimeoutError(f"run {run_id} not finished after {timeout} s: {row}")

    def logs(self) -> str:
        parts = [self.root / "superlink.log", *(n.log for n in self.nodes)]
        return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in parts if p.exists())

    def stop(self) -> None:
        for proc in [n.proc for n in self.nodes] + [self.superlink]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [n.proc for n in self.nodes] + [self.superlink]:
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def refused_code(log: Path) -> str | None:
    """The Flower error code a SuperNode logged when the SuperLink turned it away."""
    found = re.search(r"code: (\d+)", log.read_text(errors="replace"))
    return found.group(1) if found else None
