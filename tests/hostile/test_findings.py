"""One regression test per finding of issue #13 (hostile input), each feeding the exact bad input
the report used. Ids (S = security, W = silent wrong answer, D = deep message, E = slow or wrong
exit) are the ones the closing note lists.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from fmlab.cli import main

# -- helpers ---------------------------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines, "no message"
    return lines[0]


def _runs_csv(tmp_path: Path, n: int = 12, loss: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    N, D = rng.uniform(1e7, 1e9, n), rng.uniform(1e9, 1e11, n)
    y = loss if loss is not None else 1.7 + 400 / N**0.34 + 410 / D**0.28
    p = tmp_path / "runs.csv"
    p.write_text("n_params,n_tokens,loss\n" + "".join(
        f"{a},{b},{c}\n" for a, b, c in zip(N, D, y, strict=True)))
    return p


def _law_json(tmp_path: Path, **override) -> Path:
    params = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28, **override}
    params = {k: v for k, v in params.items() if v is not ...}
    p = tmp_path / "law.json"
    p.write_text(json.dumps({"law": "chinchilla", "init": {}, "params": params}))
    return p


def _ood_dir(tmp_path: Path, ood_labels: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "ens"
    d.mkdir(exist_ok=True)
    p = rng.dirichlet(np.ones(3), size=(4, 30)).astype(np.float32)
    np.save(d / "id_probs.npy", p)
    np.save(d / "ood_probs.npy", p[:, ::-1])
    np.save(d / "id_labels.npy", rng.integers(0, 3, 30))
    if ood_labels is not None:
        np.save(d / "ood_labels.npy", ood_labels)
    return d


# -- S: security (see also test_no_pickle.py, which plants pickles in every file argument) ---------


def test_S1_quant_train_save_refuses_a_pickle_suffix(capsys, tmp_path) -> None:
    code, err = _run(capsys, "quant", "train", "--save", str(tmp_path / "lm.pt"))
    assert code == 2 and "--save" in err and ".safetensors" in err


def test_S2_plain_pickle_renamed_pt_is_refused_before_unpickling(capsys, tmp_path) -> None:
    import pickle

    f = tmp_path / "model.pt"
    f.write_bytes(pickle.dumps({"config": 1}))
    code, err = _run(capsys, "quant", "ptq", "--model", str(f))
    assert code == 1 and "pickled" in err and str(f) in err


# -- W: silent wrong answers ------------------------------------------------------------------------


@pytest.mark.parametrize("argv,flag", [
    (["sam", "train", "--rho", "inf", "--dry-run"], "--rho"),  # W1
    (["sam", "train", "--momentum", "nan", "--dry-run"], "--momentum"),  # W3
    (["sam", "train", "--weight-decay=-5", "--dry-run"], "--weight-decay"),  # W3
    (["scaling", "fit", "chinchilla", "/dev/null", "--drop-highest=-3"], "--drop-highest"),  # W10
    (["quant", "ptq", "--model", "x.safetensors", "--eval-tokens", "0"], "--eval-tokens"),  # W11
    (["sweep", "create", "--storage", "sqlite:///s.db", "--seeds", "0,0"], "--seeds"),  # W12
    (["ood", "ensemble", "--backbone", "pixels", "--dataset", "digits", "--ood", "rotate:9",
      "--out", "o", "--n-models=-2"], "--n-models"),  # D8
    (["quant", "train", "--bits", "abc"], "--bits"),  # D9
    (["quant", "train", "--bits", "4:4"], "--bits"),  # D9
], ids=["W1-rho-inf", "W3-momentum-nan", "W3-weight-decay-neg", "W10-drop-highest",
        "W11-eval-tokens-0", "W12-repeated-seeds", "D8-n-models", "D9-bits-abc", "D9-bits-4:4"])
def test_bad_numbers_exit_2_naming_the_flag(argv, flag, capsys) -> None:
    code, err = _run(capsys, *argv)
    assert code == 2, err
    assert flag in _one_line(err) and err.count("\n") == 1


def test_W1_W2_W3_api_refuses_non_finite_numbers() -> None:
    import torch

    from fmlab._validation import check_real
    from fmlab.sam import SAM, SmallCNN, train_classifier

    for v in (math.inf, -math.inf):
        with pytest.raises(ValueError, match="must be a float in the range"):
            check_real(v, "x")  # W2: finite unless allow_inf
    assert check_real(math.inf, "bits", low=0, allow_inf=True) == math.inf
    with pytest.raises(ValueError, match="'rho'"):
        SAM([torch.zeros(2, requires_grad=True)], torch.optim.SGD, rho=math.inf, lr=0.1)
    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    for kw, name in (({"momentum": math.nan}, "momentum"), ({"weight_decay": -5.0},
                                                             "weight_decay")):
        with pytest.raises(ValueError, match=name):
            train_classifier(SmallCNN(), x, y, x, y, epochs=1, **kw)


@pytest.mark.parametrize("flag,value", [("--ood", "rotate:abc"), ("--ood", "corrupt:fog:9"),
                                        ("--diversity", "nope"), ("--backbone", "nope"),
                                        ("--dataset", "nope")])
def test_W3_ensemble_dry_run_checks_names_and_specs(flag, value, capsys, tmp_path) -> None:
    args = {"--backbone": "pixels", "--dataset": "mnist", "--ood": "rotate:10",
            "--diversity": "head_init", flag: value}
    code, err = _run(capsys, "ood", "ensemble", *(x for kv in args.items() for x in kv),
                     "--out", str(tmp_path / "e"), "--dry-run")
    assert code == 2 and flag in _one_line(err)


def test_W3_dry_run_accepts_valid_values(capsys) -> None:
    assert main(["sam", "train", "--momentum", "0", "--weight-decay", "0", "--dry-run"]) == 0


def test_W4_fake_quantize_refuses_inf() -> None:
    import torch

    from fmlab.quant import fake_quantize, quantize_values

    x = torch.tensor([1.0, float("inf"), 0.5])
    for fn in (fake_quantize, quantize_values):
        with pytest.raises(ValueError, match="1 NaN or inf"):
            fn(x, "int8")
    assert torch.isfinite(fake_quantize(torch.tensor([1.0, 0.5]), "int8")).all()


@pytest.mark.parametrize("labels,pattern", [
    (np.full(30, 7), r"class indices in \[0, 2\]"),  # out of range
    (np.array([1]), r"one label per OOD example.*30 examples.*has 1"),  # 1 element, broadcast
], ids=["W5-out-of-range", "W5-one-element"])
def test_W5_ood_labels_are_validated(labels, pattern, capsys, tmp_path) -> None:
    import re

    d = _ood_dir(tmp_path)
    f = tmp_path / "ood_labels.npy"
    np.save(f, labels)
    code, err = _run(capsys, "ood", "predict", "--from", str(d), "--ood-labels", str(f),
                     "--method", "ac")
    assert code == 1 and re.search(pattern, err), err
    assert str(f) in err


def test_W6_atc_warns_on_one_hot_confidences() -> None:
    from fmlab.exceptions import ReliabilityWarning
    from fmlab.ood import create_estimator

    rng = np.random.default_rng(0)
    one_hot = np.eye(3)[rng.integers(0, 3, (4, 50))]
    with pytest.warns(ReliabilityWarning, match="too little spread"):
        create_estimator("atc").fit(one_hot, rng.integers(0, 3, 50), one_hot)
    soft = rng.dirichlet(np.ones(3), (4, 50))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReliabilityWarning)
        create_estimator("atc").fit(soft, rng.integers(0, 3, 50), soft)


@pytest.mark.parametrize("override,pattern", [
    ({"A": -5}, r"outside the domain"),
    ({"E": float("nan")}, r"parameter 'E' must be a finite number"),
    ({"alpha": ...}, r"parameter 'alpha' is missing; a ChinchillaLaw needs E, A, alpha"),  # D4
], ids=["W7-A-negative", "W7-E-nan", "D4-missing-alpha"])
def test_W7_D4_law_files_are_validated(override, pattern, capsys, tmp_path) -> None:
    import re

    law = _law_json(tmp_path, **override)
    code, err = _run(capsys, "scaling", "predict", str(law), "--set", "n_params=1e9",
                     "--set", "n_tokens=1e10")
    assert code == 1 and re.search(pattern, err) and str(law) in err, err


def test_W8_fit_to_constant_loss_warns(tmp_path) -> None:
    from fmlab.exceptions import ReliabilityWarning
    from fmlab.scaling import ChinchillaLaw, read_runs

    frame = read_runs(_runs_csv(tmp_path, 20, loss=np.full(20, 3.0)))
    with pytest.warns(ReliabilityWarning, match="target is constant.*R² is undefined"):
        ChinchillaLaw(n_starts=20).fit(frame[["n_params", "n_tokens"]], frame["loss"])
    frame["n_tokens"] = 1e10
    with pytest.warns(ReliabilityWarning, match="column 'n_tokens' has no spread"):
        ChinchillaLaw(n_starts=20).fit(frame[["n_params", "n_tokens"]],
                                      1.7 + 400 / frame["n_params"] ** 0.34)


def test_W9_duplicate_csv_headers_are_refused(capsys, tmp_path) -> None:
    f = tmp_path / "dup.csv"
    f.write_text("n_params,n_tokens,loss,loss\n1e8,1e9,3.0,2.0\n2e8,2e9,2.9,1.9\n")
    code, err = _run(capsys, "scaling", "fit", "chinchilla", str(f))
    assert code == 1 and "['loss'] more than once" in err and str(f) in err


def test_W11_eval_tokens_below_seq_len(capsys, tmp_path) -> None:
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"")
    code, err = _run(capsys, "quant", "ptq", "--model", str(f), "--eval-tokens", "10",
                     "--seq-len", "64")
    assert code == 2 and "--eval-tokens 10 is below --seq-len 64" in err


def test_W11_evaluate_loss_refuses_max_tokens_below_seq_len() -> None:
    import torch

    from fmlab.quant import TinyLM, evaluate_loss

    with pytest.raises(ValueError, match="'max_tokens'.*range \\[64, inf\\]"):
        evaluate_loss(TinyLM(d_model=16, n_heads=2, n_layers=1), None, seq_len=64,
                      max_tokens=0)
    del torch


def test_W12_sweep_spec_refuses_repeated_grid_values() -> None:
    import optuna  # noqa: F401  (fmlab[hpo], installed by setup: fail, never skip, without it)

    from fmlab.quant import SweepSpec

    with pytest.raises(ValueError, match="'seeds' axis of SweepSpec repeats 0"):
        SweepSpec(seeds=(0, 0))
    with pytest.raises(ValueError, match="names one precision twice"):
        SweepSpec(train_bits=(16, None))


def test_W13_feature_cache_corruption_rebuilds(tmp_path, monkeypatch) -> None:
    from fmlab._cache import CacheRebuildWarning
    from fmlab.ood import extract_features

    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    images = np.random.default_rng(0).integers(0, 255, (5, 8, 8), dtype=np.uint8)
    a = extract_features("pixels", images, resolution=12)
    (f,) = (tmp_path / "features" / "pixels").glob("*/features.npy")
    raw = bytearray(f.read_bytes())
    raw[-8:] = b"\x00\x00\x80\x7f" * 2  # overwrite the last values with inf, same size
    f.write_bytes(bytes(raw))
    os.utime(f, ns=(1, 1))
    with pytest.warns(CacheRebuildWarning, match="fails its SHA-256 check"):
        b = extract_features("pixels", images, resolution=12)
    np.testing.assert_array_equal(a, b)


def test_W13_token_cache_is_under_the_manifest(tmp_path, monkeypatch) -> None:
    import tokenizers  # noqa: F401  (fmlab[hf], installed by setup)

    from fmlab._cache import MANIFEST, CacheRebuildWarning
    from fmlab.data import dataset_info
    from fmlab.quant import load_token_data
    from fmlab.testing import require_or_skip

    info = dataset_info("lee-background")
    if not info.available:
        require_or_skip(f"lee-background text missing: {info.install}")
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    data = load_token_data(["lee-background"], vocab_size=300)
    (folder,) = [d for d in (tmp_path / "quant" / "tokens").iterdir()
                 if not d.name.startswith(".")]
    assert (folder / MANIFEST).is_file()
    f = folder / "val.npy"
    raw = bytearray(f.read_bytes())
    raw[-2:] = b"\xff\xff"
    f.write_bytes(bytes(raw))
    with pytest.warns(CacheRebuildWarning):
        again = load_token_data(["lee-background"], vocab_size=300)
    np.testing.assert_array_equal(data.val, again.val)


def test_W14_stale_publish_folders_are_ignored_and_cleaned(tmp_path, capsys) -> None:
    from fmlab.studies import load_results

    good = {"study": "scaling.chinchilla", "title": "t", "claims": []}
    for d in ("scaling.chinchilla", ".scaling.chinchilla.abcd.tmp", ".scaling.chinchilla.old"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "metrics.json").write_text(json.dumps(good))
    assert [r["study"] for r in load_results(tmp_path)] == ["scaling.chinchilla"]
    assert main(["report", "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text()
    assert html.count("<section class='study") == 1

    from fmlab._io import clean_stale, file_lock

    with file_lock(tmp_path / "scaling.chinchilla"):
        removed = clean_stale(tmp_path / "scaling.chinchilla")
    assert len(removed) == 2 and not list(tmp_path.glob(".scaling.chinchilla.*tmp"))
    (tmp_path / ".report.html.x1y2.tmp").write_text("half a report")  # a killed render
    assert main(["report", "--out", str(tmp_path)]) == 0
    assert not list(tmp_path.glob(".report.html.*.tmp"))


def test_W15_report_of_a_folder_without_results_is_an_error(capsys, tmp_path) -> None:
    code, err = _run(capsys, "report", "--out", str(tmp_path / "typo"))
    assert code == 1 and "No results folder" in err
    (tmp_path / "empty").mkdir()
    code, err = _run(capsys, "report", "--out", str(tmp_path / "empty"))
    assert code == 1 and "holds no study results" in err
    assert not (tmp_path / "empty" / "report.html").exists()


# -- D: messages from deep inside numpy/pandas/torch ---------------------------------------------


@pytest.mark.parametrize("name,content,pattern", [
    ("empty.csv", "", r"is empty; expected a header row"),
    ("strings.json", '["a", "b"]', r"holds a JSON list of str; expected records"),
    ("latin1.csv", "n_params,loss\n1e8,3.0 \xe9\n".encode("latin-1"), r"is not UTF-8 text"),
    ("bad.parquet", b"PAR1 garbage", r"cannot be parsed as Parquet"),
    ("text.csv", "n_params,n_tokens,loss\n1e8,1e9,abc\n", r"Column 'loss' of .* row 1 has 'abc'"),
], ids=["D1-empty-csv", "D2-json-strings", "D12-non-utf8", "D-corrupt-parquet",
        "D-text-in-target"])
def test_D_tables_name_the_file(name, content, pattern, capsys, tmp_path) -> None:
    import re

    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = _run(capsys, "scaling", "fit", "chinchilla", str(f))
    assert code == 1 and re.search(pattern, err) and str(f) in err, err


def test_D3_set_value_not_a_number(capsys, tmp_path) -> None:
    code, err = _run(capsys, "scaling", "predict", str(_law_json(tmp_path)), "--set",
                     "n_params=abc", "--set", "n_tokens=1e10")
    assert code == 2 and "--set n_params=abc" in _one_line(err)


@pytest.mark.parametrize("kind", ["object", "forged"], ids=["D5-object-npy", "D6-forged-npy"])
def test_D5_D6_npy_files_name_the_file(kind, capsys, tmp_path) -> None:
    f = tmp_path / "id_probs.npy"
    if kind == "object":
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        np.save(f, np.zeros((2, 3), np.float32))
        raw = f.read_bytes().replace(b"(2, 3)", b"(99999999, 99999999)".ljust(6))
        f.write_bytes(raw)
    code, err = _run(capsys, "ood", "predict", str(f), str(f), str(f))
    assert code == 1 and str(f) in err
    assert ("Python objects" in err) if kind == "object" else ("forged" in err)
    assert "allow_pickle" not in err and "TiB" not in err


def test_D7_method_comma(capsys, tmp_path) -> None:
    code, err = _run(capsys, "ood", "predict", "--from", str(_ood_dir(tmp_path)), "--method",
                     ",")
    assert code == 2 and "--method" in _one_line(err)


def test_D10_sam_base_optimizer_fails_early() -> None:
    import torch

    from fmlab.sam import SAM

    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(TypeError, match="a SAM optimizer itself"):
        SAM(p, SAM, lr=0.1)
    with pytest.raises(TypeError, match="cannot be torch.optim.LBFGS"):
        SAM(p, torch.optim.LBFGS)


def test_D11_sweep_table_unknown_study_creates_nothing(capsys, tmp_path) -> None:
    import optuna  # noqa: F401  (fmlab[hpo], installed by setup)
    db = tmp_path / "none.db"
    code, err = _run(capsys, "sweep", "table", "--storage", f"sqlite:///{db}")
    assert code == 1 and "does not exist" in err and not db.exists()
    assert main(["sweep", "create", "--storage", f"sqlite:///{db}", "--d-model", "32",
                 "--n-heads", "2", "--n-layers", "1", "--tokens", "1000"]) == 0
    capsys.readouterr()
    code, err = _run(capsys, "sweep", "table", "--storage", f"sqlite:///{db}", "--name", "nope")
    assert code == 1 and "nope" in err and "Record does not exist" not in err


def test_D12_embed_encode_non_utf8_names_the_file_before_loading(capsys, tmp_path,
                                                                 monkeypatch) -> None:
    import fmlab.cli._embed as embed

    monkeypatch.setattr(embed, "_build_encoder", lambda *a, **k: pytest.fail("model loaded"))
    f = tmp_path / "t.txt"
    f.write_bytes("caf\xe9\n".encode("latin-1"))
    code, err = _run(capsys, "embed", "encode", str(f), "--out", str(tmp_path / "e.npy"))
    assert code == 1 and "is not UTF-8 text" in err and str(f) in err


def test_D13_corrupt_safetensors_checkpoint(capsys, tmp_path) -> None:
    f = tmp_path / "lm.safetensors"
    f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    code, err = _run(capsys, "quant", "ptq", "--model", str(f))
    assert code == 1 and str(f) in err and "safetensors" in err


def test_D14_bad_yaml_in_option(capsys) -> None:
    code, err = _run(capsys, "reproduce", "scaling.chinchilla", "--option", "x=[1, 2",
                     "--out", "/tmp/fmlab-d14")
    assert code == 2 and "--option" in _one_line(err) and "YAML" in err


# -- E: slow or wrong exits ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["scaling", "quant", "sweep", "ood", "embed", "sam"])
def test_E2_no_action_exits_2(command, capsys) -> None:
    code, err = _run(capsys, command)
    assert code == 2 and "no action given" in err


def test_E3_debug_is_accepted_at_any_depth(capsys, tmp_path) -> None:
    assert main(["sam", "train", "--dry-run", "--debug"]) == 0
    assert main(["--debug", "sam", "variants"]) == 0
    assert main(["sam", "--debug", "variants"]) == 0
    with pytest.raises(FileNotFoundError):  # --debug after the sub-action: the traceback
        main(["report", "--out", "/nonexistent-fmlab-results", "--debug"])
    with pytest.raises(ValueError, match="Target column"):
        main(["scaling", "fit", "chinchilla", str(_runs_csv(tmp_path)), "--target", "nope",
              "--debug"])


def test_E4_embed_checks_arguments_before_loading_the_model(capsys, tmp_path,
                                                            monkeypatch) -> None:
    import fmlab.cli._embed as embed

    monkeypatch.setattr(embed, "_build_encoder", lambda *a, **k: pytest.fail("model loaded"))
    f = tmp_path / "t.txt"
    f.write_text("hello\n")
    for extra, flag in ((["--out", str(tmp_path / "e.txt")], "--out"),
                        (["--out", str(tmp_path / "e.npy"), "--template", "nope"], "--template"),
                        (["--out", str(tmp_path / "e.npy"), "--batch-size", "0"],
                         "--batch-size")):
        code, err = _run(capsys, "embed", "encode", str(f), *extra)
        assert code == 2 and flag in _one_line(err), err


def test_E1_unreachable_hub_fails_fast(monkeypatch) -> None:
    import time

    from fmlab import _paths

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    _paths._HUB_PROBE.clear()
    t = time.perf_counter()
    assert _paths.hf_local_only() is True
    assert time.perf_counter() - t < 3.5
    monkeypatch.setenv("HF_ENDPOINT", "https://fmlab-hub.invalid")  # never resolves
    t = time.perf_counter()
    assert _paths.hf_reachable(timeout=0.5) is False
    assert time.perf_counter() - t < 2.0
    _paths._HUB_PROBE.clear()


def test_E5_models_list_does_not_call_a_broken_cache_cached(tmp_path, monkeypatch) -> None:
    from fmlab.models import model_info

    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    d = tmp_path / "models" / "smollm2-135m-instruct"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"x")
    (d / "fmlab-manifest.json").write_text("{broken")
    assert model_info("smollm2-135m-instruct").cached is False


# -- X: found while fixing the above -------------------------------------------------------------


def test_X_api_refuses_bad_numbers_found_by_fuzzing() -> None:
    from fmlab.ood import extract_features
    from fmlab.quant import LMConfig

    images = np.zeros((3, 8, 8), np.uint8)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="'resolution' parameter of extract_features"):
            extract_features("pixels", images, resolution=bad, cache=False)
    with pytest.raises(ValueError, match="'rope_theta' parameter of LMConfig"):
        LMConfig(rope_theta=float("nan"))


def test_X_sam_train_refuses_more_examples_than_the_split_holds(capsys) -> None:
    from fmlab.data import dataset_info
    from fmlab.testing import require_or_skip

    info = dataset_info("mnist")
    if not info.available:
        require_or_skip(f"mnist missing: {info.install}")
    code, err = _run(capsys, "sam", "train", "--dataset", "mnist", "--n-train", "99999999")
    assert code == 2 and "--n-train 99999999 exceeds the 60,000 examples" in err
