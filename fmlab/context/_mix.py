"""An instruction-tuning mix generated offline, with a known share of examples whose context
agrees with what the model knows, and the data-side mitigations.

Kinds of example (fields ``prompt``-building ``context``/``question`` and the ``target``):

``reading_agree``     context states a real fact (countryinfo); answerable from memory: the
                      paper's non-context-critical (C+S) points
``reading_novel``     context states a fact about an invented entity; only the context knows it:
                      context-critical (C) points
``closed_book``       a real fact asked without context (S points)
``definition``        define a word from its WordNet gloss (no context)
``cloze``             fill the blank in a WordNet usage example (no context)

``agree_share`` is the share of reading examples of kind ``reading_agree``. Mitigations:
:func:`filter_context_critical` drops the reading examples whose target is most predictable
*without* the context; :func:`counterfactual_augment` adds entity-substituted copies.

References:
    Goyal, Baek, Kolter, Raghunathan 2025, arXiv 2410.10796, §4 (filtering) and §6.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from fmlab._validation import check_int, check_real
from fmlab.context._generate import _TEMPLATES, facts
from fmlab.context._tasks import DEFAULT_TEMPLATE, DEFAULT_TEMPLATE_NO_CONTEXT

__all__ = ["counterfactual_augment", "example_prompt", "filter_context_critical",
           "make_instruction_mix"]

KINDS = ("reading_agree", "reading_novel", "closed_book", "definition", "cloze")
_SYL = ("ka", "lo", "ver", "mi", "dan", "tor", "sel", "ru", "bel", "no", "vin", "sa", "dor",
        "el", "tam", "qui", "zen", "ar", "pol", "fen")


def _invented(rng: np.random.Generator, n_syl: int = 3) -> str:
    return "".join(_SYL[int(i)] for i in rng.integers(len(_SYL), size=n_syl)).capitalize()


def _in_split(entity: str, split: str) -> bool:
    # a stable 80/20 split of entities, so held-out examples ask about other entities
    h = zlib.crc32(entity.encode()) % 5
    return (h != 0) if split == "train" else (h == 0)


def example_prompt(ex: dict[str, Any], *, context: bool = True) -> str:
    """The prompt of a mix example (the evaluation tasks' template), with or without context."""
    if context and ex.get("context"):
        return DEFAULT_TEMPLATE.format(context=ex["context"], question=ex["question"])
    return DEFAULT_TEMPLATE_NO_CONTEXT.format(question=ex["question"])


def _wordnet_examples(rng: np.random.Generator, split: str, n_def: int, n_cloze: int
                      ) -> list[dict[str, Any]]:
    from fmlab.data import load_dataset

    g = load_dataset("wordnet-glosses")
    words, exs = g.attributes["words"], g.attributes["examples"]
    out: list[dict[str, Any]] = []
    order = rng.permutation(len(g.texts))
    for i in order:
        if len([e for e in out if e["kind"] == "definition"]) >= n_def:
            break
        w = words[int(i)][0] if words[int(i)] else ""
        gloss = g.texts[int(i)].split(";")[0].strip()
        if " " in w or not w.isalpha() or not w.islower() or not 2 <= len(gloss.split()) <= 10:
            continue
        if not _in_split(w, split):
            continue
        out.append({"kind": "definition", "context": "", "relation": "definition",
                    "question": f"What does the word '{w}' mean?", "target": gloss})
    n_c = 0
    for i in order[::-1]:
        if n_c >= n_cloze:
            break
        lemmas = [x for x in words[int(i)] if x.isalpha() and x.islower()]
        for ex in exs[int(i)]:
            toks = ex.split()
            hit = next((x for x in lemmas if x in toks), None)
            if hit is None or not 4 <= len(toks) <= 14 or not _in_split(ex, split):
                continue
            blanked = " ".join("___" if t == hit else t for t in toks)
            out.append({"kind": "cloze", "context": "", "relation": "cloze",
                        "question": f"Fill in the blank with one word: {blanked}",
                        "target": hit})
            n_c += 1
            break
    return out


def make_instruction_mix(
    n: int = 512,
    *,
    agree_share: float = 0.5,
    reading_share: float = 0.6,
    closed_book_share: float = 0.2,
    seed: int = 0,
    split: str = "train",
) -> list[dict[str, Any]]:
    """Generate an instruction-tuning mix offline.

    Args:
        n: Number of examples.
        agree_share: Share of reading examples whose context states a real, well-known fact
            (countries' capitals, languages, currencies), answerable from memory.
        reading_share: Share of reading-comprehension examples (the rest is closed-book,
            definitions and cloze).
        closed_book_share: Share of closed-book fact questions.
        seed: Seeds everything.
        split: ``"train"`` or ``"heldout"``: disjoint entities and words.

    Returns:
        A list of dicts with ``kind, context, question, target, relation`` and ``agrees``
        (True for ``reading_agree``, False for ``reading_novel``, None without context).
    """
    check_int(n, "n", owner="make_instruction_mix", low=1)
    for name, v in (("agree_share", agree_share), ("reading_share", reading_share),
                    ("closed_book_share", closed_book_share)):
        check_real(v, name, owner="make_instruction_mix", low=0.0, high=1.0, closed="both")
    if reading_share + closed_book_share > 1.0:
        raise ValueError("`reading_share + closed_book_share <= 1` must hold, but got "
                         f"(reading_share={reading_share}, closed_book_share={closed_book_share}).")
    if split not in ("train", "heldout"):
        raise ValueError(f"Invalid split {split!r} for make_instruction_mix. Valid options are: "
                         f"('train', 'heldout').")
    rng = np.random.default_rng(seed + (0 if split == "train" else 10_000))
    pool = [f for rel in ("capital", "language", "currency") for f in facts(rel)
            if _in_split(f.entity, split)]
    values: dict[str, list[str]] = {}
    for f in pool:
        values.setdefault(f.relation, []).append(f.value)
    n_read = int(round(reading_share * n))
    n_agree = int(round(agree_share * n_read))
    n_closed = int(round(closed_book_share * n))
    n_rest = n - n_read - n_closed
    out: list[dict[str, Any]] = []
    for k in range(n_read):
        if k < n_agree:
            f = pool[int(rng.integers(len(pool)))]
            entity, value, rel, kind = f.entity, f.value, f.relation, "reading_agree"
        else:
            rel = ("capital", "language", "currency")[int(rng.integers(3))]
            entity = _invented(rng)
            value = _invented(rng, 2) if rel == "capital" else str(
                values[rel][int(rng.integers(len(values[rel])))])
            kind = "reading_novel"
        tpl = _TEMPLATES[rel]
        ctx = tpl["contexts"][int(rng.integers(len(tpl["contexts"])))]
        out.append({"kind": kind, "relation": rel, "entity": entity,
                    "context": ctx.format(entity=entity, value=value, extra=""),
                    "question": tpl["question"].format(entity=entity), "target": value,
                    "agrees": kind == "reading_agree"})
    for _ in range(n_closed):
        f = pool[int(rng.integers(len(pool)))]
        out.append({"kind": "closed_book", "relation": f.relation, "entity": f.entity,
                    "context": "", "agrees": None,
                    "question": _TEMPLATES[f.relation]["question"].format(entity=f.entity),
                    "target": f.value})
    if n_rest:
        n_def = n_rest // 2
        extra = _wordnet_examples(rng, split, n_def, n_rest - n_def)
        for e in extra:
            e["agrees"] = None
        out.extend(extra)
    order = rng.permutation(len(out))
    return [out[int(i)] for i in order]


def counterfactual_augment(examples: Sequence[dict[str, Any]], share: float = 0.1, *,
                           seed: int = 0) -> list[dict[str, Any]]:
    """Add entity-substituted copies of reading examples: the context's answer is replaced by
    another value of the same relation and the target follows the context.

    Args:
        examples: A mix from :func:`make_instruction_mix`.
        share: Copies to add, as a share of ``len(examples)``.
        seed: Seeds the choice of examples and substitutes.
    """
    check_real(share, "share", owner="counterfactual_augment", low=0.0, high=1.0, closed="both")
    rng = np.random.default_rng(seed)
    reading = [e for e in examples if e.get("context")]
    if not reading:
        raise ValueError("counterfactual_augment needs reading examples (with a context); "
                         "the mix has none.")
    by_rel: dict[str, list[str]] = {}
    for e in reading:
        by_rel.setdefault(e["relation"], []).append(e["target"])
    copies = []
    for i in rng.integers(len(reading), size=int(round(share * len(examples)))):
        e = reading[int(i)]
        others = [v for v in by_rel[e["relation"]] if v != e["target"]]
        if not others:
            continue
        new = others[int(rng.integers(len(others)))]
        copies.append({**e, "kind": "counterfactual", "agrees": False, "target": new,
                       "context": e["context"].replace(e["target"], new)})
    out = list(examples) + copies
    order = rng.permutation(len(out))
    return [out[int(j)] for j in order]


def filter_context_critical(examples: Sequence[dict[str, Any]],
                            nll_without_context: Sequence[float],
                            drop_share: float = 0.25) -> list[dict[str, Any]]:
    """Context-critical filtering: drop the ``drop_share`` of reading examples whose target has
    the lowest per-token NLL (perplexity) *without* the context, i.e. the ones answerable from
    memory. Examples without a context are kept.

    Args:
        examples: The mix.
        nll_without_context: Per-token NLL of each example's target given its prompt without the
            context (NaN for examples without a context); see :func:`no_context_nll`.
        drop_share: Share of reading examples to drop.
    """
    check_real(drop_share, "drop_share", owner="filter_context_critical", low=0.0, high=1.0,
               closed="left")
    nll = np.asarray(nll_without_context, dtype=float)
    if nll.shape != (len(examples),):
        raise ValueError(f"'nll_without_context' must have one value per example "
                         f"({len(examples)}). Got shape {nll.shape}.")
    idx = [i for i, e in enumerate(examples) if e.get("context")]
    n_drop = int(round(drop_share * len(idx)))
    drop = set(sorted(idx, key=lambda i: nll[i])[:n_drop])
    return [e for i, e in enumerate(examples) if i not in drop]
