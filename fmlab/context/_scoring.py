"""Scoring a generation against the context answer and the memorised answer.

Three rules, all computed for every item:

``substring`` (the paper's)
    counterfactual if any context-answer alias appears in the generation, parametric if any
    memory-answer alias appears; both can hold. A model that echoes a CF_World_Facts passage
    scores both in 273 of 313 items, because the passage names the old fact too.
``first``
    only the generation's first sentence counts (its first line, cut at the first ``. ! ?``
    followed by a space); it is counterfactual or parametric when it names exactly one of the
    two answers, ``other`` when it names both or neither. Echoing the passage is not rewarded.
``exact``
    the normalised first sentence equals an alias (SQuAD exact match), optionally after an
    ``answer:``/``the answer is`` lead-in.

Normalisation lowercases, strips accents, punctuation and the articles a/an/the, and squeezes
white space; matches are on whole words.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

__all__ = ["LABELS", "SCORINGS", "first_sentence", "normalize", "score_generation"]

SCORINGS = ("substring", "first", "exact")
LABELS = ("counterfactual", "parametric", "other")
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}‘’“”«»–—]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_LEADIN = re.compile(r"^(?:the answer is|answer is|answer)\s+")
_SENT_END = re.compile(r"[.!?](?:\s|$)")
_ABBREV = re.compile(r"(?:\b[A-Z][a-z]?|\bMrs|\bvs)\.$")


def normalize(text: str) -> str:
    """Lowercase, strip accents, punctuation and articles, squeeze white space."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_sentence(generation: str) -> str:
    """The generation's first non-empty line, cut after its first sentence (initials and
    abbreviations such as "P. W." or "St." do not end a sentence)."""
    line = next((ln for ln in generation.strip().splitlines() if ln.strip()), "")
    for m in _SENT_END.finditer(line):
        if not _ABBREV.search(line[:m.start() + 1]):
            return line[:m.start() + 1]
    return line


def _contains(haystack: str, aliases: Sequence[str], longer: Sequence[str] = ()) -> bool:
    """Whole-word presence of an alias; occurrences inside a longer competing answer ("Cairo"
    inside "New Cairo") do not count."""
    padded = f" {haystack} "
    for other in longer:
        padded = padded.replace(f" {other} ", "  ")
    return any(f" {a} " in padded for a in aliases if a)


def _containing(aliases: Sequence[str], others: Sequence[str]) -> list[str]:
    """The ``others`` that contain one of ``aliases`` as a longer phrase."""
    return [o for o in others if any(a != o and f" {a} " in f" {o} " for a in aliases)]


def score_generation(generation: str, answer: Sequence[str],
                     memory_answer: Sequence[str]) -> dict[str, dict[str, bool]]:
    """All three scorings of one generation.

    Returns:
        ``{scoring: {"counterfactual": bool, "parametric": bool, "other": bool}}``; under
        ``first`` and ``exact`` exactly one label is true for a conflict item. For an agreeing
        item (the answer sets overlap) counterfactual and parametric both mean "answered".
    """
    ans = [normalize(a) for a in answer]
    mem = [normalize(m) for m in memory_answer]
    long_a, long_m = _containing(mem, ans), _containing(ans, mem)
    full = normalize(generation)
    sub_c, sub_p = _contains(full, ans, long_m), _contains(full, mem, long_a)
    first = normalize(first_sentence(generation))
    f_c, f_p = _contains(first, ans, long_m), _contains(first, mem, long_a)
    bare = _LEADIN.sub("", first)
    e_c, e_p = bare in ans or first in ans, bare in mem or first in mem
    if set(ans) & set(mem):  # an agreeing item: one answer, no exclusivity
        return {name: {"counterfactual": c, "parametric": c, "other": not c}
                for name, c in (("substring", sub_c), ("first", f_c), ("exact", e_c))}
    out = {
        "substring": {"counterfactual": sub_c, "parametric": sub_p,
                      "other": not (sub_c or sub_p)},
        "first": {"counterfactual": f_c and not f_p, "parametric": f_p and not f_c,
                  "other": f_c == f_p},
        "exact": {"counterfactual": e_c and not e_p, "parametric": e_p and not e_c,
                  "other": e_c == e_p},
    }
    return out


def score_choice(logprob_answer: float, logprob_memory: float) -> dict[str, dict[str, bool]]:
    """Log-likelihood scoring: which of the two answers the model finds more likely."""
    c = logprob_answer > logprob_memory
    return {"choice": {"counterfactual": c, "parametric": not c, "other": False}}
