"""AutoFT: robust fine-tuning by searching the fine-tuning objective on a small OOD validation set.

- :class:`AutoFT`: the search (Optuna TPE by default, seeded; pruner fed after each evaluation;
  SQLite on one machine, PostgreSQL across many, resumable) over a :class:`SearchSpace` (the
  released one by default) or any define-by-run function; ``best_params_`` is an
  :class:`AutoFTParams` that saves and loads as JSON in the released key format
  (:func:`load_params` reads the released files too).
- :data:`LOSS_TERMS`: the nine loss terms as data (ce, hinge, entropy, dcm, flyp, l1/l2 of the
  weights and of their distance from the pretrained weights); :func:`objective_loss`.
- :func:`finetune`: the one fine-tuning loop (trials, final run, baselines);
  :func:`run_method` for zero-shot, ERM, LP-FT, FLYP and AutoFT with optional WiSE-FT
  (:func:`wise_ft`); :func:`evaluate` with accuracy, macro-F1 or worst-group accuracy.
- :data:`TASKS` / :func:`make_task`: named tasks that workers on other machines rebuild;
  :func:`run_autoft_worker` joins a shared search.

Importing this package does not import torch or optuna; the names load on first use.

References:
    Choi, Lee, Chen, Zhou, Raghunathan, Finn. AutoFT: Learning an Objective for Robust
    Fine-Tuning. arXiv 2401.10220.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmlab._imports import lazy_module

if TYPE_CHECKING:
    from fmlab.autoft._finetune import (
        METRICS,
        FineTunable,
        FineTuneResult,
        TensorData,
        ZeroShotHead,
        evaluate,
        finetune,
        overlapping_ids,
        wise_ft,
    )
    from fmlab.autoft._losses import (
        LOSS_TERMS,
        LossBatch,
        LossTerm,
        check_loss_weights,
        list_loss_terms,
        objective_loss,
    )
    from fmlab.autoft._methods import METHODS, MethodResult, run_method
    from fmlab.autoft._search import AutoFT, best_of, run_autoft_worker
    from fmlab.autoft._space import AutoFTParams, SearchSpace, load_params
    from fmlab.autoft._tasks import TASKS, FineTuneTask, make_task

_LAZY = {
    **dict.fromkeys(("METRICS", "FineTunable", "FineTuneResult", "TensorData", "ZeroShotHead",
                     "evaluate", "finetune", "overlapping_ids", "wise_ft"),
                    "fmlab.autoft._finetune"),
    **dict.fromkeys(("LOSS_TERMS", "LossBatch", "LossTerm", "check_loss_weights",
                     "list_loss_terms", "objective_loss"), "fmlab.autoft._losses"),
    **dict.fromkeys(("METHODS", "MethodResult", "run_method"), "fmlab.autoft._methods"),
    **dict.fromkeys(("AutoFT", "best_of", "run_autoft_worker"), "fmlab.autoft._search"),
    **dict.fromkeys(("AutoFTParams", "SearchSpace", "load_params"), "fmlab.autoft._space"),
    **dict.fromkeys(("TASKS", "FineTuneTask", "make_task"), "fmlab.autoft._tasks"),
}

__all__ = [
    "AutoFT",
    "AutoFTParams",
    "FineTunable",
    "FineTuneResult",
    "FineTuneTask",
    "LOSS_TERMS",
    "LossBatch",
    "LossTerm",
    "METHODS",
    "METRICS",
    "MethodResult",
    "SearchSpace",
    "TASKS",
    "TensorData",
    "ZeroShotHead",
    "best_of",
    "check_loss_weights",
    "evaluate",
    "finetune",
    "list_loss_terms",
    "load_params",
    "make_task",
    "objective_loss",
    "overlapping_ids",
    "run_autoft_worker",
    "run_method",
    "wise_ft",
]

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
