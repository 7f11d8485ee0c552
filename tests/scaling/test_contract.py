"""scikit-learn's estimator checks that apply to laws with a fixed, positive feature schema.

sklearn's generic suite (``check_estimator``) feeds random matrices with arbitrary numbers of
columns, zeros and negative values; a scaling law has named positive features (N, D, bits), so
those data checks fail by design (16 of 60 pass for ChinchillaLaw, every failure is a schema or
domain rejection). The structural checks below are the contract part and run for every law.
"""

from __future__ import annotations

import pytest
from sklearn.utils import estimator_checks as ec

from fmlab.scaling import create_law, list_laws

CHECKS = [
    ec.check_no_attributes_set_in_init,
    ec.check_parameters_default_constructible,
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_estimator_cloneable,
    ec.check_estimator_repr,
    ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_mixin_order,
]


@pytest.mark.parametrize("law_name", list_laws())
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_sklearn_structural_checks(law_name, check):
    law = create_law(law_name)
    check(type(law).__name__, law)
