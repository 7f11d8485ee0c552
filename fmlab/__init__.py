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

from fmlab._imports import lazy_module
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

__getattr__, __dir__ = lazy_module(__name__, {n: f"fmlab.{n}" for n in _SUBMODULES}, __all__)
