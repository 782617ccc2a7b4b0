"""The audit report as one self-contained HTML page (inline CSS, an inline SVG, no script).

`render` draws the JSON document of `flchain_plugin.report` (the one source of the facts)
so the page and `flchain report --json` never disagree. The page loads nothing: no
network, no fonts, no scripts; its Content-Security-Policy forbids them, so the page
stays inert even if a string escaped. Every string from the ledger (node ids, metric
keys, refusal details, key names) is attacker-controlled and goes through `esc`.

The lineage graph is laid out here: rounds as columns, left to right; in each column the
model version the round made (or kept) on top, the accepted updates under it, the refused
replies in red below those. Large runs stay readable: at most MAX_COLUMNS columns (the
start, a summary of the middle, the latest rounds) and MAX_ACCEPTED / MAX_REFUSED nodes
per column, the rest summarised in one node; the JSON holds everything.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from .report import key_name

MAX_COLUMNS = 16
MAX_ACCEPTED = 6
MAX_REFUSED = 3
MAX_ROUND_ROWS = 200
MAX_LIST = 12
MAX_CHECKPOINT_ROWS = 60

COL_W, NODE_W, NODE_H, GAP, TOP = 168, 140, 36, 10, 56


def esc(value: Any) -> str:
    """Any value as HTML text, quotes included: safe in element text and attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def short(digest: Any) -> str:
    """A digest's first 12 hex digits; anything else as it is."""
    s = "" if digest is None else str(digest)
    return s[7:19] if s.startswith("sha256:") else s[:24]


def node_label(node: Any, names: dict[str, str]) -> str:
    """A client as people know it: its key name, else the tail of its node id."""
    n = str(node)
    if n in names:
        return names[n]
    return n if len(n) <= 10 else "node …" + n[-6:]


def number(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def metrics_text(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={number(v)}" for k, v in sorted(metrics.items()))


def when(ts: Any) -> str:
    if not isinstance(ts, (int, float)) or not ts:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"{ts!r} (not a time)"


def badge(state: str, text: str | None = None) -> str:
    cls = {"ok": "ok", "failed": "bad", "not_run": "off", "warning": "warn",
           "partial": "warn"}.get(state, "off")
    return f'<span class="badge {cls}">{esc(text or state.replace("_", " "))}</span>'


# -- the lineage graph ------------------------------------------------------------------------


@dataclass
class Column:
    """One round in the graph: the model it made or kept, and the replies it judged."""

    label: str
    model: str | None
    kept: bool = False
    summary: str | None = None  # a column standing for several rounds
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    blob: str = "unknown"


def columns(lineage: dict[str, Any]) -> list[Column]:
    """The lineage's rounds, oldest first, one column each, capped at MAX_COLUMNS."""
    cols: list[Column] = []
    for v in reversed(lineage.get("versions", [])):
        made = next((r for r in v["rounds"] if r["index"] == v["index"]), None)
        label = (f"round {made['round']}" if made else
                 "start" if v["source"] == "run" else v["source"])
        cols.append(Column(label, v["model"], False, None,
                           made["updates"] if made else [], made["rejected"] if made else [],
                           v.get("blob", "unknown")))
        for r in v["rounds"]:
            if r["kept"]:
                cols.append(Column(f"round {r['round']}", v["model"], True, None, [],
                                   r["rejected"], v.get("blob", "unknown")))
    if len(cols) > MAX_COLUMNS:
        hidden = cols[1:len(cols) - MAX_COLUMNS + 2]
        n_acc = sum(len(c.accepted) for c in hidden)
        n_ref = sum(len(c.refused) for c in hidden)
        middle = Column(f"{len(hidden)} rounds", None, False,
                        f"{hidden[0].label} … {hidden[-1].label}: {n_acc} accepted, "
                        f"{n_ref} refused")
        cols = [cols[0], middle, *cols[len(cols) - MAX_COLUMNS + 2:]]
    return cols


def _box(kind: str, x: float, y: float, lines: list[str], title: str,
         attrs: str = "") -> str:
    """One graph node: a rounded box with one or two lines of text and a tooltip."""
    text = "".join(f'<text x="{x + NODE_W / 2:.0f}" y="{y + 15 + 13 * i:.0f}">{esc(t)}</text>'
                   for i, t in enumerate(lines))
    return (f'<g class="node {kind}"{attrs}><title>{esc(title)}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f"{text}</g>")


def _edge(x1: float, y1: float, x2: float, y2: float, kind: str) -> str:
    return (f'<line class="edge {kind}" x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" '
            f'y2="{y2:.0f}" marker-end="url(#arrow)"/>')


def _column_nodes(c: Column, x: float, names: dict[str, str]
                  ) -> tuple[list[str], list[str], float]:
    """The nodes under one column's model and their edges to it (drawn first, so that
    they pass behind the boxes); returns (edges, nodes, the column's height)."""
    edges: list[str] = []
    nodes: list[str] = []
    y = TOP + NODE_H + 2 * GAP
    mid, model_bottom = x + NODE_W / 2, TOP + NODE_H

    def place(kind: str, lines: list[str], title: str, edge: str) -> None:
        nonlocal y
        edges.append(_edge(mid, y, mid, model_bottom, edge))
        nodes.append(_box(kind, x, y, lines, title))
        y += NODE_H + GAP

    for u in c.accepted[:MAX_ACCEPTED]:
        place("update", [node_label(u["node"], names), short(u["update"])],
              f"accepted update {u['update']} from node {u['node']} "
              f"({u['num_examples']} examples), entry {u['index']}", "input")
    if len(c.accepted) > MAX_ACCEPTED:
        more = len(c.accepted) - MAX_ACCEPTED
        place("summary", [f"+{more} more accepted"], f"{more} more accepted updates", "input")
    for r in c.refused[:MAX_REFUSED]:
        place("refused", [node_label(r["node"], names), r["reason"]],
              f"refused reply of node {r['node']}: {r['reason']}: {r['detail']}, "
              f"entry {r['index']}", "refusal")
    if len(c.refused) > MAX_REFUSED:
        more = len(c.refused) - MAX_REFUSED
        place("summary", [f"+{more} more refused"], f"{more} more refused replies", "refusal")
    return edges, nodes, y


def lineage_svg(lineage: dict[str, Any], names: dict[str, str]) -> str:
    """The lineage of the final model as an inline SVG (see the module docstring)."""
    cols = columns(lineage)
    parts: list[str] = []
    edges: list[str] = []
    height = TOP + NODE_H + GAP
    for i, c in enumerate(cols):
        x = 16 + i * COL_W
        parts.append(f'<text class="col" x="{x + NODE_W / 2:.0f}" y="24">{esc(c.label)}</text>')
        if c.summary is not None:
            parts.append(_box("summary", x, TOP, [c.label, "(summarised)"], c.summary))
        else:
            kind = "model kept" if c.kept else "model"
            line2 = "kept" if c.kept else ("weights " + c.blob if c.blob in
                                           ("erased", "missing") else "")
            parts.append(_box(kind, x, TOP, [short(c.model), line2],
                              f"model {c.model} ({c.label}; weights {c.blob})",
                              f' data-model="{esc(c.model)}"'))
        if i:
            edges.append(_edge(x - COL_W + NODE_W, TOP + NODE_H / 2, x, TOP + NODE_H / 2,
                               "version"))
        column_edges, nodes, bottom = _column_nodes(c, x, names)
        edges += column_edges
        parts += nodes
        height = max(height, bottom)
    width = 32 + len(cols) * COL_W - (COL_W - NODE_W)
    return (f'<svg id="lineage-graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
            f'aria-label="lineage of the final model">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/>'
            "</marker></defs>" + "".join(edges) + "".join(parts) + "</svg>")


# -- the page ---------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:20px 32px}header h1{margin:0 0 6px;font-size:22px}
header .meta{color:#c9d1e0;font-size:13px}main{padding:8px 32px 48px;max-width:1400px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:8px 20px 16px;
margin:16px 0}h2{font-size:17px;margin:12px 0 8px}h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{border-bottom:1px solid #eceef2;
text-align:left;padding:4px 8px;vertical-align:top}th{background:#f3f4f7;font-weight:600}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;
overflow-wrap:anywhere}.badge{display:inline-block;border-radius:10px;padding:1px 9px;
font-size:12px;font-weight:600}.ok{background:#d9f2e1;color:#176b34}.bad{background:#fbdcdc;
color:#a11}.warn{background:#fdf0cf;color:#7a5400}.off{background:#e7e9ee;color:#4b5262}
.reason{color:#a11;font-weight:600}.muted{color:#6b7280}nav a{margin-right:14px;color:#c9d1e0}
.graph{overflow-x:auto;border:1px solid #eceef2;border-radius:6px;background:#fbfcfd}
svg text{font:11px ui-monospace,Menlo,Consolas,monospace;text-anchor:middle;fill:#1d2330}
svg text.col{font-weight:700;font-size:12px}.node rect{stroke-width:1.5}
.node.model rect{fill:#dbe8ff;stroke:#2f5fb3}.node.kept rect{stroke-dasharray:4 3}
.node.update rect{fill:#e3f5e8;stroke:#2e8b4f}.node.refused rect{fill:#fde4e4;stroke:#c0392b}
.node.summary rect{fill:#f0f1f4;stroke:#8a91a0;stroke-dasharray:3 3}
.edge{stroke:#8a91a0;stroke-width:1.2}.edge.version{stroke:#2f5fb3;stroke-width:2}
.edge.refusal{stroke:#c0392b;stroke-dasharray:4 3}marker path{fill:#8a91a0}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def table(head: list[str], rows: list[list[str]], empty: str = "none") -> str:
    """An HTML table; `rows` hold HTML already escaped by the caller."""
    if not rows:
        return f'<p class="muted">{esc(empty)}</p>'
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    thead = f"<thead><tr>{th}</tr></thead>" if any(head) else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def prose(text: str) -> str:
    """Our own sentences, where `backticks` mark commands: escaped, commands as code."""
    parts = text.split("`")
    return "".join(code(p) if i % 2 else esc(p) for i, p in enumerate(parts))


def code(value: Any) -> str:
    return f"<code>{esc(value)}</code>"


def capped(items: list[Any], limit: int) -> tuple[list[Any], str]:
    """The first `limit` items and a note naming how many the page leaves to the JSON."""
    if len(items) <= limit:
        return items, ""
    return items[:limit], f" … and {len(items) - limit} more (all in --json)"


def names_of(doc: dict[str, Any]) -> dict[str, str]:
    return {c["node"]: c["name"] for c in doc["clients"] if c.get("name")}


def _header(doc: dict[str, Any]) -> str:
    led = doc["ledger"]
    state = badge("ok", "all checks pass") if doc["ok"] else badge("failed", "PROBLEMS FOUND")
    probs = "".join(f"<li>{esc(p)}</li>" for p in doc["problems"])
    return (f"<header><h1>flchain audit report {state}</h1>"
            f'<div class="meta">log <code>{esc(led["origin"])}</code> · {esc(led["size"])} '
            f'entries · root <code>{esc(led["root"])}</code> · file {esc(led["path"] or "-")} · '
            f"generated {esc(when(doc['generated']))}</div>"
            + (f'<ul class="meta">{probs}</ul>' if probs else "")
            + "<nav>" + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTIONS) + "</nav>"
            "</header>")


SECTIONS = (("summary", "Checks"), ("runs", "Runs & policy"), ("rounds", "Rounds"),
            ("clients", "Clients"), ("lineage", "Lineage"), ("credits", "Credits"),
            ("checkpoints", "Checkpoints"),
            ("anchors", "Anchors"), ("status", "Verification & replay"),
            ("duties", "Record-keeping duties"))


def _policy_rows(policy: dict[str, Any]) -> list[list[str]]:
    rows = []
    for k, v in sorted(policy.items()):
        if k == "keys" and isinstance(v, list):
            shown, more = capped([key_name(str(x)) for x in v], MAX_LIST)
            value = esc(", ".join(shown) + more) + f' <span class="muted">({len(v)} keys)</span>'
        elif isinstance(v, dict):
            value = esc(metrics_text(v))
        else:
            value = esc("none" if v is None else v)
        rows.append([code(k), value])
    return rows


def _summary(doc: dict[str, Any]) -> str:
    rows = [[esc(c["check"]), badge(c["status"]), esc(c["detail"])] for c in doc["checks"]]
    return ('<section id="summary"><h2>What was checked</h2>'
            + table(["check", "status", "detail"], rows) + "</section>")


def _runs(doc: dict[str, Any]) -> str:
    out = ['<section id="runs"><h2>Runs and their policy</h2>']
    for r in doc["runs"]:
        out.append(f"<h3>run {code(r['run'])}</h3>" + table(["", ""], [
            ["strategy", esc(r["strategy"] or "-")], ["recorded at entry", esc(r["index"])],
            ["configuration digest", code(r["config"])], ["initial model", code(r["model"])],
            ["clients registered", esc(len(r["members"]))]]))
        out.append("<h3>policy (as the run entry records it)</h3>"
                   + table(["rule", "value"], _policy_rows(r["policy"]), "no policy recorded"))
        for name, value in sorted(r.get("recorded", {}).items()):
            out.append(f"<h3>{esc(name)} (as the run entry records it)</h3>"
                       + code(json.dumps(value, sort_keys=True, ensure_ascii=False)))
    if not doc["runs"]:
        out.append('<p class="muted">the ledger records no federated run</p>')
    return "".join(out) + "</section>"


def _round_row(r: dict[str, Any], names: dict[str, str]) -> list[str]:
    m = r["model"] or {}
    acc, more_a = capped(r["accepted"], MAX_LIST)
    ref, more_r = capped(r["refused"], MAX_LIST)
    accepted = esc(", ".join(node_label(u["node"], names) for u in acc) + more_a)
    refused = "<br>".join(
        f'{esc(node_label(x["node"], names))}: <span class="reason">{esc(x["reason"])}</span>'
        f' <span class="muted">{esc(x["detail"][:160])}</span>' for x in ref) + esc(more_r)
    evals = "<br>".join(f"{esc(e['source'])}: {esc(metrics_text(e['metrics']))}"
                        for e in r["evaluations"])
    model = (code(short(m["model"])) + (" kept" if m["kept"] else "")) if m else "-"
    credits = esc(", ".join(f"{node_label(c['node'], names)} +{number(c['amount'])}"
                            for c in r["credits"][:MAX_LIST])) or "-"
    return [esc(r["round"]), f"{len(r['accepted'])}: {accepted}" if acc else "0",
            f"{len(r['refused'])}" + (f": {refused}" if ref else ""), model,
            esc(m.get("aggregator", "-")), evals or "-", credits]


def _rounds(doc: dict[str, Any], names: dict[str, str]) -> str:
    out = ['<section id="rounds"><h2>Every round: accepted and refused updates</h2>']
    for run in doc["runs"]:
        rounds, more = capped(run["rounds"][::-1], MAX_ROUND_ROWS)
        out.append(f"<h3>run {code(run['run'])} ({len(run['rounds'])} rounds, newest first"
                   f"{esc(more)})</h3>")
        out.append(table(["round", "accepted", "refused (reason, detail)", "model",
                          "aggregator", "evaluation", "credits"],
                         [_round_row(r, names) for r in rounds], "no rounds recorded"))
    return "".join(out) + "</section>"


def _clients(doc: dict[str, Any]) -> str:
    rows = [[esc(c["name"] or "-"), code(c["node"]), esc(c["accepted"]), esc(c["refused"]),
             esc(", ".join(f"{k} ×{n}" for k, n in c["reasons"].items()) or "-"),
             esc(c["examples"]), esc(len(c["datasets"])), esc(number(c["credits"]))]
            for c in doc["clients"]]
    return ('<section id="clients"><h2>Per-client totals</h2>'
            + table(["client (key name)", "node", "accepted", "refused", "refusal reasons",
                     "examples", "datasets", "credits"], rows, "no client replies recorded")
            + "</section>")


def _lineage(doc: dict[str, Any], names: dict[str, str]) -> str:
    lin = doc["lineage"]
    if lin is None:
        return ('<section id="lineage"><h2>Lineage of the final model</h2><p class="muted">'
                "no model recorded (or the ledger does not verify)</p></section>")
    state = badge("ok", "consistent") if lin["ok"] else badge("failed", "problems")
    probs = "".join(f"<li>{esc(p)}</li>" for p in lin["problems"])
    datasets = [[code(short(d["dataset"])), esc(", ".join(node_label(n, names)
                                                        for n in d["nodes"]))]
                for d in lin["datasets"]]
    return ('<section id="lineage"><h2>Lineage of the final model ' + state + "</h2>"
            f"<p>model {code(lin['model'])}: {len(lin['versions'])} versions. Rounds are "
            "columns; each column's model version (blue) was aggregated from the accepted "
            "updates under it (green); refused replies are red.</p>"
            f'<div class="graph">{lineage_svg(lin, names)}</div>'
            + (f"<ul>{probs}</ul>" if probs else "")
            + "<h3>datasets behind this model (salted commitments)</h3>"
            + table(["commitment", "clients"], datasets, "no dataset commitments")
            + "</section>")


def _credits(doc: dict[str, Any], names: dict[str, str]) -> str:
    cr = doc["credits"]
    totals = [[esc(node_label(n, names)), code(n), esc(number(a))]
              for n, a in sorted(cr["totals"].items(), key=lambda kv: -kv[1])]
    entries, more = capped(cr["entries"], MAX_ROUND_ROWS)
    rows = [[esc(c["index"]), esc(c.get("round")), esc(node_label(c.get("node"), names)),
             esc(c.get("rule")), esc(number(c.get("amount"))),
             esc(metrics_text(c.get("basis") or {}))] for c in entries]
    return ('<section id="credits"><h2>Credits</h2><p>Awards recorded as <code>credit</code> '
            "entries by the run's contract rules, replayable from the log "
            "(<code>flchain credits --replay</code>).</p>"
            + table(["client", "node", "total"], totals, "no credit entries")
            + (f"<h3>awards{esc(more)}</h3>" + table(
                ["entry", "round", "client", "rule", "amount", "basis"], rows) if rows else "")
            + "</section>")


def _signatures(c: dict[str, Any], role: str) -> str:
    sigs = [s for s in c["signatures"] if s["role"] == role]
    if not sigs:
        return '<span class="muted">none</span>'
    out = []
    for s in sigs:
        state = badge("ok", "verified") if s["verified"] else badge("not_run", "not checked")
        at = f" {esc(when(s['timestamp']))}" if s["timestamp"] else ""
        out.append(f"{esc(s['name'])} <code>{esc(s['key_id'])}</code> {state}{at}")
    return "<br>".join(out)


def _checkpoints(doc: dict[str, Any]) -> str:
    cps = doc["checkpoints"][::-1]
    shown, more = capped(cps, MAX_CHECKPOINT_ROWS)
    rows = [[esc(c["size"]), code(short("sha256:" + c["root"]) if c["root"] else "-"),
             _signatures(c, "log"), _signatures(c, "witness"),
             badge("failed", c["problem"]) if c["problem"] else badge("ok")] for c in shown]
    keys = doc["ledger"]["witness_keys"]
    given = (f"witness keys given: {esc(', '.join(k.split('+', 1)[0] for k in keys))}"
             if keys else "no witness keys given: cosignatures are listed but not checked "
                          "(pass --witness-key VKEY)")
    return ('<section id="checkpoints"><h2>Signed checkpoints and their witnesses</h2>'
            f"<p>{len(cps)} stored checkpoint notes (C2SP signed tree heads), newest first"
            f"{esc(more)}. {given}.</p>"
            + table(["tree size", "root", "log signature", "witness cosignatures", "status"],
                    rows, "no signed checkpoint stored") + "</section>")


def _anchors(doc: dict[str, Any]) -> str:
    rows = [[esc(a["index"]), esc(a.get("chain")), code(a.get("contract", "-")),
             code(a.get("tx")), esc(a.get("block", "-")), esc(a.get("size")),
             code(short(a.get("root"))), _minted(a.get("minted")),
             badge("failed", a["problem"]) if a["problem"] else badge("ok", "root matches log")]
            for a in doc["anchors"]]
    return ('<section id="anchors"><h2>Chain anchors</h2><p>Each <code>anchor</code> entry '
            "names a transaction that stored a checkpoint's root on a chain; the root is "
            "checked against this log here, the chain with <code>flchain anchor verify"
            "</code>.</p>"
            + table(["entry", "chain", "contract", "transaction", "block", "tree size",
                     "root", "credits minted", "status"], rows, "no anchor entries")
            + "</section>")


def _minted(minted: Any) -> str:
    """The rounds whose credits were minted against an anchor, one line each."""
    if not isinstance(minted, list) or not minted:
        return "-"
    shown, more = capped(minted, MAX_LIST)
    lines = [f"run {m.get('run')} round {m.get('round')}: {m.get('total')} tokens, "
             f"tx {short(m.get('tx'))}" if isinstance(m, dict) else str(m) for m in shown]
    return "<br>".join(esc(line) for line in lines) + esc(more)


def _verification(v: dict[str, Any]) -> str:
    state = badge("ok", "verified") if v["ok"] else badge("failed", "does not verify")
    rows = [["result", state + (f" {esc(v['problem']['detail'])}" if v["problem"] else "")],
            ["entries, tree heads", esc(f"{v['size']}, {v['heads']}")],
            ["root", code(v["root"])],
            ["checkpoint signatures", esc(f"checked with the {v['verifier_source']} key "
                                          f"{v['verifier']}") if v["verifier"] else
             badge("warning", "not checked: no verifier key known")],
            ["newest head signed", badge("ok", "yes") if v["head_signed"]
             else badge("warning", f"no (latest signed: {v['signed_size']})")]]
    rows += [["warning", esc(w)] for w in v["warnings"]]
    return "<h3>ledger verification (flchain verify)</h3>" + table(["", ""], rows)


def _status(doc: dict[str, Any], names: dict[str, str]) -> str:
    rep = doc["replay"]
    rounds, more = capped(rep["rounds"], MAX_ROUND_ROWS)
    state = {"ok": "ok", "differs": "failed", "missing": "failed"}
    rows = [[code(r["run"]), esc(r["round"]), code(short(r.get("model"))),
             badge(state.get(r["status"], "warning"), r["status"]), esc(r["detail"])]
            for r in rounds]
    er = [[esc(e["index"]), code(e.get("blob")), esc(e.get("reason"))] for e in doc["erasures"]]
    rb = [[esc(r["index"]), code(short(r.get("model"))), esc(r.get("reason"))]
          for r in doc["rollbacks"]]
    return ('<section id="status"><h2>Verification and replay</h2>'
            + _verification(doc["verification"])
            + f"<h3>replay (flchain audit replay) {badge(rep['status'])}</h3>"
            f"<p>{esc(rep['detail'])}{esc(more)}</p>"
            + (table(["run", "round", "model", "status", "detail"], rows) if rows else "")
            + "<h3>erasures</h3>" + table(["entry", "blob", "reason"], er, "no erasure")
            + "<h3>rollbacks</h3>" + table(["entry", "to model", "reason"], rb, "no rollback")
            + "</section>")


def _duties(doc: dict[str, Any]) -> str:
    rows = [[esc(d["law"]), esc(d["article"]), esc(d["duty"]),
             esc(", ".join(d["records"])), esc(d["count"]), prose(d["how"])]
            for d in doc["duties"]]
    return ('<section id="duties"><h2>Record-keeping duties and the records that serve '
            "them</h2><p>Which ledger records answer which duty; counts are of this ledger. "
            "A reading aid for the people responsible, not legal advice.</p>"
            + table(["law", "article", "duty", "ledger records", "in this ledger",
                     "how to produce them"], rows) + "</section>")


def render(doc: dict[str, Any]) -> str:
    """The whole page for a `flchain_plugin.report.AuditReport.to_json()` document."""
    names = names_of(doc)
    title = f"flchain audit report: {doc['ledger']['origin']}"
    body = (_header(doc) + "<main>" + _summary(doc) + _runs(doc) + _rounds(doc, names)
            + _clients(doc) + _lineage(doc, names) + _credits(doc, names) + _checkpoints(doc)
            + _anchors(doc) + _status(doc, names) + _duties(doc) + "</main>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}</body>"
            "</html>\n")
