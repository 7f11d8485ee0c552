"""Echo embeddings: sentence embeddings from any causal LM, by repeating the input.

A causal LM's token states cannot see later tokens, so pooling a sentence's own tokens loses its
end. :class:`EchoEncoder` feeds the input twice and pools only the second copy (Springer et al.,
arXiv 2402.15449); the classical template (input once) is the baseline. Evaluation helpers score
any encoder with an ``encode`` method (EchoEncoder or a sentence-transformers model) on STS,
word similarity and a linear classification probe.

Example:
    >>> from fmlab.embeddings import EchoEncoder          # doctest: +SKIP
    >>> enc = EchoEncoder.from_pretrained("smollm2-135m-instruct", template="echo")
    >>> enc.encode(["A man plays guitar.", "Someone plays music."], normalize_embeddings=True)

Importing this package is cheap; torch and transformers load on first use of the encoder.
"""

from __future__ import annotations

from fmlab._imports import lazy_module
from fmlab.embeddings._templates import (
    TEMPLATES,
    EchoTemplate,
    TokenizedInput,
    get_template,
    list_templates,
)

# name -> private module; loaded on first access (they import torch)
_LAZY = {
    "EchoEncoder": "fmlab.embeddings._encoder",
    "pool_hidden_states": "fmlab.embeddings._encoder",
    "cpu_supports_bf16": "fmlab._device",
    "evaluate_sts": "fmlab.embeddings._evaluate",
    "evaluate_word_similarity": "fmlab.embeddings._evaluate",
    "probe_classification": "fmlab.embeddings._evaluate",
    "evaluate": "fmlab.embeddings._evaluate",
    "EvalResult": "fmlab.embeddings._evaluate",
    "mteb_instructions": "fmlab.embeddings._evaluate",
    "make_toy_sentences": "fmlab.embeddings._toy",
    "toy_experiment": "fmlab.embeddings._toy",
}

__all__ = [
    "TEMPLATES",
    "EchoEncoder",
    "EchoTemplate",
    "EvalResult",
    "TokenizedInput",
    "cpu_supports_bf16",
    "evaluate",
    "evaluate_sts",
    "evaluate_word_similarity",
    "get_template",
    "list_templates",
    "make_toy_sentences",
    "mteb_instructions",
    "pool_hidden_states",
    "probe_classification",
    "toy_experiment",
]

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
