"""fmlab: research results on the reliability of foundation models, as software.

Capabilities live in subpackages that are imported on first use, so ``import fmlab`` stays cheap
(no torch, no transformers):

- :mod:`fmlab.scaling`: scaling laws (precision-aware, data-filtering) and planners
- :mod:`fmlab.quant`: number formats, fake quantization, QAT, GPTQ, precision sweeps
- :mod:`fmlab.sam`: SAM and its explaining variants as ``torch.optim`` optimizers
- :mod:`fmlab.ood`: label-free OOD accuracy prediction (agreement-on-the-line)
- :mod:`fmlab.embeddings`: echo embeddings from causal LMs
- :mod:`fmlab.autoft`, :mod:`fmlab.jailbreak`, :mod:`fmlab.attacks`, :mod:`fmlab.context`
- :mod:`fmlab.models`, :mod:`fmlab.data`: the offline model and data zoo
- :mod:`fmlab.studies`: paper reproductions and the HTML report (``fmlab reproduce``)
"""

from __future__ import annotations

import importlib
from typing import Any

from fmlab.version import __version__

_SUBMODULES = (
    "attacks",
    "autoft",
    "base",
    "context",
    "data",
    "embeddings",
    "exceptions",
    "jailbreak",
    "models",
    "ood",
    "quant",
    "sam",
    "scaling",
    "studies",
    "testing",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"fmlab.{name}")
    raise AttributeError(f"module 'fmlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
