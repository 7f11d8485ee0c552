"""Reading and writing ensemble outputs: ``.npy``, ``.npz`` and Parquet.

Layouts:

- ``.npy``: one array, probabilities ``(n_models, n, n_classes)``, predictions ``(n_models, n)``
  or labels ``(n,)``.
- ``.npz``: ``file.npz:key`` picks an array; without a key the file must hold exactly one.
- Parquet, probabilities: a long table with integer columns ``model`` and ``example`` and one
  float column per class (every other column, in order). Labels: a column ``label`` (or the only
  column).
- A folder (as written by :meth:`Ensemble.save`) or an ``.npz`` holding ``id_probs``,
  ``id_labels``, ``ood_probs`` (and optionally ``ood_labels``): :func:`load_outputs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_array", "load_outputs", "save_outputs"]

_NAMES = ("id_probs", "id_labels", "ood_probs", "ood_labels")


def _split_key(spec: str | Path) -> tuple[Path, str | None]:
    text = str(spec)
    if ".npz:" in text:
        path, _, key = text.rpartition(":")
        return Path(path), key
    return Path(text), None


def load_array(spec: str | Path, *, what: str = "array") -> np.ndarray:
    """Load one array from ``.npy``, ``.npz[:key]`` or ``.parquet`` (see the module docstring).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Unknown extension, missing key, or a Parquet table of the wrong shape.
    """
    path, key = _split_key(spec)
    if not path.exists():
        raise FileNotFoundError(f"The {what} file {str(path)!r} does not exist.")
    try:
        arr = _read(path, key, what)
    except (ValueError, FileNotFoundError):
        raise
    except MemoryError:
        raise ValueError(f"The {what} file {str(path)!r} declares an array too large to load; "
                         "its header is forged or corrupt.") from None
    except Exception as exc:  # zip/parquet/OS errors from a corrupt file
        raise ValueError(f"The {what} file {str(path)!r} cannot be read "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}).") \
            from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"The {what} file {str(path)!r} holds {arr.dtype} values; expected "
                         "numbers (probabilities, predictions or integer labels).")
    return arr


def _read(path: Path, key: str | None, what: str) -> np.ndarray:
    from fmlab._io import read_npy

    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path, what=what)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if key is None:
                if len(keys) != 1:
                    raise ValueError(
                        f"{str(path)!r} holds {len(keys)} arrays ({', '.join(keys)}); name one "
                        f"as '{path}:KEY'."
                    )
                key = keys[0]
            if key not in keys:
                raise ValueError(f"{str(path)!r} has no array {key!r}; it holds: "
                                 f"{', '.join(keys)}.")
            try:
                return np.asarray(z[key])
            except ValueError as exc:
                raise ValueError(f"The {what} array {key!r} in {str(path)!r} cannot be read "
                                 f"without unpickling ({exc}); fmlab never unpickles files.") \
                    from None
    if suffix in (".parquet", ".pq"):
        import pandas as pd

        frame = pd.read_parquet(path)
        if {"model", "example"} <= set(frame.columns):
            classes = [c for c in frame.columns if c not in ("model", "example")]
            frame = frame.sort_values(["model", "example"])
            m, n = frame["model"].nunique(), frame["example"].nunique()
            if len(frame) != m * n or not classes:
                raise ValueError(
                    f"Parquet probabilities in {str(path)!r} must have one row per (model, "
                    f"example) pair and one column per class; got {len(frame)} rows for {m} "
                    f"models × {n} examples and class columns {classes}."
                )
            return frame[classes].to_numpy().reshape(m, n, len(classes))
        col = "label" if "label" in frame.columns else (
            frame.columns[0] if len(frame.columns) == 1 else None)
        if col is None:
            raise ValueError(
                f"Parquet file {str(path)!r}: expected probabilities (columns model, example, "
                f"and one per class) or labels (a 'label' column); got {list(frame.columns)}."
            )
        return frame[col].to_numpy()
    raise ValueError(f"Unsupported file type {suffix!r} for {str(path)!r}; use .npy, .npz or "
                     ".parquet.")


def load_outputs(source: str | Path) -> dict[str, np.ndarray]:
    """Load ``id_probs``, ``id_labels``, ``ood_probs`` (and ``ood_labels`` if present) from a
    folder of ``<name>.npy`` files or from one ``.npz``."""
    path = Path(source)
    out: dict[str, np.ndarray] = {}
    if path.is_dir():
        for name in _NAMES:
            for ext in (".npy", ".parquet"):
                if (path / f"{name}{ext}").exists():
                    out[name] = load_array(path / f"{name}{ext}", what=name)
                    break
    elif path.suffix.lower() == ".npz" and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                present = [k for k in _NAMES if k in z]
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a readable .npz file ({exc}).") from None
        out = {k: load_array(f"{path}:{k}", what=k) for k in present}
    else:
        raise FileNotFoundError(f"{str(path)!r} is neither a folder of .npy files nor an .npz.")
    missing = [k for k in _NAMES[:3] if k not in out]
    if missing:
        raise ValueError(f"{str(path)!r} lacks {', '.join(missing)}; expected files named "
                         f"{', '.join(n + '.npy' for n in _NAMES[:3])} (ood_labels optional).")
    return out


def save_outputs(path: str | Path, **arrays: Any) -> Path:
    """Write named arrays (``id_probs=...``) to one ``.npz`` atomically; returns the path."""
    from fmlab._io import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        np.savez_compressed(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    return path
