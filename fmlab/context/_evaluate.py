"""Counterfactual evaluation: context reliance, parametric answers and the rest, per task and
category, with intervals; per-item records in JSONL so an interrupted run resumes.

Metrics (over conflict items): **counterfactual accuracy** (the answer follows the context = context
reliance), **parametric accuracy** (the memorised answer), **other**. Agreeing items report
``agree_accuracy``. Proportions carry 95% Wilson intervals; the aggregate over tasks is the mean of
the task values (as the paper averages its datasets) with a normal-approximation interval.

References:
    Goyal, Baek, Kolter, Raghunathan 2025, arXiv 2410.10796, §2.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fmlab._stats import Z95, wilson_interval
from fmlab._validation import check_int, check_option, check_real
from fmlab.context._lm import (
    ContextLM,
    GenerationRequest,
    LoglikelihoodRequest,
    as_context_lm,
)
from fmlab.context._scoring import LABELS, SCORINGS, score_choice, score_generation
from fmlab.context._tasks import CFTask, load_tasks

__all__ = ["DEFAULT_TASKS", "ReliabilityReport", "evaluate", "wilson_interval"]

DEFAULT_TASKS = ("cf_world_facts", "cf_capitals", "cf_bio", "cf_quotes")
METHODS = ("generate", "loglikelihood")


def _rate(records: list[dict[str, Any]], scoring: str, label: str) -> dict[str, float]:
    n = len(records)
    k = sum(bool(r["scores"][scoring][label]) for r in records)
    lo, hi = wilson_interval(k, n)
    return {"value": k / n if n else math.nan, "low": lo, "high": hi}


def compute_metrics(records: Sequence[dict[str, Any]],
                    scorings: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (task, category, relation, scoring): ``n`` and each label's rate with its
    interval. ``category == "all"`` pools a task's categories."""
    rows: list[dict[str, Any]] = []
    tasks = sorted({r["task"] for r in records})
    for task in tasks:
        recs = [r for r in records if r["task"] == task]
        cats = ["all"] + sorted({r["category"] for r in recs})
        for cat in cats if len(cats) > 2 else ["all"]:
            sub = recs if cat == "all" else [r for r in recs if r["category"] == cat]
            for rel in ("conflict", "agree"):
                group = [r for r in sub if r["relation"] == rel]
                if not group:
                    continue
                for s in scorings:
                    row: dict[str, Any] = {"task": task, "category": cat, "relation": rel,
                                           "scoring": s, "n": len(group)}
                    for label in LABELS:
                        row[label] = _rate(group, s, label)
                    rows.append(row)
    return rows


@dataclass
class ReliabilityReport:
    """The result of :func:`evaluate`.

    Attributes:
        model: The model's name.
        method: ``"generate"`` or ``"loglikelihood"``.
        scoring: The primary scoring (the one the summary attributes use).
        records: One dict per item (what the JSONL file holds).
        rows: Metrics per task, category, relation and scoring (see :func:`compute_metrics`).
    """

    model: str
    method: str
    scoring: str
    records: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def _task_values(self, label: str, scoring: str | None = None) -> list[tuple[float, int]]:
        s = scoring or self.scoring
        return [(r[label]["value"], r["n"]) for r in self.rows
                if r["category"] == "all" and r["relation"] == "conflict" and r["scoring"] == s]

    def aggregate(self, label: str = "counterfactual",
                  scoring: str | None = None) -> dict[str, float]:
        """The mean over tasks of a label's conflict-item rate, with a 95% interval."""
        vals = self._task_values(label, scoring)
        if not vals:
            return {"value": math.nan, "low": math.nan, "high": math.nan}
        mean = sum(v for v, _ in vals) / len(vals)
        var = sum(v * (1 - v) / n for v, n in vals) / len(vals) ** 2
        half = Z95 * math.sqrt(var)
        return {"value": mean, "low": max(0.0, mean - half), "high": min(1.0, mean + half)}

    @property
    def counterfactual_accuracy(self) -> float:
        """Context reliance: the mean over tasks of the counterfactual rate (primary scoring)."""
        return self.aggregate("counterfactual")["value"]

    @property
    def parametric_accuracy(self) -> float:
        return self.aggregate("parametric")["value"]

    @property
    def other_rate(self) -> float:
        return self.aggregate("other")["value"]

    def task(self, name: str, scoring: str | None = None) -> dict[str, Any]:
        """The ``category == "all"`` conflict row of one task."""
        s = scoring or self.scoring
        for r in self.rows:
            if (r["task"], r["category"], r["relation"], r["scoring"]) == (name, "all",
                                                                           "conflict", s):
                return r
        raise KeyError(f"No conflict items of task {name!r} under scoring {s!r} in this report.")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "scoring": self.scoring,
                "counterfactual_accuracy": self.aggregate("counterfactual"),
                "parametric_accuracy": self.aggregate("parametric"),
                "other": self.aggregate("other"), "rows": self.rows}

    def summary(self) -> str:
        """A plain-text table: one line per task and category (primary scoring)."""
        lines = [f"{'task':<18}{'category':<13}{'rel':<9}{'n':>5}  {'counterfactual':<20}"
                 f"{'parametric':<20}other"]
        for r in self.rows:
            if r["scoring"] != self.scoring:
                continue
            cells = [f"{r[lb]['value']:.3f} [{r[lb]['low']:.2f},{r[lb]['high']:.2f}]"
                     for lb in LABELS]
            lines.append(f"{r['task']:<18}{r['category']:<13}{r['relation']:<9}{r['n']:>5}  "
                         f"{cells[0]:<20}{cells[1]:<20}{cells[2]}")
        agg = self.aggregate("counterfactual")
        lines.append(f"mean over tasks ({self.scoring}): counterfactual {agg['value']:.3f} "
                     f"[{agg['low']:.3f}, {agg['high']:.3f}], parametric "
                     f"{self.parametric_accuracy:.3f}")
        return "\n".join(lines)


# -- per-item records (JSONL, resumable) -------------------------------------------------------
def _fingerprint(lm: ContextLM, method: str, task: CFTask) -> str:
    conf = {"model": lm.name, "method": method, "template": task.template,
            "template_no_context": task.template_no_context}
    for attr in ("max_new_tokens", "chat", "cad_alpha", "stop"):
        if hasattr(lm, attr):
            conf[attr] = getattr(lm, attr)
    blob = json.dumps(conf, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _read_records(path: Path) -> list[dict[str, Any]]:
    """Records of an earlier run; a torn last line (a killed run) is dropped from the file."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    out, good = [], 0
    for n, line in enumerate(lines):
        if not line.strip():
            good += len(line) + 1
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if any(ln.strip() for ln in lines[n + 1:]):
                raise ValueError(f"Line {n + 1} of the records file {path} is not valid JSON and "
                                 f"is not the last line; the file is damaged. Move it away and "
                                 f"re-run.") from None
            break
        good += len(line) + 1
    if good < len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(min(good, len(raw)))
    return out


def _append(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _answer_requests(task: CFTask, items: list[dict[str, Any]]) -> list[LoglikelihoodRequest]:
    reqs = []
    for it in items:
        prompt = task.prompt(it)
        reqs.append(LoglikelihoodRequest(prompt, it["answer"][0], it))
        reqs.append(LoglikelihoodRequest(prompt, it["memory_answer"][0], it))
    return reqs


def _run_items(lm: ContextLM, task: CFTask, items: list[dict[str, Any]], method: str,
               fp: str) -> list[dict[str, Any]]:
    base = [{"task": task.name, "id": it["id"], "category": it["category"],
             "relation": it["relation"], "method": method, "fingerprint": fp,
             "answer": list(it["answer"]), "memory_answer": list(it["memory_answer"])}
            for it in items]
    if method == "generate":
        reqs = [GenerationRequest(task.prompt(it), task.prompt(it, context=False),
                                  {**it, "task": task.name}) for it in items]
        gens = lm.generate_until(reqs)
        for rec, it, gen in zip(base, items, gens, strict=True):
            rec["generation"] = gen
            rec["scores"] = score_generation(gen, it["answer"], it["memory_answer"])
    else:
        lls = lm.loglikelihood(_answer_requests(task, items))
        for j, rec in enumerate(base):
            la, lm_ = lls[2 * j][0], lls[2 * j + 1][0]
            rec["logprob_answer"], rec["logprob_memory"] = la, lm_
            rec["scores"] = score_choice(la, lm_)
    return base


def evaluate(
    model: Any,
    tasks: Any = DEFAULT_TASKS,
    *,
    method: Literal["generate", "loglikelihood"] = "generate",
    scoring: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    output: str | os.PathLike[str] | None = None,
    chunk_size: int = 64,
    **model_kwargs: Any,
) -> ReliabilityReport:
    """Measure context reliance of a causal LM on counterfactual QA tasks.

    Args:
        model: A :class:`ContextLM`, a ``(model, tokenizer)`` pair, or a zoo name / ``hf:`` id /
            folder (loaded with :func:`fmlab.models.load_causal_lm`).
        tasks: Task names (:func:`list_tasks`), JSONL task files or :class:`CFTask` objects.
        method: ``"generate"`` (greedy answer, scored by substring, first-sentence and exact
            match) or ``"loglikelihood"`` (the more likely of the two answers: ``choice``; conflict
            items only).
        scoring: Primary scoring for the summary: ``"first"`` (default for generation),
            ``"substring"`` (the paper's), ``"exact"``; ``"choice"`` for log-likelihood.
        limit: At most this many items per task (a seeded sample), for quick runs.
        seed: Seed of the ``limit`` sample.
        output: A JSONL file for per-item records. Items already recorded there (same task, id and
            configuration) are not re-run, so an interrupted evaluation resumes.
        chunk_size: Items per write to ``output``.
        **model_kwargs: When fmlab builds the model adapter: ``batch_size``, ``max_new_tokens``,
            ``stop``, ``chat``, ``cad_alpha`` (context-aware decoding), ``dtype``, ``device``,
            ``progress``.

    Returns:
        A :class:`ReliabilityReport`.

    Example:
        >>> from fmlab.context import evaluate                             # doctest: +SKIP
        >>> rep = evaluate("smollm2-135m-instruct", ["cf_capitals"], limit=50)
        >>> rep.counterfactual_accuracy, rep.task("cf_capitals")["parametric"]
    """
    check_option(method, "method", METHODS, owner="evaluate")
    scorings = SCORINGS if method == "generate" else ("choice",)
    scoring = scoring or scorings[1 if method == "generate" else 0]
    check_option(scoring, "scoring", scorings, owner=f"evaluate(method={method!r})")
    if limit is not None:
        check_int(limit, "limit", owner="evaluate", low=1)
    check_int(chunk_size, "chunk_size", owner="evaluate", low=1)
    if "cad_alpha" in model_kwargs:
        check_real(model_kwargs["cad_alpha"], "cad_alpha", owner="evaluate", low=0.0,
                   closed="left")
    task_objs = [t.subset(limit, seed) for t in load_tasks(tasks)]
    lm = as_context_lm(model, **model_kwargs)
    path = Path(output).expanduser() if output is not None else None
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for r in _read_records(path):
            done[(r["task"], r["id"], r.get("fingerprint", ""))] = r
    records: list[dict[str, Any]] = []
    for task in task_objs:
        fp = _fingerprint(lm, method, task)
        if path is not None:
            clash = {f for (t, _, f) in done if t == task.name and f != fp}
            if clash:
                raise ValueError(
                    f"The records file {path} holds results of task {task.name!r} from another "
                    f"configuration (model, method, template or decoding). Use a new output file, "
                    f"or delete this one to start over.")
        # the log-likelihood choice needs two different answers: conflict items only
        items = task.items if method == "generate" else tuple(task.conflicts())
        todo = [it for it in items if (task.name, it["id"], fp) not in done]
        step = chunk_size if path is not None else max(len(todo), 1)
        for start in range(0, len(todo), step):
            new = _run_items(lm, task, todo[start:start + step], method, fp)
            if path is not None:
                _append(path, new)
            for r in new:
                done[(task.name, r["id"], fp)] = r
        records.extend(done[(task.name, it["id"], fp)] for it in items)
    return ReliabilityReport(model=lm.name, method=method, scoring=scoring, records=records,
                             rows=compute_metrics(records, scorings))
