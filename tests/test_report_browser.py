"""The audit report in a real headless Chromium: `make demo`'s main job (a real Flower
simulation) ends by writing the page; the page renders with nothing in the console, the
lineage graph is drawn with one node per version, accepted update and refused reply, and
a page built from a ledger full of planted markup stays inert. Screenshots are kept in
$FLCHAIN_TEST_ARTIFACTS/report (default: <tmp>/flchain-test-artifacts/report), printed.

Needs `chromium` (Debian's package; CI installs it): missing, it is a skip naming how to
install it, and a failure when CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from report_browser import INSTALL_HINT, Browser, chromium_binary
from test_report import HOSTILE, write_run

from flchain_plugin.cli import cli
from flchain_plugin.ledger import Ledger

DEMO = Path(__file__).resolve().parents[1] / "examples" / "federated_demo.py"
ARTIFACTS = Path(os.environ.get("FLCHAIN_TEST_ARTIFACTS")
                 or Path(tempfile.gettempdir()) / "flchain-test-artifacts") / "report"

GRAPH = """(() => {
  const svg = document.getElementById('lineage-graph');
  const box = svg.getBoundingClientRect();
  const nodes = [...svg.querySelectorAll('g.node')];
  const drawn = nodes.filter(n => { const b = n.getBoundingClientRect();
                                    return b.width > 0 && b.height > 0; });
  const count = sel => svg.querySelectorAll(sel).length;
  return {width: box.width, height: box.height, nodes: nodes.length, drawn: drawn.length,
          models: count('g.node.model'), updates: count('g.node.update'),
          refused: count('g.node.refused'), edges: count('line.edge'),
          sections: document.querySelectorAll('main > section').length,
          title: document.title};
})()"""

INERT = """(() => ({
  title: document.title,
  active: document.querySelectorAll('script, img, iframe, object, embed').length,
  handlers: [...document.querySelectorAll('*')].filter(
      e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
  text: document.body.innerText,
}))()"""


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"chromium is not installed: {INSTALL_HINT}")
        pytest.skip(f"chromium is not installed: {INSTALL_HINT}")
    return binary


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    pytest.importorskip("flwr.simulation")
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, str(DEMO), "--out", str(out), "--rounds", "3",
                           "--clients", "5", "--json"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def screenshot(browser: Browser, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = browser.screenshot(ARTIFACTS / name)
    print(f"screenshot kept: {path}")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    return path


@pytest.mark.flower
def test_demo_ends_with_the_report_and_chromium_draws_it(demo: tuple[Path, dict[str, Any],
                                                                     str],
                                                         browser: Browser) -> None:
    out, summary, stdout = demo
    page = Path(summary["report"])
    assert page == (out / "report.html").resolve()
    assert str(page) in stdout.splitlines()[-2]  # the last line printed before --json's
    with Ledger(out / "ledger.db", create=False) as led:
        r = CliRunner().invoke(cli, ["--ledger", str(out / "ledger.db"), "report", "--out",
                                     str(out / "again.html"), "--json"])
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert led.size == doc["ledger"]["size"]
    versions = doc["lineage"]["versions"]
    accepted = sum(len(rd["updates"]) for v in versions for rd in v["rounds"] if not rd["kept"])
    refused = sum(len(rd["rejected"]) for v in versions for rd in v["rounds"])
    assert (len(versions), accepted, refused) == (4, summary["accepted"], summary["refused"])
    assert doc["replay"]["status"] == "ok"  # the demo keeps its updates: every round replayed
    assert [r["round"] for r in doc["replay"]["rounds"]] == [1, 2, 3]

    browser.open(page.as_uri())
    assert browser.console() == []
    g = browser.evaluate(GRAPH)
    assert (g["models"], g["updates"], g["refused"]) == (len(versions), accepted, refused)
    assert g["nodes"] == g["drawn"] == len(versions) + accepted + refused
    assert g["edges"] == len(versions) - 1 + accepted + refused
    assert g["width"] > 400 and g["height"] > 200 and g["sections"] == 10
    assert g["title"] == f"flchain audit report: {doc['ledger']['origin']}"
    screenshot(browser, "demo-report.png")


def test_planted_markup_is_inert_in_chromium(tmp_path: Path, browser: Browser) -> None:
    path = tmp_path / "hostile.db"
    with Ledger(path, create=True, origin="example.com/hostile") as led:
        write_run(led, run=HOSTILE[0], names=list(HOSTILE), metric=HOSTILE[1],
                  detail=HOSTILE[2])
    page = tmp_path / "hostile.html"
    r = CliRunner().invoke(cli, ["--ledger", str(path), "report", "--out", str(page)])
    assert r.exit_code == 0, r.stderr
    browser.open(page.as_uri())
    assert browser.console() == []  # a blocked script would log a CSP violation here
    seen = browser.evaluate(INERT)
    assert seen["title"] == "flchain audit report: example.com/hostile"
    assert seen["active"] == 0 and seen["handlers"] == 0
    for s in HOSTILE:
        assert s in seen["text"]
    g = browser.evaluate(GRAPH)
    assert g["nodes"] == g["drawn"] > 0
    screenshot(browser, "hostile-report.png")
