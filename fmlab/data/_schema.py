"""The dataset containers returned by :func:`fmlab.data.load_dataset`, one per kind.

Every container is a plain dataclass with ``__len__`` and a ``name``; the field layout of each kind
is documented here and repeated in ``dataset_info(name).schema``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported lazily; only the type is needed here
    import pandas as pd

__all__ = ["SCHEMAS", "DatasetInfo", "ImageDataset", "PairDataset", "TableDataset", "TextDataset"]


def _take(value: Any, idx: np.ndarray) -> Any:
    if isinstance(value, np.ndarray):
        return value[idx]
    if isinstance(value, list):
        return [value[int(i)] for i in idx]
    return value


@dataclass
class ImageDataset:
    """Images with integer class labels.

    Attributes:
        images: ``uint8`` array ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB), values 0-255.
        labels: ``int64`` array ``(N,)`` with values in ``[0, len(classes))``.
        classes: Class names; ``classes[k]`` names label ``k``.
        name: Registry name (``"mnist"``) or a generator's name (``"dominoes"``).
        split: Which split (``"train"``, ``"test"``) or ``""`` when there is none.
        attributes: Further per-example ``(N,)`` arrays, e.g. ``"group"`` and ``"spurious"`` for
            dominoes, ``"color"`` for coloured digits, ``"angle"`` for rotated digits.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str
    split: str = ""
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Any) -> ImageDataset:
        """A new dataset with the examples at ``indices`` (an int array or boolean mask)."""
        idx = np.arange(len(self))[np.asarray(indices)]
        return replace(
            self, images=self.images[idx], labels=self.labels[idx],
            attributes={k: v[idx] for k, v in self.attributes.items()},
        )

    def __repr__(self) -> str:
        extra = f", attributes={sorted(self.attributes)}" if self.attributes else ""
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"images={self.images.shape} {self.images.dtype}, "
                f"n_classes={self.n_classes}{extra})")


@dataclass
class TextDataset:
    """Documents or sentences, with optional integer labels.

    Attributes:
        texts: One string per document.
        labels: ``int64`` array ``(N,)`` indexing ``classes``, or ``None`` for an unlabelled corpus.
        classes: Class names (empty for an unlabelled corpus).
        name: Registry name.
        split: Which split, or ``""``.
        attributes: Further per-document fields (lists or ``(N,)`` arrays), e.g. ``"title"``.
    """

    texts: list[str]
    labels: np.ndarray | None
    classes: tuple[str, ...]
    name: str
    split: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_chars(self) -> int:
        return sum(len(t) for t in self.texts)

    def subset(self, indices: Any) -> TextDataset:
        """A new dataset with the documents at ``indices`` (an int array or boolean mask)."""
        idx = np.arange(len(self))[np.asarray(indices)]
        return replace(
            self, texts=[self.texts[int(i)] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            attributes={k: _take(v, idx) for k, v in self.attributes.items()},
        )

    def __repr__(self) -> str:
        lab = "unlabelled" if self.labels is None else f"classes={self.classes}"
        return (f"TextDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"chars={self.n_chars}, {lab})")


@dataclass
class PairDataset:
    """Pairs of texts (sentences or words) with a graded similarity score.

    Attributes:
        text1: First text of each pair.
        text2: Second text of each pair.
        scores: ``float64`` array ``(N,)``; the range is in ``dataset_info(name).schema``.
        name: Registry name.
        split: Which split, or ``""``.
        attributes: Further per-pair fields.
    """

    text1: list[str]
    text2: list[str]
    scores: np.ndarray
    name: str
    split: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.text1)

    def subset(self, indices: Any) -> PairDataset:
        idx = np.arange(len(self))[np.asarray(indices)]
        return replace(
            self, text1=[self.text1[int(i)] for i in idx], text2=[self.text2[int(i)] for i in idx],
            scores=self.scores[idx],
            attributes={k: _take(v, idx) for k, v in self.attributes.items()},
        )

    def __repr__(self) -> str:
        return f"PairDataset(name={self.name!r}, split={self.split!r}, n={len(self)})"


@dataclass
class TableDataset:
    """A table (pandas DataFrame); its columns are listed in ``dataset_info(name).schema``.

    Attributes:
        frame: The table.
        name: Registry name.
        split: Which split, or ``""``.
    """

    frame: pd.DataFrame
    name: str
    split: str = ""

    def __len__(self) -> int:
        return int(len(self.frame))

    def __repr__(self) -> str:
        cols = list(self.frame.columns)
        return (f"TableDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"columns={cols})")


SCHEMAS: dict[str, str] = {
    "image": "ImageDataset(images: uint8 (N,H,W) or (N,H,W,3), labels: int64 (N,), "
             "classes: tuple[str, ...], name, split, attributes: dict[str, (N,) array])",
    "text": "TextDataset(texts: list[str], labels: int64 (N,) or None, classes: tuple[str, ...], "
            "name, split, attributes: dict)",
    "pairs": "PairDataset(text1: list[str], text2: list[str], scores: float64 (N,), name, split, "
             "attributes: dict)",
    "table": "TableDataset(frame: pandas.DataFrame, name, split)",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What the zoo knows about one dataset, and whether it can be loaded on this machine.

    Attributes:
        name: Registry name.
        kind: ``"image"``, ``"text"``, ``"pairs"`` or ``"table"``.
        description: One line.
        splits: Valid values of ``split`` for :func:`load_dataset`.
        size: Size in words (``"60,000 / 10,000 images, 28x28"``).
        schema: The container and its fields, plus the columns or value ranges of this dataset.
        source: Where the files come from (package, registry and path).
        license: Licence of the data.
        available: Whether every file is present (checksums are checked on load).
        missing: What is missing, or ``""``.
        install: The command that gets the files when they are missing.
        files: The files that back the dataset on this machine (may not exist).
        reference: Citation (arXiv id or URL).
    """

    name: str
    kind: str
    description: str
    splits: tuple[str, ...]
    size: str
    schema: str
    source: str
    license: str
    available: bool
    missing: str
    install: str
    files: tuple[str, ...]
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)
