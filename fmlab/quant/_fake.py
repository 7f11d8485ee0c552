"""Fake quantization: ``x̂ = Q(x)`` in full-precision storage, with a straight-through gradient.

Rounding is round-half-to-even everywhere (``torch.round`` for integers; the float path rounds the
scaled significand with ``torch.round`` too, which is IEEE round-to-nearest-even, and the fp8/fp16/
bf16 fast paths use torch's casts, which are RNE as well).

Speed: the quantizer is memory-bound, so each path makes one output buffer and updates it in place
(scale → round → rescale); scales are reduced with one ``aminmax`` pass; groups are a reshape, never
a Python loop.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from fmlab._validation import check_option
from fmlab.quant._formats import QuantFormat, get_format

__all__ = ["compute_scale", "fake_quantize", "quantize_values"]

_NATIVE_FLOATS: dict[tuple[int, int], torch.dtype] = {
    (4, 3): torch.float8_e4m3fn,
    (5, 2): torch.float8_e5m2,
    (5, 10): torch.float16,
    (8, 7): torch.bfloat16,
}


def _grouped(x: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
    """View ``x`` so that the last axis is one scaling unit (group or token)."""
    if fmt.granularity == "group":
        g = int(fmt.group_size or 0)
        d = x.shape[-1] if x.ndim else 1
        if x.ndim == 0 or d % g:
            raise ValueError(
                f"group_size={g} must divide the last dimension of the tensor, but got shape "
                f"{tuple(x.shape)} (last dimension {d}). Pick a divisor of {d}, e.g. "
                f"{_divisor_hint(d, g)}, or use granularity='channel'."
            )
        return x.reshape(*x.shape[:-1], d // g, g)
    return x


def _divisor_hint(d: int, g: int) -> int:
    divisors = [k for k in (256, 128, 64, 32, 16, 8, 4, 2, 1) if d % k == 0]
    return min(divisors, key=lambda k: abs(k - g))


def _reduce_dims(x: torch.Tensor, fmt: QuantFormat) -> tuple[int, ...] | None:
    if fmt.granularity == "tensor" or x.ndim == 0:
        return None
    if fmt.granularity == "channel":
        return tuple(range(1, x.ndim)) if x.ndim > 1 else None
    return (x.ndim - 1,)  # token / group (after _grouped)


def _minmax(x: torch.Tensor, dims: tuple[int, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
    if dims is None:
        mn, mx = torch.aminmax(x)
        return mn, mx
    if len(dims) == 1:
        return torch.aminmax(x, dim=dims[0], keepdim=True)
    flat = x.reshape(x.shape[0], -1)
    mn, mx = torch.aminmax(flat, dim=1, keepdim=True)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return mn.reshape(shape), mx.reshape(shape)


def compute_scale(
    x: torch.Tensor, fmt: QuantFormat | str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point for asymmetric int) of ``x`` under ``fmt``, broadcastable to ``x``
    (to the grouped view ``(..., d/g, g)`` for group granularity).

    Returns:
        ``(scale, zero_point)``; ``zero_point`` is ``None`` for symmetric formats.
    """
    fmt = get_format(fmt)
    xv = _grouped(x, fmt)
    dims = _reduce_dims(xv, fmt)
    with torch.no_grad():
        mn, mx = _minmax(xv.detach(), dims)
        mn, mx = mn.float(), mx.float()
        tiny = torch.finfo(torch.float32).tiny
        if fmt.kind == "int" and not fmt.symmetric:
            mn = torch.clamp(mn, max=0.0) * fmt.clip_ratio  # keep 0 exactly representable
            mx = torch.clamp(mx, min=0.0) * fmt.clip_ratio
            scale = ((mx - mn) / fmt.max_value).clamp_(min=tiny)
            zero = torch.round(-mn / scale)
            return scale, zero
        absmax = torch.maximum(-mn, mx)
        scale = (absmax * fmt.clip_ratio / fmt.max_value).clamp_(min=tiny)
        return scale, None


def _round_float_(y: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
    """Round fp32 ``y`` (already clamped to ±max) in place to the ExMy grid, RNE, subnormals kept.

    The quantum of a value in binade e is ``2^(e - M)``: read e from the fp32 exponent field with a
    mask, floor it at the smallest normal binade (the subnormal quantum), then
    ``y ← round(y / q) · q``; division by a power of two is exact, so the only rounding is the
    ``torch.round`` (half to even).
    """
    lowest = fmt.min_exponent - fmt.man_bits
    if lowest < -126:
        raise ValueError(f"{fmt.name}: formats whose smallest quantum 2^{lowest} is below fp32's "
                         f"smallest normal are supported only through native casts.")
    bits = y.view(torch.int32) & 0x7F800000  # exponent field of each element
    bits.clamp_(min=(fmt.min_exponent + 127) << 23).sub_(fmt.man_bits << 23)
    q = bits.view(torch.float32)  # (…) the quantum 2^(e-M)
    return y.div_(q).round_().mul_(q)


def quantize_values(
    x: torch.Tensor,
    fmt: QuantFormat | str,
    *,
    native: bool = True,
    return_bounds: bool = False,
) -> Any:
    """``Q(x)`` without autograd: the fake-quantized tensor (same shape and dtype as ``x``).

    Args:
        x: Input tensor (any float dtype; computed in fp32).
        fmt: A :class:`QuantFormat` or a format name.
        native: Use torch's casts for fp8/fp16/bf16 (bit-identical to the generic float path,
            faster); ``False`` forces the generic ExMy arithmetic.
        return_bounds: Also return the clip range ``(lo, hi)`` (broadcastable), for clipped STE.
    """
    fmt = get_format(fmt)
    orig_dtype, orig_shape = x.dtype, x.shape
    x = x.detach()
    if x.dtype != torch.float32:
        x = x.float()
    lo = hi = None
    if fmt.kind == "float" and fmt.granularity == "none":
        out = x.clamp(-fmt.max_value, fmt.max_value)
        out = _cast_float_(out, fmt, native)
        if return_bounds:
            lo, hi = torch.tensor(-fmt.max_value), torch.tensor(fmt.max_value)
    else:
        xv = _grouped(x, fmt)
        scale, zero = compute_scale(x, fmt)
        out = xv / scale
        if fmt.kind == "int":
            out.round_()
            if zero is not None:
                qlo, qhi = -zero, fmt.max_value - zero
                out.clamp_(min=qlo, max=qhi)
                if return_bounds:
                    lo, hi = (qlo - 0.5) * scale, (qhi + 0.5) * scale
            else:
                if fmt.clip_ratio < 1.0:  # without clipping |x/s| <= qmax already holds
                    out.clamp_(-fmt.max_value, fmt.max_value)
                if return_bounds:
                    hi = (fmt.max_value + 0.5) * scale
                    lo = -hi
        else:
            if fmt.clip_ratio < 1.0:
                out.clamp_(-fmt.max_value, fmt.max_value)
            out = _cast_float_(out, fmt, native)
            if return_bounds:
                hi = fmt.max_value * scale
                lo = -hi
        out.mul_(scale)
        if fmt.granularity == "group":
            out = out.reshape(orig_shape)
            if return_bounds:
                lo, hi = _expand_group(lo, orig_shape, fmt), _expand_group(hi, orig_shape, fmt)
    if out.dtype != orig_dtype:
        out = out.to(orig_dtype)
    if return_bounds:
        return out, lo, hi
    return out


def _expand_group(b: torch.Tensor | None, shape: torch.Size, fmt: QuantFormat) -> torch.Tensor:
    assert b is not None
    g = int(fmt.group_size or 1)
    return b.expand(*shape[:-1], shape[-1] // g, g).reshape(shape)


def _cast_float_(y: torch.Tensor, fmt: QuantFormat, native: bool) -> torch.Tensor:
    # Callers guarantee |y| <= max_value (up to one ulp of fp32 from the scale division, which
    # RNE maps back onto max_value), so neither path depends on the cast's overflow behaviour.
    dtype = _NATIVE_FLOATS.get((fmt.exp_bits, fmt.man_bits)) if native else None
    if dtype is not None:
        return y.copy_(y.to(dtype))
    return _round_float_(y, fmt)


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: QuantFormat, clipped: bool) -> torch.Tensor:
        if clipped:
            out, lo, hi = quantize_values(x, fmt, return_bounds=True)
            ctx.save_for_backward((x >= lo) & (x <= hi))
        else:
            out = quantize_values(x, fmt)
        ctx.clipped = clipped
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if ctx.clipped:
            (mask,) = ctx.saved_tensors
            return grad * mask, None, None
        return grad, None, None


def fake_quantize(
    x: torch.Tensor,
    fmt: QuantFormat | str | None,
    *,
    ste: Literal["identity", "clipped"] = "identity",
) -> torch.Tensor:
    """Fake-quantize ``x``: round it to ``fmt`` but keep its dtype and shape; pure (``x`` is not
    modified) and differentiable through a straight-through estimator.

    .. math::
        \\hat x = s\\,Q(x / s), \\qquad \\partial L/\\partial x := \\partial L/\\partial \\hat x

    Args:
        x: Tensor to quantize.
        fmt: Format or name (``"int4_channel"``, ``"fp8_e4m3"``, ...); ``None`` returns ``x``.
        ste: ``"identity"`` (gradient passes unchanged) or ``"clipped"`` (zero gradient where
            ``x`` lies outside the representable range). Scales are treated as constants.

    Returns:
        The fake-quantized tensor.

    Example:
        >>> import torch
        >>> fake_quantize(torch.tensor([0.1, 0.5, 1.0]), "int2").tolist()  # 0.5 ties to even
        [0.0, 0.0, 1.0]

    References:
        Bengio et al. 2013, Estimating or Propagating Gradients Through Stochastic Neurons,
        arXiv 1308.3432; Kumar et al. 2024, arXiv 2411.04330.
    """
    if fmt is None:
        return x
    fmt = get_format(fmt)
    check_option(ste, "ste", ("identity", "clipped"), owner="fake_quantize")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fake_quantize expects a torch.Tensor. Got {type(x).__name__} instead.")
    if not x.is_floating_point():
        raise TypeError(f"fake_quantize expects a floating-point tensor. Got dtype {x.dtype}.")
    if x.requires_grad and torch.is_grad_enabled():
        return _FakeQuantSTE.apply(x, fmt, ste == "clipped")
    return quantize_values(x, fmt)
