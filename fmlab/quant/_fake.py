"""Fake quantization: ``x̂ = Q(x)`` in full-precision storage, with a straight-through gradient.

Rounding is round-half-to-even everywhere (``torch.round`` for integers; the float path rounds the
scaled significand with ``torch.round`` too, which is IEEE round-to-nearest-even, and the fp8/fp16/
bf16 fast paths use torch's casts, which are RNE as well).

Speed: the quantizer is memory-bound. Scales come from one min/max reduction; the values are then
processed in cache-sized blocks of rows (on CPU), each block going through scale → round → rescale
in place while it is in L2, straight into the output buffer. Groups, tokens and channels are a
reshape, never a Python loop over them. Which rounding runs (a torch cast or the generic ExMy
arithmetic) is chosen per device for speed only: both are bit-identical.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch

from fmlab._validation import check_option
from fmlab.quant._formats import QuantFormat, get_format

__all__ = ["compute_scale", "fake_quantize", "quantize_values"]

# torch dtypes whose casts round to nearest even: (dtype, exp bits, man bits, min normal exponent,
# max finite value).
_NATIVE_FLOATS: tuple[tuple[torch.dtype, int, int, int, float], ...] = (
    (torch.float8_e4m3fn, 4, 3, -6, 448.0),
    (torch.float8_e5m2, 5, 2, -14, 57344.0),
    (torch.float16, 5, 10, -14, 65504.0),
    (torch.bfloat16, 8, 7, -126, float(torch.finfo(torch.bfloat16).max)),
)


# Casts that are exact but slow on CPU (torch 2.13 decodes float8_e4m3fn element by element, about
# 5x slower than the generic ExMy arithmetic on a cache-resident block); CUDA casts are fused and
# fast. The generic path is bit-identical (tests check every code and every midpoint).
_SLOW_CPU_CASTS = (torch.float8_e4m3fn,)


def _float_cast(fmt: QuantFormat, native: bool, device_type: str) -> tuple[torch.dtype, int] | None:
    """The native cast to use for ``fmt`` on this device, or ``None`` for the generic path."""
    cast = _native_cast(fmt) if native else None
    if (cast is not None and device_type == "cpu" and cast[0] in _SLOW_CPU_CASTS
            and fmt.min_exponent - fmt.man_bits >= -126):
        return None
    return cast


@functools.lru_cache(maxsize=256)
def _native_cast(fmt: QuantFormat) -> tuple[torch.dtype, int] | None:
    """A torch dtype ``T`` and shift ``k`` with ``Q_fmt(y) = 2^-k · cast_T(2^k · y)`` exactly.

    The same format (``k = 0``), or one with the same mantissa width and a wider exponent range
    (fp6 e2m3 in fp8 e4m3, fp6 e3m2 in fp8 e5m2): shifting by ``2^k`` lines the smallest normal
    binades up, so every binade, the subnormal quantum and the rounding agree. A shift is only used
    where the target's subnormals stay in fp32's normal range, so the scaling is exact.
    """
    if fmt.kind != "float":
        return None
    for dtype, e, m, emin, vmax in _NATIVE_FLOATS:
        if m != fmt.man_bits or e < fmt.exp_bits:
            continue
        if e == fmt.exp_bits and fmt.max_value == vmax:
            return dtype, 0
        k = emin - fmt.min_exponent
        if emin - m >= -126 and fmt.max_value * 2.0**k <= vmax:
            return dtype, k
    return None


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
    # Along a dimension, separate amin/amax reductions are vectorised on CPU while aminmax is not
    # (torch 2.13: about 6x slower on a 4096x4096 tensor); over the whole tensor aminmax is fine.
    if dims is None:
        mn, mx = torch.aminmax(x)
        return mn, mx
    if len(dims) == 1:
        return x.amin(dim=dims[0], keepdim=True), x.amax(dim=dims[0], keepdim=True)
    flat = x.reshape(x.shape[0], -1)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return flat.amin(1).reshape(shape), flat.amax(1).reshape(shape)


def compute_scale(
    x: torch.Tensor, fmt: QuantFormat | str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point for asymmetric int) of ``x`` under ``fmt``, broadcastable to ``x``
    (to the grouped view ``(..., d/g, g)`` for group granularity).

    Returns:
        ``(scale, zero_point)``; ``zero_point`` is ``None`` for symmetric formats.
    """
    return _compute_scale(x, get_format(fmt))


def _compute_scale(x: torch.Tensor, fmt: QuantFormat) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`compute_scale` on a resolved format (fmlab's inner calls)."""
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
    ``torch.round`` (half to even), and the sign of zero is kept.
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
        native: Use torch's casts where they are exact and faster (fp8/fp16/bf16, and fp6 through
            a shifted fp8 cast; on CPU, fp8 E4M3 uses the generic path, which is faster there).
            The results are bit-identical either way; ``False`` forces the generic ExMy
            arithmetic.
        return_bounds: Also return the clip range ``(lo, hi)`` (broadcastable), for clipped STE.
    """
    fmt = get_format(fmt)
    _check_finite(x, "quantize_values")
    return _quantize_values(x, fmt, native=native, return_bounds=return_bounds)


def _quantize_values(x: torch.Tensor, fmt: QuantFormat, *, native: bool = True,
                     return_bounds: bool = False) -> Any:
    x = x.detach()
    if x.numel() == 0:
        empty = x.clone()
        return (empty, empty, empty) if return_bounds else empty
    scale = zero = None
    if not (fmt.kind == "float" and fmt.granularity == "none"):
        scale, zero = _compute_scale(x, fmt)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _quantize_blocked(x, out, fmt, scale, zero, native)
    if not return_bounds:
        return out
    if scale is None:
        lo, hi = torch.tensor(-fmt.max_value), torch.tensor(fmt.max_value)
    elif zero is not None:
        lo, hi = (-zero - 0.5) * scale, (fmt.max_value - zero + 0.5) * scale
    else:
        hi = (fmt.max_value + (0.5 if fmt.kind == "int" else 0.0)) * scale
        lo = -hi
    if fmt.granularity == "group":
        lo, hi = _expand_group(lo, x.shape, fmt), _expand_group(hi, x.shape, fmt)
    return out, lo, hi


# Elements per block on CPU. Every pass of the quantizer (scale, round, clamp, rescale) runs over
# one block while it sits in the core's L2 cache, so main memory sees about one read of ``x`` for
# the scales, one read for the values and one write of the output -- near a plain copy.
_BLOCK = 1 << 17


def _quantize_blocked(x: torch.Tensor, out: torch.Tensor, fmt: QuantFormat,
                      scale: torch.Tensor | None, zero: torch.Tensor | None,
                      native: bool) -> None:
    """Write ``Q(x)`` into ``out`` (contiguous, same shape), block by block.

    Every granularity partitions ``x`` into equal, consecutive row-major pieces that share one
    scale (a leading index, a token, a group), so ``x`` is viewed as ``(scale.numel(), -1)`` rows
    with one scale per row; a single scale (tensor granularity, plain casts) uses the last axis.
    A native cast with a shift ``2^k`` (see :func:`_native_cast`) folds the shift into the scale.
    """
    limit: float | None = None
    if fmt.kind == "int":
        limit = fmt.max_value if (zero is None and fmt.clip_ratio < 1.0) else None
    else:
        cast = _float_cast(fmt, native, x.device.type)
        shift = cast[1] if cast else 0
        if shift:
            scale = (torch.tensor(2.0**-shift, device=x.device) if scale is None
                     else scale * 2.0**-shift)
        if fmt.granularity == "none" or fmt.clip_ratio < 1.0:
            limit = fmt.max_value * 2.0**shift
    n_scales = 1 if scale is None else scale.numel()
    if n_scales > 1:
        rows = x.reshape(n_scales, -1)
        scale = scale.reshape(n_scales, 1)  # type: ignore[union-attr]
        zero = None if zero is None else zero.reshape(n_scales, 1)
    else:
        rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
        scale = None if scale is None else scale.reshape(())
        zero = None if zero is None else zero.reshape(())
    out_rows = out.view(rows.shape)
    n_rows, width = rows.shape
    step = max(1, _BLOCK // max(width, 1)) if x.device.type == "cpu" else max(n_rows, 1)
    direct = out.dtype == torch.float32
    work = None if direct else torch.empty((min(step, n_rows), width), device=x.device)
    for r0 in range(0, n_rows, step):
        r1 = min(r0 + step, n_rows)
        y = out_rows[r0:r1] if direct else work[: r1 - r0]  # type: ignore[index]
        s = scale[r0:r1] if (n_scales > 1 and scale is not None) else scale
        z = zero[r0:r1] if (n_scales > 1 and zero is not None) else zero
        _quantize_block_(rows[r0:r1], y, fmt, s, z, native, limit)
        if not direct:
            out_rows[r0:r1].copy_(y)


def _quantize_block_(xb: torch.Tensor, y: torch.Tensor, fmt: QuantFormat,
                     s: torch.Tensor | None, z: torch.Tensor | None, native: bool,
                     limit: float | None) -> None:
    """``y ← s·Q(xb/s)`` in fp32, in place in ``y`` (the order of operations fixes the rounding:
    one division, one clamp, one round to the grid, one multiplication)."""
    if s is None:
        y.copy_(xb)
    else:
        torch.div(xb, s, out=y)
    if fmt.kind == "int":
        y.round_()
        if z is not None:
            y.clamp_(min=-z, max=fmt.max_value - z)
        elif limit is not None:  # without clipping |x/s| <= qmax already holds
            y.clamp_(-limit, limit)
    else:
        if limit is not None:
            y.clamp_(-limit, limit)
        _cast_float_(y, fmt, native, shifted=True)
    if s is not None:
        y.mul_(s)


def _expand_group(b: torch.Tensor | None, shape: torch.Size, fmt: QuantFormat) -> torch.Tensor:
    assert b is not None
    g = int(fmt.group_size or 1)
    return b.expand(*shape[:-1], shape[-1] // g, g).reshape(shape)


def _cast_float_(y: torch.Tensor, fmt: QuantFormat, native: bool, *,
                 shifted: bool = False) -> torch.Tensor:
    """Round fp32 ``y`` in place to the float format's grid. ``shifted``: ``y`` is already
    multiplied by the ``2^k`` of :func:`_native_cast` (the caller folded it into its scale)."""
    # Callers guarantee |y| <= max_value (up to one ulp of fp32 from the scale division, which
    # RNE maps back onto max_value), so neither path depends on the cast's overflow behaviour.
    cast = _float_cast(fmt, native, y.device.type)
    if cast is None:
        return _round_float_(y, fmt)
    dtype, k = cast
    if k and not shifted:
        y.mul_(2.0**k)
        y.copy_(y.to(dtype))
        return y.mul_(2.0**-k)
    return y.copy_(y.to(dtype))


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: QuantFormat, clipped: bool) -> torch.Tensor:
        if clipped:
            out, lo, hi = _quantize_values(x, fmt, return_bounds=True)
            ctx.save_for_backward((x >= lo) & (x <= hi))
        else:
            out = _quantize_values(x, fmt)
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
    _check_finite(x, "fake_quantize")
    return _fake_quantize(x, fmt, ste)


def _check_finite(x: torch.Tensor, owner: str) -> None:
    """Refuse NaN/inf at the public boundary: one inf makes the absmax scale inf and every
    quantized element NaN, a silent wrong answer."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{owner} got a tensor with {bad} NaN or inf entries (shape "
                         f"{tuple(x.shape)}); the scale would be non-finite and every value NaN. "
                         "Quantize finite values (check for overflow upstream).")


def _fake_quantize(x: torch.Tensor, fmt: QuantFormat | None,
                   ste: Literal["identity", "clipped"] = "identity") -> torch.Tensor:
    """:func:`fake_quantize` without the input checks, for fmlab's own layers (a training run
    that overflows must reach its divergence check, not raise in the forward pass)."""
    if fmt is None:
        return x
    if x.requires_grad and torch.is_grad_enabled():
        return _FakeQuantSTE.apply(x, fmt, ste == "clipped")
    return _quantize_values(x, fmt)
