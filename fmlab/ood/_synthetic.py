"""Synthetic ensembles with known OOD accuracy, for tests, examples and benchmarks (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmlab._validation import check_bool, check_int, check_real

__all__ = ["SyntheticEnsemble", "make_synthetic_ensemble"]


@dataclass(frozen=True)
class SyntheticEnsemble:
    """An ensemble's outputs on ID and OOD data with the true accuracies.

    Attributes:
        id_probs, ood_probs: Softmax outputs, (n_models, n_id / n_ood, n_classes).
        id_labels, ood_labels: Labels, (n_id,) and (n_ood,).
        id_accuracy, ood_accuracy: True accuracies on these samples, (n_models,).
    """

    id_probs: np.ndarray
    id_labels: np.ndarray
    ood_probs: np.ndarray
    ood_labels: np.ndarray
    id_accuracy: np.ndarray
    ood_accuracy: np.ndarray


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def make_synthetic_ensemble(
    n_models: int = 10,
    *,
    n_classes: int = 5,
    n_features: int = 32,
    n_id: int = 2000,
    n_ood: int = 2000,
    signal: float = 0.55,
    noise: float = 1.8,
    temperature: float = 1.0,
    on_the_line: bool = True,
    random_state: int = 0,
) -> SyntheticEnsemble:
    r"""Linear classifiers on a Gaussian mixture, under a shift that shrinks the class signal.

    ID inputs are :math:`x = \mu_y + \epsilon`, :math:`\epsilon \sim N(0, I)`; OOD inputs are
    :math:`x = s\,\mu_y + \epsilon` with ``s = signal``. Model i is the nearest-mean direction
    corrupted by its own Gaussian weight noise of scale ``σ_i`` (spread over ``[0, noise]``), so
    ID accuracies spread along a range. For a binary problem the probit OOD accuracy is exactly
    linear in the probit ID accuracy with slope ``s`` and zero intercept; with more classes the
    line is close, and agreement follows it (agreement-on-the-line).

    With ``on_the_line=False`` each model additionally meets its own random OOD perturbation
    (a Camelyon-like shift that acts differently per model), which breaks both lines.

    Args:
        n_models: Ensemble size.
        n_classes, n_features: Problem size.
        n_id, n_ood: Examples per split.
        signal: OOD signal multiplier ``s`` in (0, 1] (1 means no shift).
        noise: Largest weight-noise scale; larger spreads accuracies further.
        temperature: Softmax temperature of the models' logits.
        on_the_line: Build the benign shift (True) or the per-model failure case (False).
        random_state: Seed.

    Returns:
        A :class:`SyntheticEnsemble`.
    """
    owner = "make_synthetic_ensemble"
    n_models = check_int(n_models, "n_models", owner=owner, low=1)
    n_classes = check_int(n_classes, "n_classes", owner=owner, low=2)
    n_features = check_int(n_features, "n_features", owner=owner, low=1)
    n_id = check_int(n_id, "n_id", owner=owner, low=1)
    n_ood = check_int(n_ood, "n_ood", owner=owner, low=1)
    signal = check_real(signal, "signal", owner=owner, low=0.0, high=1.0, closed="right")
    noise = check_real(noise, "noise", owner=owner, low=0.0, closed="left")
    temperature = check_real(temperature, "temperature", owner=owner, low=0.0)
    on_the_line = check_bool(on_the_line, "on_the_line", owner=owner)
    rng = np.random.default_rng(random_state)

    means = rng.normal(size=(n_classes, n_features)) * 0.8  # (k, d)
    sigmas = np.linspace(0.2, 1.0, n_models) * noise  # (m,)
    weights = means[None] + sigmas[:, None, None] * rng.normal(size=(n_models, n_classes,
                                                                      n_features))  # (m, k, d)
    bias = -0.5 * (weights**2).sum(-1)  # (m, k): nearest-mean style offsets

    def outputs(n: int, scale: float, perturb: bool) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, n_classes, size=n)
        x = scale * means[labels] + rng.normal(size=(n, n_features))  # (n, d)
        logits = np.einsum("nd,mkd->mnk", x, weights) + scale * bias[:, None, :]  # (m, n, k)
        if perturb:
            # Each model meets its own shift: a random per-model logit corruption.
            strength = rng.uniform(0.0, 3.0 * np.sqrt(n_features), size=(n_models, 1, 1))
            logits = logits + strength * rng.normal(size=logits.shape)
        return _softmax(logits / temperature), labels

    id_probs, id_labels = outputs(n_id, 1.0, False)
    ood_probs, ood_labels = outputs(n_ood, signal, not on_the_line)
    id_acc = (id_probs.argmax(-1) == id_labels).mean(1)
    ood_acc = (ood_probs.argmax(-1) == ood_labels).mean(1)
    return SyntheticEnsemble(id_probs, id_labels, ood_probs, ood_labels, id_acc, ood_acc)
