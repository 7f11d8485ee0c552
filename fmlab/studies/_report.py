"""Render the static HTML report from the study folders under one output directory."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from fmlab._io import atomic_write, clean_stale, file_lock
from fmlab.studies._base import load_results
from fmlab.version import __version__

__all__ = ["count_claims", "render_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:1.2rem 2rem}header h1{margin:0;font-size:1.5rem}
header p{margin:.3rem 0 0;color:#c9d1dc}main{max-width:1100px;margin:0 auto;padding:1rem 2rem}
nav ul{columns:2;padding-left:1.2rem}section.study{background:#fff;border-radius:8px;
padding:1rem 1.5rem;margin:1.2rem 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{margin-top:.2rem}.meta{color:#5b6675;font-size:.9rem}table{border-collapse:collapse;
width:100%;margin:.6rem 0;font-size:.92rem}
th,td{border-bottom:1px solid #e3e6ea;padding:.35rem .5rem;
text-align:left;vertical-align:top}th{background:#f0f2f5}.holds{color:#0a6b2d;font-weight:600}
.fails{color:#a1260d;font-weight:600}figure{margin:1rem 0}figure img{max-width:100%;
border:1px solid #e3e6ea;border-radius:4px}figcaption{color:#5b6675;font-size:.88rem}
.summary td:nth-child(n+3){white-space:nowrap}
.kind{color:#5b6675;font-size:.85rem;font-weight:400}.na{color:#8a5a00;font-weight:600}
.error{background:#fff4f2;border-left:4px solid #a1260d}
.unavailable{background:#f7f7f4;border-left:4px solid #8a8a80}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kind(c: dict[str, Any]) -> str:
    return c.get("kind") or "empirical"  # records written before claim kinds: empirical


def count_claims(records: list[dict[str, Any]]) -> dict[str, int]:
    """Claim counts over ``records``: empirical (and how many hold), consistency checks (and how
    many pass), and how many could not be computed."""
    claims = [c for r in records for c in r.get("claims", [])]
    emp = [c for c in claims if _kind(c) == "empirical"]
    con = [c for c in claims if _kind(c) == "consistency"]
    return {"empirical": len(emp), "empirical_hold": sum(bool(c["holds"]) for c in emp),
            "consistency": len(con), "consistency_pass": sum(bool(c["holds"]) for c in con),
            "not_computed": sum(bool(c.get("error")) for c in claims)}


def _interval(c: dict[str, Any]) -> str:
    iv = c.get("interval")
    if not iv or c.get("value") is None:
        return ""
    lo, hi = ("-inf" if iv[0] is None else f"{iv[0]:.4g}", "inf" if iv[1] is None else
              f"{iv[1]:.4g}")
    return f"<br><small>value {c['value']:.4g}, interval [{lo}, {hi}]</small>"


def _claim_rows(claims: list[dict[str, Any]], passing: str, failing: str) -> str:
    rows = []
    for c in claims:
        if c.get("error"):
            verdict = '<span class="na">not computed</span>'
        elif c["holds"]:
            verdict = f'<span class="holds">{passing}</span>'
        else:
            verdict = f'<span class="fails">{failing}</span>'
        crit = f"<br><small>criterion: {_e(c['criterion'])}</small>" if c.get("criterion") else ""
        ref = f"<br><small>reference: {_e(c['reference'])}</small>" if c.get("reference") else ""
        rows.append(
            f"<tr><td>{_e(c['claim'])}</td><td>{_e(c['measured'])}{_interval(c)}{crit}{ref}</td>"
            f"<td>{verdict}</td></tr>"
        )
    return "".join(rows)


def _study_section(rec: dict[str, Any]) -> str:
    name = rec["study"]
    claims = rec.get("claims", [])
    emp = [c for c in claims if _kind(c) == "empirical"]
    con = [c for c in claims if _kind(c) == "consistency"]
    claims_html = ""
    if emp:
        claims_html += (
            "<h3>Empirical claims <span class='kind'>measured; each could have failed</span></h3>"
            "<table class='claims'><thead><tr><th>claim</th><th>measured</th><th>verdict</th>"
            f"</tr></thead><tbody>{_claim_rows(emp, 'holds', 'does not hold')}</tbody></table>"
        )
    if con:
        claims_html += (
            "<h3>Consistency checks <span class='kind'>the implementation agrees with a "
            "reference or a formula; not findings</span></h3>"
            "<table class='claims'><thead><tr><th>check</th><th>measured</th><th>verdict</th>"
            f"</tr></thead><tbody>{_claim_rows(con, 'passes', 'fails')}</tbody></table>"
        )
    if not claims:
        claims_html = "<p>No claim checks.</p>"
    figs = "".join(
        f"<figure><img src='{_e(name)}/{_e(fname)}' alt='{_e(caption or fname)}'>"
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        for fname, caption in rec.get("figures", {}).items()
    )
    tables = "".join(f"<h3>{_e(t)}</h3>{_table(r)}" for t, r in rec.get("tables", {}).items())
    opts = rec.get("options") or {}
    opts_html = (
        "<p class='meta'>options: " + ", ".join(f"{_e(k)}={_e(json.dumps(v))}"
                                               for k, v in opts.items()) + "</p>"
        if opts else ""
    )
    return (
        f"<section class='study' id='{_e(name)}'><h2>{_e(rec.get('title') or name)}</h2>"
        f"<p class='meta'><code>{_e(name)}</code> · capability <b>{_e(rec.get('capability'))}</b>"
        f" · {_e(rec.get('paper'))} · scale <b>{_e(rec.get('scale'))}</b> · "
        f"{_e(rec.get('seconds'))} s · seed {_e(rec.get('seed'))}</p>{opts_html}"
        f"<p>{_e(rec.get('summary', ''))}</p>{claims_html}{figs}{tables}</section>"
    )


def render_report(out: str | Path, failed: dict[str, str] | None = None) -> Path:
    """Write ``out/report.html`` from every ``out/<study>/metrics.json``; return its path."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"No results folder {str(out)!r}; run 'fmlab reproduce --out "
                                f"{out}' first (or check the path).")
    records = load_results(out)
    failed = dict(failed or {})
    for err in sorted(out.glob("*.error.txt")):
        lines = err.read_text(errors="replace").strip().splitlines()
        failed.setdefault(err.name[: -len(".error.txt")], lines[-1] if lines else "failed")
    unavailable = {f.name[: -len(".unavailable.txt")]: f.read_text(errors="replace").strip()
                   for f in sorted(out.glob("*.unavailable.txt"))}
    if not records and not failed and not unavailable:
        raise FileNotFoundError(f"{str(out)!r} holds no study results (no <study>/metrics.json); "
                                f"run 'fmlab reproduce --out {out}' first.")
    n = count_claims(records)
    summary_rows = ""
    for r in records:
        k = count_claims([r])
        con = f"{k['consistency_pass']}/{k['consistency']}" if k["consistency"] else "-"
        summary_rows += (
            f"<tr><td><a href='#{_e(r['study'])}'>{_e(r['study'])}</a></td>"
            f"<td>{_e(r.get('title'))}</td><td>{k['empirical_hold']}/{k['empirical']}</td>"
            f"<td>{con}</td><td>{_e(r.get('scale'))}</td></tr>"
        )
    header = (
        f"{len(records)} studies · {n['empirical_hold']} of {n['empirical']} empirical claims "
        f"hold · {n['consistency_pass']} of {n['consistency']} consistency checks pass"
        + (f" · {n['not_computed']} not computed" if n["not_computed"] else "")
    )
    failed_html = "".join(
        f"<section class='study error'><h2>{_e(name)}: failed</h2><pre>{_e(msg)}</pre>"
        f"<p>Full traceback: <code>{_e(name)}.error.txt</code></p></section>"
        for name, msg in failed.items()
    ) + "".join(
        f"<section class='study unavailable'><h2>{_e(name)}: not run</h2><p>A reference file it "
        f"needs is not installed here (its licence may keep it out of fmlab):</p>"
        f"<pre>{_e(msg)}</pre></section>"
        for name, msg in unavailable.items()
    )
    body = (
        f"<header><h1>fmlab reproduction report</h1><p>{_e(header)} · fmlab {_e(__version__)}"
        " · rendered "
        f"{_e(time.strftime('%Y-%m-%d %H:%M'))}</p></header><main>"
        "<table class='summary'><thead><tr><th>study</th><th>title</th>"
        "<th>empirical claims holding</th><th>consistency checks passing</th><th>scale</th></tr>"
        f"</thead><tbody>{summary_rows}</tbody></table>"
        + "".join(_study_section(r) for r in records)
        + failed_html
        + f"<script type='application/json' id='fmlab-data'>"
        f"{_e(json.dumps([{'study': r['study'], 'claims': r.get('claims', [])} for r in records]))}"
        "</script></main>"
        # Marks each figure once the browser has decoded it, so a headless check can see it shown.
        "<script>window.addEventListener('load',()=>{document.querySelectorAll('img').forEach("
        "i=>{i.dataset.loaded=(i.complete&&i.naturalWidth>0)?'yes':'no'})})</script>"
    )
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fmlab report</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )
    path = out / "report.html"
    with file_lock(path):  # concurrent renders take turns; a killed render's temp is removed
        clean_stale(path)
        with atomic_write(path) as fh:
            fh.write(page)
    return path
