"""Greedy, batched chat generation and prompt log-perplexity: the fixed decoding every defense
and attack is judged under."""

from __future__ import annotations

from typing import Any

__all__ = ["generate", "log_perplexity", "render"]

Chat = list[dict[str, str]]


def render(tokenizer: Any, chat: Chat) -> str:
    """The chat as the model sees it (its chat template, generation prompt appended)."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    return "\n".join(m["content"] for m in chat) + "\n"


def generate(
    model: Any, tokenizer: Any, chats: list[Chat], *, max_new_tokens: int = 64,
    batch_size: int = 16,
) -> list[str]:
    """Greedy completions of ``chats`` (batched), special tokens stripped; a row stops at EOS.

    Runs on the greedy core of :class:`fmlab.context.HFCausalLM`: the tokens every chat of a
    batch starts with (the system prompt, a defense's demonstrations, an attack's benign
    preamble) run once and share their KV cache, and the rest of each row is left-padded after
    them."""
    import torch

    from fmlab._device import eval_mode
    from fmlab.context._lm import HFCausalLM

    limit = getattr(model.config, "max_position_embeddings", None)
    lm = HFCausalLM(model, tokenizer, batch_size=batch_size, max_new_tokens=max_new_tokens,
                    stop=(tokenizer.eos_token or "</s>",), chat=False)
    rows = [list(tokenizer(render(tokenizer, c), add_special_tokens=False)["input_ids"])
            for c in chats]
    for r in rows:
        if limit is not None and len(r) + max_new_tokens > int(limit):
            raise ValueError(
                f"A prompt takes {len(r)} tokens; with max_new_tokens={max_new_tokens} it "
                f"exceeds the model's context of {limit} tokens. Shorten it."
            )
    outs: list[str] = [""] * len(rows)
    with eval_mode(model), torch.inference_mode():
        for batch in lm._batches([len(r) for r in rows]):
            new = lm._greedy([rows[i] for i in batch], None)
            texts = lm.tokenizer.batch_decode(new, skip_special_tokens=True)
            for i, t in zip(batch, texts, strict=True):
                outs[i] = t
    return outs


def log_perplexity(
    model: Any, tokenizer: Any, texts: list[str], *, batch_size: int = 16
) -> list[float]:
    """Mean token NLL of each text under the model (the perplexity filter's statistic).

    The tokens all texts of a batch start with (a chat template's system prompt, a repeated
    preamble) run once; their per-token NLL is shared and the rest of each text runs on their
    KV cache."""
    import os

    import torch
    import torch.nn.functional as F

    from fmlab.context._lm import _MIN_SHARED, _cache_kwarg

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    out: list[float] = []

    def nll(logits: Any, target: Any) -> Any:  # (B, T, V), (B, T) -> (B, T), contiguous rows
        return F.cross_entropy(logits.float().flatten(0, 1), target.flatten(),
                               reduction="none").view(target.shape)

    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            shared = os.path.commonprefix(chunk)[: min(len(r) for r in chunk) - 1]
            if len(chunk) < 2 or len(shared) < _MIN_SHARED:
                shared = []
            n0, b = len(shared), len(chunk)
            kw: dict[str, Any] = {}
            head_sum = torch.zeros(())
            if shared:
                head = model(input_ids=torch.as_tensor([shared], device=device), use_cache=True)
                ids0 = torch.as_tensor([shared], device=device)
                head_sum = nll(head.logits[:, :-1], ids0[:, 1:]).sum()
                cache = head.get("cache") if "cache" in head else head.get("past_key_values")
                cache.batch_repeat_interleave(b)
                kw = {_cache_kwarg(model): cache}
            width = max(len(r) for r in chunk) - n0
            ids = torch.full((b, width), pad, dtype=torch.long)
            mask = torch.zeros((b, n0 + width), dtype=torch.long)
            mask[:, :n0] = 1
            for j, r in enumerate(chunk):  # right padding after the shared part
                ids[j, : len(r) - n0] = torch.as_tensor(r[n0:])
                mask[j, : len(r)] = 1
            ids, mask = ids.to(device), mask.to(device)
            pos = torch.arange(n0, n0 + width, device=device)[None].expand(b, -1)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **kw).logits
            tail = nll(logits[:, :-1], ids[:, 1:]) * mask[:, n0 + 1:]  # (b, width - 1)
            total = tail.sum(1) + head_sum
            if shared:  # the first own token is predicted by the shared part's last logits
                first = F.cross_entropy(head.logits[0, -1:].float().expand(b, -1), ids[:, 0],
                                        reduction="none")
                total = total + first
            n = torch.as_tensor([len(r) - 1 for r in chunk], device=device).clamp(min=1)
            out.extend((total / n).tolist())
    return out
