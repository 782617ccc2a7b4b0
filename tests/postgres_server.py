"""A real PostgreSQL server for tests and benchmarks, and a fresh database per test.

API (also for suites outside the store's own):
- `server_url()` -> the URL of a server for this process: `$FLCHAIN_TEST_POSTGRES` when set
  (a server the user already runs), else a throwaway cluster started on first call (initdb
  + pg_ctl in a temp dir, a free loopback port, its socket in that dir; as the `postgres`
  user through runuser when run as root, since PostgreSQL refuses to run as root), stopped
  when the process exits. Under xdist each worker process starts its own cluster, so
  workers never share one; database names are unique, so they may share a configured one.
- `new_database(base_url)` -> the URL of a new empty database on that server
  (CREATE DATABASE from template0: about 20 ms), `drop_database(url)` removes it.
- `PostgresServer(durable=...)`: a cluster of one's own, as a context manager (`.url`);
  benchmarks start a durable one (fsync on) to measure what a deployment gets.
- pytest fixtures (tests/conftest.py): `postgres_server` (session: the base URL) and
  `postgres_url` (a fresh database for one test, dropped after it).

The test clusters run with fsync off: the crash tests kill a CLIENT, whose uncommitted
transaction the server rolls back whatever fsync says; fsync only matters when the server
machine loses power, which no test simulates. Without PostgreSQL binaries the fixtures skip
with how to install them, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

ENV = "FLCHAIN_TEST_POSTGRES"
"""A server the user already runs, e.g. postgresql://postgres@127.0.0.1:5432/postgres."""

INSTALL_HINT = ("install PostgreSQL (`apt-get install -y postgresql`) or set "
                f"{ENV}=postgresql://user@host:port/database")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be had here; the message says how to get one."""


def binaries() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest version."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A throwaway cluster in a temp dir; stopped and removed by `stop` (or on exit)."""

    def __init__(self, *, durable: bool = False):
        bindir = binaries()
        if bindir is None:
            raise PostgresUnavailable(f"no PostgreSQL binaries found: {INSTALL_HINT}")
        self._bin = bindir
        self._durable = durable
        self._as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="flchain-pg-"))
        self.url = ""

    def _run(self, *args: str) -> None:
        cmd = [str(self._bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed ({done.returncode}): "
                                      f"{done.stderr.strip()} {tail}")

    def start(self) -> PostgresServer:
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        settings = "" if self._durable else " -c fsync=off -c full_page_writes=off"
        for attempt in range(5):  # another process may take the free port first
            port = _free_port()
            opts = (f"-k {self.dir} -p {port} -c listen_addresses=127.0.0.1 "
                    f"-c max_connections=200{settings}")
            try:
                self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "-o", opts, "start")
            except PostgresUnavailable:
                if attempt == 4:
                    raise
                continue
            self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            atexit.register(self.stop)
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.dir.exists():
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w",
                          "stop")
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start() if not self.url else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_server: PostgresServer | None = None
_server_lock = threading.Lock()


def server_url() -> str:
    """The base URL of this process's server (see the module docstring)."""
    global _server  # one cluster per process, started on first use
    configured = os.environ.get(ENV)
    if configured:
        return configured
    with _server_lock:
        if _server is None:
            _server = PostgresServer().start()
        return _server.url


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def new_database(base_url: str) -> str:
    """A new empty database on the server of `base_url`; its URL."""
    import psycopg

    name = "flchain_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return _with_database(base_url, name)


def drop_database(url: str, base_url: str) -> None:
    """Drop the database `url` names, closing its leftover connections first."""
    import psycopg

    name = urllib.parse.urlsplit(url).path.lstrip("/")
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh database on this process's server for the length of a `with` block."""
    base = server_url()
    url = new_database(base)
    try:
        yield url
    finally:
        drop_database(url, base)
