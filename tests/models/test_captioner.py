"""The ClipCap-style captioner: mechanics on a tiny LM, lifecycle, scores; the trained one (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmlab.exceptions import ModelUnavailableError
from fmlab.models import list_models, load_captioner, model_info
from fmlab.models._captioner import EmojiCaptioner, caption_scores
from fmlab.models._recipes import CaptionerConfig, recipe_of, recipe_path


@pytest.fixture(scope="module")
def tiny_captioner(request: pytest.FixtureRequest) -> EmojiCaptioner:
    from fmlab.models import tiny_causal_lm
    from fmlab.models._towers import load_efficientnet_tower
    from tests.models.conftest import _zoo_or_skip

    _zoo_or_skip("efficientnet-lite0")
    lm, tok = tiny_causal_lm(seed=0)
    torch.manual_seed(0)
    cfg = CaptionerConfig(image_size=32, prefix_length=2, hidden=16)
    return EmojiCaptioner(cfg, load_efficientnet_tower(), lm, tok).eval()


def test_caption_loss_gradient_reaches_pixels(tiny_captioner) -> None:
    x = torch.rand(3, 40, 40, 3, requires_grad=True)
    loss = tiny_captioner.caption_loss(x, ["a painting of a woman"])
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    per = tiny_captioner.caption_loss(x.detach(), ["a", "bb", "ccc"], reduction="none")
    assert per.shape == (3,)
    # the loss of one image does not depend on the others in the batch (padding is masked)
    alone = tiny_captioner.caption_loss(x.detach()[1:2], ["bb"])
    assert torch.allclose(per[1], alone, atol=1e-5)
    with pytest.raises(ValueError, match="one text per image"):
        tiny_captioner.caption_loss(x.detach(), ["a", "b"])
    with pytest.raises(ValueError, match="reduction"):
        tiny_captioner.caption_loss(x.detach(), "a", reduction="sum")


def test_generate_greedy_sampled_batched(tiny_captioner) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    greedy = tiny_captioner.generate(images, max_new_tokens=4)
    assert len(greedy) == 5 and all(isinstance(c, str) for c in greedy)
    assert tiny_captioner.generate(images, max_new_tokens=4, batch_size=2) == greedy
    s1 = tiny_captioner.generate(images, max_new_tokens=4, do_sample=True, seed=3)
    s2 = tiny_captioner.generate(images, max_new_tokens=4, do_sample=True, seed=3)
    assert s1 == s2


def test_caption_scores() -> None:
    s = caption_scores(["Hot dog", "red apple pie", "x"], ["hot dog", "red apple", "flag"])
    assert s["exact_match"] == pytest.approx(1 / 3)
    assert s["token_f1"] == pytest.approx((1 + 0.8 + 0) / 3)


def test_lifecycle_and_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    assert "captioner-emoji" in list_models()
    info = model_info("captioner-emoji")
    assert info.trainable and not info.cached and info.kind == "captioner"
    with pytest.raises(ModelUnavailableError, match="fmlab models prepare captioner-emoji"):
        load_captioner("captioner-emoji")
    assert recipe_path("captioner-emoji", recipe_of("captioner-emoji", steps=7)) != \
        recipe_path("captioner-emoji")
    with pytest.raises(ValueError, match="not a captioner"):
        load_captioner("tiny-llama")
    with pytest.raises(TypeError, match="apply only"):
        load_captioner("hf:x/y", steps=3)


@pytest.mark.slow
def test_trained_captioner_names_emoji() -> None:
    from fmlab.data import load_dataset

    cap = load_captioner("captioner-emoji", prepare=True)
    ds = load_dataset("emoji", "google")
    idx = np.arange(0, len(ds), 40)
    scores = caption_scores(cap.generate(ds.images[idx]), list(ds.attributes["name"][idx]))
    assert scores["token_f1"] > 0.1  # guessing one name: ~0.001 exact, ~0.02 F1
