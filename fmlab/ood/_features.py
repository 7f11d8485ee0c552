"""Frozen-backbone features for ensembles, computed once and cached on disk.

A *backbone* maps raw inputs (uint8 images or strings) to a feature matrix ``(n, d)``:

==========================  ======  =====================================================
name                        inputs  features
==========================  ======  =====================================================
``efficientnet-lite0``      images  pooled penultimate features (1280), zoo ImageNet model
``all-minilm-l6-v2``        texts   sentence embeddings (384), zoo sentence encoder
``smollm2-135m-instruct``   texts   mean-pooled last hidden state (576), zoo causal LM
``pixels``                  images  raw pixels resized to 28×28, scaled to [0, 1] (784)
==========================  ======  =====================================================

Features are cached under ``cache_dir("features", backbone)`` keyed by a SHA-256 of the inputs
and the extraction settings, written atomically, so a second study run or CLI call skips the
backbone entirely.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fmlab._device import eval_mode
from fmlab._registry import Registry

__all__ = ["BACKBONES", "extract_features", "list_backbones"]

BACKBONES: Registry[Callable[..., np.ndarray]] = Registry("feature backbone")


def _torch() -> Any:
    from fmlab._imports import require

    return require("torch", feature="fmlab.ood ensembles")


@functools.lru_cache(maxsize=2)
def _zoo_model(name: str) -> Any:
    """Load a zoo model once per process (the sentence encoder takes seconds to build); the
    feature functions only run it in inference mode, never modify it."""
    from fmlab import models

    if name == "efficientnet-lite0":
        return models.load_image_classifier(name)
    if name == "all-minilm-l6-v2":
        return models.load_sentence_encoder(name)
    return models.load_causal_lm(name)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


@BACKBONES.register("efficientnet-lite0", kind="image", dim=1280)
def _efficientnet(images: np.ndarray, *, resolution: int = 224, batch_size: int = 64,
                  progress: Callable[..., Any] | None = None) -> np.ndarray:
    """EfficientNet-Lite0 pooled features (1280-d) of uint8 images at ``resolution`` px."""
    torch = _torch()
    # A shallow copy shares the weights with the cached model but has its own input size
    # (the network is fully convolutional with global pooling, so any size works).
    net = copy.copy(_zoo_model("efficientnet-lite0"))
    net.image_size = int(resolution)
    out = []
    slices = _batches(len(images), batch_size)
    with torch.inference_mode():
        for sl in progress(slices, desc="efficientnet features") if progress else slices:
            x = net.preprocess(images[sl], crop_fraction=1.0)  # (B, 3, S, S)
            out.append(net.features(x).float().numpy())  # (B, 1280)
    return np.concatenate(out).astype(np.float32)


@BACKBONES.register("all-minilm-l6-v2", kind="text", dim=384)
def _minilm(texts: Sequence[str], *, batch_size: int = 64,
            progress: Callable[..., Any] | None = None, **_: Any) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm)."""
    model = _zoo_model("all-minilm-l6-v2")
    out = []
    slices = _batches(len(texts), batch_size)
    for sl in progress(slices, desc="minilm features") if progress else slices:
        out.append(model.encode(list(texts[sl]), batch_size=batch_size,
                                normalize_embeddings=True, show_progress_bar=False))
    return np.concatenate(out).astype(np.float32)


@BACKBONES.register("smollm2-135m-instruct", kind="text", dim=576)
def _smollm(texts: Sequence[str], *, batch_size: int = 16, max_length: int = 64,
            progress: Callable[..., Any] | None = None, **_: Any) -> np.ndarray:
    """SmolLM2-135M-Instruct last hidden state, mean-pooled over real tokens."""
    torch = _torch()
    model, tok = _zoo_model("smollm2-135m-instruct")
    out = []
    slices = _batches(len(texts), batch_size)
    with eval_mode(model), torch.inference_mode():
        for sl in progress(slices, desc="smollm2 features") if progress else slices:
            batch = tok(list(texts[sl]), return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length)
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]  # (B, T, d)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())  # (B, d)
    return np.concatenate(out).astype(np.float32)


@BACKBONES.register("pixels", kind="image", dim=784)
def _pixels(images: np.ndarray, *, resolution: int = 28, **_: Any) -> np.ndarray:
    """Raw grey pixels resized to ``resolution``² (a 'no pretraining' baseline backbone)."""
    torch = _torch()
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)
    if x.ndim == 4:  # (N, H, W, 3) -> grey
        x = x.mean(-1)
    x = torch.nn.functional.interpolate(x[:, None], size=(resolution, resolution),
                                        mode="bilinear", align_corners=False, antialias=True)
    return x.reshape(len(images), -1).numpy().astype(np.float32)


def list_backbones(kind: str | None = None) -> list[str]:
    """Backbone names, optionally only those taking ``kind`` inputs (``"image"`` or ``"text"``)."""
    return [e.name for e in BACKBONES.entries() if kind is None or e.meta.get("kind") == kind]


def _fingerprint(backbone: str, inputs: Any, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"backbone": backbone, **settings}, sort_keys=True).encode())
    if isinstance(inputs, np.ndarray):
        h.update(str((inputs.shape, inputs.dtype.str)).encode())
        h.update(np.ascontiguousarray(inputs).tobytes())
    else:
        for text in inputs:
            h.update(text.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
    return h.hexdigest()[:24]


def extract_features(
    backbone: str,
    inputs: Any,
    *,
    cache: bool = True,
    progress: Callable[..., Any] | None = None,
    **settings: Any,
) -> np.ndarray:
    """Features of ``inputs`` from a frozen backbone, cached on disk.

    Args:
        backbone: A name from :func:`list_backbones` (``"efficientnet-lite0"``,
            ``"all-minilm-l6-v2"``, ``"smollm2-135m-instruct"``, ``"pixels"``).
        inputs: uint8 images ``(n, H, W)`` / ``(n, H, W, 3)`` for image backbones, a list of
            strings for text backbones.
        cache: Read and write the feature cache (``cache_dir("features", backbone)``).
        progress: Optional wrapper for progress bars, ``progress(iterable, desc=...)``.
        **settings: Backbone options, e.g. ``resolution=64`` for EfficientNet (part of the cache
            key).

    Returns:
        float32 features ``(n, d)``.

    Raises:
        UnknownNameError: Unknown backbone.
        TypeError: Images given to a text backbone or vice versa.
    """
    entry = BACKBONES.entry(backbone)
    kind = entry.meta.get("kind")
    if kind == "image":
        arr = np.asarray(inputs)
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
            raise TypeError(
                f"Backbone {backbone!r} takes uint8 images of shape (n, H, W) or (n, H, W, 3); "
                f"got dtype {arr.dtype} and shape {arr.shape}."
            )
        inputs = arr
    else:
        if isinstance(inputs, str) or not all(isinstance(t, str) for t in inputs):
            raise TypeError(f"Backbone {backbone!r} takes a list of strings.")
        inputs = list(inputs)
    if len(inputs) == 0:
        raise ValueError("extract_features got no inputs.")
    if settings.get("resolution") is not None:
        from fmlab._validation import check_int

        check_int(settings["resolution"], "resolution", owner=f"extract_features({backbone!r})",
                  low=8, high=1024)
    fn = entry.resolve()
    if not cache:
        return fn(inputs, progress=progress, **settings)
    from fmlab._cache import cached_build
    from fmlab._io import read_npy
    from fmlab._paths import cache_dir

    fp = _fingerprint(backbone, inputs, settings)
    computed: list[np.ndarray] = []

    def build(folder: Any) -> None:
        computed.append(fn(inputs, progress=progress, **settings))
        np.save(folder / "features.npy", computed[0])

    # one verified folder per fingerprint: a corrupt or edited file is rebuilt, never used
    folder = cached_build(cache_dir("features", backbone) / fp, build,
                          key={"kind": "features", "backbone": backbone, "id": fp},
                          what=f"{backbone} features", announce=False)
    return computed[0] if computed else read_npy(folder / "features.npy")
