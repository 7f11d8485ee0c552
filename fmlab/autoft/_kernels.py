"""Numba kernels of AutoFT's fused objective on CPU (numba imported here, and only here).

:mod:`fmlab.autoft._fused` uses them when numba is installed (the ``hpo`` extra) and the tensors
are contiguous CPU float32/float64; otherwise it runs the same arithmetic as torch ops. Each
kernel is one pass where torch needs several: at the study's sizes (a ``(64, 9)`` logit block, a
``1280 × 256`` projection) the torch form is bound by per-op dispatch (logit terms) or by
re-reading the weights once per op (penalties), not by arithmetic. Compiled on first use and
cached on disk (``cache=True``): a new process loads them in tens of milliseconds.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["logit_terms", "penalty_grad", "penalty_value"]

_JIT = {"cache": True, "nogil": True}


@nb.njit(**_JIT)
def logit_terms(z, y, ce, entropy, dcm, hinge, gz):  # type: ignore[no-untyped-def]
    """Mean over rows of ``ce·(−log p_y) + κ·H(p) + hinge·Σ_{j≠y} max(0, z_j − z_y + 1)``,
    ``κ = entropy + dcm·1[argmax z ≠ y]``; writes ``∂/∂z`` into ``gz``. Returns ``(value, -1)``,
    or ``(nan, i)`` for the first row ``i`` whose label is not in ``[0, C)`` (nothing is read
    out of bounds; the caller raises).

    ``z``, ``gz``: ``(B, C)`` C-contiguous, same float dtype; ``y``: ``(B,)`` int64. Row
    quantities in float64; the hinge margin in ``z``'s dtype (its ``≥ 0`` test as torch's);
    the argmax is the first maximum (as ``torch.argmax``). The gradient is the closed form of
    :class:`fmlab.autoft._fused.LogitTerms`.
    """
    n, c = z.shape
    total = 0.0
    one = z.dtype.type(1.0)
    zero = z.dtype.type(0.0)
    for i in range(n):
        if y[i] < 0 or y[i] >= c:
            return np.nan, i
    for i in range(n):
        yi = y[i]
        mx = z[i, 0]
        am = 0
        for j in range(1, c):
            if z[i, j] > mx or (z[i, j] != z[i, j] and mx == mx):  # NaN counts as the max
                mx = z[i, j]
                am = j
        m64 = np.float64(mx)
        s = 0.0
        for j in range(c):
            s += np.exp(np.float64(z[i, j]) - m64)
        lse = m64 + np.log(s)
        neg_h = 0.0  # Σ p log p = −H
        for j in range(c):
            lp = np.float64(z[i, j]) - lse
            neg_h += np.exp(lp) * lp
        kappa = entropy + (dcm if am != yi else 0.0)
        total += -kappa * neg_h - ce * (np.float64(z[i, yi]) - lse)
        zy = z[i, yi]
        n_act = 0.0
        gy = 0.0
        for j in range(c):
            lp = np.float64(z[i, j]) - lse
            p = np.exp(lp)
            g = p * (ce - kappa * (lp - neg_h))
            if hinge != 0.0:
                mj = z[i, j] - zy + one  # exactly 1 at j = y
                if mj >= zero:
                    g += hinge
                    n_act += 1.0
                    total += hinge * np.float64(mj)
            if j == yi:
                gy = g
            else:
                gz[i, j] = g / n
        if hinge != 0.0:
            total -= hinge  # the j = y margin (exactly 1) is not a term
        gz[i, yi] = (gy - ce - hinge * n_act) / n
    return total / n, -1


@nb.njit(**_JIT)
def penalty_grad(w, w0, g, a1, a2, a3, a4):  # type: ignore[no-untyped-def]
    """``g += a1·sign w + a2·w + a3·sign(w − w0) + a4·(w − w0)`` in one pass (1-d, same dtype)."""
    for i in range(w.size):
        x = w[i]
        d = x - w0[i]
        g[i] += a1 * np.sign(x) + a2 * x + a3 * np.sign(d) + a4 * d


@nb.njit(**_JIT)
def penalty_value(w, w0):  # type: ignore[no-untyped-def]
    """``(Σ|w|, Σw², Σ|w − w0|, Σ(w − w0)²)`` accumulated in float64."""
    s1 = s2 = s3 = s4 = 0.0
    for i in range(w.size):
        x = np.float64(w[i])
        d = x - np.float64(w0[i])
        s1 += abs(x)
        s2 += x * x
        s3 += abs(d)
        s4 += d * d
    return s1, s2, s3, s4
