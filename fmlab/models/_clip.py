"""CLIP-style dual encoders behind one interface: fmlab's ``clip-emoji`` members, a transformers
``CLIPModel`` (``hf:`` id or folder) and ``tiny-clip``.

The interface is transformers' ``CLIPModel``: ``get_image_features(pixel_values)``,
``get_text_features(input_ids, attention_mask)``, ``forward(...)`` returning
``logits_per_image`` / ``logits_per_text``, a ``processor(text=..., images=...)``; plus
``encode_images`` / ``encode_texts`` (normalised embeddings from raw inputs, differentiable with
respect to float images in [0, 1]) and ``zero_shot_classifier(class_names, templates)``.

``clip-emoji`` (Radford et al. 2021, arXiv:2103.00020, at emoji scale): EfficientNet-Lite0 image
tower, all-MiniLM-L6-v2 text tower, learned projections to a shared space, symmetric InfoNCE with
a learned temperature. Members are trained by ``fmlab models prepare clip-emoji-N`` on cached
frozen-tower features (seconds), deterministic for a seed, and cached atomically with a model card.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fmlab._imports import require
from fmlab.exceptions import ModelUnavailableError
from fmlab.models._recipes import (
    CARD_JSON,
    CARD_MD,
    RECIPES,
    ClipEmojiConfig,
    cache_key,
    prepared_path,
    recipe_of,
    recipe_path,
)
from fmlab.models._towers import (
    EfficientNetTower,
    ImageProcessor,
    MiniLMTower,
    emoji_features,
    load_efficientnet_tower,
    load_minilm_tower,
)

__all__ = ["ClipOutput", "DualEncoder", "ZeroShotHead", "load_clip", "prepare_clip"]

DEFAULT_TEMPLATES = ("an emoji of a {}", "a {} icon", "a picture of a {}")


@dataclass
class ClipOutput:
    """What ``DualEncoder.forward`` returns (the fields of transformers' ``CLIPOutput``)."""

    logits_per_image: torch.Tensor  # (B_img, B_txt)
    logits_per_text: torch.Tensor  # (B_txt, B_img)
    image_embeds: torch.Tensor  # (B_img, D), L2-normalised
    text_embeds: torch.Tensor  # (B_txt, D), L2-normalised
    loss: torch.Tensor | None = None


class ZeroShotHead(nn.Linear):
    """A linear classifier on L2-normalised image features: ``logits = scale * norm(x) @ W.T``.

    Its weight rows are the normalised class text embeddings times the model's logit scale, so it
    can be fine-tuned like any ``nn.Linear`` (AutoFT, WiSE-FT).
    """

    def __init__(self, weight: torch.Tensor, class_names: tuple[str, ...]) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=True)
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.zero_()
        self.class_names = class_names

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(F.normalize(features, dim=-1))


class DualEncoder(nn.Module):
    """Base of every CLIP-like model fmlab loads; subclasses set the towers and the processor.

    Subclasses implement ``get_image_features(pixel_values)``, ``get_text_features(input_ids,
    attention_mask)``, ``preprocess(images)`` (differentiable) and ``tokenize(texts)``.
    """

    logit_scale: nn.Parameter
    name: str = ""

    # -- raw inputs -> normalised embeddings ------------------------------------------------
    def processor(self, text: list[str] | None = None, images: Any = None,
                  return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        """Tokens and/or pixel values, as transformers' ``CLIPProcessor``."""
        if return_tensors != "pt":
            raise ValueError(f"Invalid return_tensors {return_tensors!r}. Valid options are: "
                             "('pt',).")
        out: dict[str, torch.Tensor] = {}
        if text is not None:
            out.update(self.tokenize([text] if isinstance(text, str) else list(text)))
        if images is not None:
            out["pixel_values"] = self.preprocess(images)
        return out

    def encode_images(self, images: Any, *, normalize: bool = True,
                      batch_size: int = 256) -> torch.Tensor:
        """Embeddings ``(B, D)`` of raw images; differentiable w.r.t. float images in [0, 1]."""
        device = self.logit_scale.device
        chunks = []
        n = images.shape[0]
        for i in range(0, n, batch_size):
            px = self.preprocess(images[i : i + batch_size]).to(device)
            chunks.append(self.get_image_features(pixel_values=px))
        z = torch.cat(chunks)
        return F.normalize(z, dim=-1) if normalize else z

    # -- the image side as trunk + head: members sharing a trunk compute it once ------------
    def image_trunk(self, images: Any) -> torch.Tensor:
        """The first part of the image side (differentiable): here, the pixel values."""
        return self.preprocess(images).to(self.logit_scale.device)

    def image_head(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the image side: unnormalised embeddings ``(B, D)`` from ``image_trunk``."""
        return self.get_image_features(pixel_values=h)

    def image_trunk_key(self) -> str | None:
        """Equal keys mean equal ``image_trunk`` outputs for every input (so an ensemble may
        compute it once for several members); ``None``: never shared."""
        return None

    def encode_texts(self, texts: list[str], *, normalize: bool = True,
                     batch_size: int = 256) -> torch.Tensor:
        """Embeddings ``(N, D)`` of texts."""
        if isinstance(texts, str):
            texts = [texts]
        device = self.logit_scale.device
        chunks = []
        for i in range(0, len(texts), batch_size):
            tok = {k: v.to(device) for k, v in self.tokenize(texts[i : i + batch_size]).items()}
            chunks.append(self.get_text_features(**tok))
        z = torch.cat(chunks)
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, input_ids: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_loss: bool = False,
                **_: Any) -> ClipOutput:
        if input_ids is None or pixel_values is None:
            raise ValueError("forward needs both input_ids and pixel_values; use "
                             "get_image_features / get_text_features for one side.")
        img = F.normalize(self.get_image_features(pixel_values=pixel_values), dim=-1)
        txt = F.normalize(self.get_text_features(input_ids=input_ids,
                                                 attention_mask=attention_mask), dim=-1)
        logits_per_text = self.logit_scale.exp() * txt @ img.T
        loss = None
        if return_loss:
            loss = clip_loss(logits_per_text)
        return ClipOutput(logits_per_text.T, logits_per_text, img, txt, loss)

    @torch.no_grad()
    def zero_shot_classifier(self, class_names: list[str],
                             templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES,
                             ) -> ZeroShotHead:
        """A linear head from class names: the mean normalised embedding of each class's prompts.

        Args:
            class_names: One name per class (``["food and drink", "animals and nature"]``).
            templates: Prompt templates with one ``{}`` for the class name.

        Returns:
            :class:`ZeroShotHead` mapping image features ``(B, D)`` to logits ``(B, C)``.
        """
        if isinstance(class_names, str) or not class_names:
            raise TypeError("The 'class_names' parameter of zero_shot_classifier must be a "
                            f"non-empty list of str. Got {class_names!r} instead.")
        templates = tuple(templates)
        if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
            raise ValueError("The 'templates' parameter of zero_shot_classifier must be "
                             "strings with one '{}' for the class name. Got "
                             f"{templates!r} instead.")
        prompts = [t.format(c) for c in class_names for t in templates]
        z = self.encode_texts(prompts).view(len(class_names), len(templates), -1).mean(1)
        weight = F.normalize(z, dim=-1) * self.logit_scale.exp()
        return ZeroShotHead(weight.float().cpu(), tuple(class_names)).to(z.device)

    @torch.no_grad()
    def classify(self, images: Any, head: ZeroShotHead) -> np.ndarray:
        """Predicted class indices ``(B,)`` of raw images under ``head``."""
        return head(self.encode_images(images, normalize=False)).argmax(-1).cpu().numpy()


def clip_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): mean of text->image and image->text cross-entropies."""
    target = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return 0.5 * (F.cross_entropy(logits_per_text, target)
                  + F.cross_entropy(logits_per_text.T, target))


def _projection(d_in: int, d_out: int, head: str) -> nn.Module:
    if head == "linear":
        return nn.Linear(d_in, d_out, bias=False)
    return nn.Sequential(nn.Linear(d_in, 512), nn.GELU(), nn.Linear(512, d_out))


class ClipEmoji(DualEncoder):
    """EfficientNet-Lite0 + all-MiniLM-L6-v2 with learned projections (see module docstring).

    Attributes:
        vision_model: :class:`EfficientNetTower` (pixel values -> 1280-d).
        text_model: :class:`MiniLMTower` (tokens -> 384-d, normalised), frozen.
        visual_projection, text_projection: Linear (or MLP) maps to ``projection_dim``.
        logit_scale: Log inverse temperature.
        config: The :class:`ClipEmojiConfig` it was trained with.
    """

    def __init__(self, config: ClipEmojiConfig, vision: EfficientNetTower | None,
                 text: MiniLMTower | None) -> None:
        super().__init__()
        self.config = config
        self.vision_model = vision
        self.text_model = text
        self.visual_projection = _projection(EfficientNetTower.n_features, config.projection_dim,
                                             config.head)
        self.text_projection = _projection(MiniLMTower.dim, config.projection_dim, config.head)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)),
                                        requires_grad=config.learn_temperature)
        self._processor = ImageProcessor(config.image_size)

    def preprocess(self, images: Any) -> torch.Tensor:
        return self._processor(images)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.text_model.tokenize(texts)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values))

    def get_text_features(self, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.text_projection(self.text_model(input_ids, attention_mask))

    def image_trunk(self, images: Any) -> torch.Tensor:
        """EfficientNet-Lite0's frozen trunk on the preprocessed images, ``(B, 192, h, w)``."""
        return self.vision_model.trunk(self.preprocess(images).to(self.logit_scale.device))

    def image_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model.top(h))

    def image_trunk_key(self) -> str | None:
        """A digest of the input size, the normalisation and the trunk's current weights."""
        import hashlib

        b = self.vision_model.backbone
        digest = hashlib.sha256(json.dumps([self._processor.image_size, self._processor.mean,
                                            self._processor.std]).encode())
        for mod in (b._conv_stem, b._bn0, *b._blocks[: self.vision_model.split]):
            for name, t in mod.state_dict().items():
                digest.update(name.encode())
                digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def vision_parameters(self) -> list[nn.Parameter]:
        """Parameters of the image side (tower and projection), e.g. to fine-tune it."""
        return [*self.vision_model.parameters(), *self.visual_projection.parameters()]

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The tensors training changes (what the cache stores)."""
        state = {f"visual_projection.{k}": v
                 for k, v in self.visual_projection.state_dict().items()}
        state.update({f"text_projection.{k}": v
                      for k, v in self.text_projection.state_dict().items()})
        state["logit_scale"] = self.logit_scale.detach().reshape(1)
        if self.config.train_top:
            b = self.vision_model.backbone
            for prefix, mod in (("top_block", b._blocks[self.vision_model.split]),
                                ("conv_head", b._conv_head)):
                state.update({f"{prefix}.{k}": v for k, v in mod.state_dict().items()})
        return {k: v.detach().contiguous().clone() for k, v in state.items()}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.logit_scale.copy_(state["logit_scale"].reshape(()))
        for prefix, mod in (("visual_projection", self.visual_projection),
                            ("text_projection", self.text_projection)):
            mod.load_state_dict({k[len(prefix) + 1 :]: v for k, v in state.items()
                                 if k.startswith(prefix + ".")})
        if self.config.train_top:
            b = self.vision_model.backbone
            for prefix, mod in (("top_block", b._blocks[self.vision_model.split]),
                                ("conv_head", b._conv_head)):
                mod.load_state_dict({k[len(prefix) + 1 :]: v for k, v in state.items()
                                     if k.startswith(prefix + ".")})


class HFClip(DualEncoder):
    """A transformers ``CLIPModel`` behind the :class:`DualEncoder` interface."""

    def __init__(self, model: nn.Module, tokenizer: Any, image_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], name: str = "") -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.logit_scale = model.logit_scale
        self._processor = ImageProcessor(image_size, mean, std)

    def preprocess(self, images: Any) -> torch.Tensor:
        return self._processor(images)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        max_len = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        return dict(self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=max_len, return_tensors="pt"))

    def _tensor(self, out: Any) -> torch.Tensor:
        if isinstance(out, torch.Tensor):
            return out
        return out.pooler_output  # transformers >= 5 may return a model output

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(input_ids=input_ids,
                                                         attention_mask=attention_mask))


# -- training -----------------------------------------------------------------------------------
def _train(config: ClipEmojiConfig, model: ClipEmoji, feats: dict[str, Any]) -> dict[str, Any]:
    """Train the projections (and the top block) on cached features; returns a log."""
    from tqdm.auto import tqdm

    style, concept = feats["style"], feats["concept"]
    n_concepts = len(feats["names"])
    train_mask = np.isin(style, config.train_styles)
    # rows[c, s]: index of concept c's image in training style s
    rows = np.stack([np.flatnonzero(style == s)[np.argsort(concept[style == s])]
                     for s in config.train_styles], axis=1)
    if train_mask.sum() != rows.size:
        raise ValueError(
            f"every concept needs one image in each training style {config.train_styles}; "
            f"got {int(train_mask.sum())} images for {rows.size} concept-style pairs."
        )
    source = torch.from_numpy(feats["trunk"] if config.train_top else feats["pooled"])
    text = torch.from_numpy(feats["text_train"])  # (C, K, 384)
    tower = model.vision_model
    params = [*model.visual_projection.parameters(), *model.text_projection.parameters()]
    groups: list[dict[str, Any]] = [{"params": params, "lr": config.lr}]
    if config.learn_temperature:
        groups.append({"params": [model.logit_scale], "lr": config.lr, "weight_decay": 0.0})
    if config.train_top:
        groups.append({"params": tower.top_parameters(), "lr": config.lr / 3})
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / config.steps)))
    gen = torch.Generator().manual_seed(config.seed)
    losses = []
    model.train()
    for _step in tqdm(range(config.steps), desc=f"train clip-emoji (seed {config.seed})",
                      unit="step", disable=None):
        c = torch.randperm(n_concepts, generator=gen)[: config.batch_size]
        s = torch.randint(rows.shape[1], (len(c),), generator=gen)
        k = torch.randint(text.shape[1], (len(c),), generator=gen)
        x = source[torch.from_numpy(rows)[c, s]]
        pooled = tower.top(x) if config.train_top else x
        img = F.normalize(model.visual_projection(pooled), dim=-1)
        txt = F.normalize(model.text_projection(text[c, k]), dim=-1)
        loss = clip_loss(model.logit_scale.exp() * txt @ img.T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(100.0))
        losses.append(float(loss.detach()))
    model.eval()
    return {"loss_first": losses[0], "loss_last": float(np.mean(losses[-20:]))}


@torch.no_grad()
def _image_embeddings(model: ClipEmoji, feats: dict[str, Any], mask: np.ndarray) -> torch.Tensor:
    src = torch.from_numpy(feats["trunk"][mask] if model.config.train_top
                           else feats["pooled"][mask])
    pooled = model.vision_model.top(src) if model.config.train_top else src
    return F.normalize(model.visual_projection(pooled), dim=-1)


#: the class prompts the model cards score zero-shot category / subcategory accuracy with
#: (``zero_shot_classifier(names, CATEGORY_TEMPLATES)`` reproduces a card's predictions)
CATEGORY_TEMPLATES = ("an emoji from the {} category", "a {} emoji", "an icon of {}")
SUBCATEGORY_TEMPLATES = ("an emoji of {}", "a {} icon", "a picture of {}")


def class_name(kind: str, label: str) -> str:
    """A category or subcategory label as a prompt word ("Food & Drink" -> "food and drink")."""
    return label.lower().replace("&", "and") if kind == "category" else label.replace("-", " ")


def _class_prompts(kind: str, name: str) -> list[str]:
    templates = CATEGORY_TEMPLATES if kind == "category" else SUBCATEGORY_TEMPLATES
    return [t.format(class_name(kind, name)) for t in templates]


@torch.no_grad()
def evaluate_clip_features(model: ClipEmoji, feats: dict[str, Any],
                           style: str) -> dict[str, Any]:
    """Zero-shot and retrieval scores on one style, from cached features (used by the card)."""
    mask = feats["style"] == style
    concept = feats["concept"][mask]
    img = _image_embeddings(model, feats, mask)  # (N, D)
    out: dict[str, Any] = {"style": style, "n_images": int(mask.sum())}
    preds: dict[str, np.ndarray] = {}
    for kind, names in (("category", feats["categories"]), ("subcategory",
                                                            feats["subcategories"])):
        classes = sorted(set(names.tolist()))
        truth = np.searchsorted(np.asarray(classes), names[concept])
        prompts = [p for c in classes for p in _class_prompts(kind, c)]
        emb = model.text_model.embed(prompts)
        z = model.text_projection(torch.from_numpy(emb)).view(len(classes), 3, -1)
        w = F.normalize(F.normalize(z, dim=-1).mean(1), dim=-1)
        pred = (img @ w.T).argmax(-1).numpy()
        preds[kind] = pred
        counts = np.bincount(truth, minlength=len(classes))
        out[f"zero_shot_{kind}"] = float((pred == truth).mean())
        out[f"{kind}_classes"] = len(classes)
        out[f"{kind}_chance_majority"] = float(counts.max() / counts.sum())
        out[f"{kind}_chance_uniform"] = 1.0 / len(classes)
        if kind == "subcategory":  # classify the subcategory, report its category
            sub2cat = {s: c for s, c in zip(feats["subcategories"], feats["categories"],
                                            strict=True)}
            cats = sorted(set(feats["categories"].tolist()))
            mapped = np.searchsorted(np.asarray(cats), [sub2cat[classes[p]] for p in pred])
            truth_c = np.searchsorted(np.asarray(cats), feats["categories"][concept])
            out["zero_shot_category_via_subcategory"] = float((mapped == truth_c).mean())
    txt = F.normalize(model.text_projection(torch.from_numpy(feats["text_heldout"][concept])),
                      dim=-1)
    sim = img @ txt.T  # (N, N); the matching caption of image i is text i
    for direction, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        rank = (s > s.diagonal().unsqueeze(1)).sum(1)  # how many beat the true match
        out[f"{direction}_recall@1"] = float((rank < 1).float().mean())
        out[f"{direction}_recall@5"] = float((rank < 5).float().mean())
    out["retrieval_chance@1"] = 1.0 / int(mask.sum())
    out["temperature"] = float(1.0 / model.logit_scale.exp())
    out["_predictions"] = {k: v.tolist() for k, v in preds.items()}
    return out


def _card_markdown(name: str, card: dict[str, Any]) -> str:
    q = card["quality"]
    lines = [
        f"# {name}", "",
        "CLIP-style dual encoder trained by fmlab on the emoji dataset (fmlab.data 'emoji').", "",
        f"- Image tower: EfficientNet-Lite0 (ImageNet-1k), "
        f"{'last MBConv block + head conv trained' if card['recipe']['train_top'] else 'frozen'}"
        f", {card['recipe']['image_size']} px input",
        "- Text tower: all-MiniLM-L6-v2 (frozen), mean pooling",
        f"- Projections: {card['recipe']['head']} to {card['recipe']['projection_dim']}-d; "
        f"symmetric InfoNCE, temperature "
        f"{'learned' if card['recipe']['learn_temperature'] else 'fixed'} "
        f"(final {q['temperature']:.3f})",
        f"- Trained on styles {', '.join(card['recipe']['train_styles'])}: "
        f"{card['recipe']['steps']} steps x {card['recipe']['batch_size']} pairs, seed "
        f"{card['recipe']['seed']}, {card['train_seconds']:.1f} s on {card['threads']} threads",
        f"- Data licences: {card['data_licences']}", "",
        f"## Quality on the held-out style '{q['style']}' ({q['n_images']} images)", "",
        "| metric | value | chance |", "|---|---|---|",
        f"| zero-shot category ({q['category_classes']} classes) | {q['zero_shot_category']:.3f} "
        f"| {q['category_chance_majority']:.3f} (majority) |",
        f"| zero-shot category via subcategory prompts | "
        f"{q['zero_shot_category_via_subcategory']:.3f} | {q['category_chance_majority']:.3f} |",
        f"| zero-shot subcategory ({q['subcategory_classes']} classes) | "
        f"{q['zero_shot_subcategory']:.3f} | {q['subcategory_chance_majority']:.3f} (majority) |",
    ]
    for d in ("image_to_text", "text_to_image"):
        lines.append(f"| {d.replace('_', ' ')} recall@1 / @5 (held-out caption template) | "
                     f"{q[d + '_recall@1']:.3f} / {q[d + '_recall@5']:.3f} | "
                     f"{q['retrieval_chance@1']:.4f} / {5 * q['retrieval_chance@1']:.4f} |")
    return "\n".join(lines) + "\n"


def _build_member(folder: Path, name: str, config: ClipEmojiConfig) -> None:
    from safetensors.torch import save_file

    from fmlab.data import EMOJI_LICENSES

    feats = emoji_features(config.image_size)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ClipEmoji(config, load_efficientnet_tower(), load_minilm_tower())
        log = _train(config, model, feats)
    seconds = time.perf_counter() - t0
    quality = evaluate_clip_features(model, feats, config.eval_style)
    predictions = quality.pop("_predictions")
    save_file(model.trained_state(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(
        {"family": "clip-emoji", "name": name, **asdict(config)}, indent=2))
    (folder / "predictions.json").write_text(json.dumps(predictions))
    card = {"name": name, "recipe": asdict(config), "train_seconds": seconds,
            "threads": torch.get_num_threads(), "training": log, "quality": quality,
            "data_licences": "; ".join(f"{k}: {v}" for k, v in EMOJI_LICENSES.items()),
            "references": "Radford et al. 2021 (arXiv:2103.00020); Tan & Le 2019 "
                          "(arXiv:1905.11946); Wang et al. 2020 MiniLM (arXiv:2002.10957)"}
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2))
    (folder / CARD_MD).write_text(_card_markdown(name, card))


def prepare_clip(name: str = "clip-emoji", **overrides: Any) -> Path:
    """Train a ``clip-emoji`` member once (or find its cached copy) and return its folder.

    Args:
        name: ``"clip-emoji"`` (= ``clip-emoji-0``), ``"clip-emoji-1"``, ``"clip-emoji-2"``.
        **overrides: :class:`ClipEmojiConfig` fields; other settings get another cache folder.

    Returns:
        The verified cache folder (weights, config, ``MODEL_CARD.md``, ``model_card.json``).
    """
    from fmlab._cache import cached_build
    from fmlab.models._zoo import require_installed

    _check_family(name, "clip-emoji")
    config = recipe_of(name, **overrides)
    for dep in ("efficientnet-lite0", "all-minilm-l6-v2"):
        require_installed(dep)
    path = recipe_path(name, config)
    return cached_build(path, lambda f: _build_member(f, name, config),
                        key=cache_key(name, config), what=name)


def _check_family(name: str, family: str) -> None:
    from fmlab.models._zoo import MODELS

    MODELS.entry(name)  # unknown names: UnknownNameError with suggestions
    if RECIPES.get(name, ("",))[0] != family:
        members = [n for n, (f, _) in RECIPES.items() if f == family]
        raise ValueError(f"{name!r} is not a {family} model; those are: {', '.join(members)}.")


def _load_member(name: str, prepare: bool, device: Any, overrides: dict[str, Any]) -> ClipEmoji:
    from safetensors.torch import load_file

    config = recipe_of(name, **overrides)
    path = prepared_path(name, config, overrides, prepare=prepare_clip if prepare else None,
                         takes="well under a minute on 2 cores")
    model = ClipEmoji(config, load_efficientnet_tower(), load_minilm_tower())
    model.load_trained_state(load_file(str(path / "model.safetensors")))
    model.name = name
    return model.eval().to(device)


def load_clip(name_or_path: str | os.PathLike[str] = "clip-emoji", *, prepare: bool = False,
              device: Any = "cpu", **overrides: Any) -> DualEncoder:
    """Load a CLIP-like dual encoder: a ``clip-emoji`` member, ``tiny-clip``, ``hf:org/name`` or a
    local transformers ``CLIPModel`` folder.

    Args:
        name_or_path: Zoo name, ``"hf:openai/clip-vit-base-patch32"`` or a folder.
        prepare: Train (once) a ``clip-emoji`` member that is not prepared yet, instead of raising.
        device: Where to put the model.
        **overrides: :class:`ClipEmojiConfig` fields for a ``clip-emoji`` member.

    Returns:
        A :class:`DualEncoder` in eval mode.

    Raises:
        ModelUnavailableError: an unprepared member (the message gives the command), a hub id
            with no network, a missing folder.

    Example:
        >>> clip = load_clip("clip-emoji-1")  # doctest: +SKIP
        >>> head = clip.zero_shot_classifier(["food and drink", "flags"])  # doctest: +SKIP
        >>> clip.classify(images_uint8, head)  # doctest: +SKIP
    """
    from fmlab.models._zoo import names_of_kind, resolve_source

    src = resolve_source(
        name_or_path, owner="load_clip", zoo=[*names_of_kind("dual-encoder"), "tiny-clip"],
        what="a CLIP-like model", plural="CLIP-like models",
        missing="No CLIP model at {text}. Pass a zoo name (clip-emoji, clip-emoji-0..2, "
                "tiny-clip), 'hf:org/name' or a folder saved with CLIPModel.save_pretrained().",
    )
    text = os.fspath(name_or_path)
    if src.kind == "zoo" and src.location == "tiny-clip":
        from fmlab.models._tiny import tiny_clip, tiny_tokenizer

        model = tiny_clip(**overrides)
        half = (0.5, 0.5, 0.5)
        return HFClip(model, tiny_tokenizer(), 32, half, half, name="tiny-clip").to(device)
    if src.kind == "zoo":  # a clip-emoji member
        return _load_member(src.location, prepare, device, overrides)
    if overrides:
        raise TypeError(f"Settings {sorted(overrides)} apply only to clip-emoji members.")
    transformers = require("transformers", feature="fmlab.models.load_clip")
    source, local_only = src.location, src.local_only
    try:
        model = transformers.CLIPModel.from_pretrained(source, local_files_only=local_only)
        tok = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        try:
            ip = transformers.CLIPImageProcessor.from_pretrained(source,
                                                                 local_files_only=local_only)
            mean, std = tuple(ip.image_mean), tuple(ip.image_std)
        except OSError:
            mean, std = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)  # CLIP's defaults
    except OSError as exc:
        raise ModelUnavailableError(
            f"Cannot load CLIP model {text!r} ({type(exc).__name__}: {exc}). fmlab works "
            f"offline: use 'clip-emoji' (fmlab models prepare clip-emoji) or a local folder."
        ) from exc
    size = int(model.config.vision_config.image_size)
    return HFClip(model.eval(), tok, size, mean, std, name=text).to(device)
