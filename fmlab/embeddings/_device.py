"""Device and precision choices: CUDA when present, bf16 where the CPU has native support."""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

__all__ = ["cpu_supports_bf16", "resolve_device", "resolve_dtype"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")


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


def resolve_device(device: Any = None) -> Any:
    """``None`` -> ``cuda`` when available, else ``cpu``; strings become ``torch.device``."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"Invalid device {device!r}: expected 'cpu', 'cuda', 'cuda:0' or a torch.device."
        ) from exc


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """Turn ``"auto"``/a name/a ``torch.dtype`` into a ``torch.dtype`` for ``device``.

    ``"auto"`` picks bf16 on CUDA devices that support it and on CPUs with native bf16
    (:func:`cpu_supports_bf16`), and fp32 otherwise.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Invalid dtype {dtype!r}. Valid options are: {_DTYPES} or a torch.dtype.")
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if (device.type == "cpu" and cpu_supports_bf16()) else torch.float32
    return getattr(torch, dtype)
