"""Public surface of fmlab.ood: curated __all__, cheap import, study registration."""

from __future__ import annotations

import subprocess
import sys

import fmlab.ood


def test_all_names_resolve_and_nothing_private_leaks():
    for name in fmlab.ood.__all__:
        assert not name.startswith("_")
        assert getattr(fmlab.ood, name) is not None


def test_import_does_not_load_torch_or_matplotlib():
    # pandas is not on the list: scikit-learn (the estimator base) imports it itself
    code = ("import sys, fmlab.ood, fmlab.cli._ood, fmlab.ood._study; "
            "bad = [m for m in ('torch', 'matplotlib', 'transformers') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_study_registered():
    from fmlab.studies import get_study

    study = get_study("ood.agreement")
    assert study.capability == "ood" and "2404.01542" in study.paper


def test_docstring_examples_run():
    import doctest

    import fmlab.ood._estimators as estimators

    result = doctest.testmod(estimators)
    assert result.attempted >= 2 and result.failed == 0
