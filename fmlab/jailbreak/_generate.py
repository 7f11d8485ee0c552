"""Greedy, batched chat generation and prompt log-perplexity: the fixed decoding every defense
and attack is judged under."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["generate", "log_perplexity", "render"]

Chat = list[dict[str, str]]


def render(tokenizer: Any, chat: Chat) -> str:
    """The chat as the model sees it (its chat template, generation prompt appended)."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    return "\n".join(m["content"] for m in chat) + "\n"


def _left_padded(tokenizer: Any) -> Any:
    tok = copy.copy(tokenizer)  # never mutate the caller's tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def generate(
    model: Any, tokenizer: Any, chats: list[Chat], *, max_new_tokens: int = 64,
    batch_size: int = 16,
) -> list[str]:
    """Greedy completions of ``chats`` (batched, left-padded), special tokens stripped."""
    import torch

    tok = _left_padded(tokenizer)
    device = next(model.parameters()).device
    limit = getattr(model.config, "max_position_embeddings", None)
    outs: list[str] = []
    for i in range(0, len(chats), batch_size):
        texts = [render(tokenizer, c) for c in chats[i : i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        if limit is not None and enc["input_ids"].shape[1] + max_new_tokens > int(limit):
            raise ValueError(
                f"A prompt takes {enc['input_ids'].shape[1]} tokens; with max_new_tokens="
                f"{max_new_tokens} it exceeds the model's context of {limit} tokens. Shorten it."
            )
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None,
                                 top_k=None)
        new = gen[:, enc["input_ids"].shape[1]:]
        outs.extend(tok.batch_decode(new, skip_special_tokens=True))
    return outs


def log_perplexity(
    model: Any, tokenizer: Any, texts: list[str], *, batch_size: int = 16
) -> list[float]:
    """Mean token NLL of each text under the model (the perplexity filter's statistic)."""
    import torch
    import torch.nn.functional as F

    tok = copy.copy(tokenizer)
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(device)
        with torch.no_grad():
            logits = model(**enc).logits[:, :-1].float()
        target = enc["input_ids"][:, 1:]
        mask = enc["attention_mask"][:, 1:].float()
        nll = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        out.extend(((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist())
    return out
