"""Jailbreak defenses judged against a crisp definition (the Purple Problem), under adaptive
attacks.

* definitions: :class:`WordJudge` (the purple judge), :class:`RegexJudge`,
  :class:`ClassifierJudge`; ``get_judge("contains:purple")``;
* tasks as data: :func:`load_task` (``"purple_questions"`` or a YAML file);
* defenses, composable: :class:`SystemPrompt`, :class:`InContextRefusals`,
  :class:`PerplexityFilter`, :class:`Paraphrase`, :class:`DPODefense`,
  :class:`AdversarialTraining`, :class:`OutputFilter`, :class:`Compose`; ``create_defense("a+b")``;
* attacks: :class:`JailbreakAttack` (none, fixed suffix, adaptive GCG from :mod:`fmlab.attacks`,
  perplexity-aware GCG, low-perplexity prefix, repeat-after-me against paraphrase);
* :func:`evaluate`: defense success rate with counts, Wilson intervals and JSONL records.

References:
    Kim, Kotha, Raghunathan. Testing the Limits of Jailbreaking Defenses with the Purple Problem
    (v1: Jailbreaking is Best Solved by Definition). arXiv 2403.14725.
"""

from __future__ import annotations

from fmlab._imports import lazy_module
from fmlab.jailbreak._judges import (
    JUDGES,
    BaseJudge,
    ClassifierJudge,
    RegexJudge,
    WordJudge,
    get_judge,
    normalize_text,
)
from fmlab.jailbreak._tasks import TASKS, Task, load_task

__all__ = [
    "DEFENSES",
    "JUDGES",
    "TASKS",
    "AdversarialTraining",
    "BaseDefense",
    "BaseJudge",
    "ClassifierJudge",
    "Compose",
    "DPODefense",
    "InContextRefusals",
    "JailbreakAttack",
    "JailbreakReport",
    "NoDefense",
    "OutputFilter",
    "Paraphrase",
    "PerplexityFilter",
    "RegexJudge",
    "SystemPrompt",
    "Task",
    "WordJudge",
    "create_defense",
    "evaluate",
    "generate",
    "get_judge",
    "load_task",
    "log_perplexity",
    "normalize_text",
    "train_dpo",
    "wilson_interval",
]

_LAZY = {
    **dict.fromkeys(
        ["DEFENSES", "AdversarialTraining", "BaseDefense", "Compose", "DPODefense",
         "InContextRefusals", "NoDefense", "OutputFilter", "Paraphrase", "PerplexityFilter",
         "SystemPrompt", "create_defense"], "fmlab.jailbreak._defenses"),
    **dict.fromkeys(["JailbreakAttack", "JailbreakReport", "evaluate", "wilson_interval"],
                    "fmlab.jailbreak._evaluate"),
    **dict.fromkeys(["generate", "log_perplexity"], "fmlab.jailbreak._generate"),
    "train_dpo": "fmlab.jailbreak._dpo",
}

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
