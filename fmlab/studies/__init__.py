"""Studies: small-scale reproductions of each paper's headline claim, and the HTML report.

How to write one (declared options, claim kinds, claim functions that can fail and their tests):
see the docstring of ``fmlab.studies._base``.

Example:
    >>> from fmlab.studies import list_studies
    >>> isinstance(list_studies(), list)
    True
"""

from __future__ import annotations

from fmlab.studies._base import (
    CONSISTENCY,
    EMPIRICAL,
    Claim,
    ClaimKind,
    Scale,
    Study,
    StudyContext,
    StudyResult,
)
from fmlab.studies._catalog import STUDIES
from fmlab.studies._claims import (
    Interval,
    NotComputed,
    Verdict,
    assert_claim_can_fail,
    bootstrap_interval,
    claim_check,
    mean_interval,
)
from fmlab.studies._options import Option, resolve_options
from fmlab.studies._report import count_claims, render_report
from fmlab.studies._runner import (
    ReproduceResult,
    get_study,
    list_studies,
    load_results,
    reproduce,
    run_study,
)

__all__ = [
    "CONSISTENCY",
    "EMPIRICAL",
    "STUDIES",
    "Claim",
    "ClaimKind",
    "Interval",
    "NotComputed",
    "Option",
    "ReproduceResult",
    "Scale",
    "Study",
    "StudyContext",
    "StudyResult",
    "Verdict",
    "assert_claim_can_fail",
    "bootstrap_interval",
    "claim_check",
    "count_claims",
    "get_study",
    "list_studies",
    "load_results",
    "mean_interval",
    "render_report",
    "reproduce",
    "resolve_options",
    "run_study",
]
