"""Every `flchain` command against hostile input: damaged and foreign ledger files, integers
out of range, hostile state, note and key files, read-only targets, bad usage.

Each must end with exit 2 (bad or unreadable input) or 1 (does not verify) and exactly one
line on stderr, handled by a rule (not the last-resort "internal error" line) and never a
traceback. The commands are enumerated from the click group itself, so a new command
without hostile cases fails `test_every_command_has_a_base_invocation`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from flchain_plugin import entries as E
from flchain_plugin.blobs import BlobStore
from flchain_plugin.cli import cli
from flchain_plugin.ledger import Ledger

ORIGIN = "example.com/hostile"
BIG = "99999999999999999999"  # beyond int64, where SQLite raises OverflowError
PREFIX = "flchain: error: "
READ_ONLY_DIR = Path("/sys")  # refuses new files even to root


def leaf_commands(group: click.Group, ctx: click.Context,
                  path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command under `group`, as its path of names."""
    found = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            found += leaf_commands(cmd, click.Context(cmd, parent=ctx, info_name=name),
                                   (*path, name))
        else:
            found.append((*path, name))
    return found


def all_commands() -> list[tuple[str, ...]]:
    return leaf_commands(cli, click.Context(cli, info_name="flchain"))


def assert_one_line_failure(r: Result, *needles: str) -> str:
    """Exit 1 or 2, one `flchain: error:` line on stderr naming a rule, no traceback."""
    shown = f"exit {r.exit_code}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"
    assert r.exception is None or isinstance(r.exception, SystemExit), (r.exception, shown)
    assert r.exit_code in (1, 2), shown
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), shown
    assert len(lines[0]) > len(PREFIX) + 10, shown
    assert "internal error" not in lines[0], shown  # handled by a rule, not the safety net
    assert "Traceback" not in r.stdout + r.stderr, shown
    for n in needles:
        assert n in lines[0], (n, shown)
    return lines[0]


# -- a world of real files, good and hostile ---------------------------------------------------


@dataclass
class World:
    dir: Path
    good: Path
    log_key: Path
    log_vkey: str
    witness_key: Path
    note: Path
    ckpt: Path
    tiles: Path
    ledger_vkey: str
    counter: int = 0

    def fresh(self, name: str) -> Path:
        """A path that does not exist yet, so writers never trip over an earlier case."""
        self.counter += 1
        return self.dir / "fresh" / f"{self.counter}-{name}"

    def run(self, args: list[str], ledger: Path | None = None, input: str | bytes = "",
            ) -> Result:
        argv = ["--ledger", str(ledger or self.good), *args]
        return CliRunner().invoke(cli, argv, input=input, env={"COLUMNS": "200"},
                                  prog_name="flchain")


def _flchain(args: list[str], input: str = "") -> None:
    r = CliRunner().invoke(cli, args, input=input)
    assert r.exit_code == 0, (args, r.stdout, r.stderr)


def _entry_lines(first: int, n: int) -> str:
    return "".join(json.dumps(E.Dataset(dataset=f"sha256:{i:064x}", owner=f"o{i}",
                                        scheme="salted-merkle/v1", examples=i + 1,
                                        name=f"set{i}").to_json()) + "\n"
                   for i in range(first, first + n))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    d = tmp_path_factory.mktemp("hostile")
    (d / "fresh").mkdir()
    good = d / "good.db"
    _flchain(["--ledger", str(good), "init", "--origin", ORIGIN])
    _flchain(["--ledger", str(good), "append", "--batch-size", "50"], _entry_lines(0, 400))
    key, wkey = d / "log.pem", d / "witness.pem"
    r = CliRunner().invoke(cli, ["--ledger", str(good), "--json", "keygen", "--out", str(key)])
    vkey = json.loads(r.stdout)["verifier"]
    _flchain(["keygen", "witness.example/w", "--witness", "--out", str(wkey)])
    tiles, published = d / "tiles", d / "published.db"  # a copy signed with the pinned key
    shutil.copyfile(good, published)
    _flchain(["--ledger", str(published), "checkpoint", "sign", "--key", f"{good}.key"])
    _flchain(["--ledger", str(published), "tiles", "export", str(tiles)])
    note = d / "cp.note"
    _flchain(["--ledger", str(good), "checkpoint", "sign", "--key", str(key),
              "--out", str(note)])
    ckpt = d / "model.ckpt"
    ckpt.write_bytes(b"not a recorded checkpoint")
    with Ledger(good, create=False) as led:
        ledger_vkey = led.pinned_verifier.vkey  # type: ignore[union-attr]
    return World(d, good, key, vkey, wkey, note, ckpt, tiles, ledger_vkey)


def _pages(db: Path, tables: set[str]) -> list[int]:
    with sqlite3.connect(db) as c:
        return [p for name, p in c.execute("SELECT name, pageno FROM dbstat") if name in tables]


def _overwrite_pages(src: Path, dst: Path, pages: list[int]) -> Path:
    data = bytearray(src.read_bytes())
    size = int.from_bytes(data[16:18], "big") or 65536
    rnd = random.Random(len(pages))
    for p in pages:
        data[(p - 1) * size:(p - 1) * size + size] = rnd.randbytes(size)
    dst.write_bytes(bytes(data))
    return dst


DAMAGED_DATA = {"entries", "nodes", "heads", "checkpoints", "refs", "refs_recent"}


@pytest.fixture(scope="module")
def hostile_ledgers(world: World) -> dict[str, Path]:
    """Ledger paths every command is run against; each must fail it with one line."""
    d = world.dir / "ledgers"
    d.mkdir()
    (d / "directory.db").mkdir()
    (d / "empty.db").write_bytes(b"")
    (d / "garbage.db").write_bytes(random.Random(1).randbytes(40_000))
    (d / "text.db").write_text("SQLite format 3 but not really\n" * 100)
    real = world.good.read_bytes()
    (d / "truncated.db").write_bytes(real[: len(real) // 2])
    (d / "header-only.db").write_bytes(real[:100])
    return {
        "missing": d / "missing.db",
        "directory": d / "directory.db",
        "empty": d / "empty.db",
        "garbage": d / "garbage.db",
        "text": d / "text.db",
        "truncated": d / "truncated.db",
        "header-only": d / "header-only.db",
        # the schema and meta pages intact, so the file opens; every table's pages garbage
        "damaged-data": _overwrite_pages(world.good, d / "damaged-data.db",
                                         _pages(world.good, DAMAGED_DATA)),
        "damaged-meta": _overwrite_pages(world.good, d / "damaged-meta.db",
                                         _pages(world.good, {"meta", "sqlite_autoindex_meta_1"})),
    }


MAY_PASS = {("keygen",): {"damaged-data"}}
"""keygen without NAME reads only the origin, from the meta page that is left intact."""


# -- every command, with a base invocation that reads the ledger ---------------------------------


BASE: dict[tuple[str, ...], Callable[[World], list[str]]] = {
    ("init",): lambda w: [],
    ("append",): lambda w: [],
    ("log",): lambda w: [],
    ("show",): lambda w: ["0"],
    ("prove",): lambda w: ["0"],
    ("consistency",): lambda w: ["0"],
    ("verify",): lambda w: [],
    ("head",): lambda w: [],
    ("info",): lambda w: [],
    ("keygen",): lambda w: ["--out", str(w.fresh("k.pem"))],  # no NAME: reads the origin
    ("checkpoint", "sign"): lambda w: ["--key", str(w.log_key)],
    ("checkpoint", "latest"): lambda w: [],
    ("checkpoint", "add"): lambda w: [str(w.note), "--key-verifier", w.log_vkey],
    ("checkpoint", "verify"): lambda w: [str(w.note), "--key-verifier", w.log_vkey],
    ("checkpoint", "cosign"): lambda w: [
        str(w.note), "--key", str(w.witness_key), "--log-verifier", w.log_vkey,
        "--state", str(w.fresh("state.json")), "--out", str(w.fresh("cosigned.note"))],
    ("lineage",): lambda w: ["latest"],
    ("rollback",): lambda w: ["latest"],
    ("mlflow", "verify"): lambda w: ["models:/m/1", "--tracking-uri",
                                     f"sqlite:///{w.dir}/mlflow.db"],
    ("lightning", "verify"): lambda w: [str(w.ckpt)],
    ("tiles", "export"): lambda w: [str(w.fresh("tiles"))],
    ("serve",): lambda w: ["--port", "0"],
    ("mirror",): lambda w: [str(w.tiles), "--key-verifier", w.ledger_vkey, "--once"],
    ("report",): lambda w: ["--out", str(w.fresh("report.html"))],
    ("audit", "replay"): lambda w: [],
    ("erase",): lambda w: ["sha256:" + "0" * 64],
}

NO_LEDGER = {("witness", "serve"), ("witness", "evidence")}
"""Commands that read no ledger (a witness holds only its own state file): they take
--ledger like every command and ignore it, so only their usage is checked here; their
hostile state and key files are test_witness_http's."""

CREATES_LEDGER = {("init",), ("mirror",)}
"""Commands whose job is to create a ledger where there is none."""


def _needs(cmd: tuple[str, ...]) -> None:
    if cmd[0] == "mlflow":
        pytest.importorskip("mlflow")


@contextmanager
def _mlflow_restored() -> Iterator[None]:
    """`mlflow verify --tracking-uri` sets MLflow's global URI; undo it for other tests."""
    try:
        yield
    finally:
        if "mlflow" in sys.modules:
            sys.modules["mlflow"].set_tracking_uri(None)


def test_every_command_has_a_base_invocation() -> None:
    assert sorted(all_commands()) == sorted([*BASE, *NO_LEDGER])


@pytest.mark.parametrize("cmd", sorted(BASE), ids=" ".join)
def test_every_command_on_every_hostile_ledger(cmd: tuple[str, ...], world: World,
                                               hostile_ledgers: dict[str, Path]) -> None:
    _needs(cmd)
    for kind, ledger in hostile_ledgers.items():
        if cmd in CREATES_LEDGER and kind == "missing":
            continue
        with _mlflow_restored():
            r = world.run([*cmd, *BASE[cmd](world)], ledger=ledger,
                          input=_entry_lines(0, 1))
        if r.exit_code == 0 and kind in MAY_PASS.get(cmd, ()):
            continue
        line = assert_one_line_failure(r)
        assert kind == "directory" or str(ledger) in line or "ledger" in line, (kind, line)


@pytest.mark.parametrize("cmd", sorted([*BASE, *NO_LEDGER]), ids=" ".join)
def test_every_command_refuses_an_unknown_option_in_one_line(cmd: tuple[str, ...],
                                                             world: World) -> None:
    _needs(cmd)
    r = world.run([*cmd, "--no-such-option"])
    assert_one_line_failure(r, "No such option", f"flchain {' '.join(cmd)} --help")
    assert r.exit_code == 2


@pytest.mark.parametrize("args", [[], ["checkpoint"], ["mlflow"], ["lightning"], ["nosuch"],
                                  ["show"], ["consistency"], ["checkpoint", "sign"],
                                  ["keygen"], ["lineage"], ["--ledger"], ["audit"],
                                  ["erase"]])
def test_usage_errors_are_one_line(args: list[str]) -> None:
    r = CliRunner().invoke(cli, args, prog_name="flchain")
    assert_one_line_failure(r)
    assert r.exit_code == 2


# -- integers out of range, in arguments ------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["show", BIG], ["show", "-1"], ["show", "400"], ["prove", BIG], ["prove", "-1"],
    ["prove", "0", "--size", BIG], ["prove", "0", "--size", "-1"], ["prove", "5", "--size", "3"],
    ["prove", "--digest", "sha256:" + "0" * 64, "--size", BIG],
    ["consistency", BIG], ["consistency", "-1"], ["consistency", "0", BIG],
    ["consistency", "9", "3"], ["consistency", "401"],
    ["log", "--limit", BIG], ["log", "--limit", "-1"], ["log", "--from", BIG],
    ["log", "--from", "-" + BIG], ["append", "--batch-size", BIG], ["append", "--batch-size", "0"],
    ["show", "1e3"], ["show", "0x10"],
])
def test_integers_out_of_range(world: World, args: list[str]) -> None:
    before = world.good.stat().st_size
    r = world.run(args, input=_entry_lines(0, 1))
    assert_one_line_failure(r)
    assert r.exit_code == 2
    assert world.good.stat().st_size == before


# -- hostile input to `append` -----------------------------------------------------------------


def _entry(**over: object) -> str:
    doc = {**E.Dataset(dataset="sha256:" + "1" * 64, owner="o", scheme="s", examples=1,
                       name="n").to_json(), **over}
    return json.dumps(doc) + "\n"


@pytest.mark.parametrize(("stdin", "needles"), [
    (_entry(examples=2**60), ["2^53"]),
    (_entry(examples=-(2**60)), ["2^53"]),
    (_entry(examples=10**400), ["2^53"]),
    (_entry(examples=1e400), ["2^53"]),
    ("[" * 50_000 + "\n", ["line 1"]),
    ('{"a":' * 20_000 + "1" + "}" * 20_000 + "\n", []),
    ('{"v": 1, "type": "dataset", "x": ' + "[" * 5000 + "]" * 5000 + "}\n", []),
    ("[1, 2, 3]\n", []),
    ("null\n", []),
    (b"\xff\xfe\x00garbage\n", []),
    (_entry(name="x" * 70_000), []),
    ("", ["no entries"]),
])
def test_hostile_append_input_appends_nothing(world: World, stdin: str | bytes,
                                              needles: list[str]) -> None:
    with Ledger(world.good, create=False) as led:
        size = led.size
    r = world.run(["append"], input=stdin)
    line = assert_one_line_failure(r, *needles)
    assert r.exit_code == 2
    if "2^53" in needles:
        assert "float" not in line
    with Ledger(world.good, create=False) as led:
        assert led.size == size


def test_append_source_that_is_not_a_readable_file(world: World) -> None:
    for source in (world.dir / "no-such.jsonl", world.dir):
        assert_one_line_failure(world.run(["append", str(source)]))


# -- hostile key, note and state files; read-only targets -------------------------------------


def _garbage_file(world: World, name: str, data: bytes) -> Path:
    p = world.fresh(name)
    p.write_bytes(data)
    return p


def test_hostile_key_files(world: World) -> None:
    for data in (b"", b"garbage", random.Random(2).randbytes(5000),
                 b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"):
        key = _garbage_file(world, "key.pem", data)
        assert_one_line_failure(world.run(["checkpoint", "sign", "--key", str(key)]))
    for key in (world.dir / "no-such.pem", world.dir):
        assert_one_line_failure(world.run(["checkpoint", "sign", "--key", str(key)]))
    assert_one_line_failure(world.run(["checkpoint", "sign", "--key", str(world.witness_key)]),
                            "witness key")
    assert_one_line_failure(world.run(["checkpoint", "sign", "--key", str(world.log_key),
                                       "--passphrase-file", str(world.dir / "none")]))
    assert_one_line_failure(world.run(["checkpoint", "sign", "--key", str(world.log_key),
                                       "--passphrase-env", "FLCHAIN_NO_SUCH_VAR_XYZ"]))


def _note_variants(world: World) -> list[bytes]:
    note = world.note.read_bytes()
    body, _, sigs = note.partition(b"\n\n")
    origin, _size, root = body.split(b"\n")[:3]
    return [b"", b"garbage", random.Random(3).randbytes(3000), note[: len(note) // 2],
            b"\n".join([origin, BIG.encode(), root]) + b"\n\n" + sigs,
            b"\n".join([origin, b"-1", root]) + b"\n\n" + sigs,
            b"\n".join([origin, b"1e3", root]) + b"\n\n" + sigs,
            note.replace(b"\n\n", b"\n\n\n"), b"\xff" * 100]


def test_hostile_note_files(world: World) -> None:
    for data in _note_variants(world):
        note = _garbage_file(world, "x.note", data)
        for cmd in (["checkpoint", "add"], ["checkpoint", "verify"],
                    ["checkpoint", "verify", "--no-ledger"]):
            assert_one_line_failure(world.run([*cmd, str(note), "--key-verifier",
                                               world.log_vkey]))
        assert_one_line_failure(world.run([
            "checkpoint", "cosign", str(note), "--key", str(world.witness_key),
            "--log-verifier", world.log_vkey, "--state", str(world.fresh("s.json"))]))
    for vkey in ("garbage", "a+b+c", world.log_vkey + "x", ""):
        assert_one_line_failure(world.run(["checkpoint", "verify", str(world.note),
                                           "--key-verifier", vkey]))
    assert_one_line_failure(world.run(["checkpoint", "verify", str(world.note),
                                       "--key-verifier", world.log_vkey,
                                       "--witness-verifier", "garbage"]))


def _witness_vkey(world: World) -> str:
    r = world.run(["checkpoint", "cosign", str(world.note), "--key", str(world.witness_key),
                   "--log-verifier", world.log_vkey, "--state", str(world.fresh("s.json")),
                   "--out", str(world.fresh("n")), "--json"])
    assert r.exit_code == 0, r.stderr
    return str(json.loads(r.stdout)["witness"])


def test_hostile_witness_state_files(world: World) -> None:
    """A state file the witness reads: sizes out of range, wrong shapes, deep nesting."""
    wv = _witness_vkey(world)

    def state(logs: object, **top: object) -> bytes:
        return json.dumps({"version": 1, "witness": wv, "logs": logs, **top}).encode()

    root = "00" * 32
    variants = [
        state({ORIGIN: {"size": 10**30, "root": root}}),
        state({ORIGIN: {"size": 2**63, "root": root}}),
        state({ORIGIN: {"size": -1, "root": root}}),
        state({ORIGIN: {"size": "12", "root": root}}),
        state({ORIGIN: {"size": 1.5, "root": root}}),
        state({ORIGIN: {"size": True, "root": root}}),
        state({ORIGIN: {"size": 1, "root": 5}}),
        state({ORIGIN: {"size": 1, "root": "zz"}}),
        state({ORIGIN: ["size", 1]}),
        state([]),
        state({}, version=2),
        b'{"version": 1, "witness": "' + wv.encode() + b'", "logs": {"' + ORIGIN.encode()
        + b'": {"size": 1e400, "root": "' + root.encode() + b'"}}}',
        b"[" * 100_000,
        b"[]", b"null", b"", b"\xff\xfe", ("1" * 10_000).encode(),
        state({}, witness="someone-else"),
    ]
    for data in variants:
        path = _garbage_file(world, "state.json", data)
        out = world.fresh("cosigned.note")
        r = world.run(["checkpoint", "cosign", str(world.note), "--key", str(world.witness_key),
                       "--log-verifier", world.log_vkey, "--state", str(path),
                       "--out", str(out)])
        assert_one_line_failure(r, "state file")
        assert path.read_bytes() == data and not out.exists(), "nothing written"
    assert_one_line_failure(world.run([
        "checkpoint", "cosign", str(world.note), "--key", str(world.witness_key),
        "--log-verifier", world.log_vkey, "--state", str(world.dir)]))


def _refuses_new_files(d: Path) -> bool:
    try:
        (d / "flchain-probe").touch()
    except OSError:
        return True
    (d / "flchain-probe").unlink()
    return False


def test_read_only_and_impossible_targets(world: World) -> None:
    if not _refuses_new_files(READ_ONLY_DIR):
        pytest.skip(f"{READ_ONLY_DIR} accepts new files here")
    not_a_dir = _garbage_file(world, "plain-file", b"x")
    for target in (READ_ONLY_DIR / "flchain-test.out", not_a_dir / "x.out"):
        named = str(target)  # the error names the user's path, not a temporary file
        assert_one_line_failure(world.run(["keygen", "--out", named]), named)
        assert_one_line_failure(world.run(["checkpoint", "sign", "--key", str(world.log_key),
                                           "--out", named]), named)
        assert_one_line_failure(world.run([
            "checkpoint", "cosign", str(world.note), "--key", str(world.witness_key),
            "--log-verifier", world.log_vkey, "--state", str(world.fresh("s.json")),
            "--out", named]), named)
        assert_one_line_failure(world.run([
            "checkpoint", "cosign", str(world.note), "--key", str(world.witness_key),
            "--log-verifier", world.log_vkey, "--state", named]), named)
        assert_one_line_failure(world.run(["init"], ledger=target), named)
        assert not target.exists()


@contextmanager
def _read_only(*paths: Path) -> Iterator[None]:
    """Make files and directories read-only; as root, immutable (root ignores modes)."""
    immutable = os.geteuid() == 0
    try:  # restored in `finally` even when the test is skipped half-way
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
            if immutable and subprocess.run(["chattr", "+i", str(p)], capture_output=True,
                                            check=False).returncode != 0:
                pytest.skip("running as root without chattr +i: cannot make a read-only file")
        yield
    finally:
        for p in paths:
            if immutable:
                subprocess.run(["chattr", "-i", str(p)], capture_output=True, check=False)
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_a_read_only_ledger(world: World, tmp_path: Path) -> None:
    """Writers fail with one line and change nothing; readers work (read-only audits)."""
    ro = tmp_path / "archive"
    ro.mkdir()
    ledger = ro / "ledger.db"
    shutil.copyfile(world.good, ledger)
    before = ledger.read_bytes()
    with _read_only(ledger, ro):
        for args in (["append"], ["checkpoint", "sign", "--key", str(world.log_key)],
                     ["checkpoint", "add", str(world.note), "--key-verifier", world.log_vkey]):
            assert_one_line_failure(world.run(args, ledger=ledger, input=_entry_lines(900, 1)))
        assert_one_line_failure(world.run(["init"], ledger=ro / "new.db"))
        for args in (["head"], ["info"], ["log"], ["show", "3"], ["prove", "3"],
                     ["consistency", "3"], ["verify", "--key-verifier", world.log_vkey],
                     ["checkpoint", "latest"]):
            r = world.run(args, ledger=ledger)
            assert r.exit_code == 0 and r.stderr == "", (args, r.output)
    assert ledger.read_bytes() == before and sorted(p.name for p in ro.iterdir()) == [
        "ledger.db"]


# -- the integration commands' own hostile input -----------------------------------------------


def test_lineage_and_rollback_hostile_arguments(world: World) -> None:
    for cmd in ("lineage", "rollback"):
        for digest in ("sha256:zz", "latest", "sha256:" + "ab" * 32, "", "x" * 10_000):
            assert_one_line_failure(world.run([cmd, digest]))
    blobs_file = _garbage_file(world, "blobs", b"x")
    assert_one_line_failure(world.run(["lineage", "latest", "--blobs", str(blobs_file)]))
    assert_one_line_failure(world.run(["lineage", "latest", "--dot", "--json"]))


def test_lightning_verify_hostile_files(world: World) -> None:
    for path in (world.dir / "no-such.ckpt", world.dir,
                 _garbage_file(world, "empty.ckpt", b"")):
        assert_one_line_failure(world.run(["lightning", "verify", str(path)]))


def test_mlflow_verify_hostile_uris(world: World) -> None:
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{world.dir}/mlflow.db"
    with _mlflow_restored():
        for model in ("nonsense", f"models:/m/{BIG}", "models:/", "runs:/x/y", "models:/m/-1",
                      ""):
            assert_one_line_failure(world.run(["mlflow", "verify", model,
                                               "--tracking-uri", uri]))
        assert_one_line_failure(world.run(["mlflow", "verify", "models:/m/1",
                                           "--tracking-uri", "nosuchscheme://x"]))


# -- the installed console script, in a real process -----------------------------------------


def test_console_script_never_shows_a_traceback(world: World,
                                                hostile_ledgers: dict[str, Path]) -> None:
    exe = Path(sys.executable).with_name("flchain")
    assert exe.exists(), "install the package: pip install -e ."
    state = _garbage_file(world, "state.json", b"[" * 100_000)
    cases = [
        ["--ledger", str(hostile_ledgers["damaged-data"]), "verify"],
        ["--ledger", str(hostile_ledgers["truncated"]), "log"],
        ["--ledger", str(world.good), "show", BIG],
        ["--ledger", str(world.good), "nosuch"],
        ["--ledger", str(world.good), "checkpoint", "cosign", str(world.note), "--key",
         str(world.witness_key), "--log-verifier", world.log_vkey, "--state", str(state)],
        ["--ledger", str(world.good), "keygen", "--out", str(READ_ONLY_DIR / "k.pem")],
        ["--ledger", str(world.good), "lineage", "sha256:zz"],
    ]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("FLCHAIN_DEBUG", None)
    for args in cases:
        p = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                           timeout=60, input="")
        assert p.returncode in (1, 2), (args, p.stdout, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(PREFIX), (args, p.stderr)
        assert "Traceback" not in p.stdout + p.stderr and "internal error" not in p.stderr
    p = subprocess.run([str(exe), "--ledger", str(world.good), "show", "0x"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.stderr.strip().endswith("(see `flchain show --help`)"), p.stderr


# -- lineage and rollback need no framework ---------------------------------------------------


FRAMEWORKS = ("flwr", "torch", "lightning", "pytorch_lightning", "mlflow", "ray")


def _two_round_ledger(tmp_path: Path) -> tuple[Path, str, str, BlobStore]:
    """A run's initial model m0 and one round's model m1, both with weights in the blob store
    beside the ledger: what lineage and rollback read."""
    import numpy as np

    ledger = tmp_path / "fl.db"
    store = BlobStore(str(ledger) + ".blobs")
    m0, m1 = store.put({"w": np.zeros(2)}), store.put({"w": np.ones(2)})
    with Ledger(ledger) as led:
        led.append([E.Run(run="1", strategy="FedAvg", config="sha256:" + "c" * 64, model=m0)])
        led.append([E.Model(run="1", round=1, model=m1, parent=m0, inputs=[],
                            aggregator="FedAvg")])
    return ledger, m0, m1, store


def test_lineage_rollback_and_lightning_verify_import_no_framework(tmp_path: Path) -> None:
    ledger, m0, _, _ = _two_round_ledger(tmp_path)
    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from flchain_plugin.cli import cli\n"
        f"ledger = {str(ledger)!r}\n"
        "r = CliRunner().invoke(cli, ['--ledger', ledger, '--json', 'lineage', 'latest'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(cli, ['--ledger', ledger, '--json', 'rollback', {m0!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(cli, ['--ledger', ledger, 'lineage', 'latest'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(cli, ['--ledger', ledger, 'lightning', 'verify', ledger])\n"
        "assert r.exit_code == 1 and 'not in the ledger' in r.stderr, r.output\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r}))\n"
        "print(json.dumps(loaded))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1]) == []
    with Ledger(ledger, create=False) as led:
        assert isinstance(led.get(2).entry, E.Rollback) and led.get(2).entry.model == m0


def test_rollback_with_hostile_blob_and_key_files(tmp_path: Path) -> None:
    """The weights file and the checkpoint key beside the ledger are files the CLI reads."""
    from flchain_plugin.commit import key_path

    ledger, m0, m1, store = _two_round_ledger(tmp_path)
    good = store.path(m0).read_bytes()

    def rollback() -> Result:
        return CliRunner().invoke(cli, ["--ledger", str(ledger), "rollback", m0],
                                  prog_name="flchain")

    for data in (b"", b"garbage", good[: len(good) // 2], store.path(m1).read_bytes()):
        store.path(m0).write_bytes(data)
        assert_one_line_failure(rollback(), "cannot roll back")
    store.path(m0).write_bytes(good)
    for data in (b"", b"garbage", random.Random(4).randbytes(2000)):
        key_path(ledger).write_bytes(data)
        assert_one_line_failure(rollback())
    with Ledger(ledger, create=False) as led:
        assert led.size == 2, "nothing appended by a refused rollback"


# -- a real ledger with hand-edited rows -------------------------------------------------------


TAMPERED_ROWS = {
    "negative head": "INSERT INTO heads VALUES (-5, x'00', 0)",
    "head root as text": "UPDATE heads SET root = 'zz' WHERE size = (SELECT max(size) FROM heads)",
    "head time as text": "UPDATE heads SET ts = 'yesterday'",
    "head time huge": "UPDATE heads SET ts = 1e300",
    "entry moved to the largest key": "UPDATE entries SET idx = 9223372036854775807 WHERE idx = 3",
    "entry moved to -1": "UPDATE entries SET idx = -1 WHERE idx = 3",
    "entry data an integer": "UPDATE entries SET data = 5 WHERE idx = 3",
    "entry data nested deep": "UPDATE entries SET data = '" + "[" * 5000 + "' WHERE idx = 3",
    "leaf hash one byte": "UPDATE entries SET leaf = x'00' WHERE idx = 3",
    "node hash one byte": "UPDATE nodes SET hash = x'01'",
    "node at the largest key": "INSERT INTO nodes VALUES (9223372036854775807, x'"
                               + "00" * 32 + "')",
    "origin deleted": "DELETE FROM meta WHERE key = 'origin'",
    "origin an integer": "UPDATE meta SET value = 5 WHERE key = 'origin'",
    "checkpoint note garbage": "UPDATE checkpoints SET note = 'garbage'",
    "checkpoint size beyond int64": "UPDATE checkpoints SET size = 99999999999999999999",
    "checkpoint size text": "UPDATE checkpoints SET size = 'x'",
    "digest index garbage": "INSERT INTO refs_recent VALUES ('x', 'y')",
}
ROW_READERS: list[list[str]] = [
    ["head"], ["info"], ["log"], ["show", "3"], ["prove", "3"], ["consistency", "3"],
    ["verify"], ["checkpoint", "latest"], ["prove", "--digest", "sha256:" + "0" * 61 + "003"],
    ["append"], ["lineage", "latest"], ["rollback", "latest"],
    ["lightning", "verify", "LEDGER"],
]
NAMED_BY_VERIFY = {"negative head", "digest index garbage"}
"""Rows that the ledger audit names (issue 13 B.1): verify fails on them with exit 1."""


def _tampered(world: World, name: str) -> Path:
    db = world.fresh(name.replace(" ", "-") + ".db")
    shutil.copyfile(world.good, db)
    with sqlite3.connect(db) as c:
        c.execute(TAMPERED_ROWS[name])
    return db


@pytest.mark.parametrize("name", sorted(TAMPERED_ROWS))
def test_tampered_rows_reach_the_user_as_one_line(world: World, name: str) -> None:
    db = _tampered(world, name)
    for args in ROW_READERS:
        if args == ["verify"] and name in NAMED_BY_VERIFY:
            continue
        args = [str(db) if a == "LEDGER" else a for a in args]
        r = world.run(args, ledger=db, input=_entry_lines(1000, 1))
        if r.exit_code != 0:
            assert_one_line_failure(r)
        else:
            assert r.stderr == "" and "Traceback" not in r.stdout


@pytest.mark.parametrize("name", sorted(NAMED_BY_VERIFY))
def test_verify_names_rows_outside_the_tree(world: World, name: str) -> None:
    r = world.run(["verify"], ledger=_tampered(world, name))
    assert_one_line_failure(r)
    assert r.exit_code == 1
