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
from fmlab.studies import (
    STUDIES,
    Claim,
    Option,
    Study,
    StudyContext,
    StudyResult,
    Verdict,
    claim_check,
    reproduce,
)
from fmlab.testing import require_or_skip


class LineStudy(Study):
    name = "test.line"
    title = "Least squares recovers a line"
    capability = "core"
    paper = "Legendre 1805"
    summary = "Fit y = a x + b to noisy samples and check the slope."
    options = (
        Option("fail", bool, False, help="raise inside the run"),
        Option("noise", float, 0.05, low=0.0, help="noise sd"),
        Option("n", int, 50, 500, low=3, help="samples"),
    )

    def run(self, ctx: StudyContext) -> StudyResult:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rng = np.random.default_rng(ctx.seed)
        n = ctx.option("n")
        x = rng.uniform(0, 1, n)
        y = 2.0 * x + 1.0 + rng.normal(0, ctx.option("noise"), n)
        a, b = np.polyfit(x, y, 1)
        if ctx.option("fail"):
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
                ),
                _formula_check(a),
                _not_computable([]),
            ],
            figures={"fit.png": "Samples and the fitted line."},
            tables={"fit": [{"param": "a", "value": a}, {"param": "b", "value": b}]},
        )


@claim_check("The intercept formula b = mean(y) - a mean(x) is applied.", kind="consistency")
def _formula_check(a: float) -> Verdict:
    return Verdict(f"slope {a:.3f} is finite", bool(np.isfinite(a)))


@claim_check("Residuals are normal.")
def _not_computable(rows: list) -> Verdict:
    from fmlab.studies import NotComputed

    raise NotComputed(f"{len(rows)} residual rows kept")


class OtherLine(LineStudy):
    name = "test.line2"


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
    assert "1 of 2 empirical claims hold" in html and "1 of 1 consistency checks pass" in html
    assert "Consistency checks" in html and "not computed: 0 residual rows kept" in html
    kinds = [c["kind"] for c in record["claims"]]
    assert kinds == ["empirical", "consistency", "empirical"]
    assert record["claims"][2]["holds"] is False and record["claims"][2]["error"]
    assert record["options"] == {"fail": False, "noise": 0.05, "n": 50}


def test_rerun_skips_unless_forced_and_scale_change_reruns(tmp_path: Path, line_study: str) -> None:
    reproduce([line_study], out=tmp_path, show_progress=False)
    again = reproduce([line_study], out=tmp_path, show_progress=False)
    assert again.skipped == [line_study] and again.ran == []
    forced = reproduce([line_study], out=tmp_path, force=True, show_progress=False)
    assert forced.ran == [line_study]
    full = reproduce([line_study], out=tmp_path, scale="full", show_progress=False)
    assert full.ran == [line_study]
    assert json.loads((tmp_path / line_study / "metrics.json").read_text())["metrics"]["n"] == 500


def test_result_reused_only_with_same_seed_and_options(tmp_path: Path, line_study: str) -> None:
    run = lambda **kw: reproduce([line_study], out=tmp_path, show_progress=False,  # noqa: E731
                                 verbose=False, **kw)
    assert run().ran == [line_study]
    assert run().skipped == [line_study]
    assert run(seed=1).ran == [line_study]  # another seed: not the same result
    assert run(seed=1).skipped == [line_study]
    assert run(seed=1, options={"noise": 0.2}).ran == [line_study]
    assert run(seed=1, options={"noise": "0.2"}).skipped == [line_study]  # same value, parsed
    assert run(seed=1).ran == [line_study]  # back to the default noise


def test_unknown_or_bad_option_is_rejected_before_running(tmp_path: Path, line_study: str) -> None:
    from fmlab.exceptions import UsageError

    with pytest.raises(UsageError, match=r"Unknown option 'nosie'.*Did you mean: noise"):
        reproduce([line_study], out=tmp_path, options={"nosie": 0.1}, show_progress=False)
    with pytest.raises(ValueError, match=r"'noise' parameter of study test.line.*-1"):
        reproduce([line_study], out=tmp_path, options={"noise": -1}, show_progress=False)
    with pytest.raises(UsageError, match=r"'n' option of study test.line must be an int"):
        reproduce([line_study], out=tmp_path, options={"n": 2.5}, show_progress=False)
    assert not (tmp_path / line_study).exists()  # nothing ran


def test_option_schema_converts_and_describes() -> None:
    o = Option("n", int, 10, 100, low=1, help="count")
    assert o.check("1e3") == 1000 and o.check(7.0) == 7 and o.default("full") == 100
    assert o.to_dict()["constraint"] == "in [1, inf)"
    lst = Option("rates", list, [0.1], item=float, low=0.0, high=1.0)
    assert lst.check(0.5) == [0.5] and lst.check((0, 1)) == [0.0, 1.0]
    with pytest.raises(ValueError, match="rates"):
        lst.check([0.5, 2.0])
    with pytest.raises(ValueError, match="one of a, b"):
        Option("x", str, "a", choices=("a", "b")).check("c")
    with pytest.raises(ValueError, match="null"):
        o.check(None)
    assert Option("m", int, None, none_ok=True).check(None) is None
    with pytest.raises(ValueError, match="must be"):  # a bad default fails at declaration
        Option("bad", int, 0, low=1)


def test_every_registered_study_declares_its_options() -> None:
    from fmlab.studies import get_study, list_studies

    for name in list_studies():
        cls = get_study(name)
        for scale in ("quick", "full"):
            resolved = cls.resolve_options({}, scale)
            assert set(resolved) == {o.name for o in cls.options}
        assert all(o.help for o in cls.options), name


def test_cli_list_describe_and_unknown_option_exit_code(
    tmp_path: Path, line_study: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmlab.cli import main

    assert main(["reproduce", "--list"]) == 0
    assert "noise" in capsys.readouterr().out
    assert main(["reproduce", "--describe", line_study]) == 0
    out = capsys.readouterr().out
    assert "noise (float; in [0, inf); default 0.05)" in out and "quick 50, full 500" in out
    code = main(["reproduce", line_study, "--out", str(tmp_path), "--option", "nosie=1"])
    assert code == 2 and "Did you mean: noise" in capsys.readouterr().err


def test_claim_helpers_intervals_and_can_fail() -> None:
    from fmlab.studies import (
        NotComputed,
        assert_claim_can_fail,
        bootstrap_interval,
        mean_interval,
    )

    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.low < 1.0 < 3.0 < iv.high and iv.n == 3
    assert mean_interval([1.0]).low == -np.inf
    b = bootstrap_interval(np.arange(100.0), seed=0)
    assert b.low < 49.5 < b.high
    # records (per-task rows) are resampled whole: the same draws as the numbers they hold
    rows = [{"v": float(v), "ok": v % 3 == 0} for v in range(30)]
    paired = bootstrap_interval(rows, lambda s: float(np.mean([r["v"] for r in s])), seed=4)
    plain = bootstrap_interval([r["v"] for r in rows], seed=4)
    assert paired.n == plain.n == 30 and paired.bounds == pytest.approx(plain.bounds, abs=1e-9)
    # a statistic undefined on the rows (no "ok" row) is not computed
    with pytest.raises(NotComputed, match="undefined"):
        bootstrap_interval(rows[1:3], lambda s: 1.0 if any(r["ok"] for r in s) else float("nan"))
    with pytest.raises(NotComputed):
        mean_interval([])

    @claim_check("The gap is positive.", criterion="95% CI of the gap above 0")
    def gap_positive(rows: list[dict]) -> Verdict:
        iv = mean_interval([r["gap"] for r in rows])
        return Verdict(str(iv), iv.low > 0, iv.mean, iv.bounds)

    rng = np.random.default_rng(0)
    clear = [{"gap": 1.0 + 0.1 * g} for g in rng.normal(size=5)]
    noise = [{"gap": float(g)} for g in rng.normal(size=5)]
    held, failed = assert_claim_can_fail(gap_positive, clear, noise)
    assert held.interval is not None and held.kind == "empirical"
    with pytest.raises(AssertionError, match="holds on noise"):
        assert_claim_can_fail(gap_positive, clear, clear)
    with pytest.raises(AssertionError, match="could not compute"):
        assert_claim_can_fail(gap_positive, clear, [])

    def impure(rows: list[dict]) -> Claim:
        rows.append({"gap": 0.0})
        return gap_positive(rows[:-1])

    with pytest.raises(AssertionError, match="not pure"):
        assert_claim_can_fail(impure, clear, noise)


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


class MissingFileStudy(LineStudy):
    name = "test.missing"

    def run(self, ctx: StudyContext) -> StudyResult:
        from fmlab.exceptions import DataUnavailableError

        raise DataUnavailableError("The reference file sts/sickr.tsv is missing: set FMLAB_SHARED.")


def test_study_missing_a_reference_file_is_not_run_and_not_a_failure(
    tmp_path: Path, line_study: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A clone without the files the licences keep out runs the rest and says how to get them."""
    from fmlab.cli import main

    monkeypatch.setitem(STUDIES._entries, "test.missing",
                        Entry("test.missing", MissingFileStudy, "test study"))
    res = reproduce(["test.missing", line_study], out=tmp_path, show_progress=False,
                    verbose=False)
    assert res.ok and res.ran == [line_study] and not res.failed
    assert "sickr.tsv is missing" in res.unavailable["test.missing"]
    html = (tmp_path / "report.html").read_text()
    assert "test.missing: not run" in html and "FMLAB_SHARED" in html
    assert main(["reproduce", "test.missing", "--out", str(tmp_path), "--quiet",
                 "--no-progress"]) == 0
    assert "not run (a reference file is not installed): test.missing" in capsys.readouterr().out
    reproduce([line_study], out=tmp_path, show_progress=False, verbose=False)
    assert (tmp_path / "test.missing.unavailable.txt").is_file()  # until it runs


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


def test_publish_copies_results_and_writes_a_summary(tmp_path: Path, line_study: str) -> None:
    from fmlab.cli import main

    reproduce([line_study], out=tmp_path / "out", show_progress=False, verbose=False)
    record = json.loads((tmp_path / "out" / line_study / "metrics.json").read_text())
    assert record["machine"]["cpus"] >= 1
    assert main(["report", "--out", str(tmp_path / "out"), "--publish",
                 str(tmp_path / "pub")]) == 0
    summary = (tmp_path / "pub" / "README.md").read_text()
    assert "1 of 2 empirical claims hold; 1 of 1 consistency checks pass" in summary
    assert "| consistency | The intercept formula" in summary and "not computed" in summary
    assert (tmp_path / "pub" / line_study / "fit.png").is_file()
    assert (tmp_path / "pub" / "report.html").is_file()


def test_readme_results_table_matches_the_published_results() -> None:
    """The README's results table is the short table of docs/results (re-paste it after
    publishing), and every published figure is a small PNG."""
    from fmlab.studies._base import load_results
    from fmlab.studies._publish import short_table

    root = Path(__file__).resolve().parents[2]
    records = load_results(root / "docs" / "results")
    assert records, "docs/results holds no published study"
    assert short_table(records) in (root / "README.md").read_text()
    for r in records:
        assert r["scale"] == "full", r["study"]
        for fig in r.get("figures", {}):
            png = root / "docs" / "results" / r["study"] / fig
            assert png.is_file() and png.stat().st_size < 300_000, png


def test_parallel_jobs_give_the_same_records(tmp_path: Path, line_study: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``jobs=2`` runs studies in two spawned processes (a study registered at run time
    included) and gives the records, verdicts and report one process gives; a failing study
    is recorded as failed there too, and a bad ``jobs`` names the parameter."""
    monkeypatch.setitem(STUDIES._entries, "test.line2", Entry("test.line2", OtherLine, "test"))
    names = [line_study, "test.line2"]
    one = reproduce(names, out=tmp_path / "one", show_progress=False, verbose=False)
    two = reproduce(names, out=tmp_path / "two", show_progress=False, verbose=False, jobs=2)
    assert sorted(two.ran) == sorted(one.ran) == sorted(names)
    for name in names:
        a = json.loads((tmp_path / "one" / name / "metrics.json").read_text())
        b = json.loads((tmp_path / "two" / name / "metrics.json").read_text())
        assert a["claims"] == b["claims"] and a["metrics"] == b["metrics"]
        assert (tmp_path / "two" / name / "fit.png").is_file()
    assert (tmp_path / "two" / "report.html").is_file()
    bad = reproduce(names, out=tmp_path / "bad", show_progress=False, verbose=False, jobs=2,
                    options={"fail": True}, force=True)
    assert sorted(bad.failed) == sorted(names) and "asked to fail" in bad.failed[line_study]
    assert "RuntimeError" in (tmp_path / "bad" / f"{line_study}.error.txt").read_text()
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        reproduce(names, out=tmp_path / "x", show_progress=False, verbose=False, jobs=0)


def test_status_line_says_when_a_study_ran_in_part() -> None:
    # ood.agreement skips its MNIST task when MNIST is not installed; its claims then cover the
    # text task only, which the one-line status must say (it read "3/4 hold" like a full run)
    from fmlab.studies._runner import _verdict_line

    claim = {"claim": "c", "measured": "m", "holds": True, "kind": "empirical"}
    full = {"claims": [claim], "metrics": {"skipped_tasks": {}}}
    part = {"claims": [claim], "metrics": {"skipped_tasks": {"mnist": "DataUnavailableError: x"}}}
    assert _verdict_line(full) == "empirical claims 1/1 hold"
    assert _verdict_line(part) == ("empirical claims 1/1 hold; PARTIAL, skipped (not installed): "
                                   "mnist")


def test_dense_figures_are_saved_as_small_palette_pngs(tmp_path: Path) -> None:
    """A dense scatter (as the full-scale OOD lines) is re-encoded with a palette when that is
    smaller; a light figure keeps its RGBA PNG."""
    import numpy as np
    from PIL import Image

    from fmlab._plotting import _PNG_PALETTE_ABOVE, pyplot, save_figure

    plt = pyplot()
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(6, 3, figsize=(12, 20))
    for ax in axes.flat:
        ax.scatter(rng.normal(size=3000), rng.normal(size=3000), s=4, alpha=0.25)
    dense = save_figure(fig, tmp_path / "dense.png", dpi=80)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    light = save_figure(fig, tmp_path / "light.png")
    with Image.open(dense) as im:
        assert im.mode == "P" and dense.stat().st_size < _PNG_PALETTE_ABOVE * 1.3
    with Image.open(light) as im:
        assert im.mode == "RGBA" and light.stat().st_size < _PNG_PALETTE_ABOVE
