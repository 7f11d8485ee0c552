"""Reliance over training: a fine-tuning loop (full or LoRA), a tracking callback for any loop,
tracking over saved checkpoints, and the parameter-side mitigation (query/key-only tuning).

The loop trains on prompt → target pairs with the loss on the target tokens only, formatted exactly
as the evaluation formats prompts (the chat template when the tokenizer has one), so reliance is
measured on the prompts the model is tuned on. :class:`ReliabilityTracker` is a plain callable
``tracker(step, model, tokenizer)``; put it in your own loop every ``k`` steps, or pass it to
:func:`finetune`.

References:
    Goyal, Baek, Kolter, Raghunathan 2025, arXiv 2410.10796, §3-4 and §6;
    Hu et al. 2021, LoRA, arXiv 2106.09685.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmlab._imports import require
from fmlab._validation import check_int, check_option, check_real
from fmlab.context._lm import FrozenPrefix, HFCausalLM, LoglikelihoodRequest
from fmlab.context._mix import example_prompt
from fmlab.exceptions import ModelUnavailableError

__all__ = ["FinetuneConfig", "FinetuneResult", "ReliabilityTracker", "finetune",
           "no_context_nll", "select_parameters", "track"]

_ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_QK = ("q_proj", "k_proj")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning hyperparameters (every default visible here).

    Attributes:
        steps: Optimiser steps.
        batch_size: Examples per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        lora_rank: LoRA rank (``None`` = full fine-tuning).
        lora_alpha: LoRA scaling numerator.
        params: ``"all"`` or ``"qk"`` (query/key projections only: a mitigation).
        last_layers: Train only the last N decoder layers (``None`` = all); a CPU speed knob.
        max_length: Truncate prompt + target to this many tokens (from the left).
        eval_every: Call the callbacks every this many steps (and at step 0 and the end).
        seed: Seeds batch order and LoRA initialisation.
    """

    steps: int = 60
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.0
    lora_rank: int | None = 8
    lora_alpha: float = 16.0
    params: Literal["all", "qk"] = "all"
    last_layers: int | None = None
    max_length: int = 160
    eval_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        o = "FinetuneConfig"
        check_int(self.steps, "steps", owner=o, low=0)
        check_int(self.batch_size, "batch_size", owner=o, low=1)
        check_real(self.lr, "lr", owner=o, low=0.0)
        check_real(self.weight_decay, "weight_decay", owner=o, low=0.0, closed="left")
        if self.lora_rank is not None:
            check_int(self.lora_rank, "lora_rank", owner=o, low=1)
        check_real(self.lora_alpha, "lora_alpha", owner=o, low=0.0)
        check_option(self.params, "params", ("all", "qk"), owner=o)
        if self.last_layers is not None:
            check_int(self.last_layers, "last_layers", owner=o, low=1)
        check_int(self.max_length, "max_length", owner=o, low=8)
        check_int(self.eval_every, "eval_every", owner=o, low=1)
        check_int(self.seed, "seed", owner=o, low=0)


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        model: The tuned model (a copy unless ``copy_model=False``; a ``peft`` model with LoRA).
        history: One dict per callback call: ``step`` plus what each callback returned.
        losses: Training loss per step.
        train_seconds: Time in forward/backward/optimiser steps.
        callback_seconds: Time in callbacks (the cost of tracking).
        n_tokens: Tokens processed by training steps.
        trainable_params: Number of trained parameters.
    """

    model: Any
    history: list[dict[str, Any]]
    losses: list[float]
    train_seconds: float
    callback_seconds: float
    n_tokens: int
    trainable_params: int
    config: FinetuneConfig = field(default_factory=FinetuneConfig)

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.train_seconds if self.train_seconds else math.nan


def _layer_ids(model: Any, last: int | None) -> list[int] | None:
    if last is None:
        return None
    n = int(model.config.num_hidden_layers)
    return list(range(max(0, n - last), n))


def select_parameters(model: Any, params: str = "qk", last_layers: int | None = None) -> int:
    """Full fine-tuning parameter selector: only the chosen projections (``"qk"``: query and key;
    ``"all"``: every parameter) of the chosen layers train. Returns the number of trained
    parameters."""
    check_option(params, "params", ("all", "qk"), owner="select_parameters")
    layers = _layer_ids(model, last_layers)
    n = 0
    for name, p in model.named_parameters():
        ok = params == "all" or any(f".{m}." in name for m in _QK)
        if layers is not None:
            ok = ok and any(f".layers.{i}." in name for i in layers)
        p.requires_grad_(ok)
        n += p.numel() if ok else 0
    if n == 0:
        raise ValueError(f"No parameters match params={params!r}, last_layers={last_layers!r}; "
                         f"the model has no '{'/'.join(_QK)}' projections in those layers.")
    return n


def _apply_lora(model: Any, cfg: FinetuneConfig) -> Any:
    peft = require("peft", feature="LoRA fine-tuning in fmlab.context")
    targets = list(_QK if cfg.params == "qk" else _ALL_LINEAR)
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in targets if t in present]
    if not targets:
        raise ValueError(f"The model has none of the LoRA target modules {_ALL_LINEAR}.")
    lcfg = peft.LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                           target_modules=targets, task_type="CAUSAL_LM",
                           layers_to_transform=_layer_ids(model, cfg.last_layers))
    return peft.get_peft_model(model, lcfg)


def _encode_examples(lm: HFCausalLM, examples: Sequence[dict[str, Any]], max_length: int
                     ) -> list[tuple[list[int], int]]:
    """(token ids, number of target tokens at the end) per example."""
    eos = lm.tokenizer.eos_token or ""
    out = []
    for ex in examples:
        ctx = lm.format(example_prompt(ex))
        sep = "" if ctx[-1:].isspace() else " "
        ids_ctx = lm.encode(ctx)
        ids = lm.encode(ctx + sep + ex["target"] + (eos if lm.chat else "\n"))
        n_t = max(1, len(ids) - len(ids_ctx))
        out.append((ids[-max_length:], min(n_t, max_length - 1)))
    return out


def finetune(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    config: FinetuneConfig | None = None,
    *,
    callbacks: Sequence[Callable[[int, Any, Any], dict[str, Any] | None]] = (),
    copy_model: bool = True,
    progress: bool = False,
    prefix: FrozenPrefix | bool = True,
    **overrides: Any,
) -> FinetuneResult:
    """Instruction-tune a causal LM on prompt → target examples and call ``callbacks`` every
    ``config.eval_every`` steps.

    Args:
        model: A ``transformers`` causal LM.
        tokenizer: Its tokenizer.
        examples: Dicts with ``context`` (may be empty), ``question`` and ``target``
            (:func:`make_instruction_mix` makes them).
        config: Hyperparameters; ``**overrides`` replace fields.
        callbacks: ``fn(step, model, tokenizer) -> dict | None``, e.g. a
            :class:`ReliabilityTracker`; their dicts are merged into ``history``.
        copy_model: Train a deep copy (default) so the caller's model is left untouched.
        progress: Show a progress bar.
        prefix: With ``last_layers`` set, the frozen layers below them are run once per example
            and their hidden states reused at every step (:class:`FrozenPrefix`; exact, and most
            of a step's cost saved). ``True`` builds one for this call; pass a
            ``FrozenPrefix(model, n_layers - last_layers)`` to share it between runs and with a
            :class:`ReliabilityTracker`; ``False`` runs the whole model every step.

    Returns:
        A :class:`FinetuneResult`.
    """
    import torch

    cfg = config or FinetuneConfig()
    if overrides:
        cfg = FinetuneConfig(**{**asdict(cfg), **overrides})
    if not examples:
        raise ValueError("'examples' is empty; fine-tuning needs at least one example.")
    for i, ex in enumerate(examples):
        missing = [k for k in ("question", "target") if not ex.get(k)]
        if missing:
            raise ValueError(f"Example {i} is missing or has an empty {', '.join(missing)}.")
    net = copy.deepcopy(model) if copy_model else model
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.lora_rank is not None:
            for p in net.parameters():
                p.requires_grad_(False)
            net = _apply_lora(net, cfg)
            n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
        else:
            n_train = select_parameters(net, cfg.params, cfg.last_layers)
    lm = HFCausalLM(net, tokenizer)
    data = _encode_examples(lm, examples, cfg.max_length)
    frozen = _resolve_prefix(prefix, model, cfg)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    losses: list[float] = []
    t_train = t_cb = 0.0
    n_tok = 0

    def run_callbacks(step: int) -> None:
        nonlocal t_cb
        t0 = time.perf_counter()
        row: dict[str, Any] = {"step": step}
        for cb in callbacks:
            got = cb(step, net, lm.tokenizer)
            if got:
                row.update(got)
        net.train()
        t_cb += time.perf_counter() - t0
        history.append(row)

    from tqdm.auto import tqdm

    order = torch.randperm(len(data), generator=gen).tolist()
    cursor = 0
    run_callbacks(0)
    net.train()
    for step in tqdm(range(1, cfg.steps + 1), disable=not progress, desc="finetune"):
        t0 = time.perf_counter()
        batch = []
        for _ in range(cfg.batch_size):
            if cursor == len(order):
                order, cursor = torch.randperm(len(data), generator=gen).tolist(), 0
            batch.append(data[order[cursor]])
            cursor += 1
        # left padding, so every target sits in the last n_max positions and the unembedding
        # runs on those only (logits_to_keep), not on the whole prompt
        rows = [row for row, _ in batch]
        n_max = max(n_t for _, n_t in batch)
        ids, mask, pos = lm._left_pad(rows)
        if frozen is not None:
            logits = frozen.logits(net, rows, mask, pos, n_max + 1)
        else:
            logits = net(input_ids=ids, attention_mask=mask, position_ids=pos,
                         logits_to_keep=n_max + 1, use_cache=False).logits
        labels = ids[:, -n_max:].clone()  # (B, n_max): position t predicts labels[:, t]
        for j, (_, n_t) in enumerate(batch):
            labels[j, :n_max - n_t] = -100
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
            ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        n_tok += int(mask.sum())
        t_train += time.perf_counter() - t0
        if step % cfg.eval_every == 0 or step == cfg.steps:
            run_callbacks(step)
    net.eval()
    return FinetuneResult(model=net, history=history, losses=losses, train_seconds=t_train,
                          callback_seconds=t_cb, n_tokens=n_tok, trainable_params=n_train,
                          config=cfg)


def _resolve_prefix(prefix: FrozenPrefix | bool, model: Any, cfg: FinetuneConfig
                    ) -> FrozenPrefix | None:
    if prefix is False or cfg.last_layers is None:
        if isinstance(prefix, FrozenPrefix):
            raise ValueError("A FrozenPrefix needs last_layers set (the layers below them stay "
                             "frozen); set last_layers or pass prefix=False.")
        return None
    n_frozen = int(model.config.num_hidden_layers) - cfg.last_layers
    if isinstance(prefix, FrozenPrefix):
        if prefix.n_frozen != n_frozen:
            raise ValueError(f"The FrozenPrefix covers {prefix.n_frozen} layers but last_layers="
                             f"{cfg.last_layers} leaves {n_frozen} frozen; build it with "
                             f"FrozenPrefix(model, {n_frozen}).")
        return prefix
    if prefix is not True:
        raise TypeError(f"'prefix' must be a FrozenPrefix or a bool. Got {type(prefix).__name__}.")
    return FrozenPrefix(model, n_frozen) if n_frozen >= 1 else None


def no_context_nll(model: Any, tokenizer: Any, examples: Sequence[dict[str, Any]], *,
                   batch_size: int = 16, prefix: FrozenPrefix | None = None) -> np.ndarray:
    """Per-token NLL of each example's target given its prompt *without* the context (NaN for
    examples that have no context): the score context-critical filtering ranks by."""
    lm = HFCausalLM(model, tokenizer, batch_size=batch_size, prefix=prefix)
    idx = [i for i, e in enumerate(examples) if e.get("context")]
    reqs = [LoglikelihoodRequest(example_prompt(examples[i], context=False),
                                 examples[i]["target"], {"id": str(i)}) for i in idx]
    lls = lm.loglikelihood(reqs)
    out = np.full(len(examples), np.nan)
    for i, (lp, _) in zip(idx, lls, strict=True):
        n_tok = max(1, len(lm.tokenizer(" " + examples[i]["target"],
                                        add_special_tokens=False)["input_ids"]))
        out[i] = -lp / n_tok
    return out


class ReliabilityTracker:
    """A callback that measures context reliance and a held-out instruction metric.

    Each call evaluates the counterfactual ``tasks`` (by default with the cheap log-likelihood
    choice between the context answer and the memorised one) and, on ``heldout`` examples, the
    mean per-token NLL of the target and the share of targets greedy decoding would produce.

    Args:
        tasks: Tasks for :func:`fmlab.context.evaluate`.
        heldout: Held-out instruction examples (:func:`make_instruction_mix` with
            ``split="heldout"``), or ``None``.
        limit: Items per task.
        method: ``"loglikelihood"`` or ``"generate"``.
        scoring: Primary scoring (``None`` = the method's default).
        every: Evaluate when ``step % every == 0`` (calls at other steps return ``None``).
        batch_size: Evaluation batch size.
        seed: Seed of the ``limit`` sample (fixed across steps, so every step sees the same items).
        prefix: A :class:`FrozenPrefix` shared with :func:`finetune` when only the last layers
            train: each measurement then runs only those layers over cached prefix states.

    Example:
        >>> tracker = ReliabilityTracker(["cf_capitals"], limit=32, every=10)  # doctest: +SKIP
        >>> for step in range(n_steps):                                         # doctest: +SKIP
        ...     train_step(); tracker(step, model, tokenizer)
        >>> tracker.curve()["counterfactual"]                                   # doctest: +SKIP
    """

    def __init__(self, tasks: Any, heldout: Sequence[dict[str, Any]] | None = None, *,
                 limit: int | None = 64, method: str = "loglikelihood",
                 scoring: str | None = None, every: int = 1, batch_size: int = 16,
                 max_new_tokens: int = 16, seed: int = 0,
                 prefix: FrozenPrefix | None = None) -> None:
        from fmlab.context._tasks import load_tasks

        self.tasks = [t.subset(limit, seed) for t in load_tasks(tasks)]
        self.heldout = list(heldout or [])
        self.method = check_option(method, "method", ("generate", "loglikelihood"),
                                   owner="ReliabilityTracker")
        self.scoring = scoring
        self.every = check_int(every, "every", owner="ReliabilityTracker", low=1)
        self.batch_size = check_int(batch_size, "batch_size", owner="ReliabilityTracker", low=1)
        self.max_new_tokens = max_new_tokens
        self.prefix = prefix
        self.history: list[dict[str, Any]] = []

    def measure(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        from fmlab.context._evaluate import evaluate

        lm = HFCausalLM(model, tokenizer, batch_size=self.batch_size,
                        max_new_tokens=self.max_new_tokens, prefix=self.prefix)
        rep = evaluate(lm, self.tasks, method=self.method,  # type: ignore[arg-type]
                       scoring=self.scoring)
        row: dict[str, Any] = {
            "counterfactual": rep.counterfactual_accuracy,
            "parametric": rep.parametric_accuracy,
            "other": rep.other_rate,
        }
        for t in self.tasks:
            try:
                r = rep.task(t.name)
            except KeyError:
                continue
            row[f"counterfactual/{t.name}"] = r["counterfactual"]["value"]
            row[f"parametric/{t.name}"] = r["parametric"]["value"]
        if self.heldout:
            reqs = [LoglikelihoodRequest(example_prompt(e), e["target"], {"id": str(i)})
                    for i, e in enumerate(self.heldout)]
            lls = lm.loglikelihood(reqs)
            n_tok = [max(1, len(lm.tokenizer(" " + e["target"], add_special_tokens=False)
                                ["input_ids"])) for e in self.heldout]
            row["heldout_nll"] = float(np.mean([-lp / n for (lp, _), n in zip(lls, n_tok,
                                                                                 strict=True)]))
            row["heldout_acc"] = float(np.mean([g for _, g in lls]))
        return row

    def __call__(self, step: int, model: Any, tokenizer: Any) -> dict[str, Any] | None:
        if step % self.every:
            return None
        row = {"step": step, **self.measure(model, tokenizer)}
        self.history.append(row)
        return row

    def trainer_callback(self, tokenizer: Any) -> Any:
        """This tracker as a ``transformers.TrainerCallback`` (measures at the end of every
        ``every``-th optimiser step of a Hugging Face ``Trainer``)."""
        transformers = require("transformers", feature="ReliabilityTracker.trainer_callback")
        tracker = self

        class _Callback(transformers.TrainerCallback):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                            **kwargs: Any) -> None:
                if model is not None:
                    tracker(int(state.global_step), model, tokenizer)

        return _Callback()

    def curve(self) -> dict[str, np.ndarray]:
        """The history as arrays keyed by metric (``step``, ``counterfactual``, ...)."""
        keys = sorted({k for r in self.history for k in r})
        return {k: np.asarray([r.get(k, np.nan) for r in self.history], dtype=float)
                for k in keys}


def _check_checkpoint(path: Path) -> None:
    if not path.is_dir():
        raise ModelUnavailableError(f"Checkpoint {str(path)!r} is not a folder. Pass folders "
                                    f"written by save_pretrained.")
    weights = [*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.pt")]
    if not weights:
        raise ModelUnavailableError(
            f"Checkpoint folder {str(path)!r} has no weights (no *.safetensors, "
            f"pytorch_model.bin or adapter_model.safetensors). Save the model with "
            f"save_pretrained(..., safe_serialization=True) into that folder.")


def track(
    checkpoints: Sequence[str | os.PathLike[str]],
    tasks: Any,
    *,
    heldout: Sequence[dict[str, Any]] | None = None,
    base: str | os.PathLike[str] | None = None,
    steps: Sequence[int] | None = None,
    limit: int | None = 64,
    method: str = "loglikelihood",
    dtype: Any = None,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Reliance over saved checkpoints: one :class:`ReliabilityTracker` row per checkpoint.

    Args:
        checkpoints: Folders written by ``save_pretrained`` (full models, or LoRA adapters with
            ``base`` naming the base model), in training order.
        tasks: Counterfactual tasks.
        heldout: Held-out instruction examples for the instruction metric.
        base: Base model (zoo name, ``hf:`` id or folder) for adapter checkpoints.
        steps: The training step of each checkpoint (default: 0, 1, 2, ...).
        limit, method, batch_size: As in :class:`ReliabilityTracker`.
        dtype: Load dtype.

    Raises:
        ModelUnavailableError: a checkpoint folder without weights.
    """
    from fmlab.models import load_causal_lm

    paths = [Path(c).expanduser() for c in checkpoints]
    if not paths:
        raise ValueError("'checkpoints' is empty; pass at least one checkpoint folder.")
    for p in paths:
        _check_checkpoint(p)
    if steps is not None and len(steps) != len(paths):
        raise ValueError(f"'steps' must have one entry per checkpoint ({len(paths)}). "
                         f"Got {len(steps)}.")
    tracker = ReliabilityTracker(tasks, heldout, limit=limit, method=method,
                                 batch_size=batch_size)
    rows = []
    for k, p in enumerate(paths):
        if (p / "adapter_config.json").exists():
            if base is None:
                raise ValueError(f"Checkpoint {str(p)!r} is a LoRA adapter; pass base= (the "
                                 f"model it was trained from).")
            peft = require("peft", feature="tracking LoRA checkpoints")
            model, tok = load_causal_lm(base, dtype=dtype)
            model = peft.PeftModel.from_pretrained(model, str(p)).eval()
        else:
            model, tok = load_causal_lm(p, dtype=dtype)
        row = {"step": int(steps[k]) if steps is not None else k, "checkpoint": str(p),
               **tracker.measure(model, tok)}
        rows.append(row)
        del model
    return rows
