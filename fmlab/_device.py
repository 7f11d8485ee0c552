"""Devices, dtypes and evaluation mode: the one place fmlab resolves them.

- :func:`resolve_device`: ``None`` -> CUDA when present, else CPU; names -> ``torch.device``.
- :func:`resolve_dtype`: ``None`` / ``"auto"`` / a name / a ``torch.dtype`` -> a floating
  ``torch.dtype`` (``"auto"`` picks bf16 where the hardware runs it natively).
- :func:`eval_mode`: a context manager that puts modules in eval mode (and, by default, turns
  gradients off) and restores each module's previous mode on exit, also on errors.

Models, embeddings, SAM, quant and every later capability use these; none keeps its own copy.
torch is imported inside the functions, so importing this module is free.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPES", "cpu_supports_bf16", "eval_mode", "resolve_device", "resolve_dtype"]

#: dtype names accepted wherever fmlab takes a ``dtype`` (besides ``None`` and ``torch.dtype``).
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX-BF16).

    On such CPUs bf16 inference is roughly twice as fast as fp32 (oneDNN kernels); elsewhere bf16 is
    emulated and slower, so fp32 is the better default. Reads ``/proc/cpuinfo`` on Linux and falls
    back to oneDNN's own check.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() == "Linux" and cpuinfo.is_file():
        try:
            flags = set()
            for line in cpuinfo.read_text(errors="ignore").splitlines():
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
            return bool(flags & {"avx512_bf16", "amx_bf16"})
        except OSError:
            pass
    if platform.machine().lower() in ("arm64", "aarch64"):
        return False
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without this private probe
        return False


def resolve_device(device: Any = None, *, owner: str = "fmlab") -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``; a name or ``torch.device`` as given.

    Args:
        device: ``None``, ``"cpu"``, ``"cuda"``, ``"cuda:0"``, ... or a ``torch.device``.
        owner: The function or class taking ``device``, named in the error message.

    Raises:
        ValueError: ``device`` is not a device torch knows.
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"The 'device' parameter of {owner} must be a torch device such as 'cpu', 'cuda' or "
            f"'cuda:0'. Got {device!r} instead."
        ) from exc


def resolve_dtype(dtype: Any, device: Any = None, *, default: str = "float32",
                  owner: str = "fmlab") -> torch.dtype:
    """A floating ``torch.dtype`` from ``None``, ``"auto"``, a name or a ``torch.dtype``.

    ``None`` means ``default``. ``"auto"`` picks bf16 on CUDA devices that support it and on CPUs
    with native bf16 (:func:`cpu_supports_bf16`), fp32 otherwise. Names may carry a ``torch.``
    prefix (``"torch.float16"``).

    Args:
        dtype: ``None``, one of :data:`DTYPES` or a floating ``torch.dtype``.
        device: The device the dtype is for (only ``"auto"`` looks at it; default: CPU).
        default: What ``None`` means (``"float32"`` or ``"auto"``).
        owner: The function or class taking ``dtype``, named in the error message.

    Raises:
        ValueError: an unknown name or a non-floating ``torch.dtype``.
    """
    import torch

    if dtype is None:
        dtype = default
    if isinstance(dtype, torch.dtype):
        if dtype.is_floating_point:
            return dtype
    elif isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        name = dtype.removeprefix("torch.")
        if name != "auto":
            return getattr(torch, name)  # type: ignore[no-any-return]
        dev = resolve_device("cpu" if device is None else device, owner=owner)
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if (dev.type == "cpu" and cpu_supports_bf16()) else torch.float32
    raise ValueError(
        f"The 'dtype' parameter of {owner} must be None, a floating torch.dtype or one of "
        f"{DTYPES}. Got {dtype!r} instead."
    )


@contextlib.contextmanager
def eval_mode(*modules: Any, grad: bool = False) -> Iterator[None]:
    """Run a block with ``modules`` in eval mode, gradients off unless ``grad=True``.

    Each module's previous ``training`` flag (and its submodules') is restored on exit, so
    evaluating inside a training loop leaves the loop's mode as it was, even when the block
    raises. ``None`` entries are skipped.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Dropout(0.5)).train()
        >>> with eval_mode(net):
        ...     _ = net(torch.ones(2))
        ...     net.training, torch.is_grad_enabled()
        (False, False)
        >>> net.training
        True
    """
    import torch

    saved = [(m, [(sub, sub.training) for sub in m.modules()]) for m in modules if m is not None]
    for m, _ in saved:
        m.eval()
    try:
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            yield
    finally:
        for _, flags in saved:
            for sub, training in flags:
                sub.training = training
