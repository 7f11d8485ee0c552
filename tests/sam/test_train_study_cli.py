"""The training loop, the two studies at smoke size, and ``fmlab sam``."""

from __future__ import annotations

import json

import pytest
import torch

from fmlab.cli import main
from fmlab.sam import SmallCNN, train_classifier
from fmlab.testing import require_or_skip


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) + y[:, None, None, None].float()
    return x, y


@pytest.mark.parametrize(("method", "kwargs"), [
    ("sgd", {}), ("sam", {}), ("logit", {}), ("jacobian", {}),
    ("sam", {"scope": "last"}), ("sam", {"adaptive": True, "rho": 1.0}),
    ("sgd", {"weight_penalty": 1e-2, "feature_penalty": 1e-2}),
])
def test_train_classifier_runs_every_method(method, kwargs):
    x, y = _data()
    noisy = y.clone()
    noisy[:8] = (noisy[:8] + 1) % 3
    torch.manual_seed(0)
    model = SmallCNN(n_classes=3, width=4, hidden=8)
    res = train_classifier(model, x, noisy, x, y, method=method, epochs=2, batch_size=16,
                           lr=0.05, y_true=y, **kwargs)
    assert len(res.history) == 2 and 1 <= res.best_epoch <= 2
    assert 0.0 <= res.final_test_acc <= res.best_test_acc <= 1.0
    assert {"clean_fit", "noisy_fit", "clean_weight", "noisy_weight"} <= set(res.history[0])
    assert res.step_time > 0
    assert not model.head._forward_pre_hooks  # the penalty hook is removed


@pytest.mark.parametrize(("kwargs", "error", "pattern"), [
    ({"method": "asam"}, ValueError, r"Invalid method 'asam' for train_classifier"),
    ({"scope": "head"}, ValueError, r"Invalid scope 'head'"),
    ({"epochs": 0}, ValueError, r"'epochs' parameter of train_classifier must be an int"),
    ({"rho": -1.0}, ValueError, r"'rho' parameter of train_classifier"),
])
def test_train_classifier_errors(kwargs, error, pattern):
    x, y = _data(8)
    with pytest.raises(error, match=pattern):
        train_classifier(SmallCNN(n_classes=3, width=2, hidden=4), x, y, x, y, **kwargs)


def test_cli_variants_and_dry_run(capsys):
    assert main(["sam", "variants", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"sgd", "sam", "logit", "jacobian"}
    assert main(["sam", "train", "--method", "jacobian", "--dry-run", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert cfg["method"] == "jacobian" and cfg["rho"] == 0.05


def test_cli_bad_value_is_a_one_line_error(capsys):
    assert main(["sam", "train", "--rho", "-1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmlab sam train: error: argument --rho: must be a float in the range "
                          "[0, inf); got '-1'") and err.count("\n") == 1


def _need_data() -> None:
    from fmlab.data import dataset_info

    for name in ("mnist", "fashion-mnist"):
        if not dataset_info(name).available:
            require_or_skip(f"{name} is not installed; run: bash scripts/setup.sh")


def test_label_noise_study_smoke(tmp_path):
    _need_data()
    from fmlab.studies import run_study

    opts = {"n_train": 100, "n_val": 40, "n_test": 100, "epochs": 2, "noise": [0.0, 0.5],
            "batch_size": 50, "hidden": 8, "seeds": 2, "methods": ["sgd", "sam", "penalty"]}
    rec = run_study("sam.label_noise", tmp_path / "a", options=opts, show_progress=False)
    assert rec["status"] == "ok" and len(rec["claims"]) == 5
    for fig in ("accuracy_curves.png", "best_accuracy.png", "example_weighting.png"):
        assert (tmp_path / "a" / "sam.label_noise" / fig).is_file()
    # the same seed gives the same numbers (timings aside), run after run
    again = run_study("sam.label_noise", tmp_path / "b", options=opts, show_progress=False)

    def numbers(record):
        return [(r["noise"], r["method"], r["seed"], r["stopped_test_acc"], r["final_test_acc"],
                 [h["train_loss"] for h in r["history"]]) for r in record["metrics"]["runs"]]

    assert numbers(rec) == numbers(again)
    assert all(r["stopped_epoch"] >= 1 for r in rec["metrics"]["runs"])


def test_feature_balance_study_smoke(tmp_path):
    _need_data()
    from fmlab.studies import run_study

    rec = run_study("sam.feature_balance", tmp_path, options={
        "n_train": 100, "n_probe": 100, "epochs": 1, "seeds": 2, "toy_epochs": 2},
        show_progress=False)
    assert rec["status"] == "ok" and len(rec["claims"]) >= 5
    assert (tmp_path / "sam.feature_balance" / "probe_accuracy.png").is_file()


def test_unknown_study_option_is_rejected(tmp_path):
    from fmlab.exceptions import UsageError
    from fmlab.studies import run_study

    with pytest.raises(UsageError, match=r"Unknown option 'epoch' .*Did you mean: epochs"):
        run_study("sam.label_noise", tmp_path, options={"epoch": 3})
