"""EchoEncoder: sentence embeddings from any causal LM, by repetition (echo) or classically.

Imports torch at module top; :mod:`fmlab.embeddings` loads this module lazily.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fmlab._device import eval_mode, resolve_device, resolve_dtype
from fmlab._io import atomic_write
from fmlab._validation import check_bool, check_int, check_option
from fmlab.embeddings._templates import (
    EchoTemplate,
    Piece,
    TokenizedInput,
    get_template,
    tokenize_with_template,
)

__all__ = ["EchoEncoder", "pool_hidden_states"]

Pooling = Literal["mean", "last"]
_POOLINGS = ("mean", "last")
_PROMPT_TYPES = ("query", "document", "passage")
def _mteb_batches_to_texts(inputs: Any) -> list[Any] | None:
    """Flatten MTEB 2.x input (an iterable of ``{"text": [...]}`` batches), else ``None``."""
    if isinstance(inputs, (str, bytes, Sequence)) or not hasattr(inputs, "__iter__"):
        return None
    texts: list[Any] = []
    for i, batch in enumerate(inputs):
        if not isinstance(batch, Mapping) or "text" not in batch:
            raise TypeError(
                "encode() takes a str, a sequence of str, or MTEB's DataLoader of batches with a "
                f"'text' field; batch {i} is a {type(batch).__name__}"
                + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else "") + "."
            )
        texts.extend(batch["text"])
    return texts


def pool_hidden_states(hidden: torch.Tensor, pool_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states over a 0/1 mask.

    Args:
        hidden: ``(B, T, d)`` token states.
        pool_mask: ``(B, T)`` 0/1 mask of the pooled tokens.
        pooling: ``"mean"`` (masked mean) or ``"last"`` (state at the last pooled position).

    Returns:
        ``(B, d)`` float32. Rows whose mask is empty are zeros, not NaN.
    """
    hidden = hidden.float()
    mask = pool_mask.to(hidden.dtype)  # (B, T)
    if pooling == "mean":
        total = torch.einsum("btd,bt->bd", hidden, mask)  # (B, d)
        count = mask.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
        return total / count
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, T)
    last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(1).values  # (B,)
    out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp_min(0)]
    return out * (last >= 0).unsqueeze(1).to(out.dtype)


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The model without its LM head (``LlamaForCausalLM.model``), or the model itself."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    return base if isinstance(base, torch.nn.Module) else model


def _model_context(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


def _hidden_size(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    size = getattr(config, "hidden_size", None)
    if not isinstance(size, int):
        raise TypeError(
            f"Cannot read the hidden size of {type(model).__name__}: its config has no integer "
            "'hidden_size'. EchoEncoder needs a Hugging Face causal LM."
        )
    return size


class EchoEncoder:
    """Sentence embeddings from a causal language model, with the echo or the classical prompt.

    A causal LM's state at token *i* sees only tokens up to *i*, so pooling a sentence's own tokens
    gives early tokens no view of the sentence's end. The echo template feeds the input twice and
    pools only the second copy, whose every token has read the whole sentence. No training needed.

    The prompt is built piece by piece (scaffold, input copies, instruction, BOS/EOS), each piece
    tokenised separately, so the pooled span is known exactly without any string search (see
    :mod:`fmlab.embeddings._templates`). Over-long inputs are cut so that every copy keeps the same
    tokens (``truncate=True``) or rejected (``truncate=False``).

    ``encode`` follows the sentence-transformers contract: a list of strings gives an ``(n, d)``
    float32 array, one string a ``(d,)`` array, a tensor only with ``convert_to_tensor=True``. It
    takes MTEB's keyword-only ``task_name`` and ``prompt_type`` too.

    Args:
        model: A Hugging Face causal LM (``AutoModelForCausalLM``); only its backbone runs (no LM
            head). It is used as given: not copied, cast or moved unless ``dtype``/``device`` ask
            for a different one, in which case a copy is made and the caller's model is untouched.
        tokenizer: Its tokenizer. A private copy is kept; the caller's object is never changed.
        template: A registered template name (``"echo"``, ``"classical"``, ``"echo.release"``,
            ``"echo.noprompt"``, ``"classical.noprompt"``), a template string with ``{x}`` and one
            ``[[...]]`` pooled span, or an :class:`EchoTemplate`.
        pooling: ``"mean"`` (masked mean over the pooled span) or ``"last"`` (last pooled token).
        max_length: Maximum prompt length in tokens; defaults to ``min(512, model context)``.
        batch_size: Default batch size of :meth:`encode`.
        device: ``None`` keeps the model where it is.
        dtype: ``None`` keeps the model's dtype; ``"auto"`` picks bf16 on CPUs with native bf16
            and on bf16-capable GPUs, fp32 otherwise; or ``"float32"``, ``"bfloat16"``, ...
        truncate: Cut over-long inputs (True) or raise ``ValueError`` (False).
        prompts: Named instructions, e.g. ``{"query": "Retrieve passages that answer it"}`` or MTEB
            task names (see :func:`fmlab.embeddings.mteb_instructions`); used by ``prompt_name``
            and ``task_name``.
        cache_size: How many embeddings to keep in an LRU cache keyed by text and prompt
            (0 disables it).
        layer: Which hidden layer to pool; ``-1`` is the final layer after the final norm.

    Example:
        >>> from fmlab.models import tiny_causal_lm
        >>> enc = EchoEncoder(*tiny_causal_lm(seed=0), template="echo")
        >>> enc.encode(["a cat", "a dog"], normalize_embeddings=True).shape[0]
        2

    References:
        Springer, Kotha, Fried, Neubig, Raghunathan. *Repetition Improves Language Model
        Embeddings*. arXiv 2402.15449 (ICLR 2025).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        template: str | EchoTemplate = "echo",
        pooling: Pooling = "mean",
        max_length: int | None = None,
        batch_size: int = 32,
        device: Any = None,
        dtype: Any = None,
        truncate: bool = True,
        prompts: dict[str, str] | None = None,
        cache_size: int = 10_000,
        layer: int = -1,
    ) -> None:
        owner = "EchoEncoder"
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"The 'model' parameter of {owner} must be a torch.nn.Module (a Hugging Face "
                f"causal LM). Got {type(model).__name__} instead. To load by name use "
                "EchoEncoder.from_pretrained('smollm2-135m-instruct')."
            )
        if not callable(tokenizer) or not hasattr(tokenizer, "convert_tokens_to_ids"):
            raise TypeError(
                f"The 'tokenizer' parameter of {owner} must be a Hugging Face tokenizer. "
                f"Got {type(tokenizer).__name__} instead."
            )
        self.template = get_template(template)
        self.pooling: Pooling = check_option(pooling, "pooling", _POOLINGS, owner=owner)
        context = _model_context(model)
        if max_length is None:
            max_length = min(512, context) if context else 512
        self.max_length = check_int(max_length, "max_length", owner=owner, low=2)
        if context is not None and self.max_length > context:
            raise ValueError(
                f"max_length={self.max_length} exceeds the model's context of {context} tokens "
                f"(config.max_position_embeddings). Use max_length <= {context}."
            )
        self.batch_size = check_int(batch_size, "batch_size", owner=owner, low=1)
        self.truncate = check_bool(truncate, "truncate", owner=owner)
        self.cache_size = check_int(cache_size, "cache_size", owner=owner, low=0)
        self.layer = check_int(layer, "layer", owner=owner)
        if prompts is not None and (
            not isinstance(prompts, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items())
        ):
            raise TypeError(f"The 'prompts' parameter of {owner} must be a dict of str to str.")
        self.prompts: dict[str, str] = dict(prompts or {})

        param = next(model.parameters(), None)
        cur_device = param.device if param is not None else torch.device("cpu")
        cur_dtype = param.dtype if param is not None else torch.float32
        want_device = cur_device if device is None else resolve_device(device, owner=owner)
        want_dtype = (cur_dtype if dtype is None
                      else resolve_dtype(dtype, want_device, owner=owner))
        if want_device != cur_device or want_dtype != cur_dtype:
            model = copy.deepcopy(model).to(device=want_device, dtype=want_dtype)
        self.model = model
        self.device = want_device
        self.dtype = want_dtype
        self._backbone = _backbone(model)
        # A private copy: the caller's tokenizer keeps its padding side, pad token, etc.
        self.tokenizer = copy.deepcopy(tokenizer)
        candidates = (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
        # any id works: padded positions are masked out of attention and pooling
        self._pad_id = next((i for i in candidates if i is not None), 0)
        self._piece_cache: dict[str, list[int]] = {}
        # Tokenizers that add BOS by default (Gemma, Llama) expect it; their models misbehave
        # without it. Templates without {bos} then get one, unpooled, at the front.
        probe = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        self._auto_bos = bos is not None and len(probe) > 0 and probe[0] == bos
        self._cache: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self.n_truncated_ = 0

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "smollm2-135m-instruct",
        *,
        dtype: Any = "auto",
        device: Any = None,
        **kwargs: Any,
    ) -> EchoEncoder:
        """Load a causal LM through :func:`fmlab.models.load_causal_lm` and wrap it.

        Args:
            name_or_path: A zoo name (``"smollm2-135m-instruct"``, ``"gemma-3-270m"``), an
                ``"hf:org/name"`` hub id or a local model directory.
            dtype: ``"auto"`` (bf16 where the hardware supports it natively, else fp32),
                ``"float32"``, ``"bfloat16"`` or a ``torch.dtype``.
            device: ``None`` picks CUDA when available, else CPU.
            **kwargs: Passed to :class:`EchoEncoder` (``template``, ``pooling``, ...).
        """
        from fmlab.models import load_causal_lm

        dev = resolve_device(device, owner="EchoEncoder.from_pretrained")
        torch_dtype = resolve_dtype(dtype, dev, owner="EchoEncoder.from_pretrained")
        model, tokenizer = load_causal_lm(name_or_path, dtype=torch_dtype, device=str(dev))
        # The loaded model is ours, so moving/casting it in place is fine.
        model = model.to(device=dev, dtype=torch_dtype).eval()
        enc = cls(model, tokenizer, **kwargs)
        enc.name_or_path = name_or_path
        return enc

    name_or_path: str = ""

    def __repr__(self) -> str:
        name = self.name_or_path or type(self.model).__name__
        return (f"EchoEncoder({name!r}, template={self.template.name!r}, "
                f"pooling={self.pooling!r}, dtype={str(self.dtype).replace('torch.', '')}, "
                f"device={str(self.device)!r})")

    def get_sentence_embedding_dimension(self) -> int:
        """The embedding size (the LM's hidden size), as in sentence-transformers."""
        return _hidden_size(self.model)

    def clear_cache(self) -> None:
        """Empty the embedding cache."""
        self._cache.clear()

    # -- tokenisation ---------------------------------------------------------------------------
    def _encode_piece(self, text: str) -> list[int]:
        ids = self._piece_cache.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._piece_cache) < 4096:
                self._piece_cache[text] = ids
        return ids

    def _encode_text(self, text: str) -> list[int]:
        # Input texts are not cached here (the embedding cache covers repeats).
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def tokenize(self, text: str, *, prompt_type: str | None = None,
                 instruction: str | None = None) -> TokenizedInput:
        """Build the prompt ids and pool mask of one text (useful to inspect the template).

        Returns:
            A :class:`~fmlab.embeddings.TokenizedInput` with ``input_ids``, ``pool_mask``,
            ``copies`` (token ranges of each copy) and ``truncated``.
        """
        side = "document" if prompt_type in ("document", "passage") else "query"
        pieces = self.template.pieces(side)  # type: ignore[arg-type]
        if self._auto_bos and not any(p.kind == "bos" for p in pieces):
            pieces = (Piece("bos"), *pieces)
        # Scaffold and instruction pieces are tokenised once and cached; input text is not.
        for p in pieces:
            if p.kind == "text":
                self._encode_piece(p.text)
        if instruction:
            self._encode_piece(self.template.instruction_format.format(instruction=instruction))

        def encode_piece(s: str) -> list[int]:
            ids = self._piece_cache.get(s)
            return ids if ids is not None else self._encode_text(s)

        return tokenize_with_template(
            text, pieces, encode_piece, max_length=self.max_length,
            bos_id=self.tokenizer.bos_token_id, eos_id=self.tokenizer.eos_token_id,
            instruction=instruction, instruction_format=self.template.instruction_format,
            truncate=self.truncate,
        )

    # -- forward --------------------------------------------------------------------------------
    def _forward(
        self, items: Sequence[TokenizedInput], batch_size: int, show_progress_bar: bool
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """Yield ``(indices, hidden (B, T, d), pool_mask (B, T))`` over length-sorted batches.

        Sorting by length (longest first, so memory peaks on the first batch) keeps padding to a
        minimum; right padding with an attention mask leaves each row's states unchanged.
        """
        order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if show_progress_bar:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Batches", leave=False)
        with eval_mode(self.model), torch.inference_mode():
            for idx in batches:
                width = max(1, max(len(items[i].input_ids) for i in idx))
                ids = torch.full((len(idx), width), self._pad_id, dtype=torch.long)  # (B, T)
                att = torch.zeros((len(idx), width), dtype=torch.long)  # (B, T)
                pool = torch.zeros((len(idx), width), dtype=torch.long)  # (B, T)
                for row, i in enumerate(idx):
                    n = len(items[i].input_ids)
                    ids[row, :n] = torch.tensor(items[i].input_ids, dtype=torch.long)
                    att[row, :n] = 1
                    pool[row, :n] = torch.tensor(items[i].pool_mask, dtype=torch.long)
                ids, att, pool = (t.to(self.device) for t in (ids, att, pool))
                yield idx, self._hidden(ids, att), pool

    def _hidden(self, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        if self.layer == -1:
            out = self._backbone(input_ids=ids, attention_mask=att, use_cache=False)
            hidden = getattr(out, "last_hidden_state", None)
            if hidden is None:  # a model without a separate backbone
                out = self.model(input_ids=ids, attention_mask=att, use_cache=False,
                                 output_hidden_states=True)
                hidden = out.hidden_states[-1]
            return hidden  # (B, T, d)
        out = self._backbone(input_ids=ids, attention_mask=att, use_cache=False,
                             output_hidden_states=True)
        states = out.hidden_states
        if not -len(states) <= self.layer < len(states):
            raise ValueError(
                f"layer={self.layer} is out of range: the model has {len(states)} hidden states "
                f"(embeddings + {len(states) - 1} layers)."
            )
        return states[self.layer]

    # -- inputs ---------------------------------------------------------------------------------
    @staticmethod
    def _check_sentences(sentences: Any) -> tuple[list[str], bool]:
        if isinstance(sentences, str):
            return [sentences], True
        if sentences is None:
            raise TypeError(
                "The 'sentences' parameter of EchoEncoder.encode must be a str or a list of str. "
                "Got None instead."
            )
        if isinstance(sentences, np.ndarray):
            sentences = sentences.tolist()
        elif not isinstance(sentences, Iterable) or isinstance(sentences, (bytes, dict)):
            raise TypeError(
                "The 'sentences' parameter of EchoEncoder.encode must be a str or a list of str. "
                f"Got {type(sentences).__name__} instead."
            )
        texts = list(sentences)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                hint = ("replace missing texts with '' (encoded as the zero vector) or drop them"
                        if t is None else "convert items with str() first")
                what = "None" if t is None else f"{type(t).__name__} {repr(t)[:40]}"
                raise TypeError(
                    f"sentences[{i}] is {what}; EchoEncoder.encode needs str items: {hint}."
                )
        return texts, False

    def _resolve_prompt(
        self, prompt: str | None, prompt_name: str | None, task_name: str | None,
        prompt_type: Any,
    ) -> tuple[str, str | None]:
        ptype = getattr(prompt_type, "value", prompt_type)  # MTEB passes an enum
        if ptype is not None:
            check_option(ptype, "prompt_type", _PROMPT_TYPES, owner="EchoEncoder.encode")
        side = "document" if ptype in ("document", "passage") else "query"
        if prompt is not None and prompt_name is not None:
            raise ValueError("Pass either 'prompt' or 'prompt_name' to encode, not both.")
        instruction = prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(
                    f"Unknown prompt_name {prompt_name!r}. Prompts of this encoder: "
                    f"{sorted(self.prompts) or 'none'}; set them with EchoEncoder(prompts={{...}})."
                )
            instruction = self.prompts[prompt_name]
        elif instruction is None and task_name is not None and side == "query":
            instruction = self.prompts.get(f"{task_name}-query", self.prompts.get(task_name))
        elif instruction is None and side == "query" and "query" in self.prompts:
            instruction = self.prompts["query"]
        if side == "document":
            instruction = None if prompt is None and prompt_name is None else instruction
        return side, instruction or None

    # -- public API -----------------------------------------------------------------------------
    def encode(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Any = None,
        normalize_embeddings: bool = False,
        *,
        task_name: str | None = None,
        prompt_type: Any = None,
        task_metadata: Any = None,
        hf_split: str | None = None,
        hf_subset: str | None = None,
    ) -> Any:
        """Embed sentences (sentence-transformers' signature; MTEB's keywords keyword-only).

        Args:
            sentences: A str (gives a 1-D result) or a sequence of str.
            batch_size: Sentences per forward pass (default: the encoder's ``batch_size``).
            show_progress_bar: Show a progress bar over batches (default: no).
            convert_to_numpy: Return a numpy array (default True).
            convert_to_tensor: Return a ``torch.Tensor`` instead (overrides convert_to_numpy).
            normalize_embeddings: Scale each embedding to unit L2 norm (zero vectors stay zero).
            device: Must be None or the encoder's device (move an encoder by building a new one).
            prompt: An instruction text for the query side (rendered by the template's
                ``instruction_format``).
            prompt_name: The key of an instruction in ``prompts``.
            task_name: MTEB task name; its instruction is looked up in ``prompts`` (keyword-only).
            task_metadata, hf_split, hf_subset: MTEB 2.x keywords; ``task_metadata.name`` stands
                in for ``task_name``. MTEB 2.x passes ``sentences`` as a DataLoader of
                ``{"text": [...]}`` batches, which is flattened in order.
            prompt_type: ``"query"`` (default; symmetric tasks use it for both sides),
                ``"document"`` or ``"passage"`` (keyword-only; MTEB's enum is accepted).

        Returns:
            ``(n, d)`` float32 array (``(d,)`` for one str); a tensor with
            ``convert_to_tensor=True``; a list of 1-D tensors when both conversions are False.

        Raises:
            TypeError: For unknown keyword arguments (Python's own error, from the signature),
                None or non-text items.
            ValueError: For over-long texts when ``truncate=False``.

        An empty string has no tokens to pool and encodes to the zero vector. Repeated texts are
        embedded once; results are cached across calls (``cache_size``).
        """
        owner = "EchoEncoder.encode"
        batch_size = check_int(self.batch_size if batch_size is None else batch_size,
                               "batch_size", owner=owner, low=1)
        progress = (False if show_progress_bar is None
                    else check_bool(show_progress_bar, "show_progress_bar", owner=owner))
        to_numpy = check_bool(convert_to_numpy, "convert_to_numpy", owner=owner)
        to_tensor = check_bool(convert_to_tensor, "convert_to_tensor", owner=owner)
        normalize = check_bool(normalize_embeddings, "normalize_embeddings", owner=owner)
        if device is not None and resolve_device(device, owner=owner) != self.device:
            raise ValueError(
                f"encode(device={device!r}) differs from the encoder's device {self.device}; "
                f"build the encoder with EchoEncoder(..., device={str(device)!r}) instead."
            )
        if task_name is None and task_metadata is not None:
            task_name = getattr(task_metadata, "name", None)
        side, instruction = self._resolve_prompt(prompt, prompt_name, task_name, prompt_type)
        flat = _mteb_batches_to_texts(sentences)
        texts, single = self._check_sentences(sentences if flat is None else flat)
        emb = self._embed(texts, side, instruction, batch_size, progress)  # (n, d) float32
        if normalize:
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = emb / np.where(norms > 0, norms, 1.0)
        if single:
            emb = emb[0]
        if to_tensor:
            return torch.from_numpy(np.ascontiguousarray(emb)).to(self.device)
        if to_numpy:
            return emb
        tensor = torch.from_numpy(np.ascontiguousarray(emb))
        return tensor if single else list(tensor)  # sentence-transformers: a list of tensors

    def encode_query(self, sentences: str | Sequence[str], **kwargs: Any) -> Any:
        """:meth:`encode` with ``prompt_type="query"`` (sentence-transformers 5 naming)."""
        return self.encode(sentences, prompt_type="query", **kwargs)

    def encode_document(self, sentences: str | Sequence[str], **kwargs: Any) -> Any:
        """:meth:`encode` with ``prompt_type="document"``."""
        return self.encode(sentences, prompt_type="document", **kwargs)

    def _config_key(self) -> tuple[Any, ...]:
        return (self.template, self.pooling, self.max_length, self.truncate, self.layer)

    def _embed(self, texts: list[str], side: str, instruction: str | None, batch_size: int,
               progress: bool) -> np.ndarray:
        dim = self.get_sentence_embedding_dimension()
        out = np.zeros((len(texts), dim), dtype=np.float32)
        config = self._config_key()
        todo: dict[str, list[int]] = {}  # unique uncached text -> positions
        for i, t in enumerate(texts):
            key = (config, side, instruction, t)
            hit = self._cache.get(key) if self.cache_size else None
            if hit is not None:
                self._cache.move_to_end(key)
                out[i] = hit
            else:
                todo.setdefault(t, []).append(i)
        if not todo:
            return out
        uniq = list(todo)
        items = [self.tokenize(t, prompt_type=side, instruction=instruction) for t in uniq]
        self.n_truncated_ = sum(it.truncated for it in items)
        for idx, hidden, pool in self._forward(items, batch_size, progress):
            vecs = pool_hidden_states(hidden, pool, self.pooling).cpu().numpy()  # (B, d)
            for row, j in enumerate(idx):
                out[todo[uniq[j]]] = vecs[row]
                if self.cache_size:
                    self._cache[(config, side, instruction, uniq[j])] = vecs[row].copy()
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return out

    def token_embeddings(
        self, sentences: Sequence[str], *, prompt_type: str | None = None,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """Hidden states of the pooled span, one ``(n_pooled, d)`` float32 array per text.

        For the echo template these are the states of the second copy; for classical, of the
        only copy. Useful to look at the mechanism: a classical state at position *i* ignores
        what follows *i*, an echo state does not.
        """
        texts, _ = self._check_sentences(list(sentences))
        side, instruction = self._resolve_prompt(None, None, None, prompt_type)
        items = [self.tokenize(t, prompt_type=side, instruction=instruction) for t in texts]
        result: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(texts)
        bs = batch_size or self.batch_size
        for idx, hidden, pool in self._forward(items, bs, False):
            for row, j in enumerate(idx):
                mask = pool[row].bool()
                result[j] = hidden[row][mask].float().cpu().numpy()
        return result

    def encode_corpus(
        self,
        sentences: Sequence[str],
        path: str | os.PathLike[str],
        *,
        chunk_size: int = 2048,
        resume: bool = True,
        **encode_kwargs: Any,
    ) -> Path:
        """Stream embeddings of a large corpus into a ``.npy`` file, resumably.

        Chunks of ``chunk_size`` texts are encoded in order and written into a memory-mapped
        ``<path>.partial.npy``; a small ``<path>.partial.json`` records how many rows are done and
        a fingerprint of the texts and settings. An interrupted run resumes from the last finished
        chunk (when ``resume`` and the fingerprint match); on completion the file is renamed to
        ``path`` atomically, so ``path`` exists only when complete. Load it with
        ``np.load(path, mmap_mode="r")``.

        Args:
            sentences: The texts (a sequence, so that its length is known).
            path: Output ``.npy`` file.
            chunk_size: Texts per chunk (the resume granularity).
            resume: Continue a matching partial file instead of starting over.
            **encode_kwargs: Passed to :meth:`encode` (``batch_size``, ``normalize_embeddings``,
                ``prompt_type``, ...); conversions are not allowed.

        Returns:
            The path of the finished file.
        """
        path = Path(path)
        if path.suffix != ".npy":
            raise ValueError(f"encode_corpus writes a .npy file; got path {str(path)!r}.")
        chunk_size = check_int(chunk_size, "chunk_size", owner="EchoEncoder.encode_corpus", low=1)
        resume = check_bool(resume, "resume", owner="EchoEncoder.encode_corpus")
        for bad in ("convert_to_tensor", "convert_to_numpy"):
            if bad in encode_kwargs:
                raise TypeError(f"encode_corpus does not take {bad!r}; it always writes float32.")
        texts, _ = self._check_sentences(sentences)
        n, dim = len(texts), self.get_sentence_embedding_dimension()
        h = hashlib.sha256()
        h.update(repr((self.template, self.pooling, self.max_length, self.layer,
                       str(self.dtype), getattr(self, "name_or_path", ""),
                       sorted((k, repr(v)) for k, v in encode_kwargs.items()
                              if k not in ("batch_size", "show_progress_bar")))).encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        fingerprint = h.hexdigest()
        partial = path.with_name(path.name[:-4] + ".partial.npy")
        state_file = path.with_name(path.name[:-4] + ".partial.json")
        start = 0
        mm = None
        if resume and partial.is_file() and state_file.is_file():
            try:
                state = json.loads(state_file.read_text())
                if state.get("fingerprint") == fingerprint:
                    mm = np.lib.format.open_memmap(partial, mode="r+")
                    if mm.shape != (n, dim):
                        mm = None
                    else:
                        start = int(state["n_done"])
            except (OSError, ValueError, KeyError):
                mm, start = None, 0
        if mm is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            mm = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, dim))
        for lo in range(start, n, chunk_size):
            hi = min(n, lo + chunk_size)
            mm[lo:hi] = self.encode(texts[lo:hi], **encode_kwargs)
            mm.flush()  # rows on disk before the state says so
            with atomic_write(state_file) as fh:
                json.dump({"fingerprint": fingerprint, "n_done": hi, "n": n, "dim": dim}, fh)
        mm.flush()
        del mm
        os.replace(partial, path)
        state_file.unlink(missing_ok=True)
        return path
