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

__all__ = ["draw_subset", "emoji_shift_task"]

TEMPLATES = ("an emoji of a {}", "a {} icon", "a picture of a {}")
CORRUPTIONS = ("gaussian_noise", "fog", "pixelate")
STYLES = ("google", "twitter", "openmoji")
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


def draw_subset(labels: Any, n: int, seed: int, *, class_balanced: bool = True) -> np.ndarray:
    """A seeded draw of ``n`` positions out of ``labels`` (sorted), equal per class when
    ``class_balanced`` (classes with too few examples give all they have; the rest is filled
    at random from the others).

    The released code parsed ``--use_class_balanced_ood`` and never read it, drawing its OOD
    subset with an unseeded ``np.random.choice`` (defect 5): here both the seed and the balance
    take effect.
    """
    labels = np.asarray(labels)
    check_int(n, "n", owner="draw_subset", low=1)
    rng = np.random.default_rng(seed)
    if n >= len(labels):
        return np.arange(len(labels))
    if not class_balanced:
        return np.sort(rng.choice(len(labels), n, replace=False))
    classes = np.unique(labels)
    per = n // len(classes)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    chosen = np.concatenate(picked)
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    fill = rng.choice(rest, n - len(chosen), replace=False)
    return np.sort(np.concatenate([chosen, fill]))


_MEMO: dict[tuple[Any, ...], torch.Tensor] = {}
_CLIPS: dict[str, Any] = {}


def _corrupted_features(clip: Any, images: np.ndarray, idx: np.ndarray, name: str,
                        severity: int, seed: int, tune: str, key: tuple[Any, ...]
                        ) -> torch.Tensor:
    """The frozen tower's output on corrupted images: cached on disk once per machine (under
    the ``clip-emoji`` member's own cache key, so a changed recipe or library rebuilds it) and
    memoised in this process (the study's seeds share the held-out split)."""
    full = (*key, name, severity, seed, tune, len(idx), hash(idx.tobytes()))
    if full not in _MEMO:
        import hashlib
        import json

        from fmlab._cache import cached_build
        from fmlab._paths import cache_dir
        from fmlab.models._recipes import RECIPES, cache_key

        model = key[0]
        disk = {"family": "emoji-corrupted-features", "corruption": name, "severity": severity,
                "seed": seed, "tune": tune, "n": len(idx),
                "idx": hashlib.sha256(np.ascontiguousarray(idx, np.int64).tobytes()).hexdigest(),
                "model": cache_key(model, RECIPES[model][1]) if model in RECIPES else model}
        digest = hashlib.sha256(json.dumps(disk, sort_keys=True).encode()).hexdigest()[:16]
        path = cache_dir("models", create=False) / "emoji-features" / f"corrupted-{digest}"

        def build(folder: Any) -> None:
            from fmlab.data import corrupt

            step = clip.vision_model.trunk if tune == "top" else clip.vision_model
            imgs = corrupt(images[idx], name, severity=severity, seed=seed)
            with torch.inference_mode():
                h = torch.cat([step(clip.preprocess(imgs[i:i + 256]))
                               for i in range(0, len(imgs), 256)])
            np.save(folder / "x.npy", h.numpy().astype(np.float32))

        path = cached_build(path, build, key=disk, what=f"emoji features under {name}",
                            announce=False)
        _MEMO[full] = torch.from_numpy(np.load(path / "x.npy", allow_pickle=False))
    return _MEMO[full]


def emoji_shift_task(seed: int = 0, model: str = "clip-emoji", tune: str = "projection",
                     id_style: str = "google", ood_val: str = "twitter",
                     n_ood_val: int = 300, class_balanced: bool = True,
                     test_fraction: float = 0.2, split_seed: int = 0,
                     corruptions: tuple[str, ...] | list[str] = CORRUPTIONS,
                     severity: int = 3, prepare: bool = True) -> FineTuneTask:
    """Build the ``emoji-shift`` task (see the module docstring).

    Args:
        seed: Seed of the ID-validation split and of the OOD-validation draw.
        model: A ``clip-emoji`` member (``clip-emoji``, ``clip-emoji-1``, ...).
        tune: ``"projection"`` (the image projection) or ``"top"`` (tower top + projection).
        id_style: The emoji style fine-tuned on (ID).
        ood_val: What scores the search: another style (``"twitter"``), or corruptions of
            ID-style images joined by ``+`` (``"contrast+gaussian_blur"``; each corruption
            gets an equal share). Always on training concepts; never a test shift.
        n_ood_val: Size of the OOD-validation set.
        class_balanced: Draw the OOD-validation set with equal counts per class.
        test_fraction: Fraction of concepts held out for the tests.
        split_seed: Seed of the held-out concepts (fixed across a study's seeds).
        corruptions: Data-zoo corruptions of the held-out ID-style images (OOD tests); must not
            overlap the OOD-validation corruptions.
        severity: Corruption severity (1-5).
        prepare: Train the ``clip-emoji`` member once if it is not cached yet.

    The tests (held-out concepts only) are: ``id`` (ID style), every style that is neither ID
    nor OOD-validation, and each of ``corruptions``.
    """
    from fmlab.data import load_dataset
    from fmlab.data._corruptions import CORRUPTIONS as ALL_CORRUPTIONS
    from fmlab.models import load_clip
    from fmlab.models._towers import emoji_features

    o = "emoji_shift_task"
    check_int(seed, "seed", owner=o, low=0)
    check_int(split_seed, "split_seed", owner=o, low=0)
    check_option(tune, "tune", ("top", "projection"), owner=o)
    check_option(id_style, "id_style", STYLES, owner=o)
    check_int(n_ood_val, "n_ood_val", owner=o, low=10)
    check_real(test_fraction, "test_fraction", owner=o, low=0.0, high=1.0)
    check_int(severity, "severity", owner=o, low=1, high=5)
    corruptions = tuple([corruptions] if isinstance(corruptions, str) else corruptions)
    for c in corruptions:
        check_option(c, "corruptions", tuple(ALL_CORRUPTIONS), owner=o)
    if ood_val in STYLES:
        if ood_val == id_style:
            raise ValueError(f"The 'ood_val' style of {o} must differ from id_style "
                             f"({id_style!r}); choose one of "
                             f"{[s for s in STYLES if s != id_style]} or corruptions.")
        val_corruptions: tuple[str, ...] = ()
    else:
        val_corruptions = tuple(ood_val.split("+"))
        for c in val_corruptions:
            check_option(c, "ood_val", (*STYLES, *ALL_CORRUPTIONS), owner=o)
        both = sorted(set(val_corruptions) & set(corruptions))
        if both:
            raise ValueError(f"The OOD-validation corruptions of {o} overlap its test "
                             f"corruptions in {both}: the search would see a test shift. Drop "
                             f"them from 'corruptions' or from 'ood_val'.")
    if model not in _CLIPS:  # loaded once per process (only copies of its parts are tuned)
        _CLIPS[model] = load_clip(model, prepare=prepare)
    clip = _CLIPS[model]
    feats = emoji_features(clip.config.image_size)
    ds = load_dataset("emoji", "all")
    style, concept = ds.attributes["style"], ds.attributes["concept"]
    concepts = np.unique(concept)
    test_c = np.random.default_rng(split_seed).choice(
        concepts, int(round(test_fraction * len(concepts))), replace=False)
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(concepts, test_c)
    idval_c = rng.choice(rest, int(round(0.15 * len(rest))), replace=False)
    is_test, is_idval = np.isin(concept, test_c), np.isin(concept, idval_c)
    cached = feats["trunk"] if tune == "top" else feats["pooled"]  # (N, 192, h, w) | (N, 1280)
    labels = torch.as_tensor(ds.labels)
    key = (model, split_seed, test_fraction)

    def part(idx: np.ndarray, x: Any = None, tag: str | None = None) -> TensorData:
        ids = [f"{tag or s}:{c}" for s, c in zip(style[idx], concept[idx], strict=True)]
        x = torch.from_numpy(cached[idx]) if x is None else x
        return TensorData(x, labels[idx], groups=labels[idx].clone(), ids=ids)

    in_id = style == id_style
    test_idx = np.flatnonzero(in_id & is_test)
    tests = {"id": part(test_idx)}
    for s in STYLES:
        if s not in (id_style, ood_val):
            tests[s] = part(np.flatnonzero((style == s) & is_test))
    for name in corruptions:
        x = _corrupted_features(clip, ds.images, test_idx, name, severity, split_seed, tune,
                                key)
        tests[name] = part(test_idx, x, tag=name)
    if not val_corruptions:
        pool = np.flatnonzero((style == ood_val) & ~is_test)
        ood = part(pool[draw_subset(ds.labels[pool], n_ood_val, seed,
                                    class_balanced=class_balanced)])
    else:  # an equal share of the draw per corruption, each image corrupted once
        pool = np.flatnonzero(in_id & ~is_test & ~is_idval)
        idx = pool[draw_subset(ds.labels[pool], n_ood_val, seed, class_balanced=class_balanced)]
        shares = np.array_split(np.random.default_rng(seed).permutation(idx),
                                len(val_corruptions))
        xs, ys, ids = [], [], []
        for name, sub in zip(val_corruptions, shares, strict=True):
            sub = np.sort(sub)
            d = part(sub, _corrupted_features(clip, ds.images, sub, name, severity, seed, tune,
                                              key), tag=name)
            xs.append(d.x), ys.append(d.y), ids.extend(d.ids)
        y = torch.cat(ys)
        ood = TensorData(torch.cat(xs), y, groups=y.clone(), ids=ids)
    class_names = [_class_name(c) for c in ds.classes]
    head = clip.zero_shot_classifier(class_names, TEMPLATES)
    scale = float(clip.logit_scale.detach().exp())
    text = head.weight.detach() / scale  # (C, D) normalised class-caption features
    tower = clip.vision_model
    encoder = (_TowerTop(tower, clip.visual_projection) if tune == "top"
               else copy.deepcopy(clip.visual_projection))
    net = FineTunable(encoder, class_text_features=text, logit_scale=scale).eval()
    test_shifts = [k for k in tests if k != "id"]
    return FineTuneTask(
        model=net, train=part(np.flatnonzero(in_id & ~is_test & ~is_idval)), ood_val=ood,
        id_val=part(np.flatnonzero(in_id & is_idval)), tests=tests,
        description=f"{model} (EfficientNet-Lite0 + MiniLM), zero-shot head from class captions; "
                    f"fine-tuned: {_TUNED[tune]}; ID {id_style}, OOD-val {ood_val} "
                    f"({len(ood)} images), OOD-test {', '.join(test_shifts)} (held-out "
                    f"concepts)")
