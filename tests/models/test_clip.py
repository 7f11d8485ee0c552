"""CLIP-like dual encoders: one interface over tiny-clip, clip-emoji members and HF CLIPModel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmlab.exceptions import ModelUnavailableError, UnknownNameError
from fmlab.models import list_models, load_clip, model_info, prepare_model
from fmlab.models._recipes import ClipEmojiConfig, recipe_of, recipe_path


@pytest.fixture(scope="module")
def tiny():
    return load_clip("tiny-clip")


def test_interface_on_tiny_clip(tiny) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    batch = tiny.processor(text=["a cat", "a dog"], images=images)
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    out = tiny(**batch)
    assert out.logits_per_image.shape == (3, 2) and out.logits_per_text.shape == (2, 3)
    assert torch.allclose(out.logits_per_image, out.logits_per_text.T)
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert tiny.get_image_features(pixel_values=batch["pixel_values"]).shape == (3, 32)
    z = tiny.encode_texts(["a cat"])
    assert z.shape == (1, 32)


def test_zero_shot_head_is_a_linear_layer(tiny) -> None:
    head = tiny.zero_shot_classifier(["cat", "dog", "bird"], templates=("a {}", "the {}"))
    assert isinstance(head, torch.nn.Linear) and head.weight.shape == (3, 32)
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    feats = tiny.encode_images(images, normalize=False)
    logits = head(feats)
    assert logits.shape == (4, 3)
    # equals scaled cosine similarity to the mean prompt embedding
    manual = tiny.encode_images(images) @ head.weight.T
    assert torch.allclose(logits, manual, atol=1e-5)
    assert tiny.classify(images, head).shape == (4,)
    with pytest.raises(ValueError, match="templates"):
        tiny.zero_shot_classifier(["cat"], templates=("no placeholder",))
    with pytest.raises(TypeError, match="class_names"):
        tiny.zero_shot_classifier("cat")


def test_gradient_reaches_float_pixels(tiny) -> None:
    x = torch.rand(2, 48, 48, 3, requires_grad=True)  # pixels in [0, 1], another size
    target = tiny.encode_texts(["a cat"]).detach()
    loss = -(tiny.encode_images(x) @ target.T).sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_members_are_listed_as_trainable_not_prepared(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    assert {"clip-emoji", "clip-emoji-0", "clip-emoji-1", "clip-emoji-2"} <= set(list_models())
    info = model_info("clip-emoji-1")
    assert info.trainable and not info.cached and info.card is None
    assert info.kind == "dual-encoder"
    with pytest.raises(ModelUnavailableError, match="fmlab models prepare clip-emoji-1"):
        load_clip("clip-emoji-1")


def test_settings_change_the_cache_folder() -> None:
    base = recipe_path("clip-emoji-0")
    assert recipe_path("clip-emoji") == base  # the alias shares the copy
    assert recipe_path("clip-emoji-0", recipe_of("clip-emoji-0", steps=10)) != base
    assert recipe_path("clip-emoji-1") != base
    with pytest.raises(TypeError, match="Valid settings"):
        recipe_of("clip-emoji-0", stepz=10)
    with pytest.raises(ValueError, match="head"):
        ClipEmojiConfig(head="transformer")
    with pytest.raises(ValueError, match="eval_style"):
        ClipEmojiConfig(train_styles=("google",), eval_style="google")


def test_interrupted_prepare_leaves_nothing(tmp_path, monkeypatch) -> None:
    import fmlab.models._clip as clip_module

    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))

    def interrupted(folder, name, config) -> None:
        (folder / "model.safetensors").write_bytes(b"half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr(clip_module, "_build_member", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_model("clip-emoji-2")
    path = recipe_path("clip-emoji-2")
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert not model_info("clip-emoji-2").cached


def test_bad_names() -> None:
    with pytest.raises(UnknownNameError):
        load_clip("clip-emoji-9")
    with pytest.raises(ValueError, match="not a CLIP-like model"):
        load_clip("smollm2-135m-instruct")
    with pytest.raises(ModelUnavailableError, match="No CLIP model"):
        load_clip("/no/such/folder")
    with pytest.raises(TypeError, match="takes no settings"):
        prepare_model("smollm2-135m-instruct", steps=3)


def test_hf_folder_round_trip(tmp_path, tiny) -> None:
    from fmlab.models._tiny import tiny_tokenizer

    tiny.model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    again = load_clip(str(tmp_path))
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    # the default CLIP normalisation differs from tiny-clip's; the weights are the same
    px = tiny.preprocess(images)
    assert torch.allclose(again.get_image_features(px), tiny.get_image_features(px), atol=1e-5)


@pytest.mark.slow
def test_prepared_member_quality_and_lifecycle() -> None:
    """A short member (60 steps: its own cache folder in the user's cache): through the public
    zero-shot API it is far above chance on the held-out style and makes the model card's
    predictions; a corrupted copy is rebuilt."""
    import json

    from fmlab._cache import CacheRebuildWarning
    from fmlab.data import load_dataset
    from fmlab.models._clip import CATEGORY_TEMPLATES, class_name

    path = prepare_model("clip-emoji-0", steps=60)
    card = json.loads((path / "model_card.json").read_text())["quality"]
    model = load_clip("clip-emoji-0", steps=60)
    ds = load_dataset("emoji", "openmoji")
    # every 5th image: the dataset is sorted by category (its first 400 images are two of them)
    idx = np.arange(0, len(ds), 5)
    truth = ds.labels[idx]
    head = model.zero_shot_classifier([class_name("category", c) for c in ds.classes],
                                      CATEGORY_TEMPLATES)
    pred = model.classify(ds.images[idx], head)

    def far_above_chance(acc: float, labels: np.ndarray) -> bool:
        # chance: the best image-blind answer (the majority class), plus 3 binomial std errors
        majority = np.bincount(labels).max() / len(labels)
        return acc > majority + 3 * np.sqrt(majority * (1 - majority) / len(labels))

    assert far_above_chance(float((pred == truth).mean()), truth)
    # the card scored these prompts on cached features: the public pixel path agrees with it
    card_pred = np.asarray(json.loads((path / "predictions.json").read_text())["category"])
    assert (pred == card_pred[idx]).mean() > 0.97
    assert card["zero_shot_category"] == pytest.approx((card_pred == ds.labels).mean())
    assert far_above_chance(card["zero_shot_category"], ds.labels)
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.warns(CacheRebuildWarning):
        prepare_model("clip-emoji-0", steps=60)
    assert load_clip("clip-emoji-0", steps=60).classify(ds.images[idx[:8]], head).shape == (8,)


def test_cli_list_and_info_of_unprepared(tmp_path, monkeypatch, capsys) -> None:
    from fmlab.cli import main

    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    assert main(["models", "list", "clip-emoji*"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == 4 and all("trainable offline, not prepared" in x for x in lines)
    assert main(["models", "info", "clip-emoji-2"]) == 0
    assert "fmlab models prepare clip-emoji-2" in capsys.readouterr().out


def test_prediction_agreement_and_kappa() -> None:
    from fmlab.models._recipes import prediction_agreement

    a = prediction_agreement({"a": [0, 0, 1, 1], "b": [0, 1, 1, 1], "c": [1, 1, 0, 0]})
    assert a["agreement"] == {"a~b": 0.75, "a~c": 0.0, "b~c": 0.25}
    # a predicts 0 and 1 half the time, b 1/4 vs 3/4: chance agreement 0.5, kappa 0.5
    assert a["kappa"]["a~b"] == pytest.approx(0.5) and a["kappa"]["a~c"] == pytest.approx(-1.0)
    assert a["all_agree"] == 0.0 and a["mean_agreement"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same, non-zero"):
        prediction_agreement({"a": [0, 1], "b": [0]})
