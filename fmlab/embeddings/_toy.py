"""The mechanism, shown: early tokens of an echo embedding know how the sentence ends.

Structured sentences ``"<who> went to the <where> on <day> and <what>."`` whose class is set only
by the late clause ``<what>`` (eating, sport, music, work); the early part is drawn independently
of the class. Pooling only the *early* tokens of the pooled span, a classical embedding holds no
information about the class (a causal state at position *i* never sees the later clause), so a
linear probe sits at chance. In the echo template those tokens belong to the second copy, which
attends to the whole first copy, so the probe separates the classes.

This is the spirit of the toy experiment in Springer et al. (arXiv 2402.15449), where
discriminating information placed late defeats classical embeddings; the sentence design here is
fmlab's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmlab._validation import check_int

__all__ = ["ToySentences", "make_toy_sentences", "toy_experiment"]

_WHO = ("Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
        "Kiri", "Liam")
_WHERE = ("park", "station", "library", "market", "harbour", "museum", "office", "garden")
_DAY = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WHAT = {
    "food": ("ate a bowl of spicy noodles", "had a large pizza with cheese",
             "cooked fresh pasta for dinner", "tasted sweet cakes and bread",
             "ordered soup and a salad"),
    "sport": ("played a hard game of tennis", "ran ten miles along the river",
              "swam fast laps in the pool", "kicked a football with a team",
              "rode a bicycle up the hill"),
    "music": ("played the piano for hours", "sang loudly in a choir",
              "listened to a jazz band", "practised the violin and drums",
              "wrote a song on the guitar"),
    "work": ("wrote a long report for the boss", "answered emails all afternoon",
             "met a client to sign a contract", "prepared slides for a meeting",
             "fixed a bug in the payroll code"),
}


@dataclass(frozen=True)
class ToySentences:
    """The toy set: ``texts[i] = early[i] + late[i]``; ``labels`` index ``classes``."""

    texts: list[str]
    early: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]


def make_toy_sentences(n_per_class: int = 40, *, seed: int = 0) -> ToySentences:
    """Sentences whose class is decided by the late clause only (see the module docstring)."""
    n_per_class = check_int(n_per_class, "n_per_class", owner="make_toy_sentences", low=2)
    rng = np.random.default_rng(seed)
    classes = tuple(_WHAT)
    texts, early, labels = [], [], []
    for c, cls in enumerate(classes):
        for _ in range(n_per_class):
            e = (f"{_WHO[rng.integers(len(_WHO))]} went to the {_WHERE[rng.integers(len(_WHERE))]}"
                 f" on {_DAY[rng.integers(len(_DAY))]}")
            late = f" and {_WHAT[cls][rng.integers(len(_WHAT[cls]))]}."
            texts.append(e + late)
            early.append(e)
            labels.append(c)
    order = rng.permutation(len(texts))
    return ToySentences([texts[i] for i in order], [early[i] for i in order],
                        np.asarray(labels, dtype=np.int64)[order], classes)


def _early_count(encoder: Any, text: str, early: str) -> int:
    """Tokens of the pooled copy that belong to ``early`` (its common prefix with the text)."""
    full = encoder.tokenize(text)
    part = encoder.tokenize(early)
    a0, a1 = full.copies[-1]
    b0, b1 = part.copies[-1]
    a, b = full.input_ids[a0:a1], part.input_ids[b0:b1]
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def _probe_accuracy(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, x, y, cv=folds).mean())


def toy_experiment(encoder: Any, data: ToySentences | None = None, *, seed: int = 0,
                   batch_size: int = 32) -> dict[str, float]:
    """Probe accuracy (5-fold logistic regression) from early-token and full-span pooling.

    Args:
        encoder: An :class:`~fmlab.embeddings.EchoEncoder` (any template).
        data: The toy set (default: :func:`make_toy_sentences` with ``seed``).

    Returns:
        ``{"early_accuracy", "full_accuracy", "chance", "mean_early_tokens"}``; accuracies in
        [0, 1]. For a classical template ``early_accuracy`` stays at chance by construction.
    """
    data = data if data is not None else make_toy_sentences(seed=seed)
    states = encoder.token_embeddings(data.texts, batch_size=batch_size)  # list of (n_i, d)
    ks = [_early_count(encoder, t, e) for t, e in zip(data.texts, data.early, strict=True)]
    early = np.stack([s[:k].mean(0) for s, k in zip(states, ks, strict=True)])
    full = np.stack([s.mean(0) for s in states])
    chance = float(np.bincount(data.labels).max() / len(data.labels))
    return {
        "early_accuracy": _probe_accuracy(early, data.labels, seed),
        "full_accuracy": _probe_accuracy(full, data.labels, seed),
        "chance": chance,
        "mean_early_tokens": float(np.mean(ks)),
    }
