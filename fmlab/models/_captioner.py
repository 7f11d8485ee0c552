"""Image captioners behind one interface: fmlab's ``captioner-emoji`` and transformers
vision-to-text models.

``captioner-emoji`` is ClipCap-style (Mokady et al. 2021, arXiv:2111.09734): frozen
EfficientNet-Lite0 pooled features are mapped to ``prefix_length`` soft prefix embeddings in the
input space of a frozen SmolLM2-135M-Instruct, which reads them inside a fixed few-shot prompt
("Words: ... Name: ...") and writes the emoji's name. Each prefix slot is a probability mixture of
the LM's own embeddings of the tokens emoji names use, scored against prototypes fitted in closed
form on the training styles' cached features (:class:`TokenPrefix`); nothing is trained by
gradient steps through the LM, which measured far too slow for a CPU budget of minutes.

Both captioners offer:

- ``generate(images, do_sample=False, ...) -> list[str]``: batched greedy or sampled captions;
- ``caption_loss(images, texts, reduction="mean")``: the teacher-forced negative log-likelihood of
  given captions, differentiable with respect to float images in [0, 1] (resize and normalisation
  are inside the graph) -- the objective of a captioner attack.
"""

from __future__ import annotations

import abc
import inspect
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


#: The frozen LM reads the image as a few soft "words" inside a fixed few-shot prompt that asks
#: it to repeat them as a name; the prompt before the soft words is the same for every image, so
#: its key/value cache is computed once and shared (it costs nothing per caption).
_SHOTS = ("dog face", "sweden flag", "person lifting weights")
_HARD_PROMPT = "".join(f"Words: {s}\nName: {s}\n" for s in _SHOTS) + "Words:"
_MID_PROMPT = "\nName:"
_END = "\n"  # a caption ends where the prompt's names end: at the line break


class TokenPrefix(nn.Module):
    """Image features -> ``k`` soft prefix embeddings in the frozen LM's own embedding space.

    Prefix slot ``j`` holds a probability mixture of the LM's input embeddings of the tokens that
    emoji names use (``vocab``), plus a "no word" class; slots whose most probable class is "no
    word" are masked out (names are right-aligned: the last slot holds a name's last token,
    usually its head noun: "face", "flag"). The class scores are cosine similarities to learned
    prototypes (a nearest-class-mean classifier per slot, fitted in closed form on cached image
    features of the training styles by :meth:`fit`) plus ``prior`` times the log class frequency.

    Args:
        vocab: LM token ids the slots choose from, ``(V,)``.
        prefix_length: Number of slots ``k``.
        n_features: Size of the image features.
        scale: Inverse temperature of the cosine scores.
        prior: Weight of the log class frequency.
        sharpness: The mixture's softmax is taken over ``sharpness * scores`` (higher: closer to
            the single most probable token).
    """

    def __init__(self, vocab: torch.Tensor, prefix_length: int, n_features: int, *,
                 scale: float = 20.0, prior: float = 0.5, sharpness: float = 4.0) -> None:
        super().__init__()
        n_classes = len(vocab) + 1  # the last class is "no word"
        self.register_buffer("vocab", torch.as_tensor(vocab, dtype=torch.long))
        self.prototypes = nn.Parameter(torch.randn(prefix_length, n_classes, n_features))
        self.register_buffer("log_prior", torch.zeros(prefix_length, n_classes))
        self.scale, self.prior, self.sharpness = float(scale), float(prior), float(sharpness)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Set the prototypes to the normalised class means: ``labels`` is ``(N, k)`` class
        indices (``len(vocab)`` for "no word"); classes never seen in a slot are disabled."""
        k, c, _ = self.prototypes.shape
        x = F.normalize(features.float(), dim=-1)
        flat = (labels + c * torch.arange(k).unsqueeze(0)).reshape(-1)  # (N*k,) slot-major
        sums = torch.zeros(k * c, x.shape[1]).index_add_(0, flat, x.repeat_interleave(k, 0))
        counts = torch.bincount(flat, minlength=k * c).float().view(k, c)
        self.prototypes.copy_(F.normalize(sums.view(k, c, -1), dim=-1))
        self.log_prior.copy_(torch.where(counts > 0, counts.clamp_min(1).log(),
                                         torch.full_like(counts, -1e4)))
        return {"classes_per_slot": (counts > 0).sum(1).tolist(), "n_train": int(len(x))}

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, k, V + 1)``."""
        x = F.normalize(features, dim=-1)
        cos = torch.einsum("bf,kcf->bkc", x, F.normalize(self.prototypes, dim=-1))
        return self.scale * cos + self.prior * self.log_prior

    def forward(self, features: torch.Tensor, table: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings (B, k, d), mask (B, k))`` given the LM's input embedding ``table``."""
        s = self.scores(features)
        probs = F.softmax(self.sharpness * s, dim=-1)[..., :-1]  # "no word" carries no vector
        emb = probs @ table[self.vocab]  # (B, k, d)
        mask = s.argmax(-1) != s.shape[-1] - 1
        return emb, mask


class EmojiCaptioner(Captioner):
    """EfficientNet-Lite0 -> :class:`TokenPrefix` -> frozen SmolLM2 (see module docstring).

    Attributes:
        vision_model: :class:`EfficientNetTower` (frozen).
        mapper: :class:`TokenPrefix`, image features to soft prefix words.
        lm: The frozen causal LM; ``tokenizer`` its tokenizer.
        config: The :class:`CaptionerConfig` it was built with.
    """

    def __init__(self, config: CaptionerConfig, vision: EfficientNetTower | None, lm: Any,
                 tokenizer: Any, vocab: Any) -> None:
        super().__init__()
        self.config = config
        self.vision_model = vision
        self.lm = lm
        self.tokenizer = tokenizer
        for p in lm.parameters():
            p.requires_grad_(False)
        self.d_model = lm.get_input_embeddings().embedding_dim
        self.mapper = TokenPrefix(torch.as_tensor(vocab), config.prefix_length,
                                  EfficientNetTower.n_features, scale=config.scale,
                                  prior=config.prior, sharpness=config.sharpness)
        self._processor = ImageProcessor(config.image_size)
        self.eos_id = int(tokenizer.eos_token_id)
        self.end_id = int(self._ids(_END)[-1])
        self._mid = torch.tensor(self._ids(_MID_PROMPT))
        self._hard = torch.tensor(self._ids(_HARD_PROMPT))
        self._hard_kv: tuple[Any, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        # transformers 5.2x renamed the decoder's ``past_key_values`` argument to ``cache``
        params = inspect.signature(type(lm.model).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def preprocess(self, images: Any) -> torch.Tensor:
        return self._processor(images)

    def prefix_from_features(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft prefix ``(B, k, d)`` and its slot mask ``(B, k)`` from pooled features."""
        return self.mapper(pooled, self.lm.get_input_embeddings().weight)

    def prefix(self, images: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prefix_from_features(self.vision_model(self.preprocess(images)))

    def _cache(self, batch: int, device: Any) -> Any:
        """A key/value cache holding the shared few-shot prompt, expanded to ``batch`` rows."""
        from transformers import DynamicCache

        if self._hard_kv is None or self._hard_kv[0] != device:
            with torch.no_grad():
                cache = DynamicCache()
                self.lm.model(input_ids=self._hard.to(device).unsqueeze(0),
                              **{self._cache_kw: cache}, use_cache=True)
                layers = [(layer.keys, layer.values) for layer in cache.layers]
            self._hard_kv = (device, layers)
        return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1),
                                             v.expand(batch, -1, -1, -1))
                                            for k, v in self._hard_kv[1]])

    def _run(self, embeds: torch.Tensor, mask: torch.Tensor, cache: Any,
             past_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states of ``embeds`` (B, n, d) after the cache; ``mask`` (B, n) marks real
        positions and ``past_mask`` (B, m) the cached ones; positions skip masked slots."""
        full = torch.cat([past_mask, mask], dim=1)
        pos = (full.cumsum(1) - 1).clamp_min(0)[:, past_mask.shape[1]:]
        return self.lm.model(inputs_embeds=embeds, attention_mask=full, position_ids=pos,
                             **{self._cache_kw: cache}, use_cache=True).last_hidden_state

    def _start(self, emb: torch.Tensor, slot_mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embeddings and mask of soft slots + the "Name:" prompt, and the cached prompt's mask."""
        b, dev = emb.shape[0], emb.device
        mid = self.lm.get_input_embeddings()(self._mid.to(dev)).expand(b, -1, -1)
        x = torch.cat([emb.to(mid.dtype), mid], dim=1)
        m = torch.cat([slot_mask.long(), torch.ones(b, mid.shape[1], dtype=torch.long,
                                                    device=dev)], dim=1)
        return x, m, torch.ones(b, len(self._hard), dtype=torch.long, device=dev)

    def _targets(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [self._ids(" " + t.strip()) + [self.end_id] for t in texts]
        width = max(len(i) for i in ids)
        tok = torch.full((len(ids), width), self.end_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, i in enumerate(ids):
            tok[r, : len(i)] = torch.tensor(i)
            mask[r, : len(i)] = 1
        return tok, mask

    def loss_from_prefix(self, prefix: tuple[torch.Tensor, torch.Tensor], texts: list[str],
                         reduction: str = "mean") -> torch.Tensor:
        """Teacher-forced NLL of ``texts`` after ``prefix`` (mean per token, per caption)."""
        emb, slot_mask = prefix
        dev = emb.device
        tok, mask = self._targets(texts)
        tok, mask = tok.to(dev), mask.to(dev)
        x, m, past = self._start(emb, slot_mask)
        n0 = x.shape[1]
        x = torch.cat([x, self.lm.get_input_embeddings()(tok[:, :-1])], dim=1)
        m = torch.cat([m, mask[:, :-1]], dim=1)
        hidden = self._run(x, m, self._cache(len(texts), dev), past)
        # position n0-1+t predicts target token t; the LM head runs on real tokens only
        valid = mask.bool()
        logits = self.lm.lm_head(hidden[:, n0 - 1 :][valid])  # (n_valid, V)
        nll = F.cross_entropy(logits.float(), tok[valid], reduction="none")
        row = torch.arange(len(texts), device=dev).unsqueeze(1).expand_as(valid)[valid]
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
        return self.loss_from_prefix(prefix, _check_texts(texts, prefix[0].shape[0]), reduction)

    @torch.no_grad()
    def generate_from_prefix(self, prefix: tuple[torch.Tensor, torch.Tensor], *,
                             max_new_tokens: int = 16, do_sample: bool = False,
                             temperature: float = 1.0, top_k: int | None = None) -> list[str]:
        """Greedy (or sampled) captions, each ending at the line break or end token."""
        emb, slot_mask = prefix
        b, dev = emb.shape[0], emb.device
        x, m, past = self._start(emb, slot_mask)
        cache = self._cache(b, dev)
        hidden = self._run(x, m, cache, past)[:, -1]
        seen = torch.cat([past, m], dim=1)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        out: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            logits = self.lm.lm_head(hidden).float()
            if do_sample:
                logits = logits / max(temperature, 1e-6)
                if top_k:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(1)
            else:
                nxt = logits.argmax(-1)
            nxt = nxt.masked_fill(done, self.end_id)
            out.append(nxt)
            done |= (nxt == self.end_id) | (nxt == self.eos_id)
            if bool(done.all()):
                break
            one = torch.ones(b, 1, dtype=torch.long, device=dev)
            hidden = self._run(self.lm.get_input_embeddings()(nxt).unsqueeze(1), one, cache,
                               seen)[:, -1]
            seen = torch.cat([seen, one], dim=1)
        texts = []
        for row in torch.stack(out, 1).tolist():
            stop = [j for j, t in enumerate(row) if t in (self.end_id, self.eos_id)]
            texts.append(self.tokenizer.decode(row[: stop[0]] if stop else row,
                                               skip_special_tokens=True).strip())
        return texts

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


def _slot_labels(tokenizer: Any, names: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vocab (V,), labels (n_names, k))``: each name's last ``k`` tokens (as the LM reads
    them after "Words:"), right-aligned; shorter names fill the first slots with "no word"."""
    ids = [tokenizer(" " + str(n), add_special_tokens=False)["input_ids"][-k:] for n in names]
    vocab = sorted({t for i in ids for t in i})
    index = {t: j for j, t in enumerate(vocab)}
    labels = torch.full((len(ids), k), len(vocab), dtype=torch.long)
    for r, i in enumerate(ids):
        labels[r, k - len(i):] = torch.tensor([index[t] for t in i], dtype=torch.long)
    return torch.tensor(vocab, dtype=torch.long), labels


def _fit(model: EmojiCaptioner, feats: dict[str, Any], labels: torch.Tensor,
         config: CaptionerConfig) -> dict[str, Any]:
    """Fit the mapper's prototypes on the cached pooled features of the training styles."""
    rows = np.flatnonzero(np.isin(feats["style"], config.train_styles))
    pooled = torch.from_numpy(feats["pooled"][rows])
    return model.mapper.fit(pooled, labels[torch.from_numpy(feats["concept"][rows])])


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
    vocab, labels = _slot_labels(tok, feats["names"], config.prefix_length)
    model = EmojiCaptioner(config, None, lm, tok, vocab)
    log = _fit(model, feats, labels, config)
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
    k = config.prefix_length
    md = [f"# {name}", "",
          "ClipCap-style captioner built by fmlab on emoji names (fmlab.data 'emoji'): the image "
          f"becomes {k} soft prefix embeddings that the frozen LM reads and turns into a name.", "",
          f"- Image features: EfficientNet-Lite0 (frozen), {config.image_size} px, pooled 1280-d",
          f"- Mapping: {k} prefix slots; slot j is a softmax mixture of SmolLM2's own input "
          f"embeddings of the {len(vocab)} tokens emoji names use (plus a 'no word' class that "
          "masks the slot), scored by cosine similarity to per-slot class prototypes plus "
          f"{config.prior} x log class frequency (scale {config.scale}, mixture sharpness "
          f"{config.sharpness}). The prototypes are the normalised mean features of the training "
          "images whose name has that token in that slot (names right-aligned, last "
          f"{k} tokens): a nearest-class-mean classifier fitted in closed form, not by gradient "
          "steps through the LM (measured too slow on this CPU: 80 such steps took ~2 minutes "
          "and gave token-F1 0.058).",
          "- Language model: SmolLM2-135M-Instruct, all 30 layers, frozen"
          f"{f' (first {config.lm_layers} layers only)' if config.lm_layers else ''}. It reads "
          f"a fixed few-shot prompt ({' / '.join(_SHOTS)}: 'Words: X / Name: X'), whose "
          "key/value cache is computed once, then 'Words:' + the soft prefix + 'Name:', and "
          "writes the caption up to the line break.",
          f"- Fitted on styles {', '.join(config.train_styles)} ({log['n_train']} images); "
          f"{seconds:.1f} s (LM load + fit) and {prepare_seconds:.1f} s with the evaluation, "
          f"on {torch.get_num_threads()} threads",
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
                             takes="about a CPU-minute")
        lm, tok = _load_lm(config)
        state = load_file(str(path / "mapper.safetensors"))
        model = EmojiCaptioner(config, load_efficientnet_tower(), lm, tok, state["vocab"])
        model.mapper.load_state_dict(state)
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
