"""The audit report without a browser: its facts from real SQLite ledgers, its page's
escaping of every ledger string, its caps on large runs, witnesses and anchors, and
`flchain report` on good, tampered and hostile input. The page in a real Chromium is
test_report_browser's."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin import notes
from flchain_plugin.cli import cli
from flchain_plugin.commit import commit, log_signer
from flchain_plugin.ledger import Ledger
from flchain_plugin.report import DUTIES, build_report
from flchain_plugin.report_html import MAX_ACCEPTED, MAX_COLUMNS, MAX_REFUSED, render

HOSTILE = ("<script>document.title='pwned'</script>", "<img src=x onerror=alert(1)>",
           "</style><svg onload=alert(1)>", "\"'><iframe src=javascript:alert(1)>")
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3",
             "div", "span", "ul", "li", "nav", "a", "main", "section", "p", "table", "thead",
             "tbody", "tr", "th", "td", "code", "br", "svg", "defs", "marker", "path", "g",
             "rect", "text", "line"}
"""Every element the page may contain: anything else came from a ledger string."""


def digest(n: int) -> str:
    """A distinct digest per number (hashed: the ledger indexes digests by their prefix)."""
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def write_run(led: Ledger, *, run: str = "run-1", rounds: int = 3, clients: int = 4,
              refused: int = 1, names: list[str] | None = None, credit: bool = True,
              metric: str = "loss", detail: str = "norm above the bound") -> str:
    """A federated run as LedgerStrategy records it (one signed batch per round): `clients`
    updates accepted per round, the last `refused` of them refused instead. Returns the
    final model digest."""
    names = names or [f"node-{c}" for c in range(clients)]
    signer = log_signer(led)
    model = digest(10_000)
    commit(led, [E.Run(run=run, strategy="FedAvg", config=digest(1), model=model,
                       policy={"require_signatures": True, "max_update_norm": 5.0})],
           signer=signer)
    for r in range(1, rounds + 1):
        base = led.size
        batch: list[E.Entry] = []
        for c, node in enumerate(names):
            update = digest(r * 1000 + c + 100_000)
            if c >= len(names) - refused:
                batch.append(E.Rejected(run=run, round=r, node=node, reason="out_of_bounds",
                                        detail=detail, update=update))
                continue
            batch.append(E.Update(run=run, round=r, node=node, update=update,
                                  parent=model, num_examples=10 + c, metrics={metric: 0.5},
                                  dataset=None, nonce=f"{r}-{c}", key=None, signature=None))
        inputs = [base + i for i, e in enumerate(batch) if isinstance(e, E.Update)]
        new = digest(10_000 + r) if inputs else model  # all refused: the round keeps it
        batch.append(E.Model(run=run, round=r, model=new, parent=model, inputs=inputs,
                             aggregator="FedAvg"))
        if credit:
            batch += [E.Credit(run=run, round=r, node=names[0], rule="accepted", amount=3,
                               basis={"updates": 1})]
        commit(led, batch, built_for=base, signer=signer)
        model = new
    return model


def anchor(**values: Any) -> E.Entry:
    """An `anchor` entry with the fields this version's Anchor has (the evm part adds
    contract, block and origin to the format of issue 15)."""
    names = {f.name for f in dataclasses.fields(E.Anchor)}
    full = {"chain": "eip155:31337", "contract": "0x" + "ab" * 20, "tx": "0x" + "cd" * 32,
            "block": 7, "origin": "example.com/report", **values}
    return E.Anchor(**{k: v for k, v in full.items() if k in names})


class Tags(HTMLParser):
    """Element names and text of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Tags:
    t = Tags()
    t.feed(page)
    t.close()
    return t


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("report") / "ledger.db"
    with Ledger(path, create=True, origin="example.com/report") as led:
        model = write_run(led)
    return path, model


# -- the facts ----------------------------------------------------------------------------------


def test_facts_of_a_run(small: tuple[Path, str]) -> None:
    path, model = small
    with Ledger(path, create=False) as led:
        doc = build_report(led, replay=False).to_json()
    assert doc["ok"] and doc["problems"] == [] and doc["verification"]["ok"]
    (run,) = doc["runs"]
    assert run["strategy"] == "FedAvg" and run["policy"]["max_update_norm"] == 5.0
    assert [r["round"] for r in run["rounds"]] == [1, 2, 3]
    for r in run["rounds"]:
        assert [u["node"] for u in r["accepted"]] == ["node-0", "node-1", "node-2"]
        assert [(x["node"], x["reason"]) for x in r["refused"]] == [("node-3", "out_of_bounds")]
        assert r["model"]["inputs"] == 3 and not r["model"]["kept"]
    totals = {c["node"]: (c["accepted"], c["refused"], c["examples"]) for c in doc["clients"]}
    assert totals == {"node-0": (3, 0, 30), "node-1": (3, 0, 33), "node-2": (3, 0, 36),
                      "node-3": (0, 3, 0)}
    assert doc["credits"]["totals"] == {"node-0": 9}
    assert doc["lineage"]["model"] == model and doc["lineage"]["ok"]
    assert len(doc["lineage"]["versions"]) == 4  # the initial model and three rounds
    assert [c["size"] for c in doc["checkpoints"]] == [1, 7, 13, 19]
    assert all(s["role"] == "log" and s["verified"] for c in doc["checkpoints"]
               for s in c["signatures"])
    assert doc["replay"]["status"] == "not_run"
    checks = {c["check"].split(" (")[0]: c for c in doc["checks"]}
    assert checks["ledger"]["status"] == "ok" and checks["log signatures"]["status"] == "ok"
    assert checks["final model's lineage"]["detail"].startswith("4 versions")
    assert checks["witness cosignatures"]["status"] == "not_run"
    assert checks["replay"]["status"] == "not_run"
    assert json.loads(json.dumps(doc)) == doc  # plain JSON


def test_duties_name_the_records_that_serve_them(small: tuple[Path, str]) -> None:
    with Ledger(small[0], create=False) as led:
        duties = build_report(led, replay=False).to_json()["duties"]
    by = {(d["law"], d["article"].split(",")[0].split("(")[0].strip()): d for d in duties}
    for key in [("EU AI Act", "Art. 12"), ("EU AI Act", "Art. 19"), ("GDPR", "Art. 15"),
                ("GDPR", "Art. 17"), ("GDPR", "Art. 30")]:
        assert key in by, key
    assert "lineage --client" in by["GDPR", "Art. 15"]["how"]
    assert "flchain erase" in by["GDPR", "Art. 17"]["how"]
    assert by["GDPR", "Art. 17"]["count"] == 0  # nothing erased in this ledger
    logging = next(d for d in duties if d["article"] == "Art. 12(1)")
    assert logging["count"] == 16 + 4  # every run/update/rejected/model entry + 4 checkpoints
    assert len(duties) == len(DUTIES)


def test_witness_cosignatures_are_checked_with_the_witness_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    witness = notes.generate_cosignature_key("witness.example/w1")
    with Ledger(path, create=True, origin="example.com/report") as led:
        write_run(led, rounds=1)
        note = led.latest_checkpoint()
        assert note is not None
        led.add_checkpoint_note(notes.add_signature(note, witness), log_signer(led).verifier)
        unchecked = build_report(led, replay=False).to_json()
        checked = build_report(led, replay=False, witness_keys=[witness.verifier]).to_json()
    cos = [s for s in unchecked["checkpoints"][-1]["signatures"] if s["role"] == "witness"]
    assert [(s["name"], s["verified"]) for s in cos] == [("witness.example/w1", None)]
    cos = [s for s in checked["checkpoints"][-1]["signatures"] if s["role"] == "witness"]
    assert cos[0]["verified"] is True and cos[0]["timestamp"] > 1_700_000_000
    summary = {c["check"]: c["status"] for c in checked["checks"]}
    assert summary["witness cosignatures"] == "ok"
    assert {c["check"]: c["status"] for c in unchecked["checks"]}["witness cosignatures"] \
        == "warning"
    page = render(checked)
    assert "witness.example/w1" in page and "no witness keys given" not in page
    assert "no witness keys given" in render(unchecked)


def test_anchors_are_checked_against_the_log(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, create=True, origin="example.com/report") as led:
        write_run(led, rounds=2)
        size = led.size
        root = "sha256:" + led.root_at(size).hex()
        commit(led, [anchor(size=size, root=root)], signer=log_signer(led))
        good = build_report(led, replay=False).to_json()
        commit(led, [anchor(size=size, root=digest(99))], signer=log_signer(led))
        bad = build_report(led, replay=False)
    assert good["ok"] and good["anchors"][0]["matches_log"] is True
    assert good["anchors"][0]["size"] == size and "eip155" in render(good)
    assert not bad.ok and bad.to_json()["anchors"][1]["matches_log"] is False
    assert bad.problems() == [f"anchor entry {size + 1}: anchored root {digest(99)} is not "
                              f"the log's root at size {size} ({root[7:]})"]


def test_an_anchor_of_another_log_or_beyond_the_log_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, create=True, origin="example.com/report") as led:
        write_run(led, rounds=1)
        size = led.size
        root = "sha256:" + led.root_at(size).hex()
        commit(led, [anchor(size=size, root=root, origin="example.com/other"),
                     anchor(size=size + 50, root=root)], signer=log_signer(led))
        rep = build_report(led, replay=False)
    other, beyond = rep.to_json()["anchors"]
    assert other["matches_log"] is None and "another log" in other["problem"]
    assert beyond["matches_log"] is None and "beyond the log" in beyond["problem"]
    assert not rep.ok and len(rep.problems()) == 2


# -- the page -----------------------------------------------------------------------------------


def test_page_is_self_contained_and_has_every_section(small: tuple[Path, str]) -> None:
    with Ledger(small[0], create=False) as led:
        doc = build_report(led, replay=False).to_json()
    page = render(doc)
    tags = parse(page)
    assert tags.tags <= PAGE_TAGS and "script" not in tags.tags
    for name, value in tags.attrs:  # nothing fetched: no src, links only to the page itself
        assert name != "src", value
        if name == "href":
            assert value is not None and value.startswith("#"), value
    assert "default-src 'none'" in page  # the CSP forbids loading anything
    for section in ("summary", "runs", "rounds", "clients", "lineage", "credits", "checkpoints",
                    "anchors", "status", "duties"):
        assert f'<section id="{section}">' in page
    assert page.count('<g class="node model"') == 4
    assert page.count('<g class="node update"') == 9 and page.count('class="node refused"') == 3
    assert "Art. 12(1)" in page and "Art. 17" in page and "out_of_bounds" in page


def test_ledger_strings_are_inert(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, create=True, origin="example.com/report") as led:
        write_run(led, run=HOSTILE[0], names=list(HOSTILE), metric=HOSTILE[1],
                  detail=HOSTILE[2])
        doc = build_report(led, replay=False).to_json()
    page = render(doc)
    tags = parse(page)
    assert tags.tags <= PAGE_TAGS, tags.tags - PAGE_TAGS
    text = "".join(tags.text)
    for s in HOSTILE:
        assert s in text or s[:40] in text  # shown as text, as written
    assert not any(n.startswith("on") for n, _ in tags.attrs)


@pytest.fixture(scope="module")
def doc_for_fuzz(small: tuple[Path, str]) -> dict[str, Any]:
    with Ledger(small[0], create=False) as led:
        return build_report(led, replay=False).to_json()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=40))
def test_any_string_stays_text(doc_for_fuzz: dict[str, Any], s: str) -> None:
    doc = copy.deepcopy(doc_for_fuzz)
    r = doc["runs"][0]["rounds"][0]
    r["accepted"][0]["node"] = s
    r["refused"][0]["detail"] = s
    r["accepted"][1]["metrics"] = {s: 1.0}
    doc["lineage"]["versions"][0]["rounds"][0]["updates"][0]["node"] = s
    doc["clients"][0]["name"] = s
    tags = parse(render(doc))
    assert tags.tags <= PAGE_TAGS, tags.tags - PAGE_TAGS
    assert not any(n.startswith("on") for n, _ in tags.attrs)


def test_a_round_that_kept_its_model_is_a_column_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, create=True, origin="example.com/report") as led:
        model = write_run(led, rounds=2, clients=3, refused=1, credit=False)
        write_run(led, run="run-2", rounds=1, clients=2, refused=2, credit=False)
        doc = build_report(led, replay=False, model=model).to_json()
    kept = doc["runs"][1]["rounds"][0]
    assert kept["model"]["kept"] and kept["accepted"] == [] and len(kept["refused"]) == 2
    svg = render(doc)
    assert svg.count('class="node model"') == 3  # start, round 1, round 2 of run-1
    with Ledger(path, create=False) as led:
        doc2 = build_report(led, replay=False).to_json()  # latest: run-2's kept model
    page = render(doc2)
    assert page.count('class="node model kept"') == 1 and page.count('class="node refused"') == 2


def test_a_large_run_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, create=True, origin="example.com/report") as led:
        write_run(led, rounds=40, clients=30, refused=5, credit=False)
        doc = build_report(led, replay=False).to_json()
    assert sum(len(r["accepted"]) for r in doc["runs"][0]["rounds"]) == 40 * 25  # JSON: all
    page = render(doc)
    svg = page[page.index("<svg"):page.index("</svg>")]
    per_column = 1 + MAX_ACCEPTED + 1 + MAX_REFUSED + 1
    assert svg.count('<g class="node') <= MAX_COLUMNS * per_column
    assert svg.count('class="node model"') == MAX_COLUMNS - 1  # one column summarises
    assert "+19 more accepted" in svg and "+2 more refused" in svg
    assert "26 rounds" in svg and "(summarised)" in svg
    width = int(svg.split('width="', 1)[1].split('"', 1)[0])
    assert width < 3000


# -- the command --------------------------------------------------------------------------------


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), prog_name="flchain")


def test_cli_writes_the_page_and_prints_json(small: tuple[Path, str], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    r = run_cli("--ledger", str(small[0]), "report", "--out", str(out), "--json",
                "--no-replay")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["html"] == str(out) and doc["lineage"]["model"] == small[1]
    assert out.read_text().startswith("<!doctype html>")
    r = run_cli("--ledger", str(small[0]), "report", "--out", str(tmp_path / "h.html"))
    assert r.exit_code == 0 and "audit report written" in r.stdout


def test_cli_on_a_tampered_ledger_writes_the_page_and_exits_1(small: tuple[Path, str],
                                                              tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    with sqlite3.connect(small[0]) as src, sqlite3.connect(bad) as dst:
        src.backup(dst)
    with sqlite3.connect(bad) as c:
        (data,) = c.execute("SELECT data FROM entries WHERE idx = 3").fetchone()
        c.execute("UPDATE entries SET data = ? WHERE idx = 3",
                  (bytes(data).replace(b"node-2", b"node-9"),))
    out = tmp_path / "bad.html"
    r = run_cli("--ledger", str(bad), "report", "--out", str(out))
    assert r.exit_code == 1
    (line,) = r.stderr.splitlines()
    assert line.startswith("flchain: error: the ledger does not verify") and "3" in line
    assert str(out) in line and "does not verify" in out.read_text()


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "sha256:12"], "--model"),
    (["--witness-key", "not a key"], "--witness-key"),
    (["--out", "/sys/report.html"], "cannot write"),
])
def test_cli_bad_input_is_one_line(small: tuple[Path, str], args: list[str],
                                   needle: str) -> None:
    r = run_cli("--ledger", str(small[0]), "report", *args)
    assert r.exit_code == 2
    (line,) = r.stderr.splitlines()
    assert line.startswith("flchain: error: ") and needle in line
