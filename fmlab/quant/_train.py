"""Quantization-aware training of :class:`TinyLM` and held-out loss measurement."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fmlab._device import eval_mode
from fmlab._validation import check_int, check_real
from fmlab.quant._data import TokenData, load_token_data
from fmlab.quant._model import LMConfig, PrecisionConfig, TinyLM, set_precision

__all__ = ["TrainConfig", "LMTrainResult", "evaluate_loss", "train_lm"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`train_lm` (AdamW, linear warmup, cosine decay to 10%).

    Args:
        batch_size: Sequences per step.
        seq_len: Tokens per sequence.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (matrices only).
        warmup_frac: Share of steps with linear warmup.
        grad_clip: Global gradient-norm clip (``0`` disables).
        eval_tokens: Validation tokens for the final loss.
    """

    batch_size: int = 8
    seq_len: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    eval_tokens: int = 65536

    def __post_init__(self) -> None:
        o = "TrainConfig"
        check_int(self.batch_size, "batch_size", owner=o, low=1)
        check_int(self.seq_len, "seq_len", owner=o, low=2)
        check_real(self.lr, "lr", owner=o, low=0.0)
        check_real(self.weight_decay, "weight_decay", owner=o, low=0.0, closed="left")
        check_real(self.warmup_frac, "warmup_frac", owner=o, low=0.0, high=1.0, closed="left")
        check_real(self.grad_clip, "grad_clip", owner=o, low=0.0, closed="left")
        check_int(self.eval_tokens, "eval_tokens", owner=o, low=1)


@dataclass
class LMTrainResult:
    """What :func:`train_lm` returns.

    Attributes:
        model: The trained model (its precision still set to the training precision).
        val_loss: Held-out cross-entropy (nats/token) at the training precision; NaN if diverged.
        train_losses: Per-step training loss.
        n_params: Non-embedding parameter count (the N of the scaling laws).
        n_tokens: Training tokens consumed (exactly the request unless diverged).
        diverged: Whether the loss became NaN/inf (training stopped there).
        seconds: Wall time of the training loop.
    """

    model: TinyLM
    val_loss: float
    train_losses: list[float] = field(default_factory=list)
    n_params: int = 0
    n_tokens: int = 0
    diverged: bool = False
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("nan")


def evaluate_loss(model: torch.nn.Module, data: TokenData, *, seq_len: int = 128,
                  batch_size: int = 16, max_tokens: int | None = 65536) -> float:
    """Mean held-out cross-entropy (nats/token) of ``model`` on ``data.val``.

    Works for :class:`TinyLM` and for Hugging Face causal LMs (anything returning ``.logits``).
    """
    seq_len = check_int(seq_len, "seq_len", owner="evaluate_loss", low=1)
    batch_size = check_int(batch_size, "batch_size", owner="evaluate_loss", low=1)
    if max_tokens is not None:
        check_int(max_tokens, "max_tokens", owner="evaluate_loss", low=seq_len)
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with eval_mode(model):
        for x, y in data.val_batches(seq_len, batch_size, max_tokens):
            xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            out = model(xt)
            logits = out[0] if isinstance(out, tuple) else out.logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), yt.flatten(),
                                                     reduction="sum")
            total += float(loss)
            count += yt.numel()
    if count == 0:
        raise ValueError("The validation split is empty; lower seq_len or add text.")
    return total / count


def train_lm(
    n_tokens: int,
    *,
    model_config: LMConfig | None = None,
    precision: PrecisionConfig | None = None,
    train_config: TrainConfig | None = None,
    data: TokenData | None = None,
    seed: int = 0,
    device: str = "cpu",
    callback: Callable[[int, float], None] | None = None,
) -> LMTrainResult:
    """Train a :class:`TinyLM` from scratch on exactly ``n_tokens`` tokens, with the given
    training precision (fake quantization in the forward pass, STE in the backward pass).

    A loss that turns NaN or inf stops training and is reported as ``diverged=True`` (a NaN at
    3 bits is data, not a crash).

    Args:
        n_tokens: Training tokens (targets), delivered exactly.
        model_config: Model size; its vocabulary is set from ``data``.
        precision: Training precision (default: full precision).
        train_config: Optimiser settings.
        data: Token data (default: :func:`load_token_data` with the default corpora).
        seed: Seeds the initialisation and the data order.
        device: Torch device.
        callback: Called as ``callback(step, loss)`` after each step.

    Example:
        >>> res = train_lm(4096, model_config=LMConfig(d_model=32, n_layers=1),
        ...                precision=PrecisionConfig.from_bits(4, 8, 8))  # doctest: +SKIP
    """
    n_tokens = check_int(n_tokens, "n_tokens", owner="train_lm", low=1)
    tc = train_config or TrainConfig()
    data = data or load_token_data()
    cfg = model_config or LMConfig()
    if cfg.vocab_size != data.vocab_size or cfg.max_seq_len < tc.seq_len:
        from dataclasses import replace

        cfg = replace(cfg, vocab_size=data.vocab_size, max_seq_len=max(cfg.max_seq_len,
                                                                         tc.seq_len))
    torch.manual_seed(seed)
    model = TinyLM(cfg).to(device)
    set_precision(model, precision or PrecisionConfig())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr,
                            betas=(0.9, 0.95))
    n_steps = max(1, math.ceil(n_tokens / (tc.batch_size * tc.seq_len)))
    warmup = max(1, int(tc.warmup_frac * n_steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return tc.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, n_steps - warmup)
        return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    losses: list[float] = []
    diverged, seen = False, 0
    start = time.perf_counter()
    model.train()
    for step, (x, y) in enumerate(data.batches(n_tokens, tc.batch_size, tc.seq_len, seed=seed)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        _, loss = model(xt, yt)
        assert loss is not None
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = True
            losses.append(value)
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        losses.append(value)
        seen += y.size
        if callback is not None:
            callback(step, value)
    seconds = time.perf_counter() - start
    val = float("nan")
    if not diverged:
        val = evaluate_loss(model, data, seq_len=tc.seq_len, batch_size=tc.batch_size,
                            max_tokens=tc.eval_tokens)
        if not math.isfinite(val):
            diverged = True
    return LMTrainResult(model=model, val_loss=val, train_losses=losses, n_params=model.n_params(),
                       n_tokens=seen, diverged=diverged, seconds=seconds)


