"""Statistics every capability shares: binomial rates with Wilson score intervals, and the
agreement rate of every pair of models' predictions.

Imports nothing beyond the standard library at module level (numpy inside the function that
needs it), so any layer of fmlab may import it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Z95", "pairwise_agreement", "rate", "resolve_n_jobs", "wilson_interval"]

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``k / n`` (95% by default), clipped to [0, 1].

    .. math:: \\frac{\\hat p + z^2/2n \\pm z\\sqrt{\\hat p(1-\\hat p)/n + z^2/4n^2}}{1 + z^2/n}

    ``n == 0`` (no observations) gives ``(0.0, 1.0)``: every proportion is consistent with no data.
    ``k`` may be fractional (a weighted count).

    References:
        Wilson, "Probable inference, the law of succession, and statistical inference",
        JASA 22 (1927).
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def rate(k: int, n: int, z: float = Z95) -> dict[str, float]:
    """``k`` successes out of ``n`` as ``{"k", "n", "rate", "low", "high"}`` (Wilson interval).

    ``n == 0`` gives a rate of NaN and the interval [0, 1].
    """
    low, high = wilson_interval(k, n, z)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "low": low, "high": high}


# Rows of examples handled per block. float32 counts are exact up to 2**24, so a block must stay
# below that; 32,768 keeps the one-hot block of 100 models at 13 MB per class.
_CHUNK = 32_768


def resolve_n_jobs(n_jobs: int | None) -> int:
    """scikit-learn's convention: ``None`` -> 1, ``-1`` -> all cores, ``k`` -> k."""
    import os

    if n_jobs is None:
        return 1
    if n_jobs == -1:
        return max(1, os.cpu_count() or 1)
    if n_jobs < 1:
        raise ValueError(f"The 'n_jobs' parameter must be None, -1 or an int >= 1. Got {n_jobs}.")
    return int(n_jobs)


def pairwise_agreement(
    preds: np.ndarray,
    n_classes: int | None = None,
    *,
    method: Literal["auto", "onehot", "compare"] = "auto",
    chunk: int = _CHUNK,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Agreement rate of every pair of models, ``Agr(h_i, h_j) = mean_x 1[h_i(x) = h_j(x)]``.

    Two exact algorithms, both with memory linear in the number of examples:

    - ``"onehot"``: for each class ``c`` the indicator matrix ``O_c = 1[preds == c]`` (n_models,
      block) enters a Gram product ``O_c O_cᵀ`` (a BLAS matmul); summing over classes counts
      agreements. Cost ``k·m²·n`` flops, so it wins for few classes.
    - ``"compare"``: one vectorised row-against-rest comparison per model, ``m²·n/2`` byte
      compares on labels stored in the smallest unsigned dtype (one byte for up to 256 classes),
      independent of the number of classes.

    ``"auto"`` picks ``compare``: on a shared 2-core machine its single-threaded byte compares
    (0.2 s for 100 models × 100,000 examples) beat the BLAS path, whose speed depends on free
    cores (0.9-3 s for the same input, 10 classes).

    Args:
        preds: Integer predictions (n_models, n).
        n_classes: Number of classes (default: ``preds.max() + 1``).
        method: Which algorithm; see above.
        chunk: Examples per block (at most 2**24 so float32 counts stay exact).
        n_jobs: Threads for ``"compare"`` (numpy releases the GIL in the comparisons; each
            thread owns whole rows of the result). ``None`` means 1, ``-1`` all cores.

    Returns:
        Symmetric (n_models, n_models) float array with ones on the diagonal.
    """
    import numpy as np

    preds = np.asarray(preds)
    m, n = preds.shape
    if n == 0:
        raise ValueError("pairwise_agreement needs at least one example; got 0.")
    k = int(n_classes) if n_classes is not None else int(preds.max()) + 1
    if method == "auto":
        method = "compare"
    chunk = int(min(max(chunk, 1), 2**24))
    counts = np.zeros((m, m), dtype=np.float64)
    # The smallest label dtype makes every pass over the predictions cheap (1 byte per entry).
    small = preds.astype(np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.int64,
                         copy=False)
    if method == "onehot":
        for start in range(0, n, chunk):
            block = small[:, start:start + chunk]  # (m, b)
            acc = np.zeros((m, m), dtype=np.float32)
            for c in range(k):
                onehot = (block == c).astype(np.float32)  # (m, b)
                acc += onehot @ onehot.T  # (m, m): examples where both predict class c
            counts += acc
    elif method == "compare":
        jobs = resolve_n_jobs(n_jobs)

        def rows(part: range) -> None:
            for start in range(0, n, chunk):
                block = small[:, start:start + chunk]  # (m, b)
                for i in part:
                    counts[i, i + 1:] += (block[i + 1:] == block[i]).sum(axis=1)  # (m - i - 1,)

        # Row i costs m - i - 1 comparisons: dealing rows round-robin balances the threads.
        parts = [range(t, m - 1, jobs) for t in range(jobs)]
        if jobs == 1:
            rows(parts[0])
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(jobs) as pool:
                list(pool.map(rows, parts))
        counts = counts + counts.T  # the lower triangle by symmetry
        counts[np.diag_indices(m)] = n
    else:
        raise ValueError(
            f"Invalid method {method!r} for pairwise_agreement. "
            "Valid options are: ('auto', 'onehot', 'compare')."
        )
    return counts / n
