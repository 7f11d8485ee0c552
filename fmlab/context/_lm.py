"""Language-model interfaces of the evaluation harness (lm-evaluation-harness shape).

:class:`ContextLM` is the abstract model: ``generate_until`` (greedy generation up to a stop
string) and ``loglikelihood`` (log-probability of a continuation). :class:`HFCausalLM` implements
both for any ``transformers`` causal LM, batched: prompts are sorted by length, left-padded, and a
batch stops as soon as every row has produced its first answer (a stop string or EOS), which is
where its speed over a plain per-item ``generate`` loop comes from. Context-aware decoding runs in
the same loop: the prompts with and without the context form one batch of ``2B`` rows and the next
token maximises ``(1 + α) z(y | c, x) − α z(y | x)``.

References:
    Gao et al., A framework for few-shot language model evaluation (lm-evaluation-harness);
    Shi et al. 2023, Trusting your evidence: context-aware decoding, arXiv 2305.14739.
"""

from __future__ import annotations

import contextlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fmlab._device import eval_mode
from fmlab._validation import check_int, check_real

__all__ = ["ContextLM", "FrozenPrefix", "FunctionLM", "GenerationRequest", "HFCausalLM",
           "LoglikelihoodRequest", "as_context_lm"]


@dataclass(frozen=True)
class GenerationRequest:
    """Generate greedily from ``prompt`` until a stop string.

    Attributes:
        prompt: The task prompt (before any chat template).
        contrast_prompt: The same prompt without the context, for context-aware decoding.
        item: The task item (for error messages and stub models).
    """

    prompt: str
    contrast_prompt: str | None = None
    item: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` after ``context`` (a space is put between them unless the
    formatted context ends in white space or the continuation starts with it)."""

    context: str
    continuation: str
    item: Mapping[str, Any] | None = None


class ContextLM(ABC):
    """What the harness needs from a model.

    ``generate_until`` is called with a batch of requests and returns one string per request:
    the greedy continuation, cut before the first stop string. ``loglikelihood`` returns, per
    request, the summed log-probability of the continuation and whether greedy decoding would
    have produced it. Neither may reorder results.
    """

    name: str = "model"

    @abstractmethod
    def generate_until(self, requests: Sequence[GenerationRequest]) -> list[str]: ...

    @abstractmethod
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        ...


class FunctionLM(ContextLM):
    """A model made of plain functions, for tests and baselines (lm-eval's dummy model).

    Args:
        generate: ``fn(request) -> str``.
        loglikelihood: ``fn(request) -> float``; optional.
        name: Shown in records.

    Example:
        >>> echo = FunctionLM(lambda r: r.item["context"], name="echo")
    """

    def __init__(self, generate: Any, loglikelihood: Any = None, name: str = "function") -> None:
        self._gen, self._ll, self.name = generate, loglikelihood, name

    def generate_until(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return [str(self._gen(r)) for r in requests]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        if self._ll is None:
            raise ValueError(
                f"FunctionLM {self.name!r} was built without a loglikelihood function, so it "
                "cannot score answers by likelihood; pass loglikelihood=fn(request) -> float when "
                "building it, or evaluate by generation.")
        return [(float(self._ll(r)), False) for r in requests]


def _item_ref(req: Any, index: int) -> str:
    item = getattr(req, "item", None)
    if item and "id" in item:
        return f"item {item['id']!r}" + (f" of task {item['task']!r}" if "task" in item else "")
    return f"request {index}"


_MIN_SHARED = 8  # shared tokens below which one pass over the padded batch is cheaper


def _decoder(model: Any) -> Any:
    """The decoder stack (``.layers``, ``.norm``) of a causal LM, through a ``peft`` wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    core = base.get_decoder()
    if not (hasattr(core, "layers") and hasattr(core, "norm")):
        raise TypeError(f"{type(base).__name__} has no decoder with `layers` and `norm`; a frozen "
                        f"prefix needs a Llama/Gemma-style decoder stack.")
    return core


@contextlib.contextmanager
def _layer_window(model: Any, start: int, stop: int | None, *, final_norm: bool) -> Any:
    """Temporarily run only ``layers[start:stop]`` of the decoder (and skip the final norm unless
    ``final_norm``), so a forward pass maps embeddings, or hidden states given as
    ``inputs_embeds``, through just that window of layers."""
    import torch

    core = _decoder(model)
    cfg = core.config
    layers, norm = core.layers, core.norm
    n_cfg, types = cfg.num_hidden_layers, getattr(cfg, "layer_types", None)
    core.layers = torch.nn.ModuleList(list(layers)[start:stop])
    if not final_norm:
        core.norm = torch.nn.Identity()
    cfg.num_hidden_layers = len(core.layers)
    if types is not None:  # per-layer attention kinds (Gemma 3's sliding/full) follow the window
        cfg.layer_types = list(types)[start:stop]
    try:
        yield
    finally:
        core.layers, core.norm, cfg.num_hidden_layers = layers, norm, n_cfg
        if types is not None:
            cfg.layer_types = types


def _cache_kwarg(module: Any) -> str:
    """The keyword a model's forward takes its KV cache by: ``cache`` in transformers >= 5.2x,
    ``past_key_values`` before."""
    import inspect

    core = module.get_base_model() if hasattr(module, "get_base_model") else module
    return "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"


class FrozenPrefix:
    """Hidden states after a model's first ``n_frozen`` decoder layers, computed once per token
    sequence and reused.

    When only the last layers of a model change (LoRA or full tuning of the last N layers, as in
    :class:`fmlab.context.FinetuneConfig` ``last_layers``), the embeddings and the first
    ``n_frozen`` layers map a sequence to the same hidden states at every step. Recomputing them is
    most of the cost of a training step and of every evaluation of a log-likelihood probe; this
    object computes them once (memoised per token sequence) and runs only the tail. The result
    equals a full forward pass up to float rounding (tested against one).

    Args:
        model: The reference causal LM; its embeddings and first ``n_frozen`` layers are the ones
            reused, so they must not change while this object is in use.
        n_frozen: Decoder layers in the frozen prefix, ``1 <= n_frozen < number of layers``.
        batch_size: Sequences per prefix pass.

    Raises:
        ValueError: (at use) a model whose prefix differs from the reference's or trains.
    """

    def __init__(self, model: Any, n_frozen: int, *, batch_size: int = 16) -> None:
        n_layers = len(_decoder(model).layers)
        self.n_frozen = check_int(n_frozen, "n_frozen", owner="FrozenPrefix", low=1,
                                  high=n_layers - 1)
        self.batch_size = check_int(batch_size, "batch_size", owner="FrozenPrefix", low=1)
        self.model = model
        self._memo: dict[tuple[int, ...], Any] = {}
        self._checksum = self._prefix_sum(model)
        self._seen: set[int] = {id(model)}

    def _prefix_params(self, model: Any) -> list[Any]:
        core = _decoder(model)
        return [*core.embed_tokens.parameters(),
                *(p for layer in list(core.layers)[:self.n_frozen] for p in layer.parameters())]

    def _prefix_sum(self, model: Any) -> float:
        import torch

        with torch.no_grad():
            return float(sum(p.float().abs().sum() for p in self._prefix_params(model)))

    def check(self, model: Any) -> None:
        """Raise unless ``model``'s embeddings and first ``n_frozen`` layers equal the reference
        model's (checked once per model object) and, when autograd is on, are frozen."""
        import torch

        if torch.is_grad_enabled() and any(p.requires_grad for p in self._prefix_params(model)):
            raise ValueError(f"The model trains parameters in its first {self.n_frozen} layers or "
                             f"embeddings, which a FrozenPrefix reuses; train only the last "
                             f"layers (last_layers) or drop the prefix.")
        if id(model) not in self._seen:
            got = self._prefix_sum(model)
            if not math.isclose(got, self._checksum, rel_tol=1e-6):
                raise ValueError(f"The model's first {self.n_frozen} layers differ from the "
                                 f"FrozenPrefix's reference model; build the prefix from the model "
                                 f"being tuned.")
            self._seen.add(id(model))

    def states(self, rows: Sequence[Sequence[int]]) -> list[Any]:
        """The prefix's hidden states of each token sequence: tensors of shape (len, d)."""
        import torch

        keys = [tuple(int(t) for t in r) for r in rows]
        todo = sorted({k for k in keys if k not in self._memo}, key=len)
        core = _decoder(self.model)
        with eval_mode(self.model):  # restores each module's mode
            with torch.no_grad(), _layer_window(self.model, 0, self.n_frozen, final_norm=False):
                dev = self.model.device
                for i in range(0, len(todo), self.batch_size):
                    chunk = todo[i:i + self.batch_size]
                    # the tokens the chunk starts with (system prompt, instruction) run once
                    shared = os.path.commonprefix(chunk)[:min(len(k) for k in chunk) - 1]
                    if len(chunk) < 2 or len(shared) < _MIN_SHARED:
                        shared = ()
                    kw: dict[str, Any] = {"use_cache": False}
                    head = None
                    if shared:
                        out = core(input_ids=torch.as_tensor([shared], device=dev),
                                   use_cache=True)
                        head = out.last_hidden_state[0]
                        cache = out.get("cache") if "cache" in out else out.get(
                            "past_key_values")
                        cache.batch_repeat_interleave(len(chunk))
                        kw = {"use_cache": True, _cache_kwarg(core): cache}
                    n0 = len(shared)
                    width = max(len(k) for k in chunk) - n0
                    ids = torch.zeros((len(chunk), width), dtype=torch.long)
                    mask = torch.zeros((len(chunk), n0 + width), dtype=torch.long)
                    for j, k in enumerate(chunk):  # right padding: positions run on from n0
                        ids[j, :len(k) - n0] = torch.as_tensor(k[n0:])
                        mask[j, :len(k)] = 1
                    pos = torch.arange(n0, n0 + width)[None].expand(len(chunk), -1)
                    h = core(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                             position_ids=pos.to(dev), **kw).last_hidden_state
                    for j, k in enumerate(chunk):
                        own = h[j, :len(k) - n0]
                        self._memo[k] = (torch.cat([head, own]) if head is not None
                                         else own.clone())
        return [self._memo[k] for k in keys]

    def left_padded(self, rows: Sequence[Sequence[int]]) -> Any:
        """:meth:`states` of ``rows`` left-padded with zeros to one tensor (B, width, d)."""
        hs = self.states(rows)
        width = max(h.shape[0] for h in hs)
        out = hs[0].new_zeros((len(hs), width, hs[0].shape[-1]))
        for j, h in enumerate(hs):
            out[j, width - h.shape[0]:] = h
        return out

    def logits(self, model: Any, rows: Sequence[Sequence[int]], mask: Any, position_ids: Any,
               logits_to_keep: int) -> Any:
        """Logits of ``model`` (the reference or a copy tuned in its last layers only) on
        left-padded ``rows``: the cached prefix states run through the remaining layers."""
        self.check(model)
        states = self.left_padded(rows).to(mask.device)
        with _layer_window(model, self.n_frozen, None, final_norm=True):
            return model(inputs_embeds=states, attention_mask=mask, position_ids=position_ids,
                         logits_to_keep=logits_to_keep, use_cache=False).logits


class HFCausalLM(ContextLM):
    """A ``transformers`` causal LM behind the harness interface.

    Args:
        model: A causal LM (put in eval mode; not otherwise modified).
        tokenizer: Its tokenizer (copied if it needs a pad token; the caller's is never changed).
        batch_size: Prompts per forward pass.
        max_new_tokens: Generation budget per item.
        stop: Generation ends at the first token whose text contains one of these (or EOS).
        chat: Wrap prompts in the tokenizer's chat template; ``None`` = when it has one.
        cad_alpha: Context-aware decoding strength α (0 = plain greedy).
        progress: Show a progress bar.
        prefix: A :class:`FrozenPrefix` of this model: log-likelihood scoring then runs only the
            layers after it (for a model tuned in its last layers only).
        share_prefix: Run the tokens all prompts of a generation batch start with once and
            share their KV cache (exact; off only to measure what it saves).
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16,
                 max_new_tokens: int = 24, stop: Sequence[str] = ("\n",), chat: bool | None = None,
                 cad_alpha: float = 0.0, progress: bool = False, name: str | None = None,
                 prefix: FrozenPrefix | None = None, share_prefix: bool = True) -> None:
        self.batch_size = check_int(batch_size, "batch_size", owner="HFCausalLM", low=1)
        self.max_new_tokens = check_int(max_new_tokens, "max_new_tokens", owner="HFCausalLM",
                                        low=1)
        self.cad_alpha = check_real(cad_alpha, "cad_alpha", owner="HFCausalLM", low=0.0,
                                    closed="left")
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise TypeError(f"The 'stop' parameter of HFCausalLM must be a sequence of non-empty "
                            f"strings. Got {stop!r} instead.")
        self.stop = tuple(stop)
        self.model = model
        if tokenizer.pad_token_id is None:
            import copy

            tokenizer = copy.copy(tokenizer)
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else bool(chat)
        self.progress = progress
        self.name = name or str(getattr(getattr(model, "config", None), "_name_or_path", "")
                                or type(model).__name__)
        self._stop_table: Any = None
        self._cache_kw: str | None = None
        self.prefix = prefix
        self.share_prefix = bool(share_prefix)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str], *, dtype: Any = None,
             device: Any = "cpu", **kwargs: Any) -> HFCausalLM:
        """Load a zoo model, ``hf:`` id or folder with :func:`fmlab.models.load_causal_lm`."""
        from fmlab.models import load_causal_lm

        model, tok = load_causal_lm(name_or_path, dtype=dtype, device=device)
        return cls(model, tok, name=os.fspath(name_or_path), **kwargs)

    # -- prompts ----------------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        cfg = getattr(self.model, "config", None)
        n = getattr(cfg, "max_position_embeddings", None) or getattr(
            self.tokenizer, "model_max_length", None) or 2048
        return int(min(n, 1_000_000))

    def format(self, prompt: str) -> str:
        """The text the model continues: ``prompt`` in the chat template when ``chat``."""
        if not self.chat:
            return prompt
        return str(self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False))

    def encode(self, text: str) -> list[int]:
        # a chat-formatted text already carries its special tokens
        return list(self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"])

    def _check_length(self, ids: list[int], budget: int, req: Any, index: int) -> None:
        if len(ids) + budget > self.max_length:
            raise ValueError(
                f"The prompt of {_item_ref(req, index)} has {len(ids)} tokens; with "
                f"{budget} tokens to generate or score it exceeds the model's context of "
                f"{self.max_length} tokens. Shorten the context, lower max_new_tokens, or use a "
                f"model with a longer context.")

    # -- decoding core ----------------------------------------------------------------------
    def _stops(self) -> Any:
        import torch

        if self._stop_table is None:
            n = max(len(self.tokenizer), int(self.model.get_output_embeddings().weight.shape[0]))
            texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            table = torch.zeros(n, dtype=torch.bool)
            table[[i for i, t in enumerate(texts) if any(s in t for s in self.stop)]] = True
            eos = self.tokenizer.eos_token_id
            for e in ([eos] if isinstance(eos, int) else list(eos or [])):
                table[e] = True
            gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            for e in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])):
                table[e] = True
            self._stop_table = table
        return self._stop_table

    def _cache_from(self, out: Any) -> dict[str, Any]:
        # transformers >= 5.2x names the KV cache `cache`; earlier versions `past_key_values`
        if self._cache_kw is None:  # a peft wrapper forwards keyword arguments to its base
            self._cache_kw = _cache_kwarg(self.model)
        value = out.get("cache") if "cache" in out else out.get("past_key_values")
        return {self._cache_kw: value}

    def _left_pad(self, rows: list[list[int]]) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.as_tensor(r)
            mask[i, width - len(r):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.model.device
        return ids.to(dev), mask.to(dev), pos.to(dev)

    def _prefill(self, rows: list[list[int]]) -> tuple[Any, Any, Any]:
        """The first forward pass of a generation batch, with its KV cache: ``(output, attention
        mask, position ids)``.

        The tokens every row starts with (the chat template's system prompt and the task's
        instruction, a third of a CF_Capitals prompt) run once, and their KV cache is repeated
        over the batch; the rest of each row is left-padded *after* that shared part, so the
        layout is ``[shared | pads | own tokens]`` with positions counted over real tokens only.
        """
        import torch

        shared = os.path.commonprefix(rows)[:min(len(r) for r in rows) - 1]
        if not self.share_prefix or len(rows) < 2 or len(shared) < _MIN_SHARED:
            ids, mask, pos = self._left_pad(rows)
            return (self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                               use_cache=True, logits_to_keep=1), mask, pos)
        dev = self.model.device
        head = self.model(input_ids=torch.as_tensor([shared], device=dev), use_cache=True,
                          logits_to_keep=1)
        cache = self._cache_from(head)
        next(iter(cache.values())).batch_repeat_interleave(len(rows))
        ids, tail_mask, _ = self._left_pad([r[len(shared):] for r in rows])
        mask = torch.cat([tail_mask.new_ones((len(rows), len(shared))), tail_mask], 1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, len(shared):]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         logits_to_keep=1, **cache)
        return out, mask, pos

    def _greedy(self, rows: list[list[int]], contrast: list[list[int]] | None) -> list[list[int]]:
        """Greedy decoding of a batch; returns the new tokens of each row, stop token included."""
        import torch

        b = len(rows)
        out, mask, pos = self._prefill(rows + (contrast or []))
        stops = self._stops().to(mask.device)
        done = torch.zeros(b, dtype=torch.bool, device=mask.device)
        steps: list[Any] = []
        pad = self.tokenizer.pad_token_id
        alpha = self.cad_alpha
        for _ in range(self.max_new_tokens):
            z = out.logits[:, -1].float()  # (B or 2B, V)
            if contrast is not None:
                z = (1.0 + alpha) * z[:b] - alpha * z[b:]
            nxt = z.argmax(-1).masked_fill(done, pad)  # (B,)
            steps.append(nxt)
            done |= stops[nxt]
            if bool(done.all()):
                break
            feed = torch.cat([nxt, nxt]) if contrast is not None else nxt
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
            pos = pos[:, -1:] + 1
            out = self.model(input_ids=feed[:, None], attention_mask=mask, position_ids=pos,
                             use_cache=True, **self._cache_from(out))
        toks = torch.stack(steps, 1).tolist()  # (B, T)
        result = []
        for row in toks:
            keep = []
            for t in row:
                keep.append(t)
                if bool(stops[t]):
                    break
            result.append(keep)
        return result

    def _cut(self, text: str) -> str:
        cut = len(text)
        for s in self.stop:
            k = text.find(s)
            if k >= 0:
                cut = min(cut, k)
        return text[:cut]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _bar(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def generate_until(self, requests: Sequence[GenerationRequest]) -> list[str]:
        import torch

        reqs = list(requests)
        use_cad = self.cad_alpha > 0
        enc = []
        for i, r in enumerate(reqs):
            ids = self.encode(self.format(r.prompt))
            self._check_length(ids, self.max_new_tokens, r, i)
            if use_cad:
                if r.contrast_prompt is None:
                    raise ValueError(f"Context-aware decoding needs a contrast prompt (without "
                                     f"the context) for {_item_ref(r, i)}.")
                cids = self.encode(self.format(r.contrast_prompt))
                enc.append((ids, cids))
            else:
                enc.append((ids, None))
        outputs: list[str] = [""] * len(reqs)
        with eval_mode(self.model):  # restores each module's mode
            with torch.inference_mode(), self._bar(len(reqs), "generate") as bar:
                for batch in self._batches([len(e[0]) for e in enc]):
                    rows = [enc[i][0] for i in batch]
                    contrast = [enc[i][1] for i in batch] if use_cad else None
                    new = self._greedy(rows, contrast)  # type: ignore[arg-type]
                    texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                    for i, t in zip(batch, texts, strict=True):
                        outputs[i] = self._cut(t)
                    bar.update(len(batch))
        return outputs

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        import torch

        reqs = list(requests)
        enc = []
        for i, r in enumerate(reqs):
            ctx_text = self.format(r.context)
            ctx = self.encode(ctx_text)
            # " Paris" after "Answer:", "Paris" after a chat template's "assistant\n"
            sep = "" if ctx_text[-1:].isspace() or r.continuation[:1].isspace() else " "
            whole = self.encode(ctx_text + sep + r.continuation)
            # the continuation's tokens; a merge across the boundary shortens the context by one
            n_ctx = len(ctx) if whole[:len(ctx)] == ctx else len(ctx) - 1
            cont = whole[n_ctx:]
            if not cont:
                raise ValueError(f"The continuation of {_item_ref(r, i)} is empty; an answer "
                                 f"set needs at least one non-empty string.")
            self._check_length(whole, 0, r, i)
            enc.append((whole, len(cont)))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(reqs)
        with eval_mode(self.model):  # restores each module's mode
            with torch.inference_mode(), self._bar(len(reqs), "loglikelihood") as bar:
                for batch in self._batches([len(e[0]) for e in enc]):
                    rows = [enc[i][0] for i in batch]
                    n_max = max(enc[i][1] for i in batch)
                    ids, mask, pos = self._left_pad(rows)
                    if self.prefix is not None:
                        logits = self.prefix.logits(self.model, rows, mask, pos, n_max + 1)
                    else:
                        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                            logits_to_keep=n_max + 1, use_cache=False).logits
                    logits = logits[:, :-1].float()
                    logp = torch.log_softmax(logits, -1)  # (B, n_max, V)
                    target = ids[:, -n_max:]  # (B, n_max)
                    tok_lp = logp.gather(-1, target[..., None])[..., 0]
                    greedy = logp.argmax(-1) == target
                    for j, i in enumerate(batch):
                        n = enc[i][1]
                        results[i] = (float(tok_lp[j, -n:].sum()), bool(greedy[j, -n:].all()))
                    bar.update(len(batch))
        return results


def as_context_lm(model: Any, **kwargs: Any) -> ContextLM:
    """Accept a :class:`ContextLM`, a ``(model, tokenizer)`` pair, or a name/``hf:`` id/folder."""
    if isinstance(model, ContextLM):
        if kwargs:
            raise ValueError(f"Options {sorted(kwargs)} apply only when fmlab loads the model; "
                             f"set them on the ContextLM instead.")
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return HFCausalLM(model[0], model[1], **kwargs)
    if isinstance(model, (str, os.PathLike)):
        return HFCausalLM.load(model, **kwargs)
    raise TypeError("'model' must be a ContextLM, a (model, tokenizer) pair, or a model name / "
                    f"'hf:' id / folder. Got {type(model).__name__} instead.")
