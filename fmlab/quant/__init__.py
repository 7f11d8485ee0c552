"""Number formats, fake quantization, quantization-aware training, GPTQ and precision sweeps.

Formats are data (:func:`get_format`, :func:`list_formats`, :class:`QuantFormat`) and import
nothing heavy; everything that needs torch, tokenizers or optuna is loaded on first access.

Example:
    >>> from fmlab.quant import get_format, list_formats
    >>> get_format("fp8_e4m3").max_value
    448.0
    >>> list_formats("fp4*")[:2]
    ['fp4_e2m1', 'fp4_e2m1_channel']

References:
    Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330; Frantar et al. 2022, GPTQ,
    arXiv 2210.17323.
"""

from __future__ import annotations

from fmlab._imports import lazy_module
from fmlab.quant._formats import FORMATS, QuantFormat, get_format, list_formats, make_format

# public name -> private module holding it (imported on first access; these need torch etc.)
_LAZY: dict[str, str] = {
    "fake_quantize": "fmlab.quant._fake",
    "quantize_values": "fmlab.quant._fake",
    "compute_scale": "fmlab.quant._fake",
    "LMConfig": "fmlab.quant._model",
    "PrecisionConfig": "fmlab.quant._model",
    "QuantLinear": "fmlab.quant._model",
    "TinyLM": "fmlab.quant._model",
    "set_precision": "fmlab.quant._model",
    "save_lm": "fmlab.quant._checkpoint",
    "load_lm": "fmlab.quant._checkpoint",
    "TokenData": "fmlab.quant._data",
    "load_corpus": "fmlab.quant._data",
    "load_token_data": "fmlab.quant._data",
    "train_tokenizer": "fmlab.quant._data",
    "TrainConfig": "fmlab.quant._train",
    "LMTrainResult": "fmlab.quant._train",
    "evaluate_loss": "fmlab.quant._train",
    "train_lm": "fmlab.quant._train",
    "PTQResult": "fmlab.quant._ptq",
    "gptq_quantize_weight": "fmlab.quant._ptq",
    "quantize_model": "fmlab.quant._ptq",
    "SweepSpec": "fmlab.quant._sweep",
    "create_sweep": "fmlab.quant._sweep",
    "run_sweep": "fmlab.quant._sweep",
    "run_sweep_worker": "fmlab.quant._sweep",
    "sweep_table": "fmlab.quant._sweep",
    "write_table": "fmlab.quant._sweep",
}

__all__ = ["FORMATS", "QuantFormat", "get_format", "list_formats", "make_format", *_LAZY]

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
