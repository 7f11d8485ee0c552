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
    import io

    plt = pyplot()
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    plt.close(fig)
    data = buf.getvalue()
    if fmt == "png" and len(data) > _PNG_PALETTE_ABOVE:
        data = min(data, _palette_png(data), key=len)
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return path


_PNG_PALETTE_ABOVE = 250_000  # bytes: dense scatter plots shrink ~4x as a 64-colour palette


def _palette_png(data: bytes) -> bytes:
    """``data`` (a PNG) re-encoded with an adaptive palette of 64 colours, no dithering."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        out = io.BytesIO()
        im.convert("RGB").quantize(64, method=Image.Quantize.FASTOCTREE,
                                   dither=Image.Dither.NONE).save(out, format="png", optimize=True)
    return out.getvalue()
