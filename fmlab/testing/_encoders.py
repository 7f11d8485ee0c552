"""Contract suite for sentence encoders: :func:`check_encoder`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fmlab.testing._require import _require

__all__ = ["check_encoder"]

_SENTENCES = (
    "A man is playing a guitar.",
    "The cat sits on the mat.",
    "Stock markets fell sharply on Monday.",
    "",
    "A man plays an instrument.",
)


def check_encoder(
    encoder: Any, sentences: Sequence[str] = _SENTENCES, *, atol: float = 1e-4
) -> None:
    """Check that an encoder keeps the sentence-transformers ``encode`` contract.

    Clauses: ``encode(list)`` returns a float ``ndarray`` of shape ``(n, d)`` and ``encode(str)``
    the matching 1-D row; results do not depend on ``batch_size`` (within ``atol``: padding and
    batched kernels may change the last bits) and repeat exactly; ``normalize_embeddings=True``
    gives unit rows (an empty text may give the zero vector); ``convert_to_tensor=True`` gives a
    ``torch.Tensor`` of the same values; an unknown keyword raises ``TypeError`` naming it.

    Args:
        encoder: Anything with ``encode(sentences, *, batch_size, normalize_embeddings,
            convert_to_tensor, ...)``.
        sentences: Example texts (default: five short sentences and an empty one).
        atol: Tolerance of the batch-size invariance.

    Raises:
        AssertionError: naming the first clause the encoder breaks.

    Example:
        >>> from fmlab.embeddings import EchoEncoder  # doctest: +SKIP
        >>> from fmlab.models import tiny_causal_lm  # doctest: +SKIP
        >>> check_encoder(EchoEncoder(*tiny_causal_lm()))  # doctest: +SKIP
    """
    import torch

    name = type(encoder).__name__
    texts = list(sentences)
    n = len(texts)
    emb = encoder.encode(texts, batch_size=n)
    _require(isinstance(emb, np.ndarray), f"{name}.encode(list) must return a numpy array.")
    _require(
        emb.ndim == 2 and emb.shape[0] == n,
        f"{name}.encode of {n} sentences must return shape ({n}, d); got {emb.shape}.",
    )
    _require(np.issubdtype(emb.dtype, np.floating), f"{name}.encode must return floats.")
    _require(np.isfinite(emb).all(), f"{name}.encode must return finite values.")
    one = encoder.encode(texts[0])
    _require(
        isinstance(one, np.ndarray) and one.shape == (emb.shape[1],),
        f"{name}.encode(str) must return a 1-D array of shape ({emb.shape[1]},); got "
        f"{getattr(one, 'shape', type(one))}.",
    )
    np.testing.assert_allclose(
        one, emb[0], atol=atol, err_msg=f"{name}.encode(str) must equal the list's row."
    )
    single = encoder.encode(texts, batch_size=1)
    np.testing.assert_allclose(
        single, emb, atol=atol, err_msg=f"{name}.encode must not depend on batch_size."
    )
    np.testing.assert_array_equal(
        encoder.encode(texts, batch_size=n), emb, err_msg=f"{name}.encode must be deterministic."
    )
    unit = encoder.encode(texts, batch_size=n, normalize_embeddings=True)
    norms = np.linalg.norm(unit, axis=1)
    ok = np.isclose(norms, 1.0, atol=1e-4) | ((norms == 0) & (np.linalg.norm(emb, axis=1) == 0))
    _require(
        ok.all(), f"{name}.encode(normalize_embeddings=True) must give unit rows; got {norms}."
    )
    tensor = encoder.encode(texts, batch_size=n, convert_to_tensor=True)
    _require(
        isinstance(tensor, torch.Tensor),
        f"{name}.encode(convert_to_tensor=True) must return a torch.Tensor.",
    )
    np.testing.assert_allclose(tensor.detach().float().cpu().numpy(), emb, atol=atol)
    try:
        encoder.encode(texts, not_a_keyword_of_encode=True)
    except TypeError as exc:
        _require(
            "not_a_keyword_of_encode" in str(exc),
            f"{name}.encode's error for an unknown keyword must name it: {exc}",
        )
    else:
        raise AssertionError(f"{name}.encode must reject unknown keyword arguments.")
