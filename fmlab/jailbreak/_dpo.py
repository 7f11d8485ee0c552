"""DPO with a LoRA adapter (``peft``), the fine-tuning defense of the Purple Problem.

.. math:: \\mathcal{L} = -\\log\\sigma\\Big(\\beta\\big[(\\log\\pi_\\theta(y_w|x)
    - \\log\\pi_{\\mathrm{ref}}(y_w|x)) - (\\log\\pi_\\theta(y_l|x)
    - \\log\\pi_{\\mathrm{ref}}(y_l|x))\\big]\\Big)

``y_w`` is the chosen answer (no "purple"), ``y_l`` the rejected one, and the reference policy is
the same network with the adapter switched off, so no second copy of the model is held.

References:
    Rafailov et al., Direct Preference Optimization, arXiv 2305.18290; Kim, Kotha, Raghunathan,
    arXiv 2403.14725 (settings: LoRA r=4, alpha=32, dropout 0.05 on q_proj/v_proj, lr 3e-4,
    beta 0.3).
"""

from __future__ import annotations

import random
import time
from typing import Any

from fmlab._imports import require
from fmlab._validation import check_int, check_real

__all__ = ["train_dpo"]


def _encode_pairs(tokenizer: Any, batch: list[dict[str, str]], max_length: int) -> dict[str, Any]:
    import torch

    from fmlab.jailbreak._generate import render

    seqs, starts = [], []
    end = tokenizer.eos_token or ""
    for pair in batch:
        prompt_ids = tokenizer(render(tokenizer, [{"role": "user", "content": pair["prompt"]}]),
                               add_special_tokens=False)["input_ids"]
        for answer in (pair["chosen"], pair["rejected"]):
            ans = tokenizer(answer + end, add_special_tokens=False)["input_ids"]
            ids = (prompt_ids + ans)[-max_length:]
            seqs.append(ids)
            starts.append(max(len(ids) - len(ans), 1))
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    answer = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, st) in enumerate(zip(seqs, starts, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        answer[i, st : len(s)] = True
    return {"input_ids": ids, "attention_mask": mask, "answer": answer}


def _answer_logps(model: Any, enc: dict[str, Any]) -> Any:
    """Sum of log-probabilities of the answer tokens, per sequence ``(2B,)``."""
    import torch

    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = enc["input_ids"][:, 1:]
    picked = logp.gather(-1, tok[..., None])[..., 0]  # (2B, T-1)
    return (picked * enc["answer"][:, 1:]).sum(dim=1)


def train_dpo(
    model: Any,
    tokenizer: Any,
    pairs: list[dict[str, str]] | None = None,
    *,
    split: str = "train",
    max_steps: int = 100,
    batch_size: int = 4,
    lr: float = 3e-4,
    beta: float = 0.3,
    r: int = 4,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    suffixes: list[str] | None = None,
    adversarial_fraction: float = 0.5,
    max_length: int = 96,
    random_state: int = 0,
    progress: bool | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train a LoRA adapter with DPO, merge it, and return ``(model, info)``.

    Args:
        model, tokenizer: The causal LM to defend (modified: the adapter is merged into it).
        pairs: ``{"prompt", "chosen", "rejected"}`` dicts; default: the Purple Questions ``split``.
        suffixes: Adversarial training: each prompt gets a random one of these appended with
            probability ``adversarial_fraction``.

    Returns:
        The model with the adapter merged, and ``{"losses", "s_per_step", "n_pairs"}``.
    """
    peft = require("peft", feature="fmlab.jailbreak DPO")
    import torch
    from tqdm.auto import tqdm

    check_int(max_steps, "max_steps", owner="train_dpo", low=1)
    check_int(batch_size, "batch_size", owner="train_dpo", low=1)
    check_real(lr, "lr", owner="train_dpo", low=0)
    check_real(beta, "beta", owner="train_dpo", low=0)
    if pairs is None:
        from fmlab.jailbreak._tasks import load_task

        pairs = load_task("purple_questions").pairs(split)
    if not pairs:
        raise ValueError("train_dpo needs at least one preference pair.")
    rng = random.Random(random_state)
    torch.manual_seed(random_state)
    data = [dict(p) for p in pairs]
    if suffixes:
        for p in data:
            if rng.random() < adversarial_fraction:
                p["prompt"] = p["prompt"] + " " + rng.choice(suffixes)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=list(target_modules), task_type="CAUSAL_LM")
    lora = peft.get_peft_model(model, config)
    params = [p for p in lora.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    lora.train()
    losses: list[float] = []
    order: list[int] = []
    t0 = time.perf_counter()
    for _ in tqdm(range(max_steps), desc="dpo", disable=(not progress) if progress is not None
                  else None, leave=False):
        if len(order) < batch_size:
            fresh = list(range(len(data)))
            rng.shuffle(fresh)
            order += fresh
        batch = [data[order.pop()] for _ in range(batch_size)]
        enc = _encode_pairs(tokenizer, batch, max_length)
        with torch.no_grad(), lora.disable_adapter():
            ref = _answer_logps(lora, enc)
        pol = _answer_logps(lora, enc)
        margin = (pol[0::2] - ref[0::2]) - (pol[1::2] - ref[1::2])
        loss = -torch.nn.functional.logsigmoid(beta * margin).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    wall = time.perf_counter() - t0
    merged = lora.merge_and_unload()
    merged.eval()
    return merged, {"losses": losses, "s_per_step": wall / max_steps, "n_pairs": len(data)}
