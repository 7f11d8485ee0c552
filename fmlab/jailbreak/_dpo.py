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

_CACHE_FORMAT = 1


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

    answer = enc["answer"][:, 1:]  # (2B, T-1): the logit at t predicts token t + 1
    cols = torch.nonzero(answer.any(dim=0)).flatten()  # positions whose logits are needed
    # the LM head (a fifth of SmolLM2's weights) and the log-softmax only where an answer is
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                   logits_to_keep=cols).logits  # (2B, C, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    tok = enc["input_ids"][:, 1:][:, cols]
    picked = logp.gather(-1, tok[..., None])[..., 0]  # (2B, C)
    return (picked * answer[:, cols]).sum(dim=1)


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
    cache: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Train a LoRA adapter with DPO, merge it, and return ``(model, info)``.

    Args:
        model, tokenizer: The causal LM to defend (modified: the adapter is merged into it).
        pairs: ``{"prompt", "chosen", "rejected"}`` dicts; default: the Purple Questions ``split``.
        suffixes: Adversarial training: each prompt gets a random one of these appended with
            probability ``adversarial_fraction``.
        cache: Keep the trained adapter (a few hundred kB of safetensors) in the fmlab cache,
            keyed by a hash of the model's weights, the pairs, the suffixes and every setting, and
            reuse it on later calls with the same inputs instead of training again (a corrupt or
            stale copy is rebuilt, never used). ``info["cached"]`` says which happened.

    Returns:
        The model with the adapter merged, and ``{"losses", "s_per_step", "n_pairs",
        "cached"}``.
    """
    peft = require("peft", feature="fmlab.jailbreak DPO")
    check_int(max_steps, "max_steps", owner="train_dpo", low=1)
    check_int(batch_size, "batch_size", owner="train_dpo", low=1)
    check_real(lr, "lr", owner="train_dpo", low=0)
    check_real(beta, "beta", owner="train_dpo", low=0)
    if pairs is None:
        from fmlab.jailbreak._tasks import load_task

        pairs = load_task("purple_questions").pairs(split)
    if not pairs:
        raise ValueError("train_dpo needs at least one preference pair.")
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=list(target_modules), task_type="CAUSAL_LM")
    settings = {"max_steps": max_steps, "batch_size": batch_size, "lr": lr, "beta": beta, "r": r,
                "alpha": alpha, "dropout": dropout, "target_modules": list(target_modules),
                "adversarial_fraction": adversarial_fraction, "max_length": max_length,
                "random_state": random_state}
    if cache:
        return _cached_dpo(model, tokenizer, pairs, suffixes, config, settings, progress)
    lora, info = _train(model, tokenizer, pairs, suffixes, config, settings, progress)
    return _merged(lora), info


def _train(model: Any, tokenizer: Any, pairs: list[dict[str, str]], suffixes: list[str] | None,
           config: Any, settings: dict[str, Any], progress: bool | None
           ) -> tuple[Any, dict[str, Any]]:
    """Train the adapter; return ``(peft model, info)`` with the adapter NOT merged."""
    peft = require("peft", feature="fmlab.jailbreak DPO")
    import torch
    from tqdm.auto import tqdm

    max_steps, batch_size = settings["max_steps"], settings["batch_size"]
    beta, max_length = settings["beta"], settings["max_length"]
    rng = random.Random(settings["random_state"])
    torch.manual_seed(settings["random_state"])
    data = [dict(p) for p in pairs]
    if suffixes:
        for p in data:
            if rng.random() < settings["adversarial_fraction"]:
                sfx = rng.choice(suffixes)  # verbatim when it carries its own space (GCG's do)
                p["prompt"] = p["prompt"] + (sfx if sfx[:1].isspace() else " " + sfx)
    lora = peft.get_peft_model(model, config)
    params = [p for p in lora.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings["lr"])
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
    lora.eval()
    return lora, {"losses": losses, "s_per_step": wall / max_steps, "n_pairs": len(data),
                  "cached": False}


def _fingerprint(model: Any, tokenizer: Any, pairs: list[dict[str, str]],
                 suffixes: list[str] | None, settings: dict[str, Any]) -> str:
    """SHA-256 over the model's weights, the tokenizer's vocabulary size and name, the pairs, the
    suffixes and the settings: what the trained adapter depends on."""
    import hashlib
    import json

    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    h.update(json.dumps({"tokenizer": [getattr(tokenizer, "name_or_path", ""), len(tokenizer)],
                         "pairs": pairs, "suffixes": suffixes or [], "settings": settings,
                         "format": _CACHE_FORMAT}, sort_keys=True).encode())
    return h.hexdigest()


def _merged(lora: Any) -> Any:
    merged = lora.merge_and_unload()
    merged.eval()
    return merged


def _cached_dpo(model: Any, tokenizer: Any, pairs: list[dict[str, str]],
                suffixes: list[str] | None, config: Any, settings: dict[str, Any],
                progress: bool | None) -> tuple[Any, dict[str, Any]]:
    """Train once and keep the adapter in ``<cache>/jailbreak/dpo/<hash>``; later calls load it."""
    import json

    peft = require("peft", feature="fmlab.jailbreak DPO")
    st = require("safetensors.torch", feature="the DPO adapter cache")
    from fmlab._cache import cached_build
    from fmlab._paths import cache_dir

    fp = _fingerprint(model, tokenizer, pairs, suffixes, settings)
    trained: list[tuple[Any, dict[str, Any]]] = []

    def build(folder: Any) -> None:
        lora, info = _train(model, tokenizer, pairs, suffixes, config, settings, progress)
        weights = peft.get_peft_model_state_dict(lora)
        st.save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                     str(folder / "adapter.safetensors"))
        (folder / "info.json").write_text(json.dumps(info))
        trained.append((_merged(lora), info))

    folder = cached_build(cache_dir("jailbreak", "dpo") / fp[:32], build,
                          key={"kind": "dpo-lora", "id": fp}, what="DPO adapter", announce=False)
    if trained:
        return trained[0]
    info = json.loads((folder / "info.json").read_text())
    lora = peft.get_peft_model(model, config)
    peft.set_peft_model_state_dict(lora, st.load_file(str(folder / "adapter.safetensors")))
    return _merged(lora), {**info, "cached": True}
