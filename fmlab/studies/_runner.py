"""Run studies and keep their results: ``DIR/<study>/metrics.json`` + figures, then the report."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlab._imports import require
from fmlab._io import atomic_dir, clean_stale, file_lock, write_json
from fmlab._progress import progress_bars
from fmlab._validation import check_option
from fmlab.exceptions import DataUnavailableError
from fmlab.studies._base import (
    METRICS_FILE,
    Scale,
    Study,
    StudyContext,
    StudyResult,
    load_results,
)
from fmlab.studies._catalog import STUDIES
from fmlab.studies._options import result_options
from fmlab.studies._publish import machine_info
from fmlab.studies._report import count_claims, render_report
from fmlab.version import __version__

__all__ = ["ReproduceResult", "list_studies", "load_results", "reproduce", "run_study"]

def list_studies(pattern: str | None = None) -> list[str]:
    """Names of the registered studies, optionally filtered by an fnmatch pattern."""
    return STUDIES.names(pattern)


def get_study(name: str) -> type[Study]:
    """The study class registered under ``name``."""
    return STUDIES.get(name)


@contextlib.contextmanager
def _publishing(study_dir: Path) -> Iterator[Path]:
    """Lock ``study_dir``, remove what a killed run left (``.<name>.*.tmp``, ``.<name>.old``) and
    yield the temporary folder that replaces it on success (:func:`fmlab._io.atomic_dir`)."""
    with file_lock(study_dir):
        clean_stale(study_dir)
        with atomic_dir(study_dir) as tmp:
            yield tmp


def _json_same(obj: Any) -> Any:
    """``obj`` as it reads back from metrics.json (tuples become lists, inf a string)."""
    from fmlab._io import _json_default

    return json.loads(json.dumps(obj, default=_json_default))


def _finished(study_dir: Path, cls: type[Study], scale: Scale, seed: int,
              options: dict[str, Any]) -> dict[str, Any] | None:
    """The finished record in ``study_dir`` when it was made at this scale, seed and with the
    same result-affecting options; ``None`` otherwise (then the study runs again)."""
    path = study_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("scale") != scale or record.get("status") != "ok" or record.get("seed") != seed:
        return None
    want = _json_same(result_options(cls.options, options))
    have = result_options(cls.options, record.get("options") or {})
    if set(have) != set(want) or _json_same(have) != want:
        return None
    return record


def run_study(
    name: str,
    out: str | Path,
    *,
    scale: Scale = "quick",
    seed: int = 0,
    options: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run one study into ``out/<name>`` atomically and return its record (metrics.json content).

    The study runs in a temporary folder that replaces ``out/<name>`` only when it finishes, so an
    interrupted run leaves the previous result (or nothing), never a half-written one.
    ``options`` are checked against the study's declared schema before it runs.
    """
    check_option(scale, "scale", ("quick", "full"), owner="reproduce")
    cls = get_study(name)
    resolved = cls.resolve_options(options, scale)
    for module in cls.requires:
        require(module, feature=f"The study {name!r}")
    out = Path(out)
    started = time.time()
    machine = machine_info()
    with _publishing(out / name) as tmp, progress_bars(show_progress):  # all bars, HF's too
        ctx = StudyContext(
            tmp, scale=scale, seed=seed, options=resolved, show_progress=show_progress
        )
        result = cls().run(ctx)
        if not isinstance(result, StudyResult):
            raise TypeError(f"{cls.__name__}.run() must return a StudyResult, got {type(result)}")
        missing = [f for f in result.figures if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"Study {name!r} lists figures it did not write: {missing}")
        record = {
            "study": name,
            "title": cls.title,
            "capability": cls.capability,
            "paper": cls.paper,
            "summary": cls.summary,
            "scale": scale,
            "seed": seed,
            "options": resolved,
            "status": "ok",
            "seconds": round(time.time() - started, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fmlab_version": __version__,
            "python": platform.python_version(),
            "machine": machine,
            "claims": [c.to_dict() for c in result.claims],
            "figures": dict(result.figures),
            "tables": result.tables,
            "metrics": result.metrics,
        }
        write_json(tmp / METRICS_FILE, record)
    return record


@dataclass
class ReproduceResult:
    """Outcome of :func:`reproduce`: which studies ran, were skipped or failed, which could not
    run because a reference file fmlab may not ship is missing (``unavailable``: name -> how to
    get it; not a failure); the report path."""

    out: Path
    report: Path | None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def reproduce(
    names: Sequence[str] | None = None,
    *,
    out: str | Path = "fmlab-results",
    scale: Scale = "quick",
    force: bool = False,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    show_progress: bool = True,
    report: bool = True,
    verbose: bool = True,
    jobs: int | None = 1,
) -> ReproduceResult:
    """Run studies (all registered ones by default) and render ``out/report.html``.

    A study whose ``out/<name>/metrics.json`` already holds a finished run at the same scale, seed
    and options is skipped unless ``force``. A study that raises is recorded as failed (with its
    traceback in ``out/<name>.error.txt``) and the others still run. A study that needs a
    reference file which is not installed (a :class:`~fmlab.exceptions.DataUnavailableError`,
    e.g. a file whose licence keeps it out of the package) is not a failure: it is recorded in
    ``unavailable`` and in ``out/<name>.unavailable.txt`` with how to get the file, and the report
    shows it as not run.

    Each option goes to the selected studies that declare it; one that no selected study
    declares is a :class:`~fmlab.exceptions.UsageError` (with close matches), and every value is
    checked against each study's schema before the first study runs.

    Args:
        names: Study names or fnmatch patterns (``"sam.*"``); ``None`` runs every study.
        out: Output folder.
        scale: ``"quick"`` (minutes) or ``"full"``.
        force: Re-run studies that already have results.
        seed: Base random seed passed to every study.
        options: Study options (``{"epochs": 5}``), each passed to the studies declaring it.
        show_progress: Show progress bars inside studies.
        report: Render ``out/report.html`` at the end.
        verbose: Print one status line per study (started, skipped, done with verdicts, failed).
        jobs: Studies run at once, each in its own process with ``cpu_count // jobs`` threads
            (``None``: two when there are two or more CPU cores). Small models use two cores
            better as two one-thread studies than as one two-thread study. Progress bars are
            shown only when ``jobs`` is 1; results are the same either way.
    """
    check_option(scale, "scale", ("quick", "full"), owner="reproduce")
    selected: list[str] = []
    for pattern in names or ["*"]:
        matched = STUDIES.names(pattern) if any(c in pattern for c in "*?[") else None
        if matched is None:
            STUDIES.entry(pattern)  # raises UnknownNameError with suggestions
            matched = [pattern]
        if not matched:
            raise ValueError(
                f"No study matches {pattern!r}. Available: {', '.join(STUDIES.names())}"
            )
        selected += [m for m in matched if m not in selected]
    per_study = _split_options(selected, options or {}, scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = ReproduceResult(out=out, report=None)
    todo: list[str] = []
    for name in selected:
        cls = get_study(name)
        if not force and _finished(out / name, cls, scale, seed, per_study[name][1]) is not None:
            with file_lock(out / name):  # leftovers of a killed re-run, next to a good result
                clean_stale(out / name)
            result.skipped.append(name)
            if verbose:
                print(f"[{selected.index(name) + 1}/{len(selected)}] {name}: finished before, "
                      "skipped (use --force to re-run)")
        else:
            todo.append(name)
    jobs = _resolve_jobs(jobs, len(todo))
    calls = [(name, str(out), scale, seed, per_study[name][0], show_progress and jobs == 1)
             for name in todo]

    def started(name: str) -> None:
        if verbose:
            print(f"[{selected.index(name) + 1}/{len(selected)}] {name}: running at {scale} "
                  f"scale" + (f" (one of {jobs} parallel jobs)" if jobs > 1 else ""), flush=True)

    def finished(name: str, outcome: tuple[str, Any, str]) -> None:
        status, payload, text = outcome
        error_file = out / f"{name}.error.txt"
        missing_file = out / f"{name}.unavailable.txt"
        if status == "unavailable":  # not installed here (licence): say how to get it
            result.unavailable[name] = payload
            missing_file.write_text(payload)
            error_file.unlink(missing_ok=True)
            if verbose:
                print(f"    {name} not run: {payload}", flush=True)
        elif status == "failed":  # one failed study must not stop the others
            result.failed[name] = payload
            error_file.write_text(text)
            missing_file.unlink(missing_ok=True)
            if verbose:
                print(f"    {name} failed: {payload}", flush=True)
        else:
            error_file.unlink(missing_ok=True)
            missing_file.unlink(missing_ok=True)
            result.ran.append(name)
            if verbose:
                print(f"    {name} done in {payload['seconds']:.0f} s; {_verdict_line(payload)}",
                      flush=True)

    if jobs == 1:
        for call in calls:
            started(call[0])
            finished(call[0], _run_guarded(*call))
    else:
        _run_parallel(calls, jobs, started, finished)
    if report:
        result.report = render_report(out, failed=result.failed)
    return result


def _run_guarded(name: str, out: str, scale: Scale, seed: int, options: dict[str, Any],
                 show_progress: bool, cls: type[Study] | None = None) -> tuple[str, Any, str]:
    """Run one study and return ``(status, payload, traceback text)``: ``("ok", record, "")``,
    ``("unavailable", how to get the file, "")`` or ``("failed", "Type: message", traceback)``.
    Returns rather than raises so that it crosses a process boundary intact. ``cls`` (passed to
    a worker process) registers a study the parent registered at run time, not by entry point."""
    if cls is not None and (name not in STUDIES or STUDIES.get(name) is not cls):
        STUDIES.register(name, cls, override=True)
    try:
        record = run_study(name, out, scale=scale, seed=seed, options=options,
                           show_progress=show_progress)
    except KeyboardInterrupt:
        raise
    except DataUnavailableError as exc:
        return "unavailable", str(exc), ""
    except Exception as exc:
        return "failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()
    return "ok", record, ""


def _resolve_jobs(jobs: int | None, n_todo: int) -> int:
    """The number of study processes: ``jobs`` (validated), or two on a machine with two or more
    cores when ``None``; never more than there are studies to run."""
    if jobs is None:
        jobs = 2 if (os.cpu_count() or 1) >= 2 else 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"reproduce: jobs must be a positive integer (the number of studies run "
                         f"at once), got {jobs!r}. Use jobs=1 to run them one after another.")
    return max(1, min(jobs, n_todo))


def _worker_init(threads: int) -> None:
    """Give each study process its share of the cores (before torch is imported)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "torch" in sys.modules:  # imported already (by a plugin): set its pool directly
        sys.modules["torch"].set_num_threads(threads)


def _run_parallel(calls: list[tuple[Any, ...]], jobs: int, started: Any, finished: Any) -> None:
    """Run ``calls`` (arguments of :func:`_run_guarded`) in ``jobs`` spawned processes, reporting
    each start and finish in the parent; Ctrl-C cancels what has not started."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    pending: dict[Any, str] = {}
    queue = list(calls)
    try:
        while queue or pending:
            while queue and len(pending) < jobs:
                call = queue.pop(0)
                started(call[0])
                pending[pool.submit(_run_guarded, *call, get_study(call[0]))] = call[0]
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                name = pending.pop(fut)
                try:
                    outcome = fut.result()
                except Exception as exc:  # the worker process itself died (e.g. out of memory)
                    outcome = ("failed", f"{type(exc).__name__}: {exc}",
                               traceback.format_exc())
                finished(name, outcome)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _split_options(selected: Sequence[str], options: dict[str, Any], scale: Scale
                   ) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """For each study: (the options given to it, all its options resolved). Raises a
    ``UsageError`` for an option no selected study declares, before anything runs."""
    import difflib

    from fmlab.exceptions import UsageError

    options = {str(k).replace("-", "_"): v for k, v in options.items()}
    declared = {n: {o.name for o in get_study(n).options} for n in selected}
    known = set().union(*declared.values()) if declared else set()
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(
                f"Unknown option {key!r}: none of the selected studies "
                f"({', '.join(selected)}) declares it.{hint} Their options: "
                f"{', '.join(sorted(known)) or '(none)'}. See 'fmlab reproduce --describe NAME'.")
    out = {}
    for name in selected:
        given = {k: v for k, v in options.items() if k in declared[name]}
        try:
            out[name] = (given, get_study(name).resolve_options(given, scale))
        except UsageError:
            raise
        except (TypeError, ValueError) as exc:  # a bad value: the caller's to fix (exit 2)
            raise UsageError(str(exc)) from None
    return out


def _verdict_line(record: dict[str, Any]) -> str:
    """``empirical claims 3/4 hold; consistency checks 2/2 pass; 1 not computed``, and the parts
    a study skipped (``metrics["skipped_tasks"]``: name -> reason) when it ran only in part."""
    n = count_claims([record])
    parts = [f"empirical claims {n['empirical_hold']}/{n['empirical']} hold"]
    if n["consistency"]:
        parts.append(f"consistency checks {n['consistency_pass']}/{n['consistency']} pass")
    if n["not_computed"]:
        parts.append(f"{n['not_computed']} not computed")
    skipped = (record.get("metrics") or {}).get("skipped_tasks") or {}
    if skipped:  # a part whose data or model is not installed: the verdicts cover the rest only
        parts.append(f"PARTIAL, skipped (not installed): {', '.join(sorted(skipped))}")
    return "; ".join(parts)

