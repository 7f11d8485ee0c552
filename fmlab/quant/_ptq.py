"""Post-training quantization of weights: round-to-nearest (RTN) and GPTQ.

Works on :class:`~fmlab.quant.TinyLM` and on Hugging Face causal LMs (any model whose decoder
blocks sit in one ``nn.ModuleList``, e.g. ``model.model.layers``). The quantized weights are written
back as fake-quantized fp32 values (``Ŵ = s·q``), so the result runs anywhere and its loss is the
post-training-quantization loss of the paper.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from fmlab._device import eval_mode
from fmlab._validation import check_bool, check_int, check_option, check_real
from fmlab.quant._fake import _cast_float_, _check_finite, _compute_scale, _quantize_values
from fmlab.quant._formats import QuantFormat, get_format, resolve_format

__all__ = ["PTQResult", "gptq_quantize_weight", "quantize_model"]


@dataclass
class PTQResult:
    """What :func:`quantize_model` returns.

    Attributes:
        model: The quantized model (a copy unless ``inplace=True``).
        method: ``"rtn"`` or ``"gptq"``.
        format: The weight format.
        layers: Names of the quantized linear layers.
        seconds: Wall time.
        errors: GPTQ only: per layer, the summed squared reconstruction error proxy
            ``Σ (w - q)² / [H⁻¹]_jj``.
    """

    model: nn.Module
    method: str
    format: QuantFormat
    layers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)


def _quantize_cols(w: torch.Tensor, fmt: QuantFormat, scale: torch.Tensor,
                   zero: torch.Tensor | None) -> torch.Tensor:
    """Quantize columns ``w`` (d_out, k) with fixed per-row ``scale``/``zero`` (d_out, 1)."""
    out = w / scale
    if fmt.kind == "int":
        out.round_()
        if zero is not None:
            out.clamp_(min=-zero, max=fmt.max_value - zero)
        else:
            out.clamp_(-fmt.max_value, fmt.max_value)
    else:
        out.clamp_(-fmt.max_value, fmt.max_value)
        out = _cast_float_(out, fmt, True)
    return out.mul_(scale)


def _row_params(w: torch.Tensor, fmt: QuantFormat) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row scale (and zero) of ``w`` (d_out, k) as (d_out, 1), using ``fmt``'s symmetry."""
    row_fmt = fmt.with_(granularity="channel", group_size=None)
    scale, zero = _compute_scale(w, row_fmt)
    return scale.reshape(-1, 1), (zero.reshape(-1, 1) if zero is not None else None)


def gptq_quantize_weight(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    fmt: QuantFormat | str,
    *,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
) -> tuple[torch.Tensor, float]:
    """GPTQ for one linear layer: quantize ``W`` column by column, spreading each column's error
    onto the columns not yet quantized through the inverse Hessian.

    .. math::
        H = 2 X X^\\top + \\lambda I,\\quad
        \\lambda = \\text{damp}\\cdot\\overline{\\operatorname{diag} H},
        \\qquad e_j = (w_j - q_j)/U_{jj},\\quad W_{:,j+1:} \\mathrel{-}= e_j U_{j,j+1:}

    with U the upper Cholesky factor of H⁻¹. Updates are applied lazily in blocks of
    ``block_size`` columns. Dead inputs (``H_jj = 0``) get ``H_jj = 1`` and zero weights.

    Scales: per output channel from the whole row (``granularity`` "channel" or "tensor" — a
    tensor format is applied per channel here); per group of ``group_size`` columns, computed
    from the partly updated weights when the loop reaches the group's first column. With
    ``act_order`` the columns are processed in decreasing ``diag(H)``; group scales are then fixed
    before reordering ("static groups"), so groups stay contiguous in the original order.

    Args:
        weight: ``(d_out, d_in)``.
        hessian: ``(d_in, d_in)`` sum (or mean) of ``2 x xᵀ`` over calibration inputs.
        fmt: Weight format (int or float).
        block_size: Columns per lazy-update block.
        damp: Damping as a fraction of the mean diagonal.
        act_order: Process columns in decreasing Hessian diagonal.

    Returns:
        ``(W_hat, error)`` with ``W_hat`` the fake-quantized weight in ``weight``'s dtype.

    References:
        Frantar et al. 2022, GPTQ, arXiv 2210.17323.
    """
    block_size = check_int(block_size, "block_size", owner="gptq", low=1)
    damp = check_real(damp, "damp", owner="gptq", low=0.0, closed="left")
    return _gptq(weight, hessian, get_format(fmt), block_size=block_size, damp=damp,
                 act_order=act_order)


def _gptq(weight: torch.Tensor, hessian: torch.Tensor, fmt: QuantFormat, *, block_size: int,
          damp: float, act_order: bool) -> tuple[torch.Tensor, float]:
    """:func:`gptq_quantize_weight` on a resolved format and checked settings."""
    W = weight.detach().to(torch.float32).clone()  # (d_out, d_in)
    H = hessian.detach().to(torch.float32).clone()  # (d_in, d_in)
    d_out, d_in = W.shape
    if H.shape != (d_in, d_in):
        raise ValueError(f"The Hessian must be ({d_in}, {d_in}) for a weight of shape "
                         f"{tuple(W.shape)}; got {tuple(H.shape)}.")
    group = fmt.group_size if fmt.granularity == "group" else None
    if group is not None and d_in % group:
        raise ValueError(f"group_size={group} must divide the input dimension {d_in} of the "
                         f"weight {tuple(W.shape)}; pick a divisor of {d_in}.")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    static: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None
    if group is not None and act_order:
        static = [_row_params(W[:, g:g + group], fmt) for g in range(0, d_in, group)]
    perm = invperm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        invperm = torch.argsort(perm)
        W, H = W[:, perm], H[perm][:, perm]
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)  # U: H⁻¹ = UᵀU
    except torch.linalg.LinAlgError as exc:
        raise ValueError(f"GPTQ: the damped Hessian is not positive definite (damp={damp}); "
                         f"raise damp or use more calibration tokens.") from exc
    scale, zero = (None, None) if group is not None else _row_params(W, fmt)
    Q = torch.zeros_like(W)
    total_err = 0.0
    for i1 in range(0, d_in, block_size):
        i2 = min(i1 + block_size, d_in)
        W1 = W[:, i1:i2].clone()  # (d_out, b)
        Q1 = torch.zeros_like(W1)
        E1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if group is not None:
                if static is not None:
                    orig = int(perm[col]) if perm is not None else col
                    scale, zero = static[orig // group]
                elif col % group == 0:
                    ahead = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :group]
                    scale, zero = _row_params(ahead, fmt)
            assert scale is not None
            w = W1[:, i:i + 1]  # (d_out, 1)
            q = _quantize_cols(w, fmt, scale, zero)
            d = Hinv1[i, i]
            Q1[:, i:i + 1] = q
            err = (w - q) / d  # (d_out, 1)
            total_err += float((err.square() * d * d / d).sum())  # (w-q)²/d
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            E1[:, i:i + 1] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]
    if invperm is not None:
        Q = Q[:, invperm]
    return Q.to(weight.dtype), total_err


def _find_blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        return blocks
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    best: nn.ModuleList | None = None
    for mod in model.modules():  # fall back to the longest ModuleList holding Linear layers
        if isinstance(mod, nn.ModuleList) and len(mod) > 1 and any(
                isinstance(m, nn.Linear) for m in mod[0].modules()):
            if best is None or len(mod) > len(best):
                best = mod
    if best is None:
        raise TypeError(f"Cannot find the decoder blocks of {type(model).__name__}: expected "
                        f"`model.blocks` or `model.model.layers` (an nn.ModuleList).")
    return best


def _linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


def _drop_weight_format(lin: nn.Module) -> None:
    # A QAT-trained QuantLinear would fake-quantize its (now post-quantized) weight again at the
    # training precision; the weight already lies on the P_post grid, so switch that off.
    if hasattr(lin, "w_fmt"):
        lin.w_fmt = None


class _Stop(Exception):
    pass


def _as_batches(calibration: Any, batch_size: int) -> list[torch.Tensor]:
    if isinstance(calibration, torch.Tensor):
        ids = calibration
    else:
        import numpy as np

        ids = torch.as_tensor(np.asarray(calibration))
    if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"'calibration' must be integer token ids of shape (n_sequences, "
                         f"seq_len); got shape {tuple(ids.shape)} and dtype {ids.dtype}.")
    return list(ids.long().split(batch_size))


def _stages(block: nn.Module, lins: dict[str, nn.Linear],
            sample: tuple[tuple[Any, ...], dict[str, Any]]) -> list[list[str]]:
    """The block's linear layers in call order, grouped into stages that read the same input
    tensor (q/k/v, then the attention output, then gate/up, then down)."""
    calls: list[tuple[str, Any]] = []
    hooks = [m.register_forward_pre_hook(
        lambda _m, inp, n=n: calls.append((n, inp[0]))) for n, m in lins.items()]
    try:
        block(*sample[0], **sample[1])
    finally:
        for h in hooks:
            h.remove()
    stages: list[list[str]] = []
    last_input = None
    for n, x in calls:
        if any(n in st for st in stages):
            continue  # a layer called twice: its first call decides
        if stages and x is last_input:
            stages[-1].append(n)
        else:
            stages.append([n])
        last_input = x
    missing = [n for n in lins if not any(n in st for st in stages)]
    return stages + ([missing] if missing else [])


def _block_hessians(block: nn.Module, lins: dict[str, nn.Linear],
                    captured: list[tuple[tuple[Any, ...], dict[str, Any]]],
                    stop_after: str | None) -> dict[str, torch.Tensor]:
    """``H = 2·X·Xᵀ / n`` of each layer in ``lins`` over the calibration inputs of the block as
    it is now (earlier stages already quantized); the pass stops after ``stop_after`` runs."""
    device = next(iter(lins.values())).weight.device
    hess = {n: torch.zeros(m.in_features, m.in_features, device=device)
            for n, m in lins.items()}
    counts = dict.fromkeys(lins, 0)

    def acc(_m: nn.Module, inp: tuple[Any, ...], _out: Any, n: str) -> None:
        x = inp[0].detach().reshape(-1, inp[0].shape[-1]).float()  # (tokens, d_in)
        hess[n].addmm_(x.T, x, alpha=2.0)
        counts[n] += x.shape[0]

    def stop(_m: nn.Module, _inp: Any, _out: Any) -> None:
        raise _Stop

    hooks = [m.register_forward_hook(lambda m_, i, o, n=n: acc(m_, i, o, n))
             for n, m in lins.items()]
    if stop_after is not None:
        hooks.append(lins[stop_after].register_forward_hook(stop))
    try:
        for args, kwargs in captured:
            try:
                block(*args, **kwargs)
            except _Stop:
                pass
    finally:
        for h in hooks:
            h.remove()
    return {n: h / max(1, counts[n]) for n, h in hess.items()}


def quantize_model(
    model: nn.Module,
    fmt: QuantFormat | str | int,
    *,
    method: Literal["rtn", "gptq"] = "gptq",
    calibration: Any = None,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
    true_sequential: bool = True,
    batch_size: int = 8,
    inplace: bool = False,
) -> PTQResult:
    """Quantize the weights of every linear layer inside the decoder blocks (embeddings and the LM
    head stay in full precision), by round-to-nearest or GPTQ.

    GPTQ runs block by block: the calibration inputs of block *k* are the outputs of the already
    quantized blocks *< k*. Within a block it is *true-sequential* by default: layers that read the
    same input (q/k/v; gate/up) form one stage, and each stage's Hessians come from the block with
    the earlier stages already quantized, so a layer corrects the error of those before it.

    Args:
        model: A :class:`TinyLM` or a Hugging Face causal LM.
        fmt: Weight format (name, :class:`QuantFormat`, or bit width → per-channel int).
        method: ``"rtn"`` or ``"gptq"``.
        calibration: GPTQ only: token ids ``(n_sequences, seq_len)``; needs at least as many tokens
            as the widest layer input (use held-out text, never the evaluation text).
        block_size, damp, act_order: GPTQ settings (see :func:`gptq_quantize_weight`).
        true_sequential: Quantize a block's layers stage by stage (above); ``False`` takes all
            Hessians from one pass over the unquantized block (faster, usually a little worse).
        batch_size: Calibration sequences per forward pass.
        inplace: Modify ``model`` instead of a deep copy.

    Example:
        >>> res = quantize_model(lm, "int4_channel", method="gptq",
        ...                      calibration=ids)  # doctest: +SKIP
    """
    check_option(method, "method", ("rtn", "gptq"), owner="quantize_model")
    check_bool(inplace, "inplace", owner="quantize_model")
    check_bool(true_sequential, "true_sequential", owner="quantize_model")
    block_size = check_int(block_size, "block_size", owner="quantize_model", low=1)
    damp = check_real(damp, "damp", owner="quantize_model", low=0.0, closed="left")
    # the format is resolved here, once; the inner functions take the QuantFormat
    wfmt = resolve_format(fmt, default_granularity="channel", name="fmt")
    if wfmt is None:
        raise ValueError("quantize_model needs a weight format below 16 bits, e.g. 'int4_channel'.")
    if wfmt.granularity in ("token", "none") and method == "gptq":
        wfmt = wfmt.with_(granularity="channel")
    start = time.perf_counter()
    model = model if inplace else copy.deepcopy(model)
    blocks = _find_blocks(model)
    names: list[str] = []
    errors: dict[str, float] = {}
    if method == "rtn":
        with torch.no_grad():
            for b, block in enumerate(blocks):
                for name, lin in _linears(block).items():
                    _check_finite(lin.weight, "quantize_model")
                    lin.weight.copy_(_quantize_values(lin.weight, wfmt))
                    _drop_weight_format(lin)
                    names.append(f"blocks.{b}.{name}")
        return PTQResult(model, "rtn", wfmt, names, time.perf_counter() - start)
    if calibration is None:
        raise ValueError("method='gptq' needs calibration token ids (n_sequences, seq_len), e.g. "
                         "128 held-out sequences; use method='rtn' for no calibration.")
    batches = _as_batches(calibration, batch_size)
    n_tok = sum(b.numel() for b in batches)
    widest = max(lin.in_features for blk in blocks for lin in _linears(blk).values())
    if n_tok < widest:
        raise ValueError(f"The calibration set is too small: {n_tok} tokens, but GPTQ needs at "
                         f"least as many tokens as the widest layer input ({widest}) for a "
                         f"well-conditioned Hessian. Pass more or longer sequences.")
    device = next(model.parameters()).device
    with eval_mode(model):  # gradients off; the caller's train/eval mode comes back after
        # 1. Capture the inputs of the first block.
        captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def grab(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.append((args, kwargs))
            raise _Stop

        handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            for ids in batches:
                try:
                    model(ids.to(device))
                except _Stop:
                    pass
        finally:
            handle.remove()
        # A Hugging Face KV cache captured with the inputs would grow on every replay of a block
        # (and every later pass would attend to stale keys): replay without caching.
        for _args, kwargs in captured:
            if "past_key_values" in kwargs:
                kwargs["past_key_values"] = None
            if "use_cache" in kwargs:
                kwargs["use_cache"] = False
        # 2. Quantize block by block, feeding each block the quantized previous blocks' outputs.
        for b, block in enumerate(blocks):
            lins = _linears(block)
            stages = _stages(block, lins, captured[0]) if true_sequential else [list(lins)]
            for stage in stages:
                hess = _block_hessians(block, {n: lins[n] for n in stage}, captured,
                                       stop_after=stage[-1] if stage is not stages[-1] else None)
                for n in stage:
                    m = lins[n]
                    q, err = _gptq(m.weight, hess[n], wfmt, block_size=block_size,
                                   damp=damp, act_order=act_order)
                    m.weight.copy_(q)
                    _drop_weight_format(m)
                    names.append(f"blocks.{b}.{n}")
                    errors[f"blocks.{b}.{n}"] = err
            new = []
            for args, kwargs in captured:
                out = block(*args, **kwargs)
                hidden = out[0] if isinstance(out, tuple) else out
                if args:
                    new.append(((hidden, *args[1:]), kwargs))
                else:  # the block received hidden_states by keyword
                    new.append(((), {**kwargs, "hidden_states": hidden}))
            captured = new
    return PTQResult(model, "gptq", wfmt, names, time.perf_counter() - start, errors)
