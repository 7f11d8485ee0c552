"""all-MiniLM-L6-v2 through load_sentence_encoder: real embeddings, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.exceptions import ModelUnavailableError, UnknownNameError
from fmlab.models import load_sentence_encoder


@pytest.fixture(scope="module")
def minilm(zoo_or_skip):
    zoo_or_skip("all-minilm-l6-v2")
    return load_sentence_encoder("all-minilm-l6-v2")


def test_minilm_embeds_meaning(minilm, reference):
    sentences = ["A man is eating food.", "A man is eating a piece of bread.",
                 "The stock market fell sharply today."]
    vecs = minilm.encode(sentences, normalize_embeddings=True)  # (3, 384)
    assert vecs.shape == (3, reference["minilm_dimension"]["value"])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sim = vecs @ vecs.T
    assert sim[0, 1] > 0.5 > sim[0, 2]


@pytest.mark.parametrize(
    "arg, error, message",
    [
        ("minilm", UnknownNameError, r"Unknown model 'minilm'"),
        ("efficientnet-lite0", ValueError, r"is a image-classifier, not a sentence encoder|"
                                           r"not a sentence encoder"),
        ("/no/such/folder", ModelUnavailableError, r"No sentence-encoder folder"),
        ("hf:sentence-transformers/all-mpnet-base-v2", ModelUnavailableError,
         r"Cannot load sentence encoder"),
        (3, TypeError, r"'name_or_path' parameter of load_sentence_encoder"),
    ],
)
def test_errors(arg, error, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(error, match=message):
        load_sentence_encoder(arg)
