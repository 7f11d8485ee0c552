"""Objectives for image attacks: what PGD/BIM lower, for each kind of victim.

An objective maps a batch of images ``(N, *x.shape)``, float in [0, 1] at the image's own
resolution, to losses ``(N,)``; the victim's own preprocessing (resize, normalisation) runs inside
it, so gradients reach the stored pixels. Objectives with ``is_success(x)`` let the attack stop
early.

- :class:`CaptionerObjective`: the teacher-forced loss of a target caption through a captioner
  (``caption_loss(images, texts) -> (N,)``, ``generate(images) -> list[str]``); every
  ``decode_every`` calls of the success test it decodes greedily and scores the caption against
  the target (exact match, normalised edit distance), keeping the best-scoring image.
- :class:`ClipEnsembleObjective`: ``Σ_f −cos(f(x), t⁺) + cos(f(x), t⁻)`` over an ensemble of
  dual encoders (``encode_images``, ``encode_texts``), each text feature the normalised mean
  over prompt templates.
- :class:`SpectrumAugmented`: wraps an objective so its gradient is the Spectrum Simulation
  Attack's (the mean over ``n`` spectrum-transformed copies of the input).
- :class:`ClassifierObjective`: untargeted (or targeted) cross-entropy of an image classifier,
  the textbook PGD objective (the benchmark against torchattacks uses it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fmlab._validation import check_int, check_real

if TYPE_CHECKING:
    import torch

__all__ = [
    "CLIP_TEMPLATES",
    "CaptionerObjective",
    "ClassifierObjective",
    "ClipEnsembleObjective",
    "DecodeRecord",
    "SpectrumAugmented",
    "edit_similarity",
]

#: Prompt templates averaged into each text feature (the ImageNet-style ensemble, emoji-worded).
CLIP_TEMPLATES: tuple[str, ...] = (
    "{}",
    "an emoji of a {}",
    "a picture of {}",
    "an icon showing {}",
    "a drawing of {}",
    "a small picture of {}",
)


def _flat(xs: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """``(N, [B,] 3, H, W)`` -> ``(N*B, 3, H, W)``, N, B."""
    n = xs.shape[0]
    b = 1 if xs.ndim == 4 else int(xs[0].shape[0])
    return xs.reshape(n * b, *xs.shape[-3:]), n, b


def edit_similarity(a: str, b: str) -> float:
    """``1 - Levenshtein(a, b) / max(len(a), len(b))`` (1 for equal strings, 0 for disjoint)."""
    if a == b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b), 1)


@dataclass(frozen=True)
class DecodeRecord:
    """One greedy decode during an attack: call number, caption, exact match, similarity, and
    which image of an attacked batch it belongs to."""

    call: int
    caption: str
    exact: bool
    similarity: float
    image: int = 0


class CaptionerObjective:
    """Teacher-forced loss of ``target`` through ``captioner``, with decode monitoring.

    .. math:: \\mathcal{L}(x) = -\\sum_t \\log p(c^*_t \\mid x, c^*_{<t})

    Several pictures can be attacked in one batch, each towards its own caption: pass a list of
    ``B`` targets and attack a ``(B, 3, H, W)`` batch. The loss is the sum over the pictures (their
    gradients stay separate: the captioner sees each picture alone), the captioner runs once per
    step on the whole batch, and each picture keeps its own best decode.

    Args:
        captioner: Has ``caption_loss(images, texts, reduction="none") -> (N,)`` (differentiable
            w.r.t. float images in [0, 1]) and ``generate(images, max_new_tokens=...)`` (greedy),
            e.g. the zoo's ``captioner-emoji``; with a ``tokenizer``, the target's length is
            checked.
        target: The caption the attacker wants, or one per picture of the attacked batch.
        decode_every: Decode (greedy) and score every this many success tests (one per step).
        max_new_tokens: Length limit of the greedy decode; a target that cannot fit is refused.

    Attributes:
        history: The :class:`DecodeRecord` of every decode (one per picture).
        best_images, best_records: Per picture, the decoded version with the highest similarity
            so far (a later one wins ties, as it has the lower loss along the run);
            ``best_image`` and ``best_record`` are those of the first picture.

    The success test passes when every picture's greedy caption is its exact target.

    Raises:
        ValueError: an empty target, one longer than the captioner's caption limit, or a batch
            whose size differs from the number of targets.

    References:
        Wu et al., Dissecting Adversarial Robustness of Multimodal LM Agents (arXiv:2406.12814).
    """

    def __init__(self, captioner: Any, target: str | Sequence[str], *, decode_every: int = 10,
                 max_new_tokens: int = 16) -> None:
        targets = [target] if isinstance(target, str) else list(target)
        if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
            raise ValueError(
                f"The 'target' caption of CaptionerObjective must be a non-empty str (or a list "
                f"of them, one per picture). Got {target!r} instead."
            )
        self.max_new_tokens = check_int(max_new_tokens, "max_new_tokens",
                                        owner="CaptionerObjective", low=1)
        tok = getattr(captioner, "tokenizer", None)
        for t in targets if tok is not None else ():
            n = len(tok(t, add_special_tokens=False)["input_ids"])
            if n >= self.max_new_tokens:  # the end-of-caption token must fit too
                raise ValueError(
                    f"The target caption {t!r} is {n} tokens long; the captioner decodes at "
                    f"most {self.max_new_tokens} tokens (max_new_tokens) including its end token, "
                    f"so it could never say it. Use a shorter target or raise max_new_tokens."
                )
        self.captioner = captioner
        self.target = target
        self.targets = targets
        self.decode_every = check_int(decode_every, "decode_every", owner="CaptionerObjective",
                                      low=1)
        self.history: list[DecodeRecord] = []
        self.best_images: list[torch.Tensor | None] = [None] * len(targets)
        self.best_records: list[DecodeRecord | None] = [None] * len(targets)
        self._calls = 0

    @property
    def best_image(self) -> torch.Tensor | None:
        return self.best_images[0]

    @property
    def best_record(self) -> DecodeRecord | None:
        return self.best_records[0]

    def _targets_for(self, b: int) -> list[str]:
        if len(self.targets) == 1:
            return self.targets * b
        if b != len(self.targets):
            raise ValueError(
                f"CaptionerObjective has {len(self.targets)} targets, one per picture, but the "
                f"attacked batch holds {b} pictures. Attack a (B, 3, H, W) batch with B = "
                f"{len(self.targets)}."
            )
        return self.targets

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        flat, n, b = _flat(xs)
        loss = self.captioner.caption_loss(flat, self._targets_for(b) * n,
                                           reduction="none")  # (N*B,)
        return loss.reshape(n, b).sum(-1)

    def decode(self, x: torch.Tensor) -> list[DecodeRecord]:
        """Greedy captions of ``x`` (one picture or a batch) scored against the targets; updates
        each picture's best."""
        import torch

        pictures = x.reshape(-1, *x.shape[-3:])
        targets = self._targets_for(pictures.shape[0])
        with torch.no_grad():
            captions = self.captioner.generate(pictures, max_new_tokens=self.max_new_tokens)
        grow = len(targets) - len(self.best_records)  # one target broadcast to a batch
        self.best_records += [None] * grow
        self.best_images += [None] * grow
        records = []
        for i, (caption, target) in enumerate(zip(captions, targets, strict=True)):
            caption = str(caption).strip()
            rec = DecodeRecord(self._calls, caption, caption == target,
                               edit_similarity(caption, target), i)
            records.append(rec)
            self.history.append(rec)
            best = self.best_records[i]
            if best is None or rec.similarity >= best.similarity:
                self.best_records[i], self.best_images[i] = rec, pictures[i].detach().clone()
        return records

    def first_exact(self) -> list[int | None]:
        """Per picture, the call at which its decode first matched the target (``None``: never)."""
        out: list[int | None] = [None] * len(self.best_records)
        for rec in self.history:
            if rec.exact and rec.image < len(out) and out[rec.image] is None:
                out[rec.image] = rec.call
        return out

    def is_success(self, x: torch.Tensor) -> bool:
        self._calls += 1
        if (self._calls - 1) % self.decode_every:
            return False
        return all(r.exact for r in self.decode(x))


class ClipEnsembleObjective:
    """Push images towards a text and away from another, in every member of an encoder ensemble.

    .. math::

        \\mathcal{L}(x) = \\sum_{f} -\\cos(f(x), t^+_f) + \\cos(f(x), t^-_f)

    where :math:`t_f` is member f's normalised mean text feature over ``templates``.

    Several pictures can be attacked in one batch, each towards its own concept: pass lists of
    ``B`` concepts and attack a ``(B, 3, H, W)`` batch (the loss sums over the pictures). Members
    whose image side starts with the same frozen trunk (equal ``image_trunk_key()``, e.g. the
    ``clip-emoji-*`` members on one EfficientNet-Lite0) run that trunk once per evaluation and
    only their own heads after it.

    Args:
        encoders: Dual encoders with ``encode_images(images) -> (N, d)`` (differentiable w.r.t.
            float images in [0, 1], own preprocessing inside) and ``encode_texts(texts)``, such
            as the zoo's ``clip-emoji-*`` members; optionally ``image_trunk``, ``image_head``
            and ``image_trunk_key`` (see :class:`fmlab.models.DualEncoder`).
        positive: The adversarial concept t⁺ (``"slice of pizza"``), or one per picture.
        negative: Optional concept t⁻ to push away from (the image's true caption), or one per
            picture.
        templates: Prompt templates with one ``{}``.

    References:
        Wu et al. (arXiv:2406.12814); Radford et al., CLIP (arXiv:2103.00020).
    """

    def __init__(
        self,
        encoders: Sequence[Any],
        positive: str | Sequence[str],
        negative: str | Sequence[str] | None = None,
        *,
        templates: Sequence[str] = CLIP_TEMPLATES,
    ) -> None:
        import torch

        if not encoders:
            raise ValueError("ClipEnsembleObjective needs at least one encoder. Got none.")
        bad = [t for t in templates if t.count("{}") != 1]
        if not templates or bad:
            raise ValueError(
                f"Each template must contain '{{}}' exactly once. Got {list(bad or templates)!r}."
            )
        pos = [positive] if isinstance(positive, str) else list(positive)
        neg = None if negative is None else (
            [negative] if isinstance(negative, str) else list(negative))
        for name, value in (("positive", pos), ("negative", neg)):
            if value is not None and (not value or not all(isinstance(v, str) for v in value)):
                raise ValueError(f"The {name!r} concept of ClipEnsembleObjective must be a str "
                                 f"or a non-empty list of str. Got {value!r} instead.")
        if neg is not None and len(pos) != len(neg) and 1 not in (len(pos), len(neg)):
            raise ValueError(f"ClipEnsembleObjective got {len(pos)} positive and {len(neg)} "
                             "negative concepts; give one per picture, or one for all.")
        self.encoders = list(encoders)
        self.positive, self.negative = positive, negative
        self.templates = tuple(templates)
        with torch.no_grad():
            self.t_pos = [self._texts(e, pos) for e in self.encoders]  # each (1 or B, d)
            self.t_neg = [self._texts(e, neg) for e in self.encoders] if neg else None
        self._groups = self._trunk_groups()

    def _texts(self, encoder: Any, concepts: list[str]) -> torch.Tensor:
        from torch.nn import functional as F

        k = len(self.templates)
        z = encoder.encode_texts([t.format(c) for c in concepts for t in self.templates])
        z = F.normalize(z.float(), dim=-1).reshape(len(concepts), k, -1).mean(1)
        return F.normalize(z, dim=-1)  # (C, d)

    def _trunk_groups(self) -> list[list[int]]:
        """Member indices grouped by a shared image trunk (singletons when not shareable)."""
        groups: dict[Any, list[int]] = {}
        for k, enc in enumerate(self.encoders):
            key_fn = getattr(enc, "image_trunk_key", None)
            key = key_fn() if callable(key_fn) and callable(getattr(enc, "image_head", None)) \
                else None
            groups.setdefault(("shared", key) if key is not None else ("own", k), []).append(k)
        return list(groups.values())

    def _embeddings(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each member's unnormalised image embedding ``(M, d)``, shared trunks run once."""
        out: list[torch.Tensor | None] = [None] * len(self.encoders)
        for group in self._groups:
            first = self.encoders[group[0]]
            if len(group) == 1:
                out[group[0]] = first.encode_images(flat)
                continue
            h = first.image_trunk(flat)
            for k in group:
                out[k] = self.encoders[k].image_head(h)
        return out  # type: ignore[return-value]

    def member_losses(self, xs: torch.Tensor) -> list[torch.Tensor]:
        """The loss ``(N,)`` of each member separately."""
        from torch.nn import functional as F

        flat, n, b = _flat(xs)
        if self.t_pos[0].shape[0] not in (1, b):
            raise ValueError(
                f"ClipEnsembleObjective has {self.t_pos[0].shape[0]} concepts, one per picture, "
                f"but the attacked batch holds {b} pictures. Attack a (B, 3, H, W) batch with "
                f"B = {self.t_pos[0].shape[0]}."
            )
        out = []
        for k, emb in enumerate(self._embeddings(flat)):
            z = F.normalize(emb.float(), dim=-1).reshape(n, b, -1)  # (N, B, d)
            loss = -(z * self.t_pos[k]).sum(-1)  # texts (1 or B, d) broadcast over N
            if self.t_neg is not None:
                loss = loss + (z * self.t_neg[k]).sum(-1)
            out.append(loss.sum(-1))
        return out

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        return sum(self.member_losses(xs))  # type: ignore[return-value]


def _dct_matrix(n: int, device: Any, dtype: Any) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``(n, n)``: ``X = D @ x``; inverse ``x = D.T @ X``."""
    import math

    import torch

    k = torch.arange(n, device=device, dtype=dtype)[:, None]
    i = torch.arange(n, device=device, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


class SpectrumAugmented:
    """Spectrum Simulation Attack gradients: the loss averaged over spectrum-transformed copies.

    Each copy is :math:`x' = \\mathrm{IDCT}(\\mathrm{DCT}(x + \\xi) \\odot M)` with Gaussian
    :math:`\\xi \\sim \\mathcal{N}(0, \\sigma^2)` and :math:`M \\sim U[1-\\rho, 1+\\rho]`; the
    gradient of the mean loss is SSA's averaged gradient. Draws come from a seeded generator.

    Args:
        objective: The objective to wrap.
        n: Copies per evaluation (20 in the paper).
        sigma: Noise scale (16/255).
        rho: Mask half-width (0.5).
        random_state: Seed of the draws.

    References:
        Long et al., Frequency Domain Model Augmentation for Adversarial Attack
        (arXiv:2207.05382).
    """

    def __init__(self, objective: Callable[[torch.Tensor], torch.Tensor], *, n: int = 20,
                 sigma: float = 16 / 255, rho: float = 0.5, random_state: int = 0) -> None:
        import torch

        self.objective = objective
        self.n = check_int(n, "n", owner="SpectrumAugmented", low=1)
        self.sigma = check_real(sigma, "sigma", owner="SpectrumAugmented", low=0, closed="left")
        self.rho = check_real(rho, "rho", owner="SpectrumAugmented", low=0, high=1,
                              closed="left")
        self._gen = torch.Generator().manual_seed(int(random_state))

    @property
    def is_success(self) -> Any:
        return getattr(self.objective, "is_success", None)

    def copies(self, xs: torch.Tensor) -> Iterator[torch.Tensor]:
        """The ``n`` spectrum-transformed copies of ``xs`` (differentiable w.r.t. ``xs``)."""
        import torch

        h, w = xs.shape[-2:]
        dh = _dct_matrix(h, xs.device, xs.dtype)
        dw = _dct_matrix(w, xs.device, xs.dtype)
        for _ in range(self.n):
            noise = torch.randn(xs.shape, generator=self._gen).to(xs) * self.sigma
            mask = 1 + (torch.rand(xs.shape, generator=self._gen).to(xs) * 2 - 1) * self.rho
            spec = dh @ (xs + noise) @ dw.T  # DCT over H and W
            yield dh.T @ (spec * mask) @ dw  # inverse DCT

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        total = None
        for x_aug in self.copies(xs):
            loss = self.objective(x_aug)
            total = loss if total is None else total + loss
        return total / self.n  # type: ignore[operator]


class ClassifierObjective:
    """Cross-entropy of an image classifier on float images in [0, 1].

    Untargeted (default): the loss is the negative cross-entropy of the true ``labels``, so
    lowering it pushes the prediction away from them. Targeted: the cross-entropy of ``labels``.

    Args:
        model: Maps preprocessed images to logits ``(M, classes)``.
        labels: ``(B,)`` class ids, one per image of the attacked batch.
        preprocess: Differentiable map from [0, 1] images to the model's input (e.g. EfficientNet's
            ``(255 x - 127) / 128``); identity if ``None``.
        targeted: See above.

    The success test reuses the predictions of the last loss evaluation when it is asked about
    the very input that evaluation saw (same memory, unmodified): in an attack loop the gradient
    pass has already classified the iterate, so early stopping costs no extra forward pass.
    """

    def __init__(self, model: Any, labels: torch.Tensor, *,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 targeted: bool = False) -> None:
        self.model, self.labels = model, labels
        self.preprocess, self.targeted = preprocess, targeted
        # (the input itself, its identity key, its predictions) of the last single-input loss
        self._seen: tuple[torch.Tensor, tuple[Any, ...], torch.Tensor] | None = None

    @staticmethod
    def _key(flat: torch.Tensor) -> tuple[Any, ...]:
        """Identity of a batch of images: its memory, shape, strides and version counter (an
        in-place change bumps the version, so a modified tensor never matches). ``_seen`` keeps
        the tensor itself alive, so its memory cannot be handed to another tensor meanwhile."""
        return (flat.data_ptr(), tuple(flat.shape), flat.stride(), flat.dtype, flat._version)

    def _logits(self, flat: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(flat) if self.preprocess is not None else flat)

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional as F

        flat, n, b = _flat(xs)
        logits = self._logits(flat)
        ce = F.cross_entropy(logits, self.labels.repeat(n), reduction="none")
        loss = ce if self.targeted else -ce
        self._seen = ((flat.detach(), self._key(flat), logits.detach().argmax(-1)) if n == 1
                      else None)
        return loss.reshape(n, b).sum(-1)

    def is_success(self, x: torch.Tensor) -> bool:
        import torch

        flat = x.reshape(-1, *x.shape[-3:])
        if self._seen is not None and self._seen[1] == self._key(flat):
            pred = self._seen[2]  # the loss pass classified this very input
        else:
            with torch.no_grad():
                pred = self._logits(flat).argmax(-1)
        hit = pred == self.labels
        return bool(hit.all() if self.targeted else (~hit).all())
