"""The study runner and report, with a small real study defined here (a least-squares fit)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fmlab._registry import Entry
from fmlab.studies import STUDIES, Claim, Study, StudyContext, StudyResult, reproduce
from fmlab.testing import require_or_skip


class LineStudy(Study):
    name = "test.line"
    title = "Least squares recovers a line"
    capability = "core"
    paper = "Legendre 1805"
    summary = "Fit y = a x + b to noisy samples and check the slope."

    def run(self, ctx: StudyContext) -> StudyResult:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rng = np.random.default_rng(ctx.seed)
        n = ctx.pick(50, 500)
        x = rng.uniform(0, 1, n)
        y = 2.0 * x + 1.0 + rng.normal(0, 0.05, n)
        a, b = np.polyfit(x, y, 1)
        if ctx.options.get("fail"):
            raise RuntimeError("asked to fail")
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.scatter(x, y, s=4)
        ax.plot([0, 1], [b, a + b], color="C1")
        ctx.save_figure(fig, "fit.png", dpi=80)
        return StudyResult(
            metrics={"slope": a, "intercept": b, "n": n},
            claims=[
                Claim(
                    "The slope is recovered within 0.1.",
                    f"slope {a:.3f}",
                    abs(a - 2) < 0.1,
                    criterion="|a - 2| < 0.1",
                    value=float(a),
                )
            ],
            figures={"fit.png": "Samples and the fitted line."},
            tables={"fit": [{"param": "a", "value": a}, {"param": "b", "value": b}]},
        )


@pytest.fixture()
def line_study(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(STUDIES._entries, "test.line", Entry("test.line", LineStudy, "test study"))
    return "test.line"


def test_reproduce_writes_metrics_figures_and_report(tmp_path: Path, line_study: str) -> None:
    res = reproduce([line_study], out=tmp_path, show_progress=False)
    assert res.ok and res.ran == [line_study]
    record = json.loads((tmp_path / line_study / "metrics.json").read_text())
    assert record["status"] == "ok" and record["scale"] == "quick"
    assert record["claims"][0]["holds"] is True
    assert (tmp_path / line_study / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "report.html").read_text()
    assert "Least squares recovers a line" in html and f"{line_study}/fit.png" in html
    assert "1 of 1 claims hold" in html


def test_rerun_skips_unless_forced_and_scale_change_reruns(tmp_path: Path, line_study: str) -> None:
    reproduce([line_study], out=tmp_path, show_progress=False)
    again = reproduce([line_study], out=tmp_path, show_progress=False)
    assert again.skipped == [line_study] and again.ran == []
    forced = reproduce([line_study], out=tmp_path, force=True, show_progress=False)
    assert forced.ran == [line_study]
    full = reproduce([line_study], out=tmp_path, scale="full", show_progress=False)
    assert full.ran == [line_study]
    assert json.loads((tmp_path / line_study / "metrics.json").read_text())["metrics"]["n"] == 500


def test_failed_study_keeps_previous_result_and_is_reported(
    tmp_path: Path, line_study: str
) -> None:
    reproduce([line_study], out=tmp_path, show_progress=False)
    before = (tmp_path / line_study / "metrics.json").read_text()
    res = reproduce(
        [line_study], out=tmp_path, force=True, options={"fail": True}, show_progress=False
    )
    assert not res.ok and "asked to fail" in res.failed[line_study]
    assert (tmp_path / line_study / "metrics.json").read_text() == before  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert "asked to fail" in (tmp_path / "report.html").read_text()


def test_unknown_study_name_suggests(tmp_path: Path, line_study: str) -> None:
    with pytest.raises(KeyError, match="Did you mean: test.line"):
        reproduce(["test.lime"], out=tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="Invalid scale 'medium'"):
        reproduce([line_study], out=tmp_path, scale="medium", show_progress=False)  # type: ignore[arg-type]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    require_or_skip("headless Chromium is not installed: apt-get install chromium")
    return ""


CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
]


def test_report_renders_in_headless_chromium_with_figures_shown(
    tmp_path: Path, line_study: str
) -> None:
    chrome = _chromium()
    res = reproduce([line_study], out=tmp_path / "out", show_progress=False)
    url = res.report.resolve().as_uri()
    common = [chrome, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    imgs = re.findall(r"<img[^>]*>", dom)
    assert imgs, "the report shows no figure"
    assert all('data-loaded="yes"' in tag for tag in imgs), imgs  # every figure decoded
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # a rendered page, not a blank one
