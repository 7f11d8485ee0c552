"""Ensemble builder: diversity sources, batched training, feature cache, files and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch  # noqa: E402 - a required dependency

from fmlab.cli import main
from fmlab.ood import build_ensemble, extract_features, list_backbones, train_heads
from fmlab.ood._ensemble import corrupt_text
from fmlab.ood._files import load_array, load_outputs, save_outputs


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 16)) * 1.5
    y = rng.integers(0, 4, 600)
    x = means[y] + rng.normal(size=(600, 16))
    return x[:400].astype(np.float32), y[:400], x[400:].astype(np.float32), y[400:]


def test_train_heads_shapes_and_accuracy(blobs):
    xtr, ytr, xte, yte = blobs
    ens = train_heads(xtr, ytr, {"id": xte}, n_models=5, eval_labels={"id": yte},
                      epochs=(2, 4), lr=(0.003, 0.03))
    assert ens.probs["id"].shape == (5, 200, 4) and ens.probs["id"].dtype == np.float32
    np.testing.assert_allclose(ens.probs["id"].sum(-1), 1, atol=1e-5)
    assert ens.accuracy("id").min() > 0.6
    assert [m["index"] for m in ens.members] == list(range(5))


def test_diversity_sources_change_only_their_seed(blobs):
    xtr, ytr, xte, _ = blobs
    kw = dict(n_models=4, epochs=(1, 1), lr=(0.01, 0.01))
    order = train_heads(xtr, ytr, {"id": xte}, diversity="data_order", **kw)
    init = train_heads(xtr, ytr, {"id": xte}, diversity="head_init", **kw)
    assert len({m["init_seed"] for m in order.members}) == 1
    assert len({m["order_seed"] for m in order.members}) == 4
    assert len({m["init_seed"] for m in init.members}) == 4
    subset = train_heads(xtr, ytr, {"id": xte}, diversity="data_subset", subset_fraction=0.25,
                         **kw)
    assert {m["n_train"] for m in subset.members} == {100}
    both = train_heads(xtr, ytr, {"id": xte}, diversity="head_init+data_order", **kw)
    assert len({m["init_seed"] for m in both.members}) == 4
    # a batched model equals training it alone (the models are independent)
    alone = train_heads(xtr, ytr, {"id": xte}, diversity="head_init", n_models=1,
                        epochs=(1, 1), lr=(0.01, 0.01))
    np.testing.assert_allclose(alone.probs["id"][0], init.probs["id"][0], atol=1e-5)


def test_train_heads_is_deterministic_and_restores_threads(blobs):
    xtr, ytr, xte, _ = blobs
    before = torch.get_num_threads()
    a = train_heads(xtr, ytr, {"id": xte}, n_models=3, hidden=8, random_state=3)
    b = train_heads(xtr, ytr, {"id": xte}, n_models=3, hidden=8, random_state=3)
    np.testing.assert_array_equal(a.probs["id"], b.probs["id"])
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kwargs,pattern", [
    ({"diversity": "seed"}, r"Invalid diversity 'seed'"),
    ({"n_models": 0}, r"'n_models' parameter of train_heads"),
    ({"epochs": (5, 2)}, r"epochs\[0\] <= epochs\[1\]"),
    ({"subset_fraction": 0.0}, r"'subset_fraction'"),
])
def test_train_heads_bad_input(blobs, kwargs, pattern):
    xtr, ytr, xte, _ = blobs
    with pytest.raises(ValueError, match=pattern):
        train_heads(xtr, ytr, {"id": xte}, **kwargs)


def test_feature_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    images = np.random.default_rng(0).integers(0, 255, (5, 8, 8), dtype=np.uint8)
    a = extract_features("pixels", images, resolution=12)
    files = list((tmp_path / "features" / "pixels").glob("*/features.npy"))
    assert a.shape == (5, 144) and len(files) == 1
    np.testing.assert_array_equal(extract_features("pixels", images, resolution=12), a)
    extract_features("pixels", images, resolution=10)  # settings are part of the key
    assert len(list((tmp_path / "features" / "pixels").glob("*/features.npy"))) == 2
    assert "efficientnet-lite0" in list_backbones("image")
    with pytest.raises(TypeError, match="uint8 images"):
        extract_features("pixels", images.astype(float))
    with pytest.raises(ValueError, match="Did you mean"):
        extract_features("pixel", images)


def test_corrupt_text_is_seeded():
    texts = ["a wonderful and moving film", "dull plot"]
    assert corrupt_text(texts, 1.0, seed=1) == corrupt_text(texts, 1.0, seed=1)
    assert corrupt_text(texts, 1.0, seed=1) != texts
    assert corrupt_text(texts, 0.0) == texts


def test_build_ensemble_on_zoo_data_and_cli_roundtrip(tmp_path, monkeypatch):
    from fmlab.data import dataset_info

    if not dataset_info("digits").available:
        from fmlab.testing import require_or_skip

        require_or_skip("the 'digits' dataset (scikit-learn) is not available")
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path / "cache"))
    ens = build_ensemble("pixels", "digits", ood="rotate:30", n_models=4, n_train=600,
                         n_eval=200, epochs=(1, 3))
    assert ens.probs["id"].shape[:2] == (4, 200) and ens.probs["ood"].shape[:2] == (4, 200)
    assert ens.accuracy("id").mean() > ens.accuracy("ood").mean()
    paths = ens.save(tmp_path / "ens")
    assert json.loads(paths["ensemble"].read_text())["n_models"] == 4
    arrays = load_outputs(tmp_path / "ens")
    assert set(arrays) == {"id_probs", "id_labels", "ood_probs", "ood_labels"}
    assert main(["ood", "predict", "--from", str(tmp_path / "ens"), "--json"]) == 0


def test_build_ensemble_across_backbones_splits_models(tmp_path, monkeypatch):
    from fmlab.data import dataset_info

    if not dataset_info("digits").available:
        from fmlab.testing import require_or_skip

        require_or_skip("the 'digits' dataset (scikit-learn) is not available")
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    # two pixel 'backbones' stand in for two zoo models; small MLP heads trained from scratch
    ens = build_ensemble(["pixels", "pixels"], "digits", ood="corrupt:gaussian_noise:2",
                         n_models=5, n_train=300, n_eval=100, epochs=(1, 2), hidden=16)
    assert [m["backbone"] for m in ens.members] == ["pixels"] * 5
    assert ens.probs["ood"].shape[:2] == (5, 100)
    assert len({m["init_seed"] for m in ens.members}) == 5  # seeds differ across the groups


def test_small_cnns_from_scratch(blobs):
    from fmlab.ood import train_small_cnns

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    images = (rng.random((120, 8, 8)) * 60).astype(np.uint8)
    images[np.arange(120), y * 2 + 1, :] = 255  # the class is a bright row
    ens = train_small_cnns(images[:80], y[:80], {"id": images[80:]}, n_models=3, width=2,
                           epochs=(3, 5), lr=(0.05, 0.1), eval_labels={"id": y[80:]},
                           batch_size=16)
    assert ens.probs["id"].shape == (3, 40, 3)
    assert ens.accuracy("id").max() > 0.5
    # a batched CNN equals the same CNN trained alone
    alone = train_small_cnns(images[:80], y[:80], {"id": images[80:]}, n_models=1, width=2,
                             epochs=(4, 4), lr=(0.07, 0.07), batch_size=16)
    same = train_small_cnns(images[:80], y[:80], {"id": images[80:]}, n_models=3, width=2,
                            epochs=(4, 4), lr=(0.07, 0.07), batch_size=16)
    np.testing.assert_allclose(same.probs["id"][0], alone.probs["id"][0], atol=1e-4)
    with pytest.raises(ValueError, match="divisible by 4"):
        train_small_cnns(images[:, :7], y, {})


def test_cli_ensemble_dry_run_and_predict_errors(tmp_path, capsys):
    assert main(["ood", "ensemble", "--backbone", "pixels", "--dataset", "digits", "--ood",
                 "rotate:20", "--out", str(tmp_path), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ood"] == "rotate:20"
    assert main(["ood", "predict", str(tmp_path / "nope.npy"), "b.npy", "c.npy"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_files_npz_keys_and_parquet(tmp_path):
    import pandas as pd

    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=(2, 4))
    save_outputs(tmp_path / "a.npz", p=probs, y=np.arange(4))
    np.testing.assert_array_equal(load_array(f"{tmp_path / 'a.npz'}:p"), probs)
    with pytest.raises(ValueError, match="holds 2 arrays"):
        load_array(tmp_path / "a.npz")
    frame = pd.DataFrame(probs.reshape(-1, 3), columns=["x", "y", "z"])
    frame.insert(0, "model", np.repeat([0, 1], 4))
    frame.insert(1, "example", np.tile(np.arange(4), 2))
    frame.sample(frac=1.0, random_state=0).to_parquet(tmp_path / "p.parquet")  # any row order
    np.testing.assert_allclose(load_array(tmp_path / "p.parquet"), probs)
    with pytest.raises(ValueError, match="Unsupported file type"):
        load_array(_touch(tmp_path / "x.txt"))


def _touch(path):
    path.write_text("")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("backbone,inputs,dim", [
    ("efficientnet-lite0", "images", 1280),
    ("all-minilm-l6-v2", "texts", 384),
])
def test_zoo_backbone_features(tmp_path, monkeypatch, backbone, inputs, dim):
    from fmlab.models import model_info

    if not model_info(backbone).available:
        from fmlab.testing import require_or_skip

        require_or_skip(f"{backbone} is not installed: {model_info(backbone).install}")
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 255, (4, 28, 28), dtype=np.uint8) if inputs == "images"
            else ["a fine film", "a dull film", "rain today", "the cat sleeps"])
    kwargs = {"resolution": 64} if inputs == "images" else {}
    feats = extract_features(backbone, data, **kwargs)
    assert feats.shape == (4, dim) and np.isfinite(feats).all()
    np.testing.assert_array_equal(extract_features(backbone, data, **kwargs), feats)  # cached
