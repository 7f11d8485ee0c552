"""Image captioners behind one interface: fmlab's ``captioner-emoji`` and transformers
vision-to-text models.

``captioner-emoji`` is ClipCap-style (Mokady et al. 2021, arXiv:2111.09734): frozen
EfficientNet-Lite0 pooled features are mapped by a small MLP to ``prefix_length`` input embeddings
of a frozen SmolLM2-135M-Instruct, trained with the LM's teacher-forced loss on emoji captions.

Both captioners offer:

- ``generate(images, do_sample=False, ...) -> list[str]``: batched greedy or sampled captions;
- ``caption_loss(images, texts, reduction="mean")``: the teacher-forced negative log-likelihood of
  given captions, differentiable with respect to float images in [0, 1] (resize and normalisation
  are inside the graph) -- the objective of a captioner attack.
"""

from __future__ import annotations

import abc
import json
import os
import re
import time
from dataclasses import asdict
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
    CaptionerConfig,
    cache_key,
    prepared_path,
    recipe_of,
    recipe_path,
)
from fmlab.models._towers import (
    EfficientNetTower,
    ImageProcessor,
    emoji_features,
    load_efficientnet_tower,
)

__all__ = ["Captioner", "caption_scores", "load_captioner", "prepare_captioner"]

_LM = "smollm2-135m-instruct"
_PROMPT = "Emoji:\n"  # the prefix starts as this prompt (4 SmolLM2 tokens)
_MAX_NAME_TOKENS = 10  # 99% of emoji names are at most 9 SmolLM2 tokens


def _check_texts(texts: Any, n: int) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"The 'texts' parameter of caption_loss must be a str or a list of str. "
                        f"Got {texts!r} instead.")
    if len(texts) == 1 and n > 1:
        texts = texts * n
    if len(texts) != n:
        raise ValueError(f"caption_loss needs one text per image (or one for all), but got "
                         f"{len(texts)} texts for {n} images.")
    return texts


class Captioner(nn.Module, metaclass=abc.ABCMeta):
    """Base of fmlab's captioners: ``generate`` and ``caption_loss`` over raw images."""

    name: str = ""

    @abc.abstractmethod
    def generate(self, images: Any, *, max_new_tokens: int = 16, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, seed: int | None = None,
                 batch_size: int = 64) -> list[str]:
        """Captions of ``images`` (uint8 or float in [0, 1]), greedy unless ``do_sample``."""

    @abc.abstractmethod
    def caption_loss(self, images: Any, texts: list[str] | str, *,
                     reduction: str = "mean") -> torch.Tensor:
        """Teacher-forced loss of ``texts`` given ``images``, differentiable w.r.t. the pixels."""


class EmojiCaptioner(Captioner):
    """EfficientNet-Lite0 -> MLP -> prefix embeddings -> frozen SmolLM2 (see module docstring).

    Attributes:
        vision_model: :class:`EfficientNetTower` (frozen).
        mapper: ``(B, 1280) -> (B, prefix_length * d_model)``.
        lm: The frozen causal LM; ``tokenizer`` its tokenizer.
        config: The :class:`CaptionerConfig` it was trained with.
    """

    def __init__(self, config: CaptionerConfig, vision: EfficientNetTower | None, lm: Any,
                 tokenizer: Any) -> None:
        super().__init__()
        self.config = config
        self.vision_model = vision
        self.lm = lm
        self.tokenizer = tokenizer
        d = lm.get_input_embeddings().embedding_dim
        self.d_model = d
        self.mapper = nn.Sequential(
            nn.Linear(EfficientNetTower.n_features, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.prefix_length * d))
        with torch.no_grad():
            # start as the hard prompt "Emoji:\n" (its token embeddings, cycled to the prefix
            # length) plus a small image-dependent part: the frozen LM then already answers with
            # short names, and training only has to make them the right ones
            table = lm.get_input_embeddings().weight
            ids = tokenizer(_PROMPT, add_special_tokens=False)["input_ids"]
            ids = [ids[i % len(ids)] for i in range(config.prefix_length)]
            self.mapper[2].bias.copy_(table[ids].reshape(-1))
            scale = table.std().item()
            self.mapper[2].weight.mul_(scale / max(self.mapper[2].weight.std().item(), 1e-8) * 0.1)
        for p in lm.parameters():
            p.requires_grad_(False)
        self._processor = ImageProcessor(config.image_size)
        self.eos_id = int(tokenizer.eos_token_id)

    def preprocess(self, images: Any) -> torch.Tensor:
        return self._processor(images)

    def prefix_from_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """Prefix embeddings ``(B, k, d)`` from pooled image features ``(B, 1280)``."""
        return self.mapper(pooled).view(-1, self.config.prefix_length, self.d_model)

    def prefix(self, images: Any) -> torch.Tensor:
        return self.prefix_from_features(self.vision_model(self.preprocess(images)))

    def _targets(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] + [self.eos_id]
               for t in texts]
        width = max(len(i) for i in ids)
        tok = torch.full((len(ids), width), self.eos_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, i in enumerate(ids):
            tok[r, : len(i)] = torch.tensor(i)
            mask[r, : len(i)] = 1
        return tok, mask

    def loss_from_prefix(self, prefix: torch.Tensor, texts: list[str],
                         reduction: str = "mean") -> torch.Tensor:
        """Teacher-forced NLL of ``texts`` after ``prefix`` (mean per token, per caption)."""
        tok, mask = self._targets(texts)
        tok, mask = tok.to(prefix.device), mask.to(prefix.device)
        emb = self.lm.get_input_embeddings()(tok)  # (B, T, d)
        inputs = torch.cat([prefix.to(emb.dtype), emb], dim=1)
        k = prefix.shape[1]
        attn = torch.cat([torch.ones(mask.shape[0], k, dtype=mask.dtype, device=mask.device),
                          mask], dim=1)
        hidden = self.lm.model(inputs_embeds=inputs, attention_mask=attn).last_hidden_state
        # position k-1+t predicts target token t; the LM head (576 x 49k) runs on real
        # tokens only, not on padding
        valid = mask.bool()
        logits = self.lm.lm_head(hidden[:, k - 1 : -1][valid])  # (n_valid, V)
        nll = F.cross_entropy(logits.float(), tok[valid], reduction="none")  # (n_valid,)
        row = torch.arange(len(texts), device=nll.device).unsqueeze(1).expand_as(valid)[valid]
        per = nll.new_zeros(len(texts)).index_add(0, row, nll) / mask.sum(1)
        return per if reduction == "none" else per.mean()

    def caption_loss(self, images: Any, texts: list[str] | str, *,
                     reduction: str = "mean") -> torch.Tensor:
        """Mean per-token NLL of ``texts`` given ``images`` (scalar, or ``(B,)`` with
        ``reduction="none"``); differentiable w.r.t. float images in [0, 1]."""
        if reduction not in ("mean", "none"):
            raise ValueError(f"Invalid reduction {reduction!r}. Valid options are: "
                             "('mean', 'none').")
        prefix = self.prefix(images)
        return self.loss_from_prefix(prefix, _check_texts(texts, prefix.shape[0]), reduction)

    @torch.no_grad()
    def generate_from_prefix(self, prefix: torch.Tensor, *, max_new_tokens: int = 16,
                             do_sample: bool = False, temperature: float = 1.0,
                             top_k: int | None = None) -> list[str]:
        kwargs: dict[str, Any] = {"do_sample": do_sample}
        if do_sample:
            kwargs.update(temperature=temperature, top_k=top_k or 0)
        attn = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        out = self.lm.generate(inputs_embeds=prefix, attention_mask=attn,
                               max_new_tokens=max_new_tokens, eos_token_id=self.eos_id,
                               pad_token_id=self.eos_id, **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def generate(self, images: Any, *, max_new_tokens: int = 16, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, seed: int | None = None,
                 batch_size: int = 64) -> list[str]:
        """Captions of raw images, greedy (default) or sampled (seeded with ``seed``)."""
        n = int(images.shape[0])
        out: list[str] = []
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for i in range(0, n, batch_size):
                out += self.generate_from_prefix(
                    self.prefix(images[i : i + batch_size]), max_new_tokens=max_new_tokens,
                    do_sample=do_sample, temperature=temperature, top_k=top_k)
        return out


class HFCaptioner(Captioner):
    """A transformers vision-to-text model (BLIP, GIT, VisionEncoderDecoder) as a Captioner."""

    def __init__(self, model: nn.Module, processor: Any, name: str = "") -> None:
        super().__init__()
        self.model = model
        self.hf_processor = processor
        self.name = name
        ip = getattr(processor, "image_processor", processor)
        size = ip.size.get("height") or ip.size.get("shortest_edge") if isinstance(
            ip.size, dict) else ip.size
        self._processor = ImageProcessor(int(size), tuple(ip.image_mean), tuple(ip.image_std))
        self.tokenizer = getattr(processor, "tokenizer", processor)

    def preprocess(self, images: Any) -> torch.Tensor:
        return self._processor(images)

    def caption_loss(self, images: Any, texts: list[str] | str, *,
                     reduction: str = "mean") -> torch.Tensor:
        px = self.preprocess(images)
        texts = _check_texts(texts, px.shape[0])
        tok = self.tokenizer(texts, padding=True, return_tensors="pt")
        labels = tok["input_ids"].masked_fill(tok["attention_mask"] == 0, -100)
        out = self.model(pixel_values=px, input_ids=tok["input_ids"],
                         attention_mask=tok["attention_mask"], labels=labels)
        if reduction == "mean":
            return out.loss
        logits = out.logits[:, -labels.shape[1] :]
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none",
                              ignore_index=-100)
        valid = (labels[:, 1:] != -100).float()
        return (nll * valid).sum(1) / valid.sum(1).clamp_min(1)

    @torch.no_grad()
    def generate(self, images: Any, *, max_new_tokens: int = 16, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, seed: int | None = None,
                 batch_size: int = 64) -> list[str]:
        out: list[str] = []
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for i in range(0, int(images.shape[0]), batch_size):
                kw: dict[str, Any] = {"do_sample": do_sample}
                if do_sample:
                    kw.update(temperature=temperature, top_k=top_k or 0)
                ids = self.model.generate(pixel_values=self.preprocess(images[i : i + batch_size]),
                                          max_new_tokens=max_new_tokens, **kw)
                out += [t.strip() for t in self.tokenizer.batch_decode(
                    ids, skip_special_tokens=True)]
        return out


# -- quality ------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def caption_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Exact match (after lower-casing and stripping punctuation) and mean token-F1."""
    exact, f1s = [], []
    for p, r in zip(predictions, references, strict=True):
        pw, rw = _words(p), _words(r)
        exact.append(float(pw == rw))
        common = sum(min(pw.count(w), rw.count(w)) for w in set(pw))
        if not pw or not rw or common == 0:
            f1s.append(0.0)
            continue
        prec, rec = common / len(pw), common / len(rw)
        f1s.append(2 * prec * rec / (prec + rec))
    return {"exact_match": float(np.mean(exact)), "token_f1": float(np.mean(f1s))}


# -- training -----------------------------------------------------------------------------------
def _load_lm(config: CaptionerConfig) -> tuple[Any, Any]:
    from fmlab.models._causal import load_causal_lm

    lm, tok = load_causal_lm(_LM)
    if config.lm_layers:
        lm.model.layers = lm.model.layers[: config.lm_layers]
        lm.config.num_hidden_layers = config.lm_layers
    return lm.eval(), tok


def _train(model: EmojiCaptioner, feats: dict[str, Any], config: CaptionerConfig
           ) -> dict[str, Any]:
    """Fit the mapper on cached pooled features; the LM runs forward and backward (to the prefix)
    in float32: this CPU has no native bfloat16, and autocast to it was measured slower."""
    from tqdm.auto import tqdm

    train_rows = np.flatnonzero(np.isin(feats["style"], config.train_styles))
    names = feats["names"]
    pooled = torch.from_numpy(feats["pooled"])
    opt = torch.optim.AdamW(model.mapper.parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / config.steps))
    gen = torch.Generator().manual_seed(config.seed)
    # length buckets: a batch holds captions of one length (in tokens; 7+ together), so the LM
    # runs on almost no padding (a random batch pads every caption to the longest, ~4x the mean)
    length = np.array([len(model.tokenizer(str(n), add_special_tokens=False)["input_ids"])
                       for n in names])[feats["concept"][train_rows]]
    bucket = np.minimum(length, 7)
    losses = []
    for _ in tqdm(range(config.steps), desc="train captioner-emoji", unit="step", disable=None):
        # the bucket of a uniformly drawn image (so buckets are seen as often as the data has
        # them), then distinct images of that bucket
        pool = train_rows[bucket == bucket[int(torch.randint(len(train_rows), (1,),
                                                                generator=gen))]]
        rows = pool[torch.randperm(len(pool), generator=gen)[: config.batch_size].numpy()]
        texts = [str(names[c]) for c in feats["concept"][rows]]
        loss = model.loss_from_prefix(model.prefix_from_features(pooled[rows]), texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return {"loss_first": losses[0], "loss_last": float(np.mean(losses[-5:]))}


def _baselines(feats: dict[str, Any], train_rows: np.ndarray, rows: np.ndarray,
               refs: list[str]) -> dict[str, dict[str, float]]:
    """What a captioner must beat on ``rows``: the training image nearest in the same frozen
    features (its name as the caption) and the most frequent training word as a constant."""
    from collections import Counter

    names, concept = feats["names"], feats["concept"]
    unit = feats["pooled"] / np.linalg.norm(feats["pooled"], axis=1, keepdims=True)
    nearest = train_rows[np.argmax(unit[rows] @ unit[train_rows].T, axis=1)]
    words = Counter(w for c in concept[train_rows] for w in _words(str(names[c])))
    constant = words.most_common(1)[0][0]
    return {"nearest_caption": caption_scores([str(names[c]) for c in concept[nearest]], refs),
            f"constant_{constant!r}": caption_scores([constant] * len(refs), refs)}


def _evaluate(model: EmojiCaptioner, feats: dict[str, Any], config: CaptionerConfig,
              style: str, n: int) -> dict[str, Any]:
    rows = np.flatnonzero(feats["style"] == style)
    rows = np.sort(np.random.default_rng(config.seed).choice(rows, size=min(n, len(rows)),
                                                             replace=False))
    refs = [str(feats["names"][c]) for c in feats["concept"][rows]]
    preds: list[str] = []
    pooled = torch.from_numpy(feats["pooled"][rows])
    for i in range(0, len(rows), 64):
        preds += model.generate_from_prefix(model.prefix_from_features(pooled[i : i + 64]),
                                            max_new_tokens=_MAX_NAME_TOKENS)
    train_rows = np.flatnonzero(np.isin(feats["style"], config.train_styles))
    return {"style": style, "n_images": len(rows), **caption_scores(preds, refs),
            "baselines": _baselines(feats, train_rows[~np.isin(train_rows, rows)], rows, refs),
            "examples": [{"reference": r, "caption": p} for r, p in zip(refs[:8], preds[:8],
                                                                       strict=True)]}


def _build(folder: Path, name: str, config: CaptionerConfig) -> None:
    from safetensors.torch import save_file

    from fmlab.data import EMOJI_LICENSES

    feats = emoji_features(config.image_size)
    t0 = time.perf_counter()
    lm, tok = _load_lm(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = EmojiCaptioner(config, None, lm, tok)
        log = _train(model, feats, config)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        held = _evaluate(model, feats, config, config.eval_style, config.eval_images)
        seen = _evaluate(model, feats, config, config.train_styles[0],
                         max(2, config.eval_images // 2))
    prepare_seconds = time.perf_counter() - t0
    save_file({k: v.detach().contiguous() for k, v in model.mapper.state_dict().items()},
              str(folder / "mapper.safetensors"))
    (folder / "config.json").write_text(json.dumps(
        {"family": "captioner-emoji", "name": name, **asdict(config)}, indent=2))
    card = {"name": name, "recipe": asdict(config), "train_seconds": seconds,
            "prepare_seconds": prepare_seconds, "threads": torch.get_num_threads(),
            "training": log,
            "quality": {"heldout_style": held, "train_style": seen,
                        "exact_match_chance": 1.0 / len(feats["names"])},
            "data_licences": "; ".join(f"{k}: {v}" for k, v in EMOJI_LICENSES.items()),
            "references": "Mokady et al. 2021 ClipCap (arXiv:2111.09734); SmolLM2 "
                          "(arXiv:2502.02737); Tan & Le 2019 (arXiv:1905.11946)"}
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2))
    rows = []
    for res, label in ((held, "held out"), (seen, "trained on")):
        rows.append(f"| {res['style']} ({label}) | {res['n_images']} | captioner-emoji | "
                    f"{res['exact_match']:.3f} | {res['token_f1']:.3f} |")
        rows += [f"| | | baseline: {b.replace('_', ' ')} | {v['exact_match']:.3f} | "
                 f"{v['token_f1']:.3f} |" for b, v in res["baselines"].items()]
    md = [f"# {name}", "",
          "ClipCap-style captioner trained by fmlab on emoji names (fmlab.data 'emoji').", "",
          f"- Image features: EfficientNet-Lite0 (frozen), {config.image_size} px",
          f"- Mapping: MLP 1280 -> {config.hidden} -> {config.prefix_length} x "
          f"{model.d_model} prefix embeddings (the only trained weights)",
          f"- Language model: SmolLM2-135M-Instruct, frozen"
          f"{f' (first {config.lm_layers} layers only)' if config.lm_layers else ''}",
          f"- Trained on styles {', '.join(config.train_styles)}: {config.steps} steps x "
          f"{config.batch_size} captions (the emoji's name), float32, seed {config.seed}; "
          f"{seconds:.1f} s (LM load + training) and {prepare_seconds:.1f} s with the evaluation, "
          f"on {torch.get_num_threads()} threads; loss {log['loss_first']:.2f} -> "
          f"{log['loss_last']:.2f}",
          f"- Data licences: {card['data_licences']}", "",
          "## Quality (greedy captions vs the emoji's name)", "",
          "Baselines on the same images: *nearest caption* names each image after the training "
          "image nearest to it in the same frozen EfficientNet-Lite0 features (a retrieval "
          "captioner); *constant* always answers the most frequent training word. Chance of an "
          f"exact match by guessing one name: {1 / len(feats['names']):.4f}.", "",
          "| style | images | captioner | exact name match | token F1 |", "|---|---|---|---|---|",
          *rows, "",
          "Examples (held-out style): " + "; ".join(
              f"{e['reference']!r} -> {e['caption']!r}" for e in held["examples"][:6])]
    (folder / CARD_MD).write_text("\n".join(md) + "\n")


def prepare_captioner(name: str = "captioner-emoji", **overrides: Any) -> Path:
    """Train ``captioner-emoji`` once (or find its cached copy) and return its folder.

    Args:
        name: ``"captioner-emoji"``.
        **overrides: :class:`CaptionerConfig` fields; other settings get another cache folder.
    """
    from fmlab._cache import cached_build
    from fmlab.models._clip import _check_family
    from fmlab.models._zoo import require_installed

    _check_family(name, "captioner-emoji")
    config = recipe_of(name, **overrides)
    for dep in ("efficientnet-lite0", "smollm2-135m-instruct"):
        require_installed(dep)
    path = recipe_path(name, config)
    return cached_build(path, lambda f: _build(f, name, config), key=cache_key(name, config),
                        what=name)


def load_captioner(name_or_path: str | os.PathLike[str] = "captioner-emoji", *,
                   prepare: bool = False, device: Any = "cpu", **overrides: Any) -> Captioner:
    """Load a captioner: ``captioner-emoji``, ``hf:org/name`` or a local folder of a transformers
    vision-to-text model (``AutoModelForVision2Seq``: BLIP, GIT, VisionEncoderDecoder).

    Args:
        name_or_path: Zoo name, hub id with ``hf:`` or a folder.
        prepare: Train ``captioner-emoji`` once if it is not prepared, instead of raising.
        device: Where to put the model.
        **overrides: :class:`CaptionerConfig` fields for ``captioner-emoji``.

    Raises:
        ModelUnavailableError: not prepared (the message gives the command), no network, no
            folder.

    Example:
        >>> cap = load_captioner("captioner-emoji")  # doctest: +SKIP
        >>> cap.generate(images_uint8)  # doctest: +SKIP
        ['hot dog', 'red apple']
        >>> cap.caption_loss(images_float, ["a painting of a woman"]).backward()  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    from fmlab.models._zoo import names_of_kind, resolve_source

    src = resolve_source(
        name_or_path, owner="load_captioner", zoo=names_of_kind("captioner"),
        what="a captioner", plural="captioners",
        missing="No captioner at {text}. Pass 'captioner-emoji', 'hf:org/name' or a folder "
                "saved with save_pretrained() of a vision-to-text model.",
    )
    text = os.fspath(name_or_path)
    if src.kind == "zoo":  # captioner-emoji
        config = recipe_of(text, **overrides)
        path = prepared_path(text, config, overrides,
                             prepare=prepare_captioner if prepare else None,
                             takes="about 2 CPU-minutes")
        lm, tok = _load_lm(config)
        model = EmojiCaptioner(config, load_efficientnet_tower(), lm, tok)
        model.mapper.load_state_dict(load_file(str(path / "mapper.safetensors")))
        model.name = text
        return model.eval().to(device)
    if overrides:
        raise TypeError(f"Settings {sorted(overrides)} apply only to captioner-emoji.")
    transformers = require("transformers", feature="fmlab.models.load_captioner")
    source, local_only = src.location, src.local_only
    try:
        auto = getattr(transformers, "AutoModelForImageTextToText", None) or \
            transformers.AutoModelForVision2Seq
        model = auto.from_pretrained(source, local_files_only=local_only)
        processor = transformers.AutoProcessor.from_pretrained(source,
                                                               local_files_only=local_only)
    except OSError as exc:
        raise ModelUnavailableError(
            f"Cannot load captioner {text!r} ({type(exc).__name__}: {exc}). fmlab works "
            f"offline: use 'captioner-emoji' (fmlab models prepare captioner-emoji)."
        ) from exc
    return HFCaptioner(model.eval(), processor, name=text).to(device)
