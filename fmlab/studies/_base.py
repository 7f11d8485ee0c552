"""What a study is: a small-scale reproduction of one paper's headline claim, which can fail.

How to write a study (the pattern every study follows; see ``fmlab/sam/_study.py`` for a full one):

1. **Declare the options.** ``options = (Option("epochs", int, quick=3, full=20, low=1,
   help="training epochs per run"), ...)``. The runner validates what the user passes before
   the run (unknown names are a usage error with close matches), fills in the default of the
   scale, and hands the result to :meth:`Study.run` as ``ctx.options``; read them with
   ``ctx.option("epochs")``, never ``ctx.options.get(key, default)``. A finished result is
   reused only when scale, seed and every option with ``affects_result=True`` are the same.
   ``fmlab reproduce --describe NAME`` lists them.
2. **Measure, then judge.** ``run`` produces *measured rows* (a DataFrame or a list of dicts:
   one row per run, seed, shift, ...) and passes them to **claim functions**: pure functions of
   the rows (no I/O, no randomness, no globals) decorated with :func:`claim_check`, which return
   a :class:`Verdict` (what was measured, whether it holds, the value and its interval). A claim
   that cannot be computed (no rows, a failed fit) raises :class:`NotComputed`; the decorator
   turns that into a claim that does not hold, with the reason shown. Never drop a claim or
   fall back silently.
3. **Say what kind of claim it is.** ``kind="empirical"`` (the default) for a finding from
   measured runs, which could come out either way; ``kind="consistency"`` for a check that the
   implementation agrees with a reference number or follows from a formula (reproducing
   released numbers, recovering simulated parameters). The report and the header count only
   empirical claims as findings.
4. **Use seeds and intervals.** Repeat runs over seeds (``ctx.seed_everything(offset)``) and
   report effects with :func:`mean_interval` or :func:`bootstrap_interval`; criteria compare an
   interval, not a single draw, with what noise would give.
5. **Test that each claim can fail.** In ``tests/<capability>/``, call
   :func:`assert_claim_can_fail` with rows showing a clear effect (it must hold) and rows of
   pure noise (it must not); it also checks that the function is pure. Tests need no model and
   take milliseconds.
6. **Captions describe what is plotted**, not the conclusion: the conclusion is a claim.

:meth:`Study.run` receives a :class:`StudyContext` (output folder, scale, seed, options,
progress bars) and returns a :class:`StudyResult` (metrics, claims, figure files). The runner
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

from fmlab.studies._options import Option, resolve_options

__all__ = ["CONSISTENCY", "EMPIRICAL", "Claim", "ClaimKind", "Scale", "Study", "StudyContext",
           "StudyResult"]

Scale = Literal["quick", "full"]
ClaimKind = Literal["empirical", "consistency"]
EMPIRICAL: ClaimKind = "empirical"
CONSISTENCY: ClaimKind = "consistency"
CLAIM_KINDS: tuple[ClaimKind, ...] = (EMPIRICAL, CONSISTENCY)
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
        kind: ``"empirical"`` (a finding from measured runs that could come out either way) or
            ``"consistency"`` (the implementation agrees with a reference or a formula). Only
            empirical claims count as findings in the report's header.
        interval: A confidence interval for ``value`` (e.g. over seeds), when there is one.
        error: Why the claim could not be computed (then it does not hold); empty otherwise.
    """

    claim: str
    measured: str
    holds: bool
    criterion: str = ""
    value: float | None = None
    reference: str = ""
    kind: ClaimKind = EMPIRICAL
    interval: tuple[float, float] | None = None
    error: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CLAIM_KINDS:
            raise ValueError(f"Invalid claim kind {self.kind!r}. Valid options are: "
                             f"{CLAIM_KINDS}.")
        object.__setattr__(self, "holds", bool(self.holds) and not self.error)
        if self.value is not None:
            object.__setattr__(self, "value", float(self.value))
        if self.interval is not None:
            lo, hi = self.interval
            object.__setattr__(self, "interval", (float(lo), float(hi)))

    @classmethod
    def not_computed(cls, claim: str, reason: str, *, kind: ClaimKind = EMPIRICAL,
                     criterion: str = "", reference: str = "") -> Claim:
        """A claim that could not be computed: it does not hold, and says why."""
        return cls(claim=claim, measured=f"not computed: {reason}", holds=False,
                   criterion=criterion, reference=reference, kind=kind, error=reason or "unknown")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["value"] is not None and not math.isfinite(d["value"]):
            d["value"] = None
        if d["interval"] is not None:
            d["interval"] = [x if math.isfinite(x) else None for x in d["interval"]]
        d["holds"] = bool(d["holds"])
        return d


@dataclass
class StudyResult:
    """What :meth:`Study.run` returns.

    Args:
        metrics: JSON-serialisable numbers and tables (nested dicts and lists). A study that
            runs in part (a task whose data or model is not installed) names the parts it
            skipped in ``metrics["skipped_tasks"]`` (name -> reason): the runner's status line
            then says the run is partial, and each claim should name them too.
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
        options: Every declared option's value for this run (the study's ``options`` schema
            resolved against what the user passed, ``--option key=value``).
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

    def option(self, name: str) -> Any:
        """The value of the declared option ``name`` (a ``KeyError`` for an undeclared one)."""
        try:
            return self.options[name]
        except KeyError:
            raise KeyError(f"The study reads option {name!r}, which it does not declare in its "
                           f"'options'. Declared: {sorted(self.options)}.") from None

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
        options: The declared options (:class:`~fmlab.studies.Option`), validated before the run.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    capability: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()

    @classmethod
    def resolve_options(cls, given: dict[str, Any] | None, scale: Scale = "quick"
                        ) -> dict[str, Any]:
        """Every declared option's value at ``scale``, with ``given`` checked (see
        :func:`fmlab.studies.resolve_options`)."""
        return resolve_options(cls.options, given, scale, owner=f"study {cls.name}")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, title, paper, summary and the option schema, for ``--describe``."""
        return {"study": cls.name, "title": cls.title, "capability": cls.capability,
                "paper": cls.paper, "summary": cls.summary, "requires": list(cls.requires),
                "options": [o.to_dict() for o in cls.options]}

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
