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

_CACHE_FORMAT = 2  # 2: left padding, last_layers


def _encode_pairs(tokenizer: Any, batch: list[dict[str, str]], max_length: int
                  ) -> tuple[list[list[int]], list[int]]:
    """Token rows (chosen, rejected per pair, interleaved) and each row's answer length."""
    from fmlab.jailbreak._generate import render

    rows, n_answer = [], []
    end = tokenizer.eos_token or ""
    for pair in batch:
        prompt_ids = tokenizer(render(tokenizer, [{"role": "user", "content": pair["prompt"]}]),
                               add_special_tokens=False)["input_ids"]
        for answer in (pair["chosen"], pair["rejected"]):
            ans = tokenizer(answer + end, add_special_tokens=False)["input_ids"]
            ids = (prompt_ids + ans)[-max_length:]
            rows.append(ids)
            n_answer.append(min(len(ans), len(ids) - 1))
    return rows, n_answer


def _answer_logps(model: Any, tokenizer: Any, rows: list[list[int]], n_answer: list[int],
                  prefix: Any = None) -> Any:
    """Sum of log-probabilities of the answer tokens, per row ``(2B,)``.

    Rows are left-padded, so every answer sits in the last ``n_max`` positions and the LM head
    (a fifth of SmolLM2's weights) and the log-softmax run there only. With a
    :class:`fmlab.context.FrozenPrefix` the frozen layers' states are reused and only the
    trained tail runs."""
    import torch

    from fmlab.context._lm import HFCausalLM

    ids, mask, pos = HFCausalLM(model, tokenizer)._left_pad(rows)
    device = ids.device
    n_max = max(n_answer)
    if prefix is not None:
        logits = prefix.logits(model, rows, mask, pos, n_max + 1)
    else:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                       logits_to_keep=n_max + 1, use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (2B, n_max, V)
    picked = logp.gather(-1, ids[:, -n_max:, None])[..., 0]  # (2B, n_max)
    keep = torch.arange(n_max, device=device)[None] >= (
        n_max - torch.as_tensor(n_answer, device=device))[:, None]
    return (picked * keep).sum(dim=1)


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
    last_layers: int | None = None,
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
        last_layers: Put the adapter on the last ``last_layers`` decoder layers only (``None``:
            every layer, the paper's recipe). The layers below then never change, so their
            hidden states are computed once per sequence and shared by the reference and policy
            passes (:class:`fmlab.context.FrozenPrefix`, exact) and the backward pass stops at
            the tail: a cheap recipe for smoke-scale runs.
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
    n_layers = int(model.config.num_hidden_layers)
    layers = None
    if last_layers is not None:
        check_int(last_layers, "last_layers", owner="train_dpo", low=1, high=n_layers)
        layers = list(range(n_layers - last_layers, n_layers))
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=list(target_modules), task_type="CAUSAL_LM",
                             layers_to_transform=layers)
    settings = {"max_steps": max_steps, "batch_size": batch_size, "lr": lr, "beta": beta, "r": r,
                "alpha": alpha, "dropout": dropout, "target_modules": list(target_modules),
                "adversarial_fraction": adversarial_fraction, "max_length": max_length,
                "random_state": random_state, "last_layers": last_layers}
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
    n_frozen = (int(model.config.num_hidden_layers) - settings["last_layers"]
                if settings.get("last_layers") else 0)
    lora = peft.get_peft_model(model, config)
    prefix = None
    if n_frozen >= 1:
        from fmlab.context._lm import FrozenPrefix

        prefix = FrozenPrefix(lora, n_frozen)
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
        rows, n_answer = _encode_pairs(tokenizer, batch, max_length)
        with torch.no_grad(), lora.disable_adapter():
            ref = _answer_logps(lora, tokenizer, rows, n_answer, prefix)
        pol = _answer_logps(lora, tokenizer, rows, n_answer, prefix)
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

    from fmlab._cache import hash_weights

    h = hash_weights(hashlib.sha256(), model)
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
