from __future__ import annotations

import numpy as np
import pytest

from fmlab._validation import (
    check_array,
    check_bool,
    check_int,
    check_option,
    check_probabilities,
    check_real,
)

CASES = [
    (
        check_real,
        dict(value=-0.1, name="rho", owner="SAM", low=0),
        ValueError,
        r"^The 'rho' parameter of SAM must be a float in the range \(0, inf\)\. Got -0\.1 instead\.$",
    ),
    (check_real, dict(value="a", name="rho", low=0), TypeError, r"Got 'a' of type str instead"),
    (check_real, dict(value=float("nan"), name="x"), ValueError, r"Got nan instead"),
    (check_real, dict(value=True, name="x"), TypeError, r"of type bool"),
    (
        check_real,
        dict(value=1.0, name="p", low=0, high=1, closed="left"),
        ValueError,
        r"range \[0, 1\)",
    ),
    (check_int, dict(value=1.5, name="n_starts", low=1), TypeError, r"must be an int"),
    (check_int, dict(value=0, name="n_starts", low=1), ValueError, r"range \[1, inf\]\. Got 0"),
    (check_bool, dict(value=1, name="adaptive"), TypeError, r"must be a bool"),
    (
        check_option,
        dict(value="avg", name="pooling", options=("mean", "last"), owner="EchoEncoder"),
        ValueError,
        r"^Invalid pooling 'avg' for EchoEncoder\. Valid options are: \('mean', 'last'\)\.$",
    ),
    (check_array, dict(value=[[1.0, np.nan]], name="X"), ValueError, r"1 NaN or inf"),
    (check_array, dict(value=[1.0, 2.0], name="X", ndim=2), ValueError, r"2 dimension"),
    (
        check_probabilities,
        dict(value=[[0.5, 0.6]], name="id_probs"),
        ValueError,
        r"sum to 1.*1\.1.*not logits",
    ),
    (check_probabilities, dict(value=[[-0.5, 1.5]], name="id_probs"), ValueError, r"in \[0, 1\]"),
]


@pytest.mark.parametrize(("func", "kwargs", "error", "pattern"), CASES)
def test_bad_values_give_clear_messages(func, kwargs, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        func(**kwargs)


def test_good_values_pass_through() -> None:
    assert check_real(0.05, "rho", low=0) == 0.05
    assert check_int(np.int64(3), "n", low=1) == 3
    assert check_option("mean", "pooling", ("mean", "last")) == "mean"
    probs = check_probabilities([[0.2, 0.8], [1.0, 0.0]], "p")
    assert probs.shape == (2, 2)


def test_constraints_check_python_values_and_command_line_strings_alike() -> None:
    import argparse
    import math

    from fmlab._validation import InputFile, Int, OutputFile, Real, check_params

    params = {"lr": Real(0), "steps": Int(1), "p": Real(0, 1, closed="both")}
    assert check_params({"lr": 0.1, "steps": 3, "p": 1.0, "other": "x"}, params) == {
        "lr": 0.1, "steps": 3, "p": 1.0, "other": "x"}
    for bad in ({"lr": math.inf}, {"lr": 0.0}, {"steps": 0}, {"p": math.nan}):
        with pytest.raises(ValueError, match="parameter of AutoFT must be"):
            check_params(bad, params, owner="AutoFT")
    assert params["steps"]("1e5") == 100_000 and params["lr"]("3e-4") == 3e-4
    for c, text in ((params["lr"], "inf"), (params["steps"], "2.5"), (params["p"], "nan")):
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            c(text)
        assert text in c.invalid_values() or c is params["steps"]
    assert Real(0).list(unique=True)("1e21,1e23") == [1e21, 1e23]
    with pytest.raises(argparse.ArgumentTypeError, match="repeated"):
        Int(0).list(unique=True)("0,0")
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        InputFile(".csv")("/nonexistent/runs.csv")
    with pytest.raises(argparse.ArgumentTypeError, match="ending in .json"):
        OutputFile(".json")("law.txt")
