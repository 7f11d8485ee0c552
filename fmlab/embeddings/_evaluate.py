"""Evaluate any sentence encoder: STS Spearman, word similarity, and a linear classification probe.

An *encoder* here is anything with a sentence-transformers ``encode(texts, batch_size=...,
normalize_embeddings=..., show_progress_bar=...)`` method returning an ``(n, d)`` array:
:class:`~fmlab.embeddings.EchoEncoder` or a ``SentenceTransformer``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fmlab._validation import check_int, check_option, check_real
from fmlab.exceptions import DataUnavailableError

__all__ = [
    "EvalResult",
    "evaluate",
    "evaluate_sts",
    "evaluate_word_similarity",
    "mteb_instructions",
    "probe_classification",
]

STS_TASKS = ("stsb", "sickr")
WORD_TASKS = ("wordsim353", "simlex999")
PROBE_TASKS = ("rotten-tomatoes",)
TASKS = STS_TASKS + WORD_TASKS + PROBE_TASKS
# MTEB's evaluation sets: STSBenchmark test (1,379 pairs); SICK-R all 9,927 pairs.
_DEFAULT_SPLIT = {"stsb": "test", "sickr": "all", "wordsim353": None, "simlex999": None}


@dataclass(frozen=True)
class EvalResult:
    """One task's score.

    Attributes:
        task: Task name (``"stsb"``, ``"sickr"``, ``"wordsim353"``, ``"rotten-tomatoes"``, ...).
        metric: ``"spearman"`` (x100, as MTEB reports it) or ``"accuracy"`` (x100).
        score: The main score.
        n: Number of pairs or test examples scored.
        split: Which split was scored.
        seconds: Wall time including encoding.
        details: Secondary numbers (Pearson, train size, ...).
    """

    task: str
    metric: str
    score: float
    n: int
    split: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encode(encoder: Any, texts: Sequence[str], batch_size: int, progress: bool) -> np.ndarray:
    if not hasattr(encoder, "encode"):
        raise TypeError(
            f"The 'encoder' must have an encode() method (an EchoEncoder or a "
            f"SentenceTransformer). Got {type(encoder).__name__} instead."
        )
    # each distinct text is encoded once (SICK-R's 19,854 sentences hold 6,077 distinct ones)
    first: dict[str, int] = {}
    rows = [first.setdefault(t, len(first)) for t in texts]
    emb = encoder.encode(list(first), batch_size=batch_size, normalize_embeddings=True,
                         show_progress_bar=progress)
    emb = np.asarray(getattr(emb, "cpu", lambda: emb)(), dtype=np.float32)
    return emb[rows]


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)


def _subset_indices(n_total: int, n: int | None, seed: int) -> np.ndarray:
    if n is None or n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n, replace=False))


# -- data ------------------------------------------------------------------------------------------
def _load(name: str, split: str | None) -> Any:
    """Load through the data zoo (:func:`fmlab.data.load_dataset`)."""
    from fmlab.data import load_dataset

    return load_dataset(name) if split is None else load_dataset(name, split=split)


def _pairs(dataset: Any, split: str | None) -> tuple[str, str, list[str], list[str], np.ndarray]:
    if isinstance(dataset, str):
        name = dataset
        split = split if split is not None else _DEFAULT_SPLIT.get(name)
        data = _load(name, split)
        return name, split or getattr(data, "split", ""), list(data.text1), list(data.text2), \
            np.asarray(data.scores, dtype=np.float64)
    for attr in ("text1", "text2", "scores"):
        if not hasattr(dataset, attr):
            raise TypeError(
                "The 'dataset' must be a dataset name or an object with text1, text2 and scores "
                f"(a fmlab.data PairDataset). Got {type(dataset).__name__} without {attr!r}."
            )
    return (getattr(dataset, "name", "pairs"), getattr(dataset, "split", "") or "",
            list(dataset.text1), list(dataset.text2), np.asarray(dataset.scores, dtype=np.float64))


def mteb_instructions() -> dict[str, str]:
    """MTEB task name -> E5-style query instruction (LLM2Vec's list, MIT; in ``shared/mteb``).

    Pass the result as ``EchoEncoder(prompts=...)``; ``encode(task_name=...)`` then uses it.
    """
    from fmlab._paths import shared_dir

    folder = shared_dir("mteb", "instructions")
    path = folder / "llm2vec_task_to_instructions.json" if folder else None
    if path is None or not path.is_file():
        raise DataUnavailableError(
            "The MTEB instruction list (shared/mteb/instructions/"
            "llm2vec_task_to_instructions.json) was not found; set FMLAB_SHARED to the folder "
            "holding fmlab's reference data."
        )
    return {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


# -- tasks -----------------------------------------------------------------------------------------
def evaluate_sts(
    encoder: Any,
    dataset: Any = "stsb",
    *,
    split: str | None = None,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> EvalResult:
    """Spearman correlation (x100) between embedding cosine and gold similarity, as in MTEB.

    Args:
        encoder: An object with a sentence-transformers ``encode``.
        dataset: ``"stsb"`` (default split ``"test"``, 1,379 pairs), ``"sickr"`` (default
            ``"all"``: the 9,927 pairs MTEB scores), or a PairDataset-like object.
        split: Override the split.
        n: Score a random subset of ``n`` pairs (seeded); None scores all.
        seed: Seed of the subset.
        batch_size: Encoding batch size.

    Returns:
        An :class:`EvalResult` with ``metric="spearman"`` and Pearson in ``details``.
    """
    from scipy.stats import pearsonr, spearmanr

    start = time.perf_counter()
    name, split_, cos, gold, n_total = _sts_cosines(encoder, dataset, split=split, n=n, seed=seed,
                                                    batch_size=batch_size,
                                                    show_progress_bar=show_progress_bar)
    rho = float(spearmanr(cos, gold).statistic)
    r = float(pearsonr(cos, gold).statistic)
    return EvalResult(name, "spearman", 100 * rho, len(gold), split_,
                      time.perf_counter() - start, {"pearson": 100 * r, "n_total": n_total})


def _sts_cosines(encoder: Any, dataset: Any, *, split: str | None = None, n: int | None = None,
                 seed: int = 0, batch_size: int = 32, show_progress_bar: bool = False
                 ) -> tuple[str, str, np.ndarray, np.ndarray, int]:
    """``(name, split, cosine per pair, gold score per pair, pairs in the split)`` for the
    (seeded subset of the) pairs: what :func:`evaluate_sts` scores."""
    if n is not None:
        check_int(n, "n", owner="evaluate_sts", low=2)
    name, split_, t1, t2, gold = _pairs(dataset, split)
    n_total = len(gold)
    idx = _subset_indices(n_total, n, seed)
    t1, t2, gold = [t1[i] for i in idx], [t2[i] for i in idx], gold[idx]
    emb = _encode(encoder, t1 + t2, batch_size, show_progress_bar)
    return name, split_, _cosine_rows(emb[: len(t1)], emb[len(t1):]), gold, n_total


def evaluate_word_similarity(
    encoder: Any,
    dataset: Any = "wordsim353",
    *,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> EvalResult:
    """Spearman (x100) of embedding cosine vs human ratings on word pairs (gensim's test sets).

    Each word is encoded as a one-word "sentence". Args as in :func:`evaluate_sts`;
    ``dataset`` is ``"wordsim353"`` or ``"simlex999"`` or a PairDataset-like object.
    """
    return evaluate_sts(encoder, dataset, n=n, seed=seed, batch_size=batch_size,
                        show_progress_bar=show_progress_bar)


def probe_classification(
    encoder: Any,
    dataset: str = "rotten-tomatoes",
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    C: float = 1.0,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> EvalResult:
    """Accuracy (x100) of a logistic-regression probe on frozen embeddings (MTEB's protocol).

    Embeddings are standardised and a scikit-learn ``LogisticRegression(C=C, max_iter=1000)`` is
    fitted on the train split and scored on the test split.

    Args:
        encoder: An object with a sentence-transformers ``encode``.
        dataset: ``"rotten-tomatoes"`` (fresh vs rotten snippets) or another labelled text set
            of :mod:`fmlab.data` with train and test splits.
        n_train, n_test: Random subsets (seeded, class-balanced by chance); None uses all.
        C: Inverse regularisation strength.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    C = check_real(C, "C", owner="probe_classification", low=0)
    start = time.perf_counter()
    train, test = _load(dataset, "train"), _load(dataset, "test")
    tr = _subset_indices(len(train.texts), n_train, seed)
    te = _subset_indices(len(test.texts), n_test, seed + 1)
    x_tr = _encode(encoder, [train.texts[i] for i in tr], batch_size, show_progress_bar)
    x_te = _encode(encoder, [test.texts[i] for i in te], batch_size, show_progress_bar)
    y_tr, y_te = np.asarray(train.labels)[tr], np.asarray(test.labels)[te]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    clf.fit(x_tr, y_tr)
    acc = float((clf.predict(x_te) == y_te).mean())
    majority = float(max(np.mean(y_te == c) for c in np.unique(y_te)))
    return EvalResult(dataset, "accuracy", 100 * acc, len(te), "test",
                      time.perf_counter() - start,
                      {"n_train": int(len(tr)), "majority": 100 * majority, "C": C})


def evaluate(
    encoder: Any,
    tasks: str | Sequence[str] = STS_TASKS,
    *,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> list[EvalResult]:
    """Run several tasks; ``n`` caps pairs (STS, word sets) and train/test sizes (probe).

    Args:
        tasks: Names from ``stsb, sickr, wordsim353, simlex999, rotten-tomatoes`` (a list or a
            comma-separated string).
    """
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    results = []
    for task in names:
        check_option(task, "task", TASKS, owner="fmlab.embeddings.evaluate")
        if task in PROBE_TASKS:
            results.append(probe_classification(
                encoder, task, n_train=n, n_test=n, seed=seed, batch_size=batch_size,
                show_progress_bar=show_progress_bar))
        else:
            results.append(evaluate_sts(encoder, task, n=n, seed=seed, batch_size=batch_size,
                                        show_progress_bar=show_progress_bar))
    return results
