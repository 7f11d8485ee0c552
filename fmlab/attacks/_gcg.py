"""GCG: Greedy Coordinate Gradient search for an adversarial token suffix (Zou et al. 2023).

:class:`TargetObjective` holds the model, the chat prompt(s) with an adversarial slot and the target
string(s); :class:`GCG` is an attack on the shared loop of ``fmlab.attacks._core`` whose hooks are

* ``propose``: the gradient of the target loss with respect to a one-hot encoding of the suffix,
  the top-k tokens per position, and ``search_width`` candidates that each swap ``n_replace``
  random positions for random top-k tokens (disallowed tokens masked out first);
* ``project``: drop candidates whose decode → re-encode round trip changes the tokens;
* ``select`` (the loop's default): every candidate scored in one batched forward through the
  fixed prefix's KV cache, argmin kept.

Hyperparameter names follow nanoGCG's ``GCGConfig`` so configs carry over.

References:
    Zou, Wang, Carlini, Nasr, Kolter, Fredrikson. Universal and Transferable Adversarial Attacks on
    Aligned Language Models. arXiv 2307.15043.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab._validation import check_bool, check_int, check_real
from fmlab.attacks._core import AttackResult, BaseAttack, Proposal, run_attack

if TYPE_CHECKING:
    import torch

__all__ = ["GCG", "GCGResult", "TargetObjective"]

SLOT = "{optim_str}"
_PACK_TOKENS = 512  # tokens per block-mask packed forward: its attention costs Q x (prefix + Q)
_SEGMENT_TOKENS = 8192  # tokens per packed forward with the segment attention (linear in Q)
Messages = str | Sequence[dict[str, str]]


def _check_causal_lm(model: Any) -> None:
    config = getattr(model, "config", None)
    head = getattr(model, "get_output_embeddings", lambda: None)()
    if config is None or head is None or getattr(config, "is_encoder_decoder", False):
        raise TypeError(
            f"TargetObjective needs a causal language model with an LM head (e.g. "
            f"load_causal_lm('smollm2-135m-instruct')). Got {type(model).__name__}, which is not "
            f"a decoder-only causal LM."
        )


def _as_chat(messages: Messages) -> list[dict[str, str]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    chat = [dict(m) for m in messages]
    if not chat or not all(isinstance(m, dict) and "content" in m for m in chat):
        raise ValueError(
            "The 'messages' parameter of TargetObjective must be a str or a non-empty list of chat "
            f"messages {{'role': ..., 'content': ...}}. Got {messages!r} instead."
        )
    return chat


@dataclass
class _Segments:
    """Where each candidate sits in a packed scoring sequence (see ``_segment_attention``).

    The candidates' tokens lie end to end in the packed sequence, longest first (the caller
    sorts them). The attention lays them out as padded rows in a few buckets of similar length
    (a row per candidate, as long as the bucket's longest), runs one fused attention per bucket
    and packs the result back. The gather indices, masks and visible cache lengths depend only
    on the layout, so they are built once per forward (on the first layer) and reused by every
    layer.
    """

    n_tok: torch.Tensor  # (b,) tokens each candidate runs, non-increasing
    past: torch.Tensor  # (b,) cached positions the candidate may see (prefix + shared suffix)
    n_past: int  # cached positions in the cache before this forward
    _layout: tuple[int, torch.dtype, list[_Bucket]] | None = None

    def layout(self, g: int, dtype: torch.dtype) -> list[_Bucket]:
        """The buckets for ``g`` query heads per key/value head (masks in ``dtype``): a new
        bucket starts where a candidate is shorter than 3/4 of the bucket's first (padding
        stays under a quarter of a bucket's rows), so the attention does little wasted work."""
        if self._layout is None or self._layout[:2] != (g, dtype):
            import torch

            dev = self.n_tok.device
            n_tok = self.n_tok.tolist()
            start = [0]
            for i in range(1, len(n_tok)):
                if 4 * n_tok[i] < 3 * n_tok[start[-1]]:
                    start.append(i)
            offsets = torch.cumsum(self.n_tok, 0) - self.n_tok  # (b,) packed offsets
            buckets = []
            for lo, hi in zip(start, [*start[1:], len(n_tok)], strict=True):
                b, n = hi - lo, n_tok[lo]
                n_seg, past = self.n_tok[lo:hi], self.past[lo:hi]
                P = int(past.max())  # the cache positions any candidate of the bucket sees
                j = torch.arange(n, device=dev)
                valid = j[None] < n_seg[:, None]  # (b, n)
                idx = (offsets[lo:hi, None] - offsets[lo] + j[None]).clamp(
                    max=int(n_seg.sum()) - 1)  # (b, n) position in the bucket's packed run
                see_past = torch.arange(P, device=dev)[None] < past[:, None]  # (b, P)
                causal = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
                see_own = causal[None] & valid[:, None, :]  # (b, n, n)
                allowed = torch.cat([see_past[:, None].expand(b, n, -1), see_own], dim=2)
                allowed = allowed[:, None].expand(b, g, n, -1).reshape(b, 1, g * n, P + n)
                # an additive float mask: the fused kernel converts a boolean one on every call
                mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill_(
                    ~allowed, float("-inf"))
                rows = valid.flatten().nonzero().squeeze(1)  # real tokens, packed order
                buckets.append(_Bucket(int(offsets[lo]), int(n_seg.sum()), b, n, P,
                                       idx.flatten(), mask, rows))
            self._layout = (g, dtype, buckets)
        return self._layout[2]


@dataclass
class _Bucket:
    """Candidates of similar length, laid out as padded rows ``(b, n)`` for one attention."""

    lo: int  # first packed position of the bucket's run of tokens
    n_packed: int  # real tokens in the run
    b: int  # candidates
    n: int  # padded row length (the longest candidate's)
    n_past: int  # cache positions visible to some candidate
    idx: torch.Tensor  # (b n,) packed position (within the run) of each padded slot
    mask: torch.Tensor  # (b, 1, g n, n_past + n) additive mask, 0 or -inf
    rows: torch.Tensor  # (n_packed,) padded slots that hold real tokens


_SEGMENT_ATTENTION = "fmlab_gcg_segments"


def _segment_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: Any, dropout: float = 0.0, scaling: float | None = None,
                       fmlab_segments: _Segments | None = None, **kwargs: Any
                       ) -> tuple[torch.Tensor, None]:
    """Attention for GCG's packed candidates: each token sees the first ``past[i]`` cached
    positions and the earlier tokens of its own candidate, and nothing else is computed.

    A block mask over one long packed sequence would cost ``Q x (P + Q)`` per head; here the
    candidates are laid out as padded rows ``(b, n)`` (gathered from the pack) in buckets of
    similar length, each row sees the part of the cache its bucket can see and its own ``n``
    keys, and one fused ``scaled_dot_product_attention`` call per bucket does the rest: the
    ``g`` query heads that share a key/value head are stacked as extra query rows, so
    grouped-query models need no repeat of the keys. Shapes: query ``(1, H, Q, d)``, key/value
    ``(1, Hkv, P + Q, d)``; returns ``(1, Q, H, d)`` as transformers' attention functions do.
    """
    import torch
    import torch.nn.functional as F

    seg = fmlab_segments
    if seg is None:  # not a packed GCG forward: the model's usual attention
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    H, Q, d = query.shape[1], query.shape[2], query.shape[3]
    Hkv = key.shape[1]
    g = H // Hkv
    P = seg.n_past
    scale = scaling if scaling is not None else d ** -0.5
    out = query.new_empty(Q, H, d)
    for bk in seg.layout(g, query.dtype):
        b, n, hi = bk.b, bk.n, bk.lo + bk.n_packed
        # (Hkv, g, b n, d) -> (b, Hkv, g n, d): the g heads of a group stacked as query rows
        q = query[0, :, bk.lo:hi].reshape(Hkv, g, -1, d)[:, :, bk.idx].reshape(Hkv, g, b, n, d)
        q = q.permute(2, 0, 1, 3, 4).reshape(b, Hkv, g * n, d)

        def kv(t: torch.Tensor, bk: _Bucket = bk, b: int = b, n: int = n,
               hi: int = hi) -> torch.Tensor:  # (b, Hkv, n_past + n, d): cache, own keys
            own = t[0, :, P + bk.lo:P + hi][:, bk.idx].reshape(Hkv, b, n, d).transpose(0, 1)
            return torch.cat([t[0, :, :bk.n_past][None].expand(b, -1, -1, -1), own], dim=2)

        o = F.scaled_dot_product_attention(q, kv(key), kv(value), attn_mask=bk.mask, scale=scale)
        # (b, Hkv, g n, d) -> (b n, H, d) -> the real tokens, in packed order
        o = o.reshape(b, Hkv, g, n, d).permute(0, 3, 1, 2, 4).reshape(b * n, H, d)
        out[bk.lo:hi] = o[bk.rows]
    return out[None], None


def _decode_each(tokenizer: Any, n: int) -> list[str]:
    """The text of each token id ``0..n-1`` alone. A fast tokenizer's Rust backend decodes
    them in one call (~10x faster than ``batch_decode``'s per-list Python conversions); the
    texts equal ``batch_decode``'s but for its optional clean-up of spaces before punctuation,
    which never changes whether a text is empty, ASCII or printable."""
    ids = [[i] for i in range(n)]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "decode_batch"):
        return list(backend.decode_batch(ids, skip_special_tokens=False))
    return list(tokenizer.batch_decode(ids))


class _FusedRMSNorm:
    """``forward`` of an RMS norm module through the fused ``rms_norm`` kernel."""

    def __init__(self, module: Any, eps: float) -> None:
        self.module, self.eps, self.width = module, eps, module.weight.shape[0]

    def __call__(self, hidden_states: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        w = self.module.weight
        return F.rms_norm(hidden_states, w.shape, w, self.eps)


class _InplaceGatedMLP:
    """``forward`` of a gated SiLU MLP, ``down(silu(gate(x)) * up(x))``, with the activation
    and the product written in place (no-grad scoring only)."""

    def __init__(self, module: Any) -> None:
        self.module, self.width = module, module.gate_proj.in_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        m = self.module
        h = F.silu(m.gate_proj(x), inplace=True)  # (..., 4d)
        return m.down_proj(h.mul_(m.up_proj(x)))


def _fast_forward(module: Any) -> _FusedRMSNorm | _InplaceGatedMLP | None:
    """A fast forward for a module that looks like an RMS norm or a gated MLP (to be checked
    against the module's own forward before use), else None."""
    import torch

    name = type(module).__name__
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if (name.endswith("RMSNorm") and isinstance(weight, torch.Tensor) and weight.dim() == 1
            and isinstance(eps, float)):
        return _FusedRMSNorm(module, eps)
    layers = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if all(isinstance(lin, torch.nn.Linear) for lin in layers):
        return _InplaceGatedMLP(module)
    return None


def _register_segment_attention() -> bool:
    """Register :func:`_segment_attention` with transformers once; False if it cannot be."""
    try:
        from transformers import AttentionInterface
    except ImportError:  # an old transformers: the block-mask path is used
        return False
    AttentionInterface.register(_SEGMENT_ATTENTION, _segment_attention)
    return True


@dataclass
class _Prompt:
    """One (prompt, target) pair, tokenised around the slot."""

    before_ids: torch.Tensor  # (1, Lb)
    after_ids: torch.Tensor  # (1, La)
    target_ids: torch.Tensor  # (1, m)
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # prefix cache, batch 1
    last_logits: torch.Tensor | None = None  # (V,) logits after the prefix (for the ppl term)
    after_embeds: torch.Tensor | None = None  # (1, La, d)
    target_embeds: torch.Tensor | None = None  # (1, m, d)
    before_embeds: torch.Tensor | None = None  # (1, Lb, d)
    # the last single suffix run through the prefix cache, and its keys and values (prefix +
    # suffix): the reference of the next packed scoring
    suffix_kv: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None = None


class TargetObjective:
    """Teacher-forced NLL of a target string after a chat prompt with an adversarial slot.

    The prompt is rendered with the tokenizer's chat template; the adversarial suffix goes where
    ``{optim_str}`` stands (appended to the last message when absent), verbatim: put no space
    before the slot and start the suffix with one instead (``" x x x"``), so that the tokens
    optimised are the tokens a model reads when the suffix is later pasted after the prompt (a
    space before the slot tokenises on its own, but merges into the suffix's first word in the
    pasted text). In universal (multi-prompt) mode, pass several prompts and targets: the loss
    is their mean.

    .. math:: \\mathcal{L}(s) = \\frac{1}{J}\\sum_j -\\frac{1}{m_j}\\sum_{t=1}^{m_j}
        \\log p_\\theta(y^j_t \\mid x^j_{<\\mathrm{slot}}, s, x^j_{>\\mathrm{slot}}, y^j_{<t})
        \\; + \\; \\lambda\\,\\mathrm{NLL}(s)

    where the optional perplexity term (weight ``ppl_weight`` on :class:`GCG`) is the mean NLL of
    the suffix tokens themselves, so that a perplexity filter lets the suffix through.

    Args:
        model: A causal LM (or a zoo name / ``"hf:org/name"`` / folder, loaded offline).
        tokenizer: Its tokenizer (``None`` when ``model`` is a name).
        messages: A str, a chat (list of ``{"role", "content"}``), or a list of these (universal).
        target: The target string, or one per prompt.
        system_prompt: Put this system message first (e.g. for a system-prompt defense).

    Raises:
        TypeError: the model is not a causal LM.
        ValueError: an empty target, or a prompt that does not fit in the model's context.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        messages: Messages | Sequence[Messages] = "",
        target: str | Sequence[str] = "",
        *,
        system_prompt: str | None = None,
    ) -> None:
        if isinstance(model, str):
            from fmlab.models import load_causal_lm

            model, tokenizer = load_causal_lm(model)
        _check_causal_lm(model)
        if tokenizer is None:
            raise TypeError("TargetObjective needs the model's tokenizer; pass tokenizer=...")
        self.model, self.tokenizer = model, tokenizer
        many = not isinstance(messages, str) and bool(messages) and not isinstance(
            next(iter(messages)), dict  # type: ignore[arg-type]
        )
        prompts: list[Messages] = list(messages) if many else [messages]  # type: ignore[arg-type]
        targets = [target] * len(prompts) if isinstance(target, str) else list(target)
        if len(targets) != len(prompts):
            raise ValueError(
                f"TargetObjective got {len(prompts)} prompts but {len(targets)} targets; pass one "
                f"target string, or one per prompt."
            )
        for t in targets:
            if not isinstance(t, str) or not t:
                raise ValueError(
                    f"The 'target' parameter of TargetObjective must be a non-empty str (the text "
                    f"the attack makes the model say, e.g. 'Purple'). Got {t!r} instead."
                )
        self.chats = [_as_chat(p) for p in prompts]
        if system_prompt is not None:
            self.chats = [[{"role": "system", "content": system_prompt}, *c] for c in self.chats]
        self.targets = targets
        pairs = zip(self.chats, self.targets, strict=True)
        self._prompts = [self._tokenise(c, t) for c, t in pairs]
        self._allowed: dict[bool, torch.Tensor] = {}
        self._cached = False
        self._packed_ok: bool | None = None  # packed candidate scoring verified for this model
        self._segments: bool | None = None  # the segment attention is registered
        self._fast: list[tuple[Any, Any]] | None = None  # modules with a fast scoring forward

    # -- set-up -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _render(self, chat: list[dict[str, str]]) -> str:
        chat = [dict(m) for m in chat]
        if not any(SLOT in m["content"] for m in chat):
            chat[-1]["content"] = chat[-1]["content"] + SLOT
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True
            )
        else:  # a base model: plain concatenation
            text = "\n".join(m["content"] for m in chat) + "\n"
        return str(text)

    def _encode(self, text: str) -> torch.Tensor:
        import torch

        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def _tokenise(self, chat: list[dict[str, str]], target: str) -> _Prompt:
        text = self._render(chat)
        before, _, after = text.partition(SLOT)
        p = _Prompt(self._encode(before), self._encode(after), self._encode(target))
        limit = getattr(self.model.config, "max_position_embeddings", None)
        n = p.before_ids.shape[1] + p.after_ids.shape[1] + p.target_ids.shape[1]
        if limit is not None and n >= int(limit):
            raise ValueError(
                f"The prompt and target take {n} tokens, more than the model's context of {limit} "
                f"tokens (max_position_embeddings), before any suffix. Shorten the prompt."
            )
        self._limit = limit
        return p

    def _prepare(self) -> None:
        """Embed the fixed parts and run each prefix once to cache its keys and values."""
        if self._cached:
            return
        import inspect

        import torch

        # transformers >= 5.2x names the cache argument ``cache``; older ``past_key_values``
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        embed = self.model.get_input_embeddings()
        with torch.no_grad():
            for p in self._prompts:
                p.before_embeds = embed(p.before_ids)
                p.after_embeds = embed(p.after_ids)
                p.target_embeds = embed(p.target_ids)
                if p.before_ids.shape[1]:
                    out = self.model(input_ids=p.before_ids, use_cache=True, logits_to_keep=1)
                    cache = getattr(out, "cache", None) or out.past_key_values
                    p.kv = [(layer.keys, layer.values) for layer in cache.layers]
                    p.last_logits = out.logits[0, -1].float()
        self._cached = True

    def allowed_tokens(self, allow_non_ascii: bool = False) -> torch.Tensor:
        """Bool mask ``(V,)`` of tokens a suffix may use: no special tokens, no ids beyond the
        tokenizer, and (unless ``allow_non_ascii``) only printable ASCII text."""
        if allow_non_ascii in self._allowed:
            return self._allowed[allow_non_ascii]
        import torch

        n_embed = self.model.get_input_embeddings().weight.shape[0]
        n_tok = min(len(self.tokenizer), n_embed)
        mask = torch.zeros(n_embed, dtype=torch.bool)
        texts = _decode_each(self.tokenizer, n_tok)
        ok = [bool(t) and (allow_non_ascii or (t.isascii() and t.isprintable())) for t in texts]
        mask[:n_tok] = torch.tensor(ok)
        special = [i for i in self.tokenizer.all_special_ids if i is not None and i < n_embed]
        mask[special] = False
        self._allowed[allow_non_ascii] = mask.to(self.device)
        return self._allowed[allow_non_ascii]

    def subset(self, k: int) -> TargetObjective:
        """The objective over the first ``k`` prompts only (shares the model, the tokenisation
        and the prefix caches)."""
        import copy

        sub = copy.copy(self)
        sub.chats, sub.targets, sub._prompts = self.chats[:k], self.targets[:k], self._prompts[:k]
        return sub

    def encode_suffix(self, suffix: str) -> torch.Tensor:
        """Token ids ``(L,)`` of a suffix string."""
        return self._encode(suffix)[0]

    def decode(self, ids: torch.Tensor) -> str:
        return str(self.tokenizer.decode(ids.tolist()))

    # -- losses -------------------------------------------------------------------------------
    def _cache(self, p: _Prompt, batch: int, kv: Any = None) -> Any:
        from transformers.cache_utils import DynamicCache

        kv = p.kv if kv is None else kv
        assert kv is not None
        return DynamicCache(
            ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                            for k, v in kv],
            config=self.model.config,
        )

    def _packed_losses(self, p: _Prompt, suffixes: torch.Tensor, batch_size: int | None
                       ) -> torch.Tensor:
        """Target loss ``(B,)`` of candidates that mostly agree with one reference suffix,
        scored in packed forwards with no padding and no repeated work.

        GCG's candidates copy the current suffix and change one (or ``n_replace``) positions, so
        a candidate whose first change is at suffix position ``s`` shares the keys and values of
        the prompt prefix and the first ``s`` suffix tokens with the reference (the column-wise
        mode). One forward of the reference caches them once, at batch 1. Every candidate then
        contributes only its tokens from ``s`` on (plus the template tail and the target), and
        all candidates are laid end to end in ONE sequence: a block mask lets each token see the
        reference's first ``Lb + s`` positions and the earlier tokens of its own candidate, and
        explicit position ids keep RoPE exact. Compared with a padded batch through an expanded
        prefix cache (nanoGCG), this skips half the suffix on average, every pad token, the
        ``B``-fold copy of the cache, and the LM head at every position but the target's.
        Exact up to float rounding (checked against the plain forward on first use).
        """
        import torch
        import torch.nn.functional as F

        embed = self.model.get_input_embeddings()
        dev = suffixes.device
        B, L = suffixes.shape
        Lb, La, m = p.before_ids.shape[1], p.after_ids.shape[1], p.target_ids.shape[1]
        # tokens of suffix + template tail + target but its last token, which is predicted
        # and never read
        T = L + La + m - 1
        ref = suffixes.mode(dim=0).values  # (L,)
        diff = suffixes != ref  # (B, L)
        first = torch.where(diff.any(dim=1), diff.int().argmax(dim=1), L)  # (B,)
        first = first.clamp(max=T - 1)  # every candidate runs at least its last input token
        # longest first (stable): the attention pads candidates of similar length together
        order = torch.argsort(first, stable=True)
        suffixes, first = suffixes[order], first[order]
        P = Lb + L
        if p.suffix_kv is not None and torch.equal(p.suffix_kv[0], ref):
            past = p.suffix_kv[1]  # the gradient pass ran this suffix already
        else:
            cache = self._cache(p, 1)
            self.model(inputs_embeds=embed(ref[None]), logits_to_keep=1,
                       **{self._cache_kw: cache})
            past = [(layer.keys[:, :, :P], layer.values[:, :, :P]) for layer in cache.layers]
        rows = torch.cat([suffixes, p.after_ids.expand(B, -1),
                          p.target_ids[:, :-1].expand(B, -1)], 1)  # (B, T)
        col = torch.arange(T, device=dev)
        n_tok = T - first  # (B,) tokens each candidate runs
        # chunks of whole candidates: at most ``batch_size`` candidates and _PACK_TOKENS tokens
        cum = torch.cumsum(n_tok, 0)
        bounds, lo = [], 0
        cap = _PACK_TOKENS if not self._segments_ok() else _SEGMENT_TOKENS
        while lo < B:
            budget = (cum[lo - 1] if lo else 0) + cap
            hi = max(lo + 1, int(torch.searchsorted(cum, budget, right=True)))
            hi = min(hi, B, lo + (batch_size or B))
            bounds.append((lo, hi))
            lo = hi
        out = torch.empty(B, device=dev)
        dtype = embed.weight.dtype
        segments = self._segments_ok()
        for lo, hi in bounds:
            s, b = first[lo:hi], hi - lo
            n_seg = n_tok[lo:hi]
            keep = col[None] >= s[:, None]  # (b, T) the positions each candidate recomputes
            ids = rows[lo:hi][keep]  # (Q,) candidates end to end
            pos = col.expand(b, -1)[keep]  # (Q,) column within suffix + tail + target
            start = torch.cumsum(n_seg, 0) - n_seg  # (b,) segment offsets
            # the logit at column L + La - 1 + t predicts target token t
            tgt = (start - s)[:, None] + (L + La - 1) + torch.arange(m, device=dev)  # (b, m)
            kwargs: dict[str, Any] = {self._cache_kw: self._cache(p, 1, past)}
            if segments:
                kwargs["fmlab_segments"] = _Segments(n_seg, Lb + s, P)
            else:  # a block mask over the pack: each token sees its prefix and its candidate
                Q = ids.shape[0]
                seg = torch.repeat_interleave(torch.arange(b, device=dev), n_seg)  # (Q,)
                q = torch.arange(Q, device=dev)
                see_past = torch.arange(P, device=dev)[None] < (Lb + s[seg])[:, None]
                see_new = (seg[:, None] == seg[None]) & (q[None] <= q[:, None])  # (Q, Q)
                allowed = torch.cat([see_past, see_new], dim=1)
                mask = torch.zeros(1, 1, Q, P + Q, dtype=dtype, device=dev)
                kwargs["attention_mask"] = mask.masked_fill_(~allowed[None, None],
                                                             torch.finfo(dtype).min)
            with self._attention(segments):
                logits = self.model(inputs_embeds=embed(ids)[None], position_ids=(Lb + pos)[None],
                                    logits_to_keep=tgt.flatten(), **kwargs).logits[0].float()
            out[lo:hi] = F.cross_entropy(
                logits, p.target_ids.expand(b, -1).reshape(-1), reduction="none"
            ).view(b, m).mean(dim=1)
        return out.new_empty(B).index_copy_(0, order, out)  # back to the caller's order

    def _segments_ok(self) -> bool:
        if self._segments is None:
            self._segments = _register_segment_attention()
        return self._segments

    @contextlib.contextmanager
    def _attention(self, segments: bool) -> Iterator[None]:
        """Switch the model to the packed-candidate attention, and its RMS norms and gated MLPs
        to their fast forwards (see :meth:`_fast_forwards`), for one no-grad forward."""
        fast = self._fast_forwards()
        for module, forward in fast:  # an instance attribute shadows the class's forward
            module.forward = forward
        config = self.model.config
        before = config._attn_implementation
        if segments:
            config._attn_implementation = _SEGMENT_ATTENTION
        try:
            yield
        finally:
            config._attn_implementation = before
            for module, _ in fast:
                del module.forward

    def _fast_forwards(self) -> list[tuple[Any, Any]]:
        """``(module, forward)`` pairs for the scoring forward: RMS norms through the
        ``rms_norm`` kernel (about half the time of the usual five-op Python forward) and gated
        SiLU MLPs with the activation and the product in place (no two fresh ``(Q, 4d)``
        tensors per layer). Each module class is checked once against its own forward on a
        random input and keeps that forward unless they agree, so a variant (Gemma's
        ``1 + weight`` norm, a GELU MLP) is left alone."""
        if self._fast is None:
            import torch

            ok: dict[type, bool] = {}
            self._fast = []
            for module in self.model.modules():
                forward = _fast_forward(module)
                if forward is None:
                    continue
                if type(module) not in ok:
                    g = torch.Generator(device="cpu").manual_seed(0)
                    param = next(module.parameters())
                    x = torch.randn(3, forward.width, generator=g).to(param)
                    with torch.no_grad():
                        ok[type(module)] = torch.allclose(forward(x), module(x), rtol=1e-5,
                                                          atol=1e-6)
                if ok[type(module)]:
                    self._fast.append((module, forward))
        return self._fast

    def _packing_works(self, p: _Prompt, suffixes: torch.Tensor) -> bool:
        """Whether packed scoring agrees with the plain forward for this model, checked once on
        a few candidates: first with the segment attention, then with a block mask; a model
        that supports neither (custom attention, sliding windows) is scored plainly."""
        if self._packed_ok is None:
            import torch

            few = suffixes[: min(2, suffixes.shape[0])]
            embed = self.model.get_input_embeddings()
            plain = self._forward_loss(p, embed(few), few, use_prefix_cache=True, ppl_weight=0.0)
            self._packed_ok = False
            for segments in ((True, False) if self._segments_ok() else (False,)):
                self._segments = segments
                try:
                    packed = self._packed_losses(p, few, None)
                except (TypeError, ValueError, RuntimeError, KeyError):
                    continue
                if torch.allclose(packed, plain, rtol=1e-3, atol=1e-4):
                    self._packed_ok = True
                    break
        return self._packed_ok

    def _forward_loss(
        self, p: _Prompt, suffix_embeds: torch.Tensor, suffix_ids: torch.Tensor,
        *, use_prefix_cache: bool, ppl_weight: float,
    ) -> torch.Tensor:
        """Per-row loss ``(B,)`` of suffix embeddings ``(B, L, d)`` for one prompt."""
        import torch
        import torch.nn.functional as F

        B, L = suffix_ids.shape
        m, La = p.target_ids.shape[1], p.after_ids.shape[1]
        # the target's last token is predicted, never read: it is not fed
        parts = [suffix_embeds, p.after_embeds.expand(B, -1, -1),
                 p.target_embeds[:, :-1].expand(B, -1, -1)]
        kwargs: dict[str, Any] = {}
        offset = 0
        if use_prefix_cache and p.kv is not None:
            kwargs[self._cache_kw] = cache = self._cache(p, B)
        else:
            parts.insert(0, p.before_embeds.expand(B, -1, -1))
            offset = p.before_ids.shape[1]
        total = p.before_ids.shape[1] + L + La + m
        if self._limit is not None and total > int(self._limit):
            raise ValueError(
                f"Prompt, suffix ({L} tokens) and target take {total} tokens, more than the "
                f"model's context of {self._limit}. Use a shorter suffix or prompt."
            )
        embeds = torch.cat(parts, dim=1)  # (B, [Lb +] L + La + m - 1, d)
        # positions (in this forward) whose logits predict the target tokens, and the suffix's
        tgt_pos = torch.arange(m, device=embeds.device) + offset + L + La - 1
        keep = tgt_pos
        if ppl_weight:
            keep = torch.cat([torch.arange(L - 1, device=embeds.device) + offset, tgt_pos])
        try:
            logits = self.model(inputs_embeds=embeds, logits_to_keep=keep, **kwargs).logits
        except TypeError:  # a model without logits_to_keep
            logits = self.model(inputs_embeds=embeds, **kwargs).logits[:, keep]
        if B == 1 and self._cache_kw in kwargs:  # keep the suffix's keys and values for
            P = p.before_ids.shape[1] + L  # the packed scoring of the candidates around it
            p.suffix_kv = (suffix_ids[0].detach().clone(), [
                (layer.keys[:, :, :P].detach(), layer.values[:, :, :P].detach())
                for layer in cache.layers])
        logits = logits.float()
        target = p.target_ids.expand(B, -1)
        loss = F.cross_entropy(
            logits[:, -m:].reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
        ).view(B, m).mean(dim=1)
        if ppl_weight:
            nll = F.cross_entropy(
                logits[:, : L - 1].reshape(-1, logits.shape[-1]),
                suffix_ids[:, 1:].reshape(-1),
                reduction="none",
            ).view(B, L - 1)
            if p.last_logits is not None:
                first = F.cross_entropy(
                    p.last_logits.expand(B, -1), suffix_ids[:, 0], reduction="none"
                )
                nll = torch.cat([first[:, None], nll], dim=1)
            loss = loss + ppl_weight * nll.mean(dim=1)
        return loss

    def losses(
        self,
        suffixes: torch.Tensor,
        *,
        use_prefix_cache: bool = True,
        ppl_weight: float = 0.0,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Loss ``(B,)`` of each suffix in ``suffixes`` ``(B, L)``, scored in batched forwards
        (each distinct suffix once)."""
        import torch

        uniq, inverse = torch.unique(suffixes, dim=0, return_inverse=True)
        if uniq.shape[0] < suffixes.shape[0]:
            return self.losses(uniq, use_prefix_cache=use_prefix_cache, ppl_weight=ppl_weight,
                               batch_size=batch_size)[inverse]
        self._prepare()
        embed = self.model.get_input_embeddings()
        out = torch.zeros(suffixes.shape[0], device=suffixes.device)
        step = batch_size or suffixes.shape[0]
        with torch.no_grad():
            for i in range(0, suffixes.shape[0], step):
                chunk = suffixes[i : i + step]
                e = embed(chunk)
                for p in self._prompts:
                    if (use_prefix_cache and p.kv is not None and not ppl_weight
                            and len(chunk) > 4 and self._packing_works(p, chunk)):
                        out[i : i + step] += self._packed_losses(p, chunk, batch_size)
                        continue
                    out[i : i + step] += self._forward_loss(
                        p, e, chunk, use_prefix_cache=use_prefix_cache, ppl_weight=ppl_weight
                    )
        return out / len(self._prompts)

    def token_gradients(
        self, suffix: torch.Tensor, *, use_prefix_cache: bool = True, ppl_weight: float = 0.0
    ) -> tuple[torch.Tensor, float]:
        """Gradient ``(L, V)`` of the loss w.r.t. the one-hot suffix, and the loss itself."""
        import torch

        self._prepare()
        embed = self.model.get_input_embeddings()
        weight = embed.weight  # (V, d)
        scale = getattr(embed, "embed_scale", None)  # Gemma multiplies embeddings by sqrt(d)
        # e = scale * (one_hot @ W), so dL/d one_hot = scale * (dL/de) @ W^T: look the suffix up,
        # take the gradient w.r.t. its embeddings (summed over prompts), and multiply by W^T
        # once, instead of a (L, V) @ (V, d) one-hot product in the forward pass as well
        with torch.no_grad():
            embeds = embed(suffix[None])  # (1, L, d)
        embeds.requires_grad_(True)
        total, g_embeds = 0.0, torch.zeros_like(embeds)
        for p in self._prompts:
            loss = self._forward_loss(
                p, embeds, suffix[None], use_prefix_cache=use_prefix_cache, ppl_weight=ppl_weight
            )[0] / len(self._prompts)
            # gradients for the embeddings only: the model's parameters accumulate nothing
            (g,) = torch.autograd.grad(loss, embeds)
            g_embeds += g
            total += float(loss.detach())
        if scale is not None:
            g_embeds = g_embeds * scale
        grad = g_embeds[0].to(weight.dtype) @ weight.T  # (L, V)
        return grad, total

    def is_success(self, suffix: torch.Tensor) -> bool:
        """Whether greedy decoding emits every target exactly (checked on the teacher-forced
        logits: the argmax at each target position is the target token)."""
        import torch

        self._prepare()
        embed = self.model.get_input_embeddings()
        with torch.no_grad():
            e = embed(suffix[None])
            for p in self._prompts:
                B, L = 1, suffix.shape[0]
                m, La = p.target_ids.shape[1], p.after_ids.shape[1]
                kwargs: dict[str, Any] = {}
                parts = [e, p.after_embeds, p.target_embeds]
                offset = 0
                if p.kv is not None:
                    kwargs[self._cache_kw] = self._cache(p, B)
                else:
                    parts.insert(0, p.before_embeds)
                    offset = p.before_ids.shape[1]
                logits = self.model(inputs_embeds=torch.cat(parts, dim=1), **kwargs).logits
                pred = logits[0, offset + L + La - 1 : offset + L + La - 1 + m].argmax(-1)
                if not torch.equal(pred, p.target_ids[0]):
                    return False
        return True

    def retokenizes(self, candidates: torch.Tensor) -> torch.Tensor:
        """Bool ``(B,)``: whether decoding then re-encoding each candidate gives it back."""
        import torch

        texts = self.tokenizer.batch_decode(candidates.tolist())
        again = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        L = candidates.shape[1]
        rows = [a if len(a) == L else [-1] * L for a in again]
        return (torch.tensor(rows, device=candidates.device) == candidates).all(dim=1)


@dataclass
class GCGResult(AttackResult):
    """An :class:`AttackResult` plus nanoGCG's fields: the best suffix as text."""

    best_string: str = ""
    final_string: str = ""
    strings: list[str] = field(default_factory=list)


class GCG(BaseAttack):
    """Greedy Coordinate Gradient suffix search on any causal LM.

    Args:
        num_steps: Optimisation steps.
        optim_str_init: The initial suffix (text), e.g. 20 ``"x"`` tokens.
        search_width: Candidates per step, scored in one batched forward (chunks of
            ``batch_size`` when given).
        batch_size: Candidates per forward (``None``: all at once).
        topk: Tokens considered per position (from the negative gradient).
        n_replace: Positions swapped per candidate.
        early_stop: Stop when greedy decoding would emit the target(s) exactly.
        progressive_goals: Universal mode as in llm-attacks: optimise for the first prompt only,
            add the next prompt once the suffix makes every current one succeed (greedy decoding
            emits its target), and stop when all succeed; ``num_steps`` is the budget of all
            stages together. Each stage is a run of the shared loop (snapshots in
            ``snapshot_dir/goals-K``), so a killed run resumes at its stage.
        use_prefix_cache: Reuse the KV cache of the prompt before the suffix.
        allow_non_ascii: Allow non-ASCII tokens (special tokens are always excluded).
        filter_ids: Drop candidates whose decode → re-encode round trip changes the tokens.
        ppl_weight: Weight of the suffix-perplexity term (an adaptive attack on perplexity
            filters; 0 disables it).
        max_queries: Stop after this many single-input objective evaluations.
        max_time_s: Stop after this many seconds.
        random_state: Seed of the candidate sampling.

    Example:
        >>> obj = TargetObjective(model, tok, "What colour is a plum?", "Purple")  # doctest: +SKIP
        >>> res = GCG(num_steps=100, search_width=64, topk=64)(obj)  # doctest: +SKIP
        >>> res.best_string, res.best_loss  # doctest: +SKIP

    References:
        Zou et al., arXiv 2307.15043. Field names as in nanoGCG's ``GCGConfig``.
    """

    name = "gcg"
    steps_param = "num_steps"

    def __init__(
        self,
        num_steps: int = 250,
        optim_str_init: str = "x x x x x x x x x x x x x x x x x x x x",
        search_width: int = 512,
        batch_size: int | None = None,
        topk: int = 256,
        n_replace: int = 1,
        early_stop: bool = False,
        progressive_goals: bool = False,
        use_prefix_cache: bool = True,
        allow_non_ascii: bool = False,
        filter_ids: bool = True,
        ppl_weight: float = 0.0,
        max_queries: int | None = None,
        max_time_s: float | None = None,
        random_state: int | None = 0,
    ) -> None:
        owner = "GCG"
        self.num_steps = check_int(num_steps, "num_steps", owner=owner, low=0)
        if not isinstance(optim_str_init, str) or not optim_str_init.strip():
            raise ValueError(
                f"The 'optim_str_init' parameter of GCG must be a non-empty str (the initial "
                f"suffix, e.g. 'x x x x x'); a suffix of length 0 has nothing to optimise. Got "
                f"{optim_str_init!r} instead."
            )
        self.optim_str_init = optim_str_init
        self.search_width = check_int(search_width, "search_width", owner=owner, low=1)
        self.batch_size = (
            None if batch_size is None else check_int(batch_size, "batch_size", owner=owner, low=1)
        )
        self.topk = check_int(topk, "topk", owner=owner, low=1)
        self.n_replace = check_int(n_replace, "n_replace", owner=owner, low=1)
        self.early_stop = check_bool(early_stop, "early_stop", owner=owner)
        self.progressive_goals = check_bool(progressive_goals, "progressive_goals", owner=owner)
        self.use_prefix_cache = check_bool(use_prefix_cache, "use_prefix_cache", owner=owner)
        self.allow_non_ascii = check_bool(allow_non_ascii, "allow_non_ascii", owner=owner)
        self.filter_ids = check_bool(filter_ids, "filter_ids", owner=owner)
        self.ppl_weight = check_real(ppl_weight, "ppl_weight", owner=owner, low=0, closed="left")
        self.max_queries = max_queries
        self.max_time_s = max_time_s
        self.random_state = random_state

    # -- hooks --------------------------------------------------------------------------------
    def _check_objective(self, objective: Any) -> TargetObjective:
        if not isinstance(objective, TargetObjective):
            raise TypeError(
                f"GCG attacks a TargetObjective(model, tokenizer, messages, target). Got "
                f"{type(objective).__name__} instead."
            )
        return objective

    def losses(self, objective: TargetObjective, xs: torch.Tensor) -> torch.Tensor:
        return objective.losses(
            xs, use_prefix_cache=self.use_prefix_cache, ppl_weight=self.ppl_weight,
            batch_size=self.batch_size,
        )

    def propose(
        self,
        objective: TargetObjective,
        x: torch.Tensor,
        buffers: dict[str, torch.Tensor],
        rng: torch.Generator,
    ) -> Proposal:
        import torch

        grad, loss = objective.token_gradients(
            x, use_prefix_cache=self.use_prefix_cache, ppl_weight=self.ppl_weight
        )  # (L, V)
        grad = grad.masked_fill(~objective.allowed_tokens(self.allow_non_ascii), float("inf"))
        L = x.shape[0]
        k = min(self.topk, int(objective.allowed_tokens(self.allow_non_ascii).sum()))
        top = (-grad).topk(k, dim=1).indices  # (L, k)
        B = self.search_width
        gen_device = rng.device
        # n_replace distinct positions per candidate, and one top-k token for each
        pos = torch.rand(B, L, generator=rng, device=gen_device).argsort(dim=1)[:, : self.n_replace]
        pick = torch.randint(0, k, (B, self.n_replace), generator=rng, device=gen_device)
        pos, pick = pos.to(x.device), pick.to(x.device)
        candidates = x.repeat(B, 1)  # (B, L)
        candidates.scatter_(1, pos, top[pos, pick])
        return Proposal(candidates, loss, 1)

    def project(
        self, candidates: torch.Tensor, x0: torch.Tensor, objective: Any = None
    ) -> torch.Tensor:
        if objective is None or not self.filter_ids:
            return candidates
        return candidates[objective.retokenizes(candidates)]

    def is_success(self, objective: Any, x: torch.Tensor, loss: float) -> bool:
        return bool(self.early_stop and objective.is_success(x))

    def finalize(self, objective: Any, result: AttackResult) -> GCGResult:
        return GCGResult(
            **result.__dict__,
            best_string=objective.decode(result.x_adv),
            final_string=objective.decode(result.x_final),
        )

    def __call__(  # type: ignore[override]
        self, objective: TargetObjective, x: torch.Tensor | str | None = None, **kwargs: Any
    ) -> GCGResult:
        """Search a suffix for ``objective`` from ``x`` (ids or text; default
        ``optim_str_init``). Keywords as in :func:`fmlab.attacks.run_attack`."""
        obj = self._check_objective(objective)
        if x is None or isinstance(x, str):
            x = obj.encode_suffix(self.optim_str_init if x is None else x)
        if x.numel() == 0:
            raise ValueError(
                "The initial suffix has length 0 (it tokenised to no tokens); GCG needs at least "
                "one suffix token. Pass a non-empty optim_str_init."
            )
        if self.progressive_goals and len(obj.chats) > 1:
            return self._progressive(obj, x, **kwargs)
        return run_attack(self, obj, x, **kwargs)  # type: ignore[return-value]

    def _progressive(self, obj: TargetObjective, x: torch.Tensor, *,
                     snapshot_dir: str | Path | None = None, **kwargs: Any) -> GCGResult:
        """Progressive goals: stages over the first k prompts, k = 1, 2, ..., J, each a run of
        the shared loop that stops on success; the step budget is shared."""
        import copy

        left, k = self.num_steps, 1
        done: list[GCGResult] = []
        while True:
            stage = copy.copy(self)
            stage.progressive_goals, stage.early_stop, stage.num_steps = False, True, left
            folder = None if snapshot_dir is None else Path(snapshot_dir) / f"goals-{k}"
            res: GCGResult = run_attack(stage, obj.subset(k), x, snapshot_dir=folder,
                                        **kwargs)  # type: ignore[assignment]
            done.append(res)
            left -= res.n_steps
            if not res.success or k == len(obj.chats) or left <= 0:
                break
            x, k = res.x_adv, k + 1
        last, stage_steps = done[-1], [r.n_steps for r in done]
        last.losses = [v for r in done for v in r.losses]
        last.n_steps = sum(r.n_steps for r in done)
        last.n_queries = sum(r.n_queries for r in done)
        last.elapsed_s = sum(r.elapsed_s for r in done)
        reached = k if last.success else k - 1
        last.success = reached == len(obj.chats)
        last.extras = {**last.extras, "goals_reached": reached,
                       "stage_steps": stage_steps}
        if last.stop_reason == "success" and not last.success:
            last.stop_reason = "steps"
        return last
