"""Headless matplotlib in one place: the Agg backend, and figures saved atomically and closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmlab._imports import require
from fmlab._io import atomic_write

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (works without a display)."""
    matplotlib = require("matplotlib", feature="Plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` (format from the suffix; atomically, parent folders
    created), close it, and return the path."""
    plt = pyplot()
    path = Path(path)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)
    return path
