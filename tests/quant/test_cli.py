"""``fmlab quant`` / ``fmlab sweep`` commands and the study registration."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd

from fmlab.cli import main


def test_formats_json(capsys) -> None:
    assert main(["quant", "formats", "fp8*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"fp8_e4m3", "fp8_e5m2"}
    assert {r["max"] for r in rows if r["name"] == "fp8_e4m3"} == {448.0}


def test_bad_input_is_one_line_error(capsys, tmp_path) -> None:
    assert main(["quant", "ptq", "--model", str(tmp_path / "missing.pt"), "--bits", "int17"]) == 2
    assert "argument --bits" in capsys.readouterr().err
    assert main(["quant", "ptq", "--model", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sweep", "create", "--storage", "nowhere.db"]) == 1
    assert "database URL" in capsys.readouterr().err


def test_sweep_cli_end_to_end(tmp_path, capsys, token_data) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    args = ["--storage", url, "--d-model", "32", "--n-layers", "1", "--n-heads", "2",
            "--tokens", "1024", "--train-bits", "16", "--post-bits", "3",
            "--ptq-method", "rtn"]
    assert main(["sweep", "create", *args]) == 0
    assert main(["sweep", "work", "--storage", url, "--heartbeat", "1"]) == 0
    out = tmp_path / "runs.csv"
    assert main(["sweep", "table", "--storage", url, "--out", str(out), "--rows", "trained"]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 1 and frame.post_bits.map(math.isinf).all()
    assert {"n_params", "n_tokens", "w_bits", "a_bits", "kv_bits", "post_bits", "loss"} <= set(
        frame.columns)


def test_study_registered_and_cheap() -> None:
    code = ("import sys; from fmlab.studies._catalog import STUDIES; "
            "cls = STUDIES.get('quant.precision_sweep'); assert cls.capability == 'quant'; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_then_gptq_cli(tmp_path, capsys, token_data) -> None:
    """``quant train --save`` then ``quant ptq`` with both GPTQ variants; ``sweep run --workers``."""
    ckpt = tmp_path / "lm.safetensors"
    assert main(["quant", "train", "--d-model", "32", "--n-layers", "1", "--n-heads", "2",
                 "--tokens", "20000", "--save", str(ckpt), "--json"]) == 0
    capsys.readouterr()
    losses = {}
    for flag in ("--true-sequential", "--no-true-sequential"):
        assert main(["quant", "ptq", "--model", str(ckpt), "--bits", "3", flag,
                     "--eval-tokens", "2048", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["method"] == "gptq" and out["layers"] == 4
        losses[flag] = out["loss_after"]
    assert losses["--true-sequential"] != losses["--no-true-sequential"]
    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert main(["sweep", "run", "--storage", url, "--workers", "2", "--d-model", "32",
                 "--n-layers", "1", "--n-heads", "2", "--tokens", "1024,2048",
                 "--train-bits", "16", "--post-bits", "3", "--ptq-method", "rtn", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4  # 2 runs, each with a P_post row
