"""THE verified on-disk cache of fmlab: converted model weights, tokenizers, token arrays and
backbone features all live in folders built by :func:`cached_build` under one SHA-256 manifest.

Layout: ``<cache>/models/<name>/`` holds the converted files plus ``fmlab-manifest.json``, which
lists every file with its size and SHA-256 and the ``key`` the copy was built from (source file,
sizes, library versions). The folder is built in a temporary sibling (``.<name>.XXXX.tmp``) and
renamed into place whole (:func:`fmlab._io.atomic_dir`), so a crash leaves either the old copy or
none; temporary siblings are never read and are removed by the next build.

Verification policy (measured: SHA-256 runs at ~1.7 GB/s here, so the 540 MB SmolLM2 copy hashes
in ~0.3 s and the 1.1 GB Gemma copy in ~0.7 s): every file is hashed on the first load in a process;
later loads in the same process re-hash only if a file's size or modification time changed. A copy
whose manifest is missing, unreadable, built from a different key, or whose files differ from it in
name, size or hash is rebuilt, never used.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fmlab._io import atomic_dir, clean_stale, file_lock, file_sha256
from fmlab.exceptions import FmlabWarning

__all__ = ["CACHE_FORMAT", "MANIFEST", "CacheRebuildWarning", "cached_build", "check_cache",
           "hash_weights"]

MANIFEST = "fmlab-manifest.json"
CACHE_FORMAT = 1

_log = logging.getLogger("fmlab.cache")

# path -> signature ((relpath, size, mtime_ns), ...) of the files last verified in this process
_VERIFIED: dict[str, tuple[tuple[str, int, int], ...]] = {}


class CacheRebuildWarning(FmlabWarning):
    """A cached model copy was corrupt, incomplete or stale and is being rebuilt."""


def _signature(path: Path, names: list[str]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for rel in sorted(names):
        st = (path / rel).stat()
        out.append((rel, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _files(path: Path) -> list[str]:
    """Every regular file under ``path`` except the manifest, as POSIX relative paths."""
    return sorted(
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.is_file() and p.name != MANIFEST
    )


def check_cache(path: str | os.PathLike[str], key: dict[str, Any] | None = None, *,
                hashes: bool = True) -> str | None:
    """Check a cached folder against its manifest.

    Args:
        path: The cache folder.
        key: What the copy must have been built from; ``None`` skips the key check.
        hashes: Also check every file's SHA-256 (else names and sizes only: cheap enough for
            listings such as ``fmlab models list``).

    Returns:
        ``None`` when the copy is complete and intact, else the reason it is not (a sentence).
    """
    path = Path(path)
    manifest = path / MANIFEST
    if not path.is_dir():
        return "not built yet"
    if not manifest.is_file():
        return f"{MANIFEST} is missing (an interrupted or foreign build)"
    try:
        data = json.loads(manifest.read_text())
        recorded: dict[str, dict[str, Any]] = data["files"]
        if data.get("format") != CACHE_FORMAT:
            return f"cache format {data.get('format')!r} is not {CACHE_FORMAT}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{MANIFEST} is unreadable ({exc})"
    if key is not None and data.get("key") != key:
        return "it was built from a different source or library version"
    present = _files(path)
    if present != sorted(recorded):
        extra = sorted(set(present) - set(recorded))
        lost = sorted(set(recorded) - set(present))
        return f"files differ from the manifest (missing {lost}, unexpected {extra})"
    signature = _signature(path, present)
    if _VERIFIED.get(str(path)) == signature:
        return None
    for rel, size, _ in signature:
        if size != recorded[rel]["size"]:
            return f"{rel} has {size} bytes, expected {recorded[rel]['size']}"
    if not hashes:
        return None
    for rel in present:
        if file_sha256(path / rel) != recorded[rel]["sha256"]:
            return f"{rel} fails its SHA-256 check"
    _VERIFIED[str(path)] = signature
    return None


def _write_manifest(folder: Path, key: dict[str, Any]) -> None:
    files = {
        rel: {"size": (folder / rel).stat().st_size, "sha256": file_sha256(folder / rel)}
        for rel in _files(folder)
    }
    data = {"format": CACHE_FORMAT, "key": key, "files": files}
    # written last: a folder without it is never trusted
    with open(folder / MANIFEST, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def cached_build(
    path: str | os.PathLike[str],
    build: Callable[[Path], None],
    *,
    key: dict[str, Any],
    what: str = "model",
    announce: bool = True,
) -> Path:
    """Return ``path`` after making sure it holds an intact copy built by ``build``.

    ``build(folder)`` writes the files into an empty temporary folder; the manifest is added and the
    folder renamed to ``path`` only if it returns normally.

    Args:
        path: The cache folder to use.
        build: Writes the converted files into the folder it is given.
        key: JSON-serialisable description of the source; a copy built from another key is stale.
        what: Name used in log messages and warnings.
        announce: Log the first build at WARNING level (slow conversions users should know
            about); cheap derived caches (tokens, features) log at DEBUG.

    Returns:
        ``path``, verified.
    """
    path = Path(path)
    reason = check_cache(path, key)
    if reason is None:
        return path
    with file_lock(path):
        reason = check_cache(path, key)  # another process may have built it while we waited
        if reason is None:
            return path
        if path.exists():
            warnings.warn(
                f"The cached copy of {what} at {path} is not usable ({reason}); rebuilding it.",
                CacheRebuildWarning,
                stacklevel=3,
            )
        else:
            _log.log(logging.WARNING if announce else logging.DEBUG,
                     "Converting %s once into %s (later loads use this copy).", what, path)
        # temporary folders left by a killed build: nobody else builds while we hold the lock
        clean_stale(path)
        with atomic_dir(path) as tmp:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is readable like ~/.cache
            build(tmp)
            _write_manifest(tmp, key)
        _VERIFIED.pop(str(path), None)
        _VERIFIED[str(path)] = _signature(path, _files(path))
    return path


def hash_weights(h: Any, model: Any) -> Any:
    """Feed a torch module's state (each tensor's name, shape, dtype and bytes, in name order)
    into the hashlib object ``h`` and return it: what a cache of the model's outputs depends on.
    (~0.3 s for SmolLM2-135M's 540 MB.)"""
    import torch

    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h
