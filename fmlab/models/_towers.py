"""The pretrained towers fmlab's own image-text models are built on, and their cached features.

- :class:`EfficientNetTower`: EfficientNet-Lite0 as an image feature extractor, split into a frozen
  *trunk* (stem and the first 15 MBConv blocks) and a *top* (last block, 1x1 head convolution,
  pooling) that a recipe may train. Batch-norm statistics always stay frozen.
- :class:`ImageProcessor`: images (uint8, or floats in [0, 1] for attacks) to pixel values, fully
  differentiable: bilinear antialiased resize, then EfficientNet's ``(pixel - 127) / 128``.
- :class:`MiniLMTower`: all-MiniLM-L6-v2 with mean pooling and L2 normalisation (what
  sentence-transformers computes), frozen.
- :func:`emoji_features`: the frozen towers' outputs on the whole emoji dataset, computed once and
  cached (verified, atomic), so each model trained on them prepares in seconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fmlab._imports import require
from fmlab._paths import cache_dir
from fmlab.models._recipes import cache_key

__all__ = ["EfficientNetTower", "ImageProcessor", "MiniLMTower", "emoji_features",
           "load_efficientnet_tower", "load_minilm_tower"]

_TEXT_MAX_LENGTH = 32
#: caption templates whose MiniLM embeddings are cached for training (a subset of
#: fmlab.data.EMOJI_TEMPLATES) and for held-out retrieval
TRAIN_TEMPLATES = ("an emoji of a {name}", "{name}", "a {subcategory} icon: {name}")
HELDOUT_TEMPLATE = "a picture of the {name} emoji"


class ImageProcessor:
    """Turn a batch of images into the pixel values an image tower takes.

    Accepts numpy arrays or tensors shaped ``(B, H, W, 3)``, ``(B, 3, H, W)`` or ``(B, H, W)``
    (grey). ``uint8`` values are pixels in [0, 255]; floating values are pixels in [0, 1], and the
    result is differentiable with respect to them (the resize and scaling are inside the graph).

    Args:
        image_size: Output side length.
        mean, std: Per-channel normalisation of pixels in [0, 1]; EfficientNet's TF scaling
            ``(255 p - 127) / 128`` is ``mean = 127/255``, ``std = 128/255``.
    """

    def __init__(self, image_size: int, mean: tuple[float, ...] = (127 / 255,) * 3,
                 std: tuple[float, ...] = (128 / 255,) * 3) -> None:
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def to_unit(self, images: Any) -> torch.Tensor:
        """Images as float ``(B, 3, H, W)`` in [0, 1] (differentiable for float tensors)."""
        if isinstance(images, torch.Tensor):
            x = images
        else:
            x = torch.from_numpy(np.array(images))
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.is_floating_point():
            x = x.float()
        else:
            raise TypeError("The 'images' parameter must hold uint8 pixels (0-255) or floats in "
                            f"[0, 1]. Got dtype {x.dtype} instead.")
        if x.ndim == 3:
            x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        elif x.ndim == 4 and x.shape[1] != 3 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError("The 'images' parameter must have shape (B, H, W, 3), (B, 3, H, W) "
                             f"or (B, H, W). Got shape {tuple(x.shape)} instead.")
        return x

    def __call__(self, images: Any) -> torch.Tensor:
        """Pixel values ``(B, 3, image_size, image_size)`` float32."""
        x = self.to_unit(images)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


class EfficientNetTower(nn.Module):
    """EfficientNet-Lite0 pooled features ``(B, 1280)`` from pixel values, as trunk + top.

    Batch norm and drop-connect stay in inference mode even under ``train()``: the towers are
    pretrained and fine-tuned with frozen statistics.
    """

    n_features = 1280

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.split = len(backbone._blocks) - 1

    def train(self, mode: bool = True) -> EfficientNetTower:
        super().train(mode)
        self.backbone.eval()  # frozen batch-norm statistics, no drop-connect
        return self

    def trunk(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Input of the last MBConv block, ``(B, 192, h, w)``."""
        b = self.backbone
        x = b._swish(b._bn0(b._conv_stem(pixel_values)))
        for block in b._blocks[: self.split]:
            x = block(x)
        return x

    def top(self, h: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, 1280)`` from the trunk's output."""
        b = self.backbone
        x = b._blocks[self.split](h)
        x = b._swish(b._bn1(b._conv_head(x)))
        return x.mean(dim=(2, 3))

    def top_parameters(self) -> list[nn.Parameter]:
        b = self.backbone
        mods = [b._blocks[self.split], b._conv_head]
        return [p for m in mods for p in m.parameters()]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(pixel_values))


def load_efficientnet_tower() -> EfficientNetTower:
    from fmlab.models._vision import load_image_classifier

    net = load_image_classifier("efficientnet-lite0")
    return EfficientNetTower(net.backbone).eval()


class MiniLMTower(nn.Module):
    """all-MiniLM-L6-v2: mean-pooled, L2-normalised 384-d sentence embeddings (frozen)."""

    dim = 384

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"The 'text' parameter must be a list of str. Got {texts!r} instead.")
        tok = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=_TEXT_MAX_LENGTH, return_tensors="pt")
        return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        out = [self(**self.tokenize(texts[i : i + batch_size])).numpy()
               for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def load_minilm_tower() -> MiniLMTower:
    from fmlab.models._zoo import checked_entry, package_dir

    entry = checked_entry("all-minilm-l6-v2", "sentence-encoder", "a sentence encoder",
                          "sentence encoders")
    transformers = require("transformers", feature="fmlab clip-emoji")
    folder = package_dir(entry.meta["module"]) / "model"  # type: ignore[operator]
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    tower = MiniLMTower(model.eval(), tok)
    for p in tower.parameters():
        p.requires_grad_(False)
    return tower


def _image_build(folder: Path, image_size: int) -> None:
    from tqdm.auto import tqdm

    from fmlab.data import load_dataset

    ds = load_dataset("emoji", "all")
    tower = load_efficientnet_tower()
    proc = ImageProcessor(image_size)
    trunks, pooled = [], []
    with torch.inference_mode():
        for i in tqdm(range(0, len(ds), 128), desc="emoji image features (EfficientNet-Lite0)",
                      unit="batch", disable=None):
            h = tower.trunk(proc(ds.images[i : i + 128]))
            trunks.append(h.numpy())
            pooled.append(tower.top(h).numpy())
    np.save(folder / "trunk.npy", np.concatenate(trunks).astype(np.float32))
    np.save(folder / "pooled.npy", np.concatenate(pooled).astype(np.float32))


def _text_build(folder: Path) -> None:
    from fmlab.data import load_dataset

    ds = load_dataset("emoji", "google")
    a = ds.attributes
    first = np.unique(a["concept"], return_index=True)[1]
    names, subs = a["name"][first], a["subcategory"][first]
    text = load_minilm_tower()
    sents = [t.format(name=n, subcategory=s) for n, s in zip(names, subs, strict=True)
             for t in TRAIN_TEMPLATES]
    held = [HELDOUT_TEMPLATE.format(name=n) for n in names]
    emb = text.embed(sents + held)
    k = len(TRAIN_TEMPLATES)
    np.save(folder / "text_train.npy", emb[: len(sents)].reshape(len(names), k, -1))
    np.save(folder / "text_heldout.npy", emb[len(sents):])
    meta = {"names": names.tolist(), "categories": a["category"][first].tolist(),
            "subcategories": subs.tolist(), "train_templates": list(TRAIN_TEMPLATES),
            "heldout_template": HELDOUT_TEMPLATE}
    (folder / "meta.json").write_text(json.dumps(meta))


_FEATURES: dict[str, dict[str, Any]] = {}


def emoji_features(image_size: int = 96) -> dict[str, Any]:
    """The frozen towers' outputs on the emoji dataset (cached once per machine and size).

    Returns:
        A dict: ``trunk`` (N, 192, h, w) and ``pooled`` (N, 1280) float32 image features;
        ``text_train`` (n_concepts, 3, 384) MiniLM embeddings of the training templates;
        ``text_heldout`` (n_concepts, 384) of the held-out template; ``style`` and ``concept``
        per image; ``names``, ``categories``, ``subcategories`` per concept; ``path``.
    """
    from fmlab._cache import cached_build
    from fmlab.models._recipes import ClipEmojiConfig

    base = cache_key("clip-emoji", ClipEmojiConfig(image_size=image_size))
    common = {"data": base["data"], "versions": base["versions"], "format": base["format"]}
    keys = {"images": {"family": "emoji-image-features", "image_size": image_size, **common},
            "texts": {"family": "emoji-text-features", **common,
                      "templates": [*TRAIN_TEMPLATES, HELDOUT_TEMPLATE]}}
    paths = {}
    for part, key in keys.items():
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = cache_dir("models", create=False) / "emoji-features" / f"{part}-{digest}"
        build = (lambda f: _image_build(f, image_size)) if part == "images" else _text_build
        what = (f"emoji image features at {image_size} px" if part == "images" else
                "emoji caption embeddings (MiniLM)")
        paths[part] = cached_build(path, build, key=key, what=what)
    memo = f"{paths['images']}|{paths['texts']}"
    if memo not in _FEATURES:
        from fmlab.data import load_dataset

        ds = load_dataset("emoji", "all")
        out: dict[str, Any] = {n: np.load(paths["images"] / f"{n}.npy", allow_pickle=False)
                               for n in ("trunk", "pooled")}
        out.update({n: np.load(paths["texts"] / f"{n}.npy", allow_pickle=False)
                    for n in ("text_train", "text_heldout")})
        meta = json.loads((paths["texts"] / "meta.json").read_text())
        out.update({k: np.asarray(v) for k, v in meta.items()
                    if k not in ("train_templates", "heldout_template")})
        out["style"] = ds.attributes["style"]
        out["concept"] = ds.attributes["concept"]
        if len(out["style"]) != len(out["pooled"]):
            raise RuntimeError("emoji features and dataset disagree; delete "
                               f"{paths['images']} to rebuild it")
        out["path"] = paths["images"]
        _FEATURES[memo] = out
    return _FEATURES[memo]
