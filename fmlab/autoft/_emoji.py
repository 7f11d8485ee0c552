"""The ``emoji-shift`` task: fine-tune ``clip-emoji``'s image tower on one emoji style.

- Model: the ``clip-emoji`` dual encoder (EfficientNet-Lite0 image tower, MiniLM text tower,
  learned projections). Its zero-shot head comes from class captions (the 9 emoji categories,
  three prompt templates). What is fine-tuned: the *top* of the image tower (its last MBConv
  block and 1x1 head convolution; batch-norm statistics frozen) and the image projection
  (``tune="top"``; inputs ``x`` are the frozen trunk's feature maps ``(N, 192, h, w)``), or the
  image projection only (``tune="projection"``: a linear map over the frozen tower's pooled
  features ``(N, 1280)``). What is frozen is cached once per machine (``fmlab.models`` emoji
  features), so the task's inputs are features, not pixels.
- Data: the emoji dataset (the same 1,906 concepts drawn by three artists), labels = category.
  A seeded 80/20 split of the *concepts*: ID training and ID validation are Google-style images
  of training concepts; OOD validation is a few hundred Twitter-style images of training
  concepts; the tests (never seen by a search) are held-out concepts: Google style (ID test),
  OpenMoji style, and Google style under image corruptions from the data zoo.

Caveat (stated in the study): ``clip-emoji`` was contrastively trained on Google and Twitter
images with captions, so the OOD-validation style was in its pretraining data; OpenMoji and the
corruptions were not.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from fmlab._validation import check_int, check_option, check_real
from fmlab.autoft._finetune import FineTunable, TensorData
from fmlab.autoft._tasks import FineTuneTask

__all__ = ["emoji_shift_task"]

TEMPLATES = ("an emoji of a {}", "a {} icon", "a picture of a {}")
CORRUPTIONS = ("gaussian_noise", "fog", "pixelate")
_TUNED = {"top": "image tower top (last block, head conv) + image projection",
          "projection": "image projection"}


class _TowerTop(nn.Module):
    """The fine-tuned part of the image tower: last MBConv block, head conv (+BN, swish), mean
    pooling, then the image projection. Batch norm stays in inference mode (frozen statistics),
    as in the tower."""

    def __init__(self, tower: Any, projection: nn.Module) -> None:
        super().__init__()
        b = tower.backbone
        self.block = copy.deepcopy(b._blocks[tower.split])
        self.conv_head = copy.deepcopy(b._conv_head)
        self.bn1 = copy.deepcopy(b._bn1)
        self.swish = copy.deepcopy(b._swish)
        self.projection = copy.deepcopy(projection)
        self.bn1.requires_grad_(False)

    def train(self, mode: bool = True) -> _TowerTop:
        super().train(mode)
        for m in (self.block, self.conv_head, self.bn1):
            m.eval()
        return self

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.block(h)  # (B, 320, h, w)
        x = self.swish(self.bn1(self.conv_head(x))).mean(dim=(2, 3))  # (B, 1280)
        return self.projection(x)  # type: ignore[no-any-return]  # (B, D)


def _class_name(category: str) -> str:
    return category.lower().replace("&", "and")


def emoji_shift_task(seed: int = 0, model: str = "clip-emoji", tune: str = "top",
                     n_ood_val: int = 300, test_fraction: float = 0.2,
                     corruptions: tuple[str, ...] | list[str] = CORRUPTIONS,
                     severity: int = 3, prepare: bool = True) -> FineTuneTask:
    """Build the ``emoji-shift`` task (see the module docstring).

    Args:
        seed: Seed of the concept split and of the OOD-validation draw.
        model: A ``clip-emoji`` member (``clip-emoji``, ``clip-emoji-1``, ...).
        tune: ``"top"`` (tower top + projection) or ``"projection"``.
        n_ood_val: Size of the OOD-validation set (Twitter style).
        test_fraction: Fraction of concepts held out for the tests.
        corruptions: Data-zoo corruptions applied to the ID-test images (OOD tests).
        severity: Corruption severity (1-5).
        prepare: Train the ``clip-emoji`` member once if it is not cached yet.
    """
    from fmlab.data import corrupt, load_dataset
    from fmlab.models import load_clip
    from fmlab.models._towers import emoji_features

    o = "emoji_shift_task"
    check_int(seed, "seed", owner=o, low=0)
    check_option(tune, "tune", ("top", "projection"), owner=o)
    check_int(n_ood_val, "n_ood_val", owner=o, low=10)
    check_real(test_fraction, "test_fraction", owner=o, low=0.0, high=1.0)
    check_int(severity, "severity", owner=o, low=1, high=5)
    corruptions = tuple([corruptions] if isinstance(corruptions, str) else corruptions)
    clip = load_clip(model, prepare=prepare)
    feats = emoji_features(clip.config.image_size)
    ds = load_dataset("emoji", "all")
    style, concept = ds.attributes["style"], ds.attributes["concept"]
    rng = np.random.default_rng(seed)
    concepts = np.unique(concept)
    test_c = rng.choice(concepts, int(round(test_fraction * len(concepts))), replace=False)
    rest = np.setdiff1d(concepts, test_c)
    idval_c = rng.choice(rest, int(round(0.15 * len(rest))), replace=False)
    is_test, is_idval = np.isin(concept, test_c), np.isin(concept, idval_c)
    google, twitter, openmoji = (style == s for s in ("google", "twitter", "openmoji"))
    cached = feats["trunk"] if tune == "top" else feats["pooled"]  # (N, 192, h, w) | (N, 1280)
    labels = torch.as_tensor(ds.labels)

    def part(mask: np.ndarray, limit: int | None = None) -> TensorData:
        idx = np.flatnonzero(mask)
        if limit is not None and limit < len(idx):
            idx = np.sort(rng.choice(idx, limit, replace=False))
        ids = [f"{s}:{c}" for s, c in zip(style[idx], concept[idx], strict=True)]
        return TensorData(torch.from_numpy(cached[idx]), labels[idx], groups=labels[idx].clone(),
                          ids=ids)

    tests = {"id": part(google & is_test), "openmoji": part(openmoji & is_test)}
    tower = clip.vision_model
    idx = np.flatnonzero(google & is_test)
    with torch.inference_mode():
        for name in corruptions:
            imgs = corrupt(ds.images[idx], name, severity=severity, seed=seed)
            step = tower.trunk if tune == "top" else tower
            h = torch.cat([step(clip.preprocess(imgs[i:i + 256]))
                           for i in range(0, len(imgs), 256)])
            tests[name] = TensorData(h.clone(), labels[idx], groups=labels[idx].clone(),
                                     ids=[f"{name}:{c}" for c in concept[idx]])
    class_names = [_class_name(c) for c in ds.classes]
    head = clip.zero_shot_classifier(class_names, TEMPLATES)
    scale = float(clip.logit_scale.detach().exp())
    text = head.weight.detach() / scale  # (C, D) normalised class-caption features
    encoder = (_TowerTop(tower, clip.visual_projection) if tune == "top"
               else copy.deepcopy(clip.visual_projection))
    net = FineTunable(encoder, class_text_features=text, logit_scale=scale).eval()
    return FineTuneTask(
        model=net, train=part(google & ~is_test & ~is_idval),
        ood_val=part(twitter & ~is_test, n_ood_val), id_val=part(google & is_idval),
        tests=tests,
        description=f"{model} (EfficientNet-Lite0 + MiniLM), zero-shot head from class captions; "
                    f"fine-tuned: {_TUNED[tune]}; ID google, OOD-val twitter, OOD-test openmoji "
                    f"+ {', '.join(corruptions)}")

