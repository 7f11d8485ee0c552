"""A small decoder-only LM in the paper's style (RMSNorm, RoPE, SwiGLU) with fake-quantized
weights, activations (inputs of linear layers) and KV cache, each in its own format.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from fmlab._precision import FULL_PRECISION_LABEL
from fmlab._validation import check_bool, check_int, check_option, check_real
from fmlab.quant._fake import _fake_quantize
from fmlab.quant._formats import QuantFormat, resolve_format

__all__ = ["LMConfig", "PrecisionConfig", "QuantLinear", "TinyLM", "set_precision"]


@dataclass(frozen=True)
class LMConfig:
    """Size knobs of :class:`TinyLM` (every default visible here).

    Args:
        vocab_size: Vocabulary size (the tokenizer's).
        d_model: Residual width.
        n_layers: Transformer blocks.
        n_heads: Attention heads (``d_model`` must be divisible by it).
        d_ff: SwiGLU hidden width; ``None`` → ``8/3·d_model`` rounded up to a multiple of 32.
        max_seq_len: Longest context (RoPE tables are built for it).
        rope_theta: RoPE base.
        tie_embeddings: Share the input embedding and the LM head.
    """

    vocab_size: int = 512
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        o = "LMConfig"
        check_int(self.vocab_size, "vocab_size", owner=o, low=2)
        check_int(self.d_model, "d_model", owner=o, low=8)
        check_int(self.n_layers, "n_layers", owner=o, low=1)
        check_int(self.n_heads, "n_heads", owner=o, low=1)
        check_int(self.max_seq_len, "max_seq_len", owner=o, low=2)
        check_real(self.rope_theta, "rope_theta", owner=o, low=1.0)
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"`d_model` must be divisible by `n_heads` with an even head size, "
                             f"but got (d_model={self.d_model}, n_heads={self.n_heads}).")
        if self.d_ff is not None:
            check_int(self.d_ff, "d_ff", owner=o, low=1)

    @property
    def hidden(self) -> int:
        return self.d_ff or 32 * math.ceil(8 * self.d_model / 3 / 32)

    def n_params(self, *, non_embedding: bool = True) -> int:
        """Parameter count: blocks and final norm, or everything with ``non_embedding=False``."""
        d, h = self.d_model, self.hidden
        per_block = 4 * d * d + 3 * d * h + 2 * d
        n = self.n_layers * per_block + d
        if not non_embedding:
            n += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return n


@dataclass(frozen=True)
class PrecisionConfig:
    """Training (or inference) precision of the three components, each its own format.

    ``None`` means no quantization (full precision). Bit widths are shorthands: an int ``k`` gives
    integer k-bit with per-output-channel scales for weights, per-token scales for activations and
    per-token-per-head scales for K and V (the paper leaves granularity unspecified; these are
    fmlab's documented defaults). Bit widths >= 16 mean full precision.

    Args:
        weights: Format of every linear layer's weight (P_w).
        activations: Format of every linear layer's input (P_a).
        kv_cache: Format of the attention keys and values (P_kv).
        kv_point: Quantize K after RoPE (``"post_rope"``, as the cache stores them) or before.
        quantize_head: Also quantize the LM head's weight and input (default: kept high precision).
        ste: Straight-through estimator: ``"identity"`` or ``"clipped"``.
    """

    weights: QuantFormat | None = None
    activations: QuantFormat | None = None
    kv_cache: QuantFormat | None = None
    kv_point: Literal["post_rope", "pre_rope"] = "post_rope"
    quantize_head: bool = False
    ste: Literal["identity", "clipped"] = "identity"

    def __post_init__(self) -> None:
        o = "PrecisionConfig"
        check_option(self.kv_point, "kv_point", ("post_rope", "pre_rope"), owner=o)
        check_option(self.ste, "ste", ("identity", "clipped"), owner=o)
        check_bool(self.quantize_head, "quantize_head", owner=o)
        for field, default in (("weights", "channel"), ("activations", "token"),
                               ("kv_cache", "token")):
            value = getattr(self, field)
            if not isinstance(value, QuantFormat | None):
                object.__setattr__(self, field,
                                   resolve_format(value, default_granularity=default, name=field))

    @classmethod
    def from_bits(cls, w_bits: int | None = None, a_bits: int | None = None,
                  kv_bits: int | None = None, **kwargs: Any) -> PrecisionConfig:
        """Integer formats from bit widths (``None``, ``"fp"`` or >= 16: full precision)."""
        return cls(weights=w_bits, activations=a_bits, kv_cache=kv_bits, **kwargs)  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        return {k: (getattr(self, k).name if getattr(self, k) is not None
                    else FULL_PRECISION_LABEL)
                for k in ("weights", "activations", "kv_cache")}


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight and input are fake-quantized (STE) when formats are set."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.w_fmt: QuantFormat | None = None
        self.a_fmt: QuantFormat | None = None
        self.ste: str = "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _fake_quantize(self.weight, self.w_fmt, ste=self.ste)  # type: ignore[arg-type]
        x = _fake_quantize(x, self.a_fmt, ste=self.ste)  # type: ignore[arg-type]
        return F.linear(x, w, self.bias)


class _RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, hd); rotate pairs (first half, second half) as in GPT-NeoX / Llama
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class _Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        d, h = cfg.d_model, cfg.hidden
        self.n_heads = cfg.n_heads
        self.attn_norm, self.mlp_norm = _RMSNorm(d), _RMSNorm(d)
        self.qkv = QuantLinear(d, 3 * d)
        self.proj = QuantLinear(d, d)
        self.gate_up = QuantLinear(d, 2 * h)
        self.down = QuantLinear(h, d)
        self.kv_fmt: QuantFormat | None = None
        self.kv_point = "post_rope"
        self.ste = "identity"

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        hd = D // self.n_heads
        q, k, v = self.qkv(self.attn_norm(x)).split(D, dim=-1)  # 3 × (B, T, D)
        q, k, v = (t.view(B, T, self.n_heads, hd).transpose(1, 2) for t in (q, k, v))  # (B,H,T,hd)
        if self.kv_fmt is not None and self.kv_point == "pre_rope":
            k = _fake_quantize(k, self.kv_fmt, ste=self.ste)  # type: ignore[arg-type]
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        if self.kv_fmt is not None:
            if self.kv_point == "post_rope":
                k = _fake_quantize(k, self.kv_fmt, ste=self.ste)  # type: ignore[arg-type]
            v = _fake_quantize(v, self.kv_fmt, ste=self.ste)  # type: ignore[arg-type]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)  # (B, T, h) each
        return x + self.down(F.silu(gate) * up)


class TinyLM(nn.Module):
    """Decoder-only Transformer++ (pre-norm RMSNorm, RoPE, SwiGLU, no biases), sized by
    :class:`LMConfig`; precision set by :func:`set_precision`.

    ``forward(idx (B, T) int64, targets=None) -> (logits (B, T, V), loss or None)``.

    References:
        Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330 (OLMo-style models);
        Su et al. 2021, RoFormer, arXiv 2104.09864; Shazeer 2020, GLU Variants, arXiv 2002.05202.
    """

    def __init__(self, config: LMConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config or LMConfig()
        if overrides:
            cfg = LMConfig(**{**asdict(cfg), **overrides})
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.norm = _RMSNorm(cfg.d_model)
        self.head = QuantLinear(cfg.d_model, cfg.vocab_size)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        hd = cfg.d_model // cfg.n_heads
        inv = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
        ang = torch.outer(torch.arange(cfg.max_seq_len).float(), inv)  # (T, hd/2)
        self.register_buffer("rope_cos", ang.cos(), persistent=False)
        self.register_buffer("rope_sin", ang.sin(), persistent=False)
        self.precision = PrecisionConfig()
        self.apply(self._init)
        for b in self.blocks:  # GPT-2 style scaled init of the residual projections
            for lin in (b.proj, b.down):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def n_params(self, *, non_embedding: bool = True) -> int:
        return self.config.n_params(non_embedding=non_embedding)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(f"Sequence length {T} exceeds max_seq_len="
                             f"{self.config.max_seq_len} of this TinyLM.")
        x = self.embed(idx)  # (B, T, D)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, hd/2)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.head(self.norm(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss


def set_precision(model: TinyLM, precision: PrecisionConfig) -> TinyLM:
    """Set the fake-quantization formats of every layer of ``model`` in place; returns it."""
    if not isinstance(model, TinyLM):
        raise TypeError(f"set_precision expects a TinyLM. Got {type(model).__name__}; for other "
                        f"models use fmlab.quant.quantize_model (weights, post-training).")
    model.precision = precision
    for block in model.blocks:
        for lin in (block.qkv, block.proj, block.gate_up, block.down):
            lin.w_fmt, lin.a_fmt, lin.ste = precision.weights, precision.activations, precision.ste
        block.kv_fmt, block.kv_point, block.ste = (precision.kv_cache, precision.kv_point,
                                                   precision.ste)
    head_on = precision.quantize_head
    model.head.w_fmt = precision.weights if head_on else None
    model.head.a_fmt = precision.activations if head_on else None
    model.head.ste = precision.ste
    return model
