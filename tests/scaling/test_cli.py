"""``fmlab scaling``: fit / predict / plan end to end on small files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmlab._paths import shared_dir
from fmlab.cli import main
from fmlab.scaling import ChinchillaLaw
from fmlab.testing import require_or_skip


@pytest.fixture()
def runs_csv(tmp_path):
    import pandas as pd

    n = np.repeat(np.geomspace(5e7, 1e10, 5), 5)
    d = np.tile(np.geomspace(1e9, 5e11, 5), 5)
    truth = ChinchillaLaw().set_fitted_params(
        {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37})
    y = truth.predict(np.column_stack([n, d]))
    path = tmp_path / "runs.csv"
    pd.DataFrame({"N": n, "D": d, "final_loss": y}).to_csv(path, index=False)
    return path


def test_fit_predict_plan(runs_csv, tmp_path, capsys):
    model = tmp_path / "law.json"
    rc = main(["scaling", "fit", "chinchilla", str(runs_csv), "--col", "n_params=N", "--col",
               "n_tokens=D", "--target", "final_loss", "--n-starts", "200", "--bootstrap", "20",
               "--json", "--save", str(model), "--plot", str(tmp_path / "fit.png")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["alpha"] == pytest.approx(0.34, rel=1e-3)
    assert set(out["intervals"]) == {"E", "A", "alpha", "B", "beta"}
    assert (tmp_path / "fit.png").stat().st_size > 1000
    assert main(["scaling", "predict", str(model), "--set", "n_params=7e9", "--set",
                 "n_tokens=1.4e12", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred[0]["prediction"] > 1.8
    assert main(["scaling", "plan", "compute-optimal", str(model), "--flops", "1e21",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["tokens_per_param"] > 1


def test_plan_pools_preset(tmp_path, capsys):
    rc = main(["scaling", "plan", "pools", "--preset", "tmars-utility", "--pools",
               "tmars_top0to10p,tmars_top10to20p,tmars_top20to30p,tmars_top30to40p",
               "--budgets", "32e6,5e9", "--json", "--plot", str(tmp_path / "p.png")])
    if shared_dir("data-filtering-scaling", "parameter_values.jsonl") is None:
        require_or_skip("T-MARS parameter file missing: set FMLAB_SHARED to the reference-data folder")
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["best"] == "top1" and rows[1]["best"] != "top1"


def test_errors_exit_1_with_a_message(runs_csv, capsys):
    assert main(["scaling", "fit", "chinchilla", str(runs_csv)]) == 1
    err = capsys.readouterr().err
    assert "Target column 'loss' not in" in err
    assert main(["scaling", "fit", "chinchila", str(runs_csv)]) == 1
    assert "Did you mean: chinchilla" in capsys.readouterr().err
    assert main(["scaling", "fit", "chinchilla", str(runs_csv), "--target", "final_loss"]) == 1
    assert "--col n_params=N" in capsys.readouterr().err
