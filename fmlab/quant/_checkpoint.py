"""Checkpoints of :class:`~fmlab.quant.TinyLM` without pickle: one ``.safetensors`` file whose
header metadata holds the JSON of the model config and the precision (formats as plain fields).

Loading reads tensors and JSON only, so a crafted file cannot run code; a pickled ``.pt`` file is
refused with the way to re-save it, never unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

__all__ = ["load_lm", "save_lm"]

_MAGIC = "fmlab.quant.TinyLM"
_FORMAT = 1


def _fmt_to_json(fmt: Any) -> dict[str, Any] | None:
    return None if fmt is None else asdict(fmt)


def _fmt_from_json(data: Any, path: str, key: str) -> Any:
    from fmlab.quant._formats import QuantFormat

    if data is None:
        return None
    allowed = {f.name for f in fields(QuantFormat)}
    if not isinstance(data, dict) or not set(data) <= allowed:
        raise ValueError(f"{path}: the precision field {key!r} is not a format description "
                         f"(expected keys among {sorted(allowed)}). Re-save the model with "
                         "fmlab.quant.save_lm.")
    return QuantFormat(**data)


def save_lm(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (a :class:`TinyLM`) to ``path`` (``.safetensors``), atomically.

    Returns:
        The path written.
    """
    from safetensors.torch import save

    from fmlab._io import atomic_write
    from fmlab.quant._model import TinyLM

    if not isinstance(model, TinyLM):
        raise TypeError(f"save_lm saves a TinyLM; got {type(model).__name__}.")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_lm writes safetensors: name the file *.safetensors, got "
                         f"{str(path)!r}.")
    p = model.precision
    meta = {
        "format": json.dumps({"magic": _MAGIC, "version": _FORMAT}),
        "config": json.dumps(asdict(model.config)),
        "precision": json.dumps({
            "weights": _fmt_to_json(p.weights), "activations": _fmt_to_json(p.activations),
            "kv_cache": _fmt_to_json(p.kv_cache), "kv_point": p.kv_point,
            "quantize_head": p.quantize_head, "ste": p.ste}),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (k == "head.weight" and model.config.tie_embeddings)}  # tied: stored once
    with atomic_write(path, "wb") as fh:
        fh.write(save(state, metadata=meta))
    return path


def load_lm(path: str | os.PathLike[str]) -> Any:
    """Load a :class:`TinyLM` written by :func:`save_lm` (no unpickling, ever).

    Raises:
        ValueError: The file is not a TinyLM safetensors checkpoint (a pickled ``.pt`` file, a
            corrupt file or another model); the message names the file and the fix.
    """
    from safetensors import SafetensorError, safe_open

    from fmlab.quant._model import LMConfig, PrecisionConfig, TinyLM, set_precision

    name = str(path)
    if not Path(name).is_file():
        raise FileNotFoundError(f"Checkpoint {name!r} does not exist.")
    with open(name, "rb") as fh:
        head = fh.read(8)
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:2] == b"PK":
        raise ValueError(
            f"{name} is a pickled (torch.save) checkpoint; fmlab never unpickles files, since "
            "a pickle can run code. Re-train and save with 'fmlab quant train --save "
            "lm.safetensors' (or fmlab.quant.save_lm).")
    try:
        with safe_open(name, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{name} is not a readable safetensors file ({exc}). Save models "
                         "with 'fmlab quant train --save lm.safetensors'.") from None
    try:
        tag = json.loads(meta.get("format", "{}"))
        if not isinstance(tag, dict) or tag.get("magic") != _MAGIC:
            raise ValueError("no fmlab TinyLM header")
        cfg = json.loads(meta["config"])
        prec = json.loads(meta["precision"])
        config = LMConfig(**cfg)
        precision = PrecisionConfig(
            weights=_fmt_from_json(prec.get("weights"), name, "weights"),
            activations=_fmt_from_json(prec.get("activations"), name, "activations"),
            kv_cache=_fmt_from_json(prec.get("kv_cache"), name, "kv_cache"),
            kv_point=prec.get("kv_point", "post_rope"),
            quantize_head=prec.get("quantize_head", False), ste=prec.get("ste", "identity"))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name} is not a TinyLM checkpoint written by fmlab "
                         f"(metadata: {exc}). Hugging Face models are loaded by name or folder "
                         "instead (--model hf:org/name or a directory).") from None
    model = TinyLM(config)
    expected = {k for k in model.state_dict()
                if not (k == "head.weight" and config.tie_embeddings)}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    bad = sorted(k for k in tensors if k not in expected or tuple(tensors[k].shape) != shapes[k])
    missing = sorted(expected - set(tensors))
    if missing or bad:
        raise ValueError(f"{name}: the weights do not match the model its header describes "
                         f"(missing {missing[:5]}, unexpected or misshapen {bad[:5]}).")
    model.load_state_dict(tensors, strict=False)
    set_precision(model, precision)
    return model
