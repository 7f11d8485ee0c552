"""Label noise with an exact flip rate: symmetric and asymmetric (class-dependent) flips."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from fmlab._validation import check_array, check_int, check_option, check_real

__all__ = ["add_label_noise"]


def add_label_noise(
    labels: Any,
    rate: float,
    n_classes: int | None = None,
    kind: Literal["symmetric", "asymmetric"] = "symmetric",
    seed: int = 0,
    *,
    mapping: Mapping[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly ``round(rate * n_eligible)`` labels to a different class.

    - ``"symmetric"``: each flipped label moves to one of the other ``n_classes - 1`` classes,
      uniformly at random (the "uniform noise" of Foret et al. and Baek et al. excludes the true
      class, so every flip is a real error).
    - ``"asymmetric"``: class ``c`` moves to ``mapping[c]``; the default mapping is ``c -> c + 1
      (mod n_classes)``, the pair-flip noise of Han et al. 2018. Pass e.g. the MNIST mapping of
      Patrini et al. 2017, ``{2: 7, 3: 8, 5: 6, 6: 5, 7: 1}``. Only classes in the mapping are
      eligible, and ``rate`` is the fraction of *eligible* labels flipped.

    The flipped examples are spread over the eligible classes in proportion to their counts
    (largest remainder), so the per-class rate is as close to ``rate`` as integers allow.

    Args:
        labels: Integer class labels ``(N,)``.
        rate: Fraction of eligible labels to flip, in ``[0, 1]``.
        n_classes: Number of classes; defaults to ``labels.max() + 1``.
        kind: ``"symmetric"`` or ``"asymmetric"``.
        seed: Random seed; the same inputs and seed give the same output.
        mapping: Source-to-target class map for ``kind="asymmetric"``.

    Returns:
        ``(noisy_labels, flipped_mask)``: an ``int64 (N,)`` copy with flipped entries, and a
        ``bool (N,)`` mask that is true exactly where ``noisy_labels != labels``.

    Raises:
        ValueError: for a rate outside ``[0, 1]``, labels outside ``[0, n_classes)``, fewer than
            two classes, or an invalid mapping.

    Example:
        >>> import numpy as np
        >>> y = np.arange(100) % 4
        >>> noisy, mask = add_label_noise(y, 0.2, n_classes=4, seed=0)
        >>> int(mask.sum()), bool(np.array_equal(noisy != y, mask))
        (20, True)

    References:
        Patrini et al. 2017, Making deep neural networks robust to label noise, arXiv 1609.03683;
        Han et al. 2018, Co-teaching, arXiv 1804.06872; Baek, Kolter, Raghunathan 2024, Why is
        SAM robust to label noise?, arXiv 2405.03676.
    """
    y = check_array(labels, "labels", ndim=1, dtype=None)
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and y.size and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        elif y.size:
            raise TypeError(f"'labels' must hold integers. Got dtype {y.dtype} instead.")
    y = y.astype(np.int64)
    rate = check_real(rate, "rate", owner="add_label_noise", low=0.0, high=1.0, closed="both")
    kind = check_option(kind, "kind", ("symmetric", "asymmetric"), owner="add_label_noise")
    seed = check_int(seed, "seed", owner="add_label_noise", low=0)
    if n_classes is None:
        n_classes = int(y.max()) + 1 if y.size else 2
    n_classes = check_int(n_classes, "n_classes", owner="add_label_noise", low=2)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"'labels' must lie in [0, n_classes) = [0, {n_classes}). Got values from {y.min()} "
            f"to {y.max()}. Pass the right n_classes."
        )
    if kind == "asymmetric":
        table = ({c: (c + 1) % n_classes for c in range(n_classes)} if mapping is None
                 else {int(k): int(v) for k, v in dict(mapping).items()})
        for src, dst in table.items():
            if not (0 <= src < n_classes and 0 <= dst < n_classes) or src == dst:
                raise ValueError(
                    f"Invalid mapping entry {src} -> {dst}: both must lie in [0, {n_classes}) "
                    f"and differ.")
    elif mapping is not None:
        raise ValueError("'mapping' applies only to kind='asymmetric'. Got kind='symmetric'.")

    rng = np.random.default_rng(seed)
    eligible = np.isin(y, list(table)) if kind == "asymmetric" else np.ones(y.shape, bool)
    classes, counts = np.unique(y[eligible], return_counts=True)
    n_flip = int(round(rate * int(counts.sum())))
    # Split n_flip over the classes in proportion to their counts (largest remainder).
    quota = rate * counts
    per_class = np.floor(quota).astype(np.int64)
    short = n_flip - int(per_class.sum())
    if short > 0:
        order = np.argsort(-(quota - per_class), kind="stable")
        per_class[order[:short]] += 1
    per_class = np.minimum(per_class, counts)

    mask = np.zeros(y.shape, dtype=bool)
    for c, k in zip(classes, per_class, strict=True):
        members = np.flatnonzero(y == c)
        mask[rng.choice(members, size=int(k), replace=False)] = True
    noisy = y.copy()
    idx = np.flatnonzero(mask)
    if kind == "symmetric":
        # Shift by 1..K-1 (mod K): uniform over the other classes, never the true one.
        noisy[idx] = (y[idx] + rng.integers(1, n_classes, size=idx.size)) % n_classes
    else:
        lut = np.arange(n_classes)
        for src, dst in table.items():
            lut[src] = dst
        noisy[idx] = lut[y[idx]]
    return noisy, mask
