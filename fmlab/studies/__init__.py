"""Studies: small-scale reproductions of each paper's headline claim, and the HTML report.

Example:
    >>> from fmlab.studies import list_studies
    >>> isinstance(list_studies(), list)
    True
"""

from __future__ import annotations

from fmlab.studies._base import Claim, Scale, Study, StudyContext, StudyResult
from fmlab.studies._catalog import STUDIES
from fmlab.studies._report import render_report
from fmlab.studies._runner import (
    ReproduceResult,
    get_study,
    list_studies,
    load_results,
    reproduce,
    run_study,
)

__all__ = [
    "STUDIES",
    "Claim",
    "ReproduceResult",
    "Scale",
    "Study",
    "StudyContext",
    "StudyResult",
    "get_study",
    "list_studies",
    "load_results",
    "render_report",
    "reproduce",
    "run_study",
]
