"""What a study is: a small-scale reproduction of one paper's headline claim.

A study subclasses :class:`Study`, sets its class attributes and implements :meth:`Study.run`,
which receives a :class:`StudyContext` (output folder, scale, seed, progress bars) and returns a
:class:`StudyResult` (metrics, claim checks, figure files). The runner
(:func:`fmlab.studies.reproduce`) writes each result atomically and renders the HTML report.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

__all__ = ["Claim", "Scale", "Study", "StudyContext", "StudyResult"]

Scale = Literal["quick", "full"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Claim:
    """One claim check: the claim in words, what was measured, and whether the claim holds.

    Args:
        claim: The paper's claim in one sentence, as checked at this scale.
        measured: The measured value in words, e.g. ``"SAM 84.1% vs SGD 79.3% (+4.8 points)"``.
        holds: Whether the measurement supports the claim under the stated criterion.
        criterion: The test applied, e.g. ``"gap >= 2 points"``.
        value: The headline number, when there is one (for sorting and JSON consumers).
        reference: Where the paper's own number comes from, e.g. ``"Table 2, arXiv 2405.03676"``.
    """

    claim: str
    measured: str
    holds: bool
    criterion: str = ""
    value: float | None = None
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["value"] is not None and not math.isfinite(d["value"]):
            d["value"] = None
        d["holds"] = bool(d["holds"])
        return d


@dataclass
class StudyResult:
    """What :meth:`Study.run` returns.

    Args:
        metrics: JSON-serialisable numbers and tables (nested dicts and lists).
        claims: The claim checks, in the order they should appear in the report.
        figures: File names of PNG figures written into ``ctx.out_dir``, with captions.
        tables: Optional small tables for the report: title -> list of row dicts.
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)  # file name -> caption
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class StudyContext:
    """What a study run receives: where to write, at which scale, with which seed.

    Attributes:
        out_dir: Folder for this study's figures and files (a temporary folder that becomes
            ``DIR/<study>`` only when the study finishes, so an interrupted run leaves nothing).
        scale: ``"quick"`` (minutes on 2 CPU cores) or ``"full"``.
        seed: Base random seed; :meth:`seed_everything` applies it to random, numpy and torch.
        options: Extra study options from the CLI or the caller (``--option key=value``).
    """

    def __init__(
        self,
        out_dir: Path,
        scale: Scale = "quick",
        seed: int = 0,
        options: dict[str, Any] | None = None,
        show_progress: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.scale = scale
        self.seed = seed
        self.options = dict(options or {})
        self.show_progress = show_progress

    @property
    def quick(self) -> bool:
        return self.scale == "quick"

    def pick(self, quick: _T, full: _T) -> _T:
        """Return ``quick`` or ``full`` by the scale of this run."""
        return quick if self.quick else full

    def figure_path(self, name: str) -> Path:
        """Path for a figure file inside the study's folder (``name`` should end in .png)."""
        return self.out_dir / name

    def save_figure(self, fig: Any, name: str, *, dpi: int = 110) -> Path:
        """Lay out a matplotlib figure, save it as ``out_dir/name``, close it; return the path."""
        from fmlab._plotting import save_figure

        return save_figure(fig, self.figure_path(name), dpi=dpi)

    def progress(
        self, iterable: Iterable[_T], desc: str = "", total: int | None = None, leave: bool = False
    ) -> Iterator[_T]:
        """Wrap ``iterable`` in a progress bar (tqdm) unless progress is disabled."""
        if not self.show_progress:
            yield from iterable
            return
        from tqdm.auto import tqdm

        yield from tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True)

    def seed_everything(self, offset: int = 0) -> int:
        """Seed Python, numpy and (if imported) torch with ``seed + offset``; return that seed."""
        import sys

        import numpy as np

        seed = self.seed + offset
        random.seed(seed)
        np.random.seed(seed % 2**32)
        if "torch" in sys.modules:
            sys.modules["torch"].manual_seed(seed)
        return seed


class Study(ABC):
    """Base class of a study. Subclasses set the class attributes and implement :meth:`run`.

    Class attributes:
        name: Registry name, ``"<capability>.<short>"`` (e.g. ``"scaling.chinchilla"``).
        title: One-line title for the report.
        capability: The fmlab capability folder it exercises (``"scaling"``).
        paper: Paper citation with arXiv id.
        summary: Two or three sentences: what is reproduced and at which scale.
        requires: Importable modules needed (checked before running, named in the error).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    capability: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, ctx: StudyContext) -> StudyResult:
        """Run the study at ``ctx.scale`` and return its result.

        Runs inside a fresh temporary ``ctx.out_dir``; write figures there with
        :meth:`StudyContext.figure_path`. Must be deterministic given ``ctx.seed``.
        """


METRICS_FILE = "metrics.json"  # one per finished study: DIR/<study>/metrics.json


def load_results(out: str | Path) -> list[dict[str, Any]]:
    """Every finished study record under ``out`` (sorted by study name)."""
    import json

    records = []
    for path in sorted(Path(out).glob(f"*/{METRICS_FILE}")):
        if path.parent.name.startswith("."):  # a killed run's temporary or old copy, never a study
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable or not JSON (never unpickled)
            continue
        if isinstance(record, dict) and "study" in record:
            records.append(record)
    return records
