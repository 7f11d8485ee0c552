"""Hide every progress bar for a block: fmlab's, transformers' and huggingface_hub's.

``--no-progress`` and ``show_progress=False`` mean no bar at all, including the "Loading weights"
and GGUF-conversion bars transformers draws with its own tqdm. One switch, used by the study
runner; it restores the previous state on exit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["progress_bars"]



@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """Run a block with progress bars shown (``show=True``: nothing changes) or hidden.

    Hiding makes every tqdm bar created in the block a disabled one. transformers (its "Loading
    weights" and GGUF bars), huggingface_hub and fmlab all draw with tqdm subclasses, so this
    one switch covers them, whether they are imported before or inside the block. Subprocesses
    started in the block inherit ``TQDM_DISABLE=1``. Both are undone on exit.
    """
    if show:
        yield
        return
    import tqdm.std

    original = tqdm.std.tqdm.__init__

    def disabled_init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    saved_env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    tqdm.std.tqdm.__init__ = disabled_init  # type: ignore[method-assign]
    try:
        yield
    finally:
        tqdm.std.tqdm.__init__ = original  # type: ignore[method-assign]
        if saved_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved_env
