"""Context reliance during instruction tuning: counterfactual evaluation, the
context-parametric inversion, its mitigations and the one-layer attention toy that explains it.

Instruction tuning should make a model follow a supplied context more, yet its reliance on a
context that contradicts what it memorised first rises and then falls (Goyal et al., arXiv
2410.10796). This package measures reliance on counterfactual QA sets and reproduces the paper's
theory toy.

Example:
    >>> from fmlab.context import simulate_toy
    >>> res = simulate_toy(steps=3)          # the §5 toy: M_C rises, then falls
    >>> res.peak_step
    1

Importing this package is cheap; torch and transformers load on first use.
"""

from __future__ import annotations

from fmlab._imports import lazy_module

# name -> private module; loaded on first access
_LAZY = {
    "CFTask": "fmlab.context._tasks",
    "ContextLM": "fmlab.context._lm",
    "FrozenPrefix": "fmlab.context._lm",
    "FunctionLM": "fmlab.context._lm",
    "GenerationRequest": "fmlab.context._lm",
    "HFCausalLM": "fmlab.context._lm",
    "LoglikelihoodRequest": "fmlab.context._lm",
    "ReliabilityReport": "fmlab.context._evaluate",
    "TASKS": "fmlab.context._tasks",
    "evaluate": "fmlab.context._evaluate",
    "facts": "fmlab.context._generate",
    "FinetuneConfig": "fmlab.context._train",
    "FinetuneResult": "fmlab.context._train",
    "ReliabilityTracker": "fmlab.context._train",
    "finetune": "fmlab.context._train",
    "no_context_nll": "fmlab.context._train",
    "select_parameters": "fmlab.context._train",
    "track": "fmlab.context._train",
    "make_instruction_mix": "fmlab.context._mix",
    "counterfactual_augment": "fmlab.context._mix",
    "filter_context_critical": "fmlab.context._mix",
    "get_task": "fmlab.context._tasks",
    "list_tasks": "fmlab.context._tasks",
    "load_task": "fmlab.context._tasks",
    "make_conflict_set": "fmlab.context._generate",
    "score_generation": "fmlab.context._scoring",
    "ToyConfig": "fmlab.context._toy",
    "ToyResult": "fmlab.context._toy",
    "simulate_toy": "fmlab.context._toy",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
