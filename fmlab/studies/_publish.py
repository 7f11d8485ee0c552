"""Publish finished study results into the repository: the report, its figures, and a markdown
summary (claim, kind, measured, holds) that the README links to."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from fmlab._io import atomic_write
from fmlab.studies._base import METRICS_FILE, load_results
from fmlab.studies._report import count_claims, render_report

__all__ = ["machine_info", "publish_results", "short_table", "summary_markdown"]


def machine_info() -> dict[str, Any]:
    """Where a study ran: platform, CPU count, memory and the load when it started, and the
    fmlab commit (when run from a git checkout)."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                            "python": platform.python_version()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every OS
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        pass
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                info["commit"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict(c: dict[str, Any]) -> str:
    if c.get("error"):
        return "not computed"
    if c.get("kind", "empirical") == "consistency":
        return "passes" if c["holds"] else "fails"
    return "holds" if c["holds"] else "does not hold"


def summary_markdown(records: list[dict[str, Any]], *, link: str = "report.html") -> str:
    """A markdown summary of ``records``: one table per study, empirical claims first."""
    n = count_claims(records)
    lines = [
        f"{n['empirical_hold']} of {n['empirical']} empirical claims hold; "
        f"{n['consistency_pass']} of {n['consistency']} consistency checks pass"
        + (f"; {n['not_computed']} not computed" if n["not_computed"] else "")
        + f". Full report with figures: [{link}]({link}).", ""]
    for r in records:
        m = r.get("machine") or {}
        where = ", ".join(str(x) for x in (
            r.get("finished_at", "")[:16].replace("T", " "),
            f"commit {m['commit']}" if m.get("commit") else "",
            f"{m['cpus']} CPUs" if m.get("cpus") else "",
            f"load {m['load_average'][0]}" if m.get("load_average") else "") if x)
        lines += [f"### `{r['study']}` ({r.get('scale')} scale, seed {r.get('seed')}, "
                  f"{r.get('seconds', 0):.0f} s)", "", f"{where}", "",
                  "| kind | claim | measured | verdict |", "|---|---|---|---|"]
        claims = sorted(r.get("claims", []), key=lambda c: c.get("kind") == "consistency")
        for c in claims:
            lines.append(f"| {c.get('kind', 'empirical')} | {_cell(c['claim'])} | "
                         f"{_cell(c['measured'])} | {_verdict(c)} |")
        lines.append("")
    return "\n".join(lines)


def short_table(records: list[dict[str, Any]], *, width: int = 110) -> str:
    """A compact markdown table of every claim (study, kind, claim, measured, verdict, scale)
    for the project README."""
    lines = ["| study | kind | claim | measured | verdict | scale |", "|---|---|---|---|---|---|"]
    for r in records:
        for c in sorted(r.get("claims", []), key=lambda c: c.get("kind") == "consistency"):
            measured = str(c["measured"])
            if len(measured) > width:
                measured = measured[: width - 1].rstrip() + "…"
            lines.append(f"| `{r['study']}` | {c.get('kind', 'empirical')} | "
                         f"{_cell(c['claim'])} | {_cell(measured)} | {_verdict(c)} | "
                         f"{r.get('scale')} |")
    return "\n".join(lines)


def publish_results(out: str | Path, dest: str | Path = "docs/results") -> Path:
    """Copy the finished studies under ``out`` (metrics.json and PNG figures) into ``dest``,
    render ``dest/report.html`` and write ``dest/README.md`` (the summary, after the hand-written
    ``dest/NOTES.md`` when there is one); return ``dest``."""
    out, dest = Path(out), Path(dest)
    records = load_results(out)
    if not records:
        raise FileNotFoundError(f"No finished study under {out}: run 'fmlab reproduce' first.")
    dest.mkdir(parents=True, exist_ok=True)
    for r in records:
        src, dst = out / r["study"], dest / r["study"]
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir()
        for f in [METRICS_FILE, *r.get("figures", {})]:
            if (src / f).is_file():
                shutil.copy2(src / f, dst / f)
    render_report(dest)
    header = (f"# Published study results\n\nRe-create with `fmlab reproduce --full --out DIR` "
              f"and `fmlab report --out DIR --publish docs/results`. Published "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}.\n\n")
    notes = dest / "NOTES.md"  # hand-written context (machine, commits) kept across publishes
    if notes.is_file():
        header += notes.read_text().strip() + "\n\n"
    with atomic_write(dest / "README.md") as fh:
        fh.write(header + summary_markdown(load_results(dest)) + "\n")
    return dest
