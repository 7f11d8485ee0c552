"""Ensembles of heads fine-tuned on frozen backbone features, with a chosen source of diversity.

Paper 7's finding is that for a foundation model lightly fine-tuned from one checkpoint, only
*random head initialisation* gives an ensemble diverse enough for agreement-on-the-line; varying
the data order or the data subset alone gives near-identical models. :func:`train_heads` builds
each kind from cached features; :func:`build_ensemble` goes from a zoo backbone and a zoo dataset
to probabilities on ID and OOD data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmlab._validation import check_int, check_real

__all__ = ["DIVERSITY_SOURCES", "Ensemble", "build_ensemble", "train_heads", "train_small_cnns"]

DIVERSITY_SOURCES = ("head_init", "data_order", "data_subset")


def _parse_diversity(diversity: str) -> frozenset[str]:
    if diversity == "all":
        return frozenset(DIVERSITY_SOURCES)
    parts = frozenset(p.strip() for p in str(diversity).split("+"))
    bad = sorted(parts - set(DIVERSITY_SOURCES))
    if bad or not parts:
        raise ValueError(
            f"Invalid diversity {diversity!r}. Use one of {DIVERSITY_SOURCES}, a '+'-joined "
            "combination such as 'head_init+data_order', or 'all'."
        )
    return parts


@dataclass
class Ensemble:
    """An ensemble's softmax outputs on named splits.

    Attributes:
        probs: split name -> probabilities ``(n_models, n, n_classes)`` float32; the builders use
            ``"id"`` (labelled ID evaluation data) and ``"ood"``.
        labels: split name -> labels ``(n,)`` where known (OOD labels are kept for evaluation;
            the estimators never see them).
        members: One dict per model: backbone, seeds, lr, epochs, subset size.
        diversity: The diversity source(s) used.
        info: Free-form provenance (backbone, dataset, OOD spec, feature settings).
    """

    probs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    members: list[dict[str, Any]]
    diversity: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return len(self.members)

    def accuracy(self, split: str) -> np.ndarray:
        """Accuracy of each model on ``split`` (needs its labels), (n_models,)."""
        return (self.probs[split].argmax(-1) == self.labels[split][None]).mean(1)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write ``<split>_probs.npy``, ``<split>_labels.npy`` and ``ensemble.json`` atomically.

        The files are what ``fmlab ood predict`` reads.
        """
        from fmlab._io import atomic_write, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for kind, table in (("probs", self.probs), ("labels", self.labels)):
            for split, arr in table.items():
                path = folder / f"{split}_{kind}.npy"
                with atomic_write(path, "wb") as fh:
                    np.save(fh, arr)
                paths[f"{split}_{kind}"] = path
        meta = {"diversity": self.diversity, "n_models": self.n_models, "info": self.info,
                "members": self.members}
        write_json(folder / "ensemble.json", meta)
        paths["ensemble"] = folder / "ensemble.json"
        return paths


def _spread(i: int, n: int, low: float, high: float, log: bool = False) -> float:
    """The i-th of n values spread evenly over [low, high] (a deterministic grid)."""
    t = 0.5 if n == 1 else i / (n - 1)
    if log:
        return float(np.exp(np.log(low) + t * (np.log(high) - np.log(low))))
    return float(low + t * (high - low))


def train_heads(
    train_features: Any,
    train_labels: Any,
    eval_features: dict[str, Any],
    *,
    n_models: int = 10,
    diversity: str = "head_init",
    hidden: int = 0,
    epochs: tuple[int, int] = (1, 16),
    lr: tuple[float, float] = (1e-4, 0.05),
    batch_size: int = 32,
    subset_fraction: float = 0.1,
    init_scale: float = 1.0,
    momentum: float = 0.9,
    random_state: int = 0,
    eval_labels: dict[str, Any] | None = None,
    member_info: dict[str, Any] | None = None,
    progress: Callable[..., Any] | None = None,
) -> Ensemble:
    """Fine-tune ``n_models`` heads on frozen features, varying one or more diversity sources.

    Every model sees the same hyperparameter grid (model ``i`` gets the i-th of ``n_models``
    evenly spread epochs and a log-spread learning rate, in an order shuffled once by
    ``random_state``), so ID accuracies spread along the line for every diversity setting and
    the settings differ only in what the seeds change:

    - ``head_init``: each model's head starts from its own random initialisation (PyTorch's
      default ``nn.Linear`` init times ``init_scale``); otherwise all heads share one init.
    - ``data_order``: each model shuffles the training data with its own seed; otherwise one
      order is shared.
    - ``data_subset``: each model trains on its own random ``subset_fraction`` of the data;
      otherwise every model uses all of it.

    Args:
        train_features: ``(n_train, d)`` features; standardised with the training statistics.
        train_labels: ``(n_train,)`` integer labels.
        eval_features: split name -> ``(n, d)`` features to predict.
        n_models: Ensemble size (>= 1).
        diversity: ``"head_init"``, ``"data_order"``, ``"data_subset"``, a ``+``-joined
            combination, or ``"all"``.
        hidden: 0 for a linear head, else the width of a one-hidden-layer ReLU head.
        epochs: (min, max) epochs over the grid.
        lr: (min, max) SGD learning rate over the grid (log-spaced).
        batch_size: SGD batch size.
        subset_fraction: Fraction of the training data per model with ``data_subset``.
        init_scale: Multiplier of the default head initialisation.
        momentum: SGD momentum.
        random_state: Base seed.
        eval_labels: Optional labels of the eval splits, stored on the result.
        member_info: Extra fields recorded for every member (e.g. the backbone).
        progress: Optional progress wrapper ``progress(iterable, desc=...)``.

    Returns:
        An :class:`Ensemble` with ``probs[split]`` of shape ``(n_models, n, n_classes)``.

    References:
        Mehra et al., Predicting the Performance of Foundation Models via Agreement-on-the-Line,
        NeurIPS 2024, arXiv 2404.01542 (diversity sources, Section 4).
    """
    from fmlab._imports import require

    torch = require("torch", feature="fmlab.ood.train_heads")
    owner = "train_heads"
    n_models = check_int(n_models, "n_models", owner=owner, low=1)
    hidden = check_int(hidden, "hidden", owner=owner, low=0)
    batch_size = check_int(batch_size, "batch_size", owner=owner, low=1)
    subset_fraction = check_real(subset_fraction, "subset_fraction", owner=owner, low=0.0,
                                 high=1.0, closed="right")
    init_scale = check_real(init_scale, "init_scale", owner=owner, low=0.0, closed="left")
    momentum = check_real(momentum, "momentum", owner=owner, low=0.0, high=1.0, closed="left")
    e_lo, e_hi = (check_int(e, "epochs", owner=owner, low=1) for e in epochs)
    lr_lo, lr_hi = (check_real(v, "lr", owner=owner, low=0.0) for v in lr)
    if e_lo > e_hi or lr_lo > lr_hi:
        raise ValueError(f"`epochs[0] <= epochs[1]` and `lr[0] <= lr[1]` must hold, but got "
                         f"(epochs={tuple(epochs)}, lr={tuple(lr)}).")
    sources = _parse_diversity(diversity)

    x = np.asarray(train_features, dtype=np.float32)
    y = np.asarray(train_labels)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"'train_features' must be (n, d) and 'train_labels' (n,); got shapes "
                         f"{x.shape} and {y.shape}.")
    if y.dtype.kind not in "iu":
        raise ValueError(f"'train_labels' must be integer class indices; got dtype {y.dtype}.")
    n_classes = int(y.max()) + 1
    for split, f in eval_features.items():
        if np.ndim(f) != 2 or np.shape(f)[1] != x.shape[1]:
            raise ValueError(f"eval_features[{split!r}] must be (n, {x.shape[1]}); got shape "
                             f"{np.shape(f)}.")
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std)  # (n, d)
    yt = torch.from_numpy(y.astype(np.int64))
    evals = {s: torch.from_numpy((np.asarray(f, np.float32) - mean) / std)
             for s, f in eval_features.items()}
    return _train_batched(
        "head", xt, yt, evals, n_classes=n_classes, n_models=n_models, sources=sources,
        diversity=diversity, width=hidden, epochs=(e_lo, e_hi), lr=(lr_lo, lr_hi),
        batch_size=batch_size, subset_fraction=subset_fraction, init_scale=init_scale,
        momentum=momentum, random_state=random_state, eval_labels=eval_labels,
        member_info=member_info, progress=progress,
    )


def train_small_cnns(
    train_images: Any,
    train_labels: Any,
    eval_images: dict[str, Any],
    *,
    n_models: int = 10,
    diversity: str = "head_init",
    width: int = 8,
    epochs: tuple[int, int] = (1, 8),
    lr: tuple[float, float] = (1e-3, 0.05),
    batch_size: int = 32,
    subset_fraction: float = 0.1,
    momentum: float = 0.9,
    random_state: int = 0,
    eval_labels: dict[str, Any] | None = None,
    member_info: dict[str, Any] | None = None,
    progress: Callable[..., Any] | None = None,
) -> Ensemble:
    """Train an ensemble of small CNNs from scratch on grey images (no pretrained backbone).

    Each model is conv5×5(``width``)-ReLU-maxpool-conv5×5(2·``width``)-ReLU-maxpool-linear; all
    models train at once as the groups of grouped convolutions. ``diversity`` ``"head_init"``
    here varies the initialisation of the whole network; otherwise as :func:`train_heads`, with
    the same hyperparameter grid.

    Args:
        train_images: uint8 ``(n, H, W)`` (or ``(n, H, W, 3)``, averaged to grey); H and W
            divisible by 4.
        train_labels: ``(n,)`` integer labels.
        eval_images: split name -> images of the same size.
        width: Channels of the first convolution.
        Others: as :func:`train_heads`.

    Returns:
        An :class:`Ensemble`.

    References:
        Baek et al., Agreement-on-the-Line, arXiv 2206.13089 (ensembles trained from scratch).
    """
    from fmlab._imports import require

    torch = require("torch", feature="fmlab.ood.train_small_cnns")
    owner = "train_small_cnns"
    n_models = check_int(n_models, "n_models", owner=owner, low=1)
    width = check_int(width, "width", owner=owner, low=1)
    batch_size = check_int(batch_size, "batch_size", owner=owner, low=1)
    subset_fraction = check_real(subset_fraction, "subset_fraction", owner=owner, low=0.0,
                                 high=1.0, closed="right")
    momentum = check_real(momentum, "momentum", owner=owner, low=0.0, high=1.0, closed="left")
    e_lo, e_hi = (check_int(e, "epochs", owner=owner, low=1) for e in epochs)
    lr_lo, lr_hi = (check_real(v, "lr", owner=owner, low=0.0) for v in lr)
    if e_lo > e_hi or lr_lo > lr_hi:
        raise ValueError(f"`epochs[0] <= epochs[1]` and `lr[0] <= lr[1]` must hold, but got "
                         f"(epochs={tuple(epochs)}, lr={tuple(lr)}).")
    sources = _parse_diversity(diversity)

    def prep(images: Any, name: str) -> Any:
        arr = np.asarray(images)
        if arr.ndim == 4:
            arr = arr.mean(-1)
        if arr.ndim != 3 or arr.shape[1] % 4 or arr.shape[2] % 4:
            raise ValueError(f"{name} must be images (n, H, W) with H and W divisible by 4; got "
                             f"shape {np.shape(images)}.")
        scale = 255.0 if arr.dtype == np.uint8 or arr.max() > 1.5 else 1.0
        return torch.from_numpy((arr.astype(np.float32) / scale) - 0.5)  # (n, H, W)

    xt = prep(train_images, "'train_images'")
    y = np.asarray(train_labels)
    if y.ndim != 1 or len(y) != len(xt) or y.dtype.kind not in "iu":
        raise ValueError(f"'train_labels' must be (n,) integer labels; got shape {y.shape} and "
                         f"dtype {y.dtype}.")
    evals = {s: prep(v, f"eval_images[{s!r}]") for s, v in eval_images.items()}
    for s, v in evals.items():
        if v.shape[1:] != xt.shape[1:]:
            raise ValueError(f"eval_images[{s!r}] must be {tuple(xt.shape[1:])} images like the "
                             f"training images; got {tuple(v.shape[1:])}.")
    return _train_batched(
        "cnn", xt, torch.from_numpy(y.astype(np.int64)), evals, n_classes=int(y.max()) + 1,
        n_models=n_models, sources=sources, diversity=diversity, width=width,
        epochs=(e_lo, e_hi), lr=(lr_lo, lr_hi), batch_size=batch_size,
        subset_fraction=subset_fraction, init_scale=1.0, momentum=momentum,
        random_state=random_state, eval_labels=eval_labels, member_info=member_info,
        progress=progress,
    )


def _init_model(torch: Any, kind: str, shape: Any, width: int, n_classes: int) -> list[Any]:
    """One model's initial tensors (PyTorch default init), to be stacked on a model axis."""
    if kind == "head":
        d = int(shape[0])
        mods = ([torch.nn.Linear(d, width), torch.nn.Linear(width, n_classes)] if width
                else [torch.nn.Linear(d, n_classes)])
        return [t for mod in mods for t in (mod.weight.detach().T, mod.bias.detach())]
    h, w = int(shape[0]), int(shape[1])
    c1 = torch.nn.Conv2d(1, width, 5, padding=2)
    c2 = torch.nn.Conv2d(width, 2 * width, 5, padding=2)
    fc = torch.nn.Linear(2 * width * (h // 4) * (w // 4), n_classes)
    return [c1.weight.detach(), c1.bias.detach(), c2.weight.detach(), c2.bias.detach(),
            fc.weight.detach().T, fc.bias.detach()]


def _forward(torch: Any, kind: str, params: list[Any], xb: Any, width: int) -> Any:
    """Logits (m, b, k) of all models at once; ``xb`` is (m, b, d) or (m, b, H, W)."""
    if kind == "head":
        h = torch.baddbmm(params[1][:, None, :], xb, params[0])
        if width:
            h = torch.baddbmm(params[3][:, None, :], torch.relu(h), params[2])
        return h
    # CNNs: the m models become m groups of a grouped convolution, so one conv call runs all.
    f = torch.nn.functional
    m, b = xb.shape[:2]
    h = xb.transpose(0, 1)  # (b, m, H, W): model i reads channel i
    h = f.conv2d(h, params[0].reshape(m * width, 1, 5, 5), params[1].reshape(-1), padding=2,
                 groups=m)  # (b, m·c, H, W)
    h = f.max_pool2d(torch.relu(h), 2)
    h = f.conv2d(h, params[2].reshape(m * 2 * width, width, 5, 5), params[3].reshape(-1),
                 padding=2, groups=m)  # (b, m·2c, H/2, W/2)
    h = f.max_pool2d(torch.relu(h), 2)  # (b, m·2c, H/4, W/4)
    h = h.reshape(b, m, -1).transpose(0, 1)  # (m, b, F)
    return torch.baddbmm(params[5][:, None, :], h, params[4])  # (m, b, k)


def _train_batched(
    kind: str, xt: Any, yt: Any, evals: dict[str, Any], *, n_classes: int, n_models: int,
    sources: frozenset[str], diversity: str, width: int, epochs: tuple[int, int],
    lr: tuple[float, float], batch_size: int, subset_fraction: float, init_scale: float,
    momentum: float, random_state: int, eval_labels: dict[str, Any] | None,
    member_info: dict[str, Any] | None, progress: Callable[..., Any] | None,
) -> Ensemble:
    """Train ``n_models`` independent models as one batched network (see :func:`train_heads`)."""
    import torch

    (e_lo, e_hi), (lr_lo, lr_hi) = epochs, lr
    n = xt.shape[0]
    grid_rng = np.random.default_rng(random_state)
    order = grid_rng.permutation(n_models)  # which grid point each model gets
    shared = 10_000 + random_state  # the seed used when a source is not varied

    # Per-model settings and initial weights. All models train at once as one batched network
    # (weights stacked on a leading model axis): one bmm per step instead of n_models small
    # matmuls, which is what makes 50-model ensembles take seconds on 2 cores.
    layers: list[list[Any]] = []  # per model: [W1, b1, (W2, b2)] with W as (in, out)
    members, subsets, order_rngs, rates, n_steps = [], [], [], [], []
    size = max(1, min(n, int(round(subset_fraction * n)))) if "data_subset" in sources else n
    steps_per_epoch = -(-size // batch_size)
    for i in range(n_models):
        seed = random_state * 100_003 + i
        init_seed = seed if "head_init" in sources else shared
        order_seed = seed + 1 if "data_order" in sources else shared + 1
        subset_seed = seed + 2 if "data_subset" in sources else shared + 2
        g = order[i]
        n_epochs = int(round(_spread(g, n_models, e_lo, e_hi)))
        rate = _spread(g, n_models, lr_lo, lr_hi, log=True)
        torch.manual_seed(init_seed)
        layers.append([t * init_scale for t in _init_model(torch, kind, xt.shape[1:], width,
                                                           n_classes)])
        if "data_subset" in sources:
            subsets.append(np.random.default_rng(subset_seed).choice(n, size=size, replace=False))
        else:
            subsets.append(np.arange(n))
        order_rngs.append(np.random.default_rng(order_seed))
        rates.append(rate)
        n_steps.append(n_epochs * steps_per_epoch)
        members.append({**(member_info or {}), "index": i, "init_seed": int(init_seed),
                        "order_seed": int(order_seed), "subset_seed": int(subset_seed),
                        "n_train": int(size), "epochs": n_epochs, "lr": rate,
                        "model": kind, "width": width})
    params = [torch.stack([ly[t] for ly in layers]).contiguous().requires_grad_(True)
              for t in range(len(layers[0]))]  # each (m, ...)
    buffers = [torch.zeros_like(p) for p in params]
    lr_t = torch.tensor(rates, dtype=torch.float32)  # (m,)
    steps_t = torch.tensor(n_steps)  # (m,)

    def forward(xb: Any) -> Any:  # xb (m, b, *input) -> logits (m, b, k)
        return _forward(torch, kind, params, xb, width)

    perms = np.empty((n_models, size), dtype=np.int64)
    steps = range(max(n_steps))
    # These matmuls are small: one thread is faster than two, and much faster on a busy machine
    # (threads spin-waiting on each other); the caller's setting is restored afterwards.
    outputs: dict[str, list[np.ndarray]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in progress(steps, desc=f"{kind}s ({diversity})") if progress else steps:
            pos = step % steps_per_epoch
            if pos == 0:  # a new epoch: every model reshuffles its own training subset
                for i in range(n_models):
                    perms[i] = subsets[i][order_rngs[i].permutation(size)]
            bidx = torch.from_numpy(perms[:, pos * batch_size:(pos + 1) * batch_size])  # (m, b)
            logits = forward(xt[bidx])  # (m, b, k)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, n_classes), yt[bidx].reshape(-1), reduction="none"
            ).view(n_models, -1).mean(1).sum()  # models are independent: sum of their mean losses
            grads = torch.autograd.grad(loss, params)
            step_lr = lr_t * (step < steps_t)  # (m,): a model stops after its own epochs
            with torch.no_grad():
                for p, g, buf in zip(params, grads, buffers, strict=True):
                    buf.mul_(momentum).add_(g)
                    p.sub_(step_lr.view(-1, *([1] * (p.ndim - 1))) * buf)

        with torch.no_grad():
            for s, f in evals.items():
                outputs[s] = []
                for start in range(0, len(f), 256):  # blocks bound the CNN activations
                    part = f[start:start + 256]
                    xb = part.unsqueeze(0).expand(n_models, *part.shape)  # (m, b, ...) view
                    outputs[s].append(torch.softmax(forward(xb), dim=-1).numpy())  # (m, b, k)
    finally:
        torch.set_num_threads(threads)
    probs = {s: np.concatenate(v, axis=1).astype(np.float32) for s, v in outputs.items()}
    labels = {s: np.asarray(v) for s, v in (eval_labels or {}).items()}
    return Ensemble(probs=probs, labels=labels, members=members, diversity=diversity)


# ---------------------------------------------------------------------------------------------
# From zoo names to an ensemble
# ---------------------------------------------------------------------------------------------


def corrupt_text(texts: Sequence[str], rate: float, seed: int = 0) -> list[str]:
    """Typo noise: each word is, with probability ``rate``, hit by a character swap, deletion,
    duplication or substitution (a real-text shift in spelling, e.g. user-typed reviews)."""
    rng = np.random.default_rng(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for text in texts:
        words = text.split(" ")
        for w, word in enumerate(words):
            if len(word) < 2 or rng.random() >= rate:
                continue
            p = int(rng.integers(0, len(word) - 1))
            op = int(rng.integers(0, 4))
            if op == 0:
                word = word[:p] + word[p + 1] + word[p] + word[p + 2:]
            elif op == 1:
                word = word[:p] + word[p + 1:]
            elif op == 2:
                word = word[:p] + word[p] + word[p:]
            else:
                word = word[:p] + letters[int(rng.integers(0, 26))] + word[p + 1:]
            words[w] = word
        out.append(" ".join(words))
    return out


@dataclass
class _Split:
    inputs: Any  # uint8 images or list[str]
    labels: np.ndarray


def _take(ds: Any, n: int | None, rng: np.random.Generator) -> _Split:
    inputs = ds.images if hasattr(ds, "images") else ds.texts
    labels = np.asarray(ds.labels)
    idx = np.arange(len(labels)) if n is None or n >= len(labels) else np.sort(
        rng.choice(len(labels), size=n, replace=False))
    if hasattr(ds, "images"):
        return _Split(inputs[idx], labels[idx])
    return _Split([inputs[i] for i in idx], labels[idx])


_OOD_SPEC_HELP = ("Use 'corrupt:NAME:SEVERITY' (images), 'rotate:DEGREES' (images), "
                  "'typos:RATE' (text) or a dataset name such as 'digits' (optionally "
                  "'NAME:SPLIT', and '+padN' to pad images by N pixels).")


def check_ood_spec(ood: str) -> str:
    """Check an OOD spec without loading anything (``--dry-run`` and the CLI call this before any
    data or model loads); returns it. Raises ValueError naming the part that is wrong."""
    from fmlab.data import CORRUPTIONS, list_datasets

    if not isinstance(ood, str) or not ood.strip():
        raise ValueError(f"Invalid OOD spec {ood!r}. {_OOD_SPEC_HELP}")
    kind, _, arg = ood.partition(":")

    def number(text: str, what: str, low: float, high: float, integer: bool = False) -> None:
        try:
            x = float(text)
        except ValueError:
            x = float("nan")
        if not (low <= x <= high) or (integer and x != int(x)):
            raise ValueError(f"Invalid OOD spec {ood!r}: {what} must be "
                             f"{'an integer' if integer else 'a number'} in [{low:g}, {high:g}]; "
                             f"got {text!r}.")

    if kind == "corrupt":
        name, _, sev = arg.partition(":")
        if name not in CORRUPTIONS:
            raise ValueError(f"Invalid OOD spec {ood!r}: unknown corruption {name!r}; choose "
                             f"from {', '.join(CORRUPTIONS)}.")
        if sev:
            number(sev, "the severity", 1, 5, integer=True)
    elif kind == "rotate":
        if arg:
            number(arg, "the angle", -360, 360)
    elif kind == "typos":
        if arg:
            number(arg, "the typo rate", 0, 1)
    else:
        base, _, pad = ood.partition("+pad")
        name = base.partition(":")[0]
        if name not in list_datasets():
            raise ValueError(f"Invalid OOD spec {ood!r}. {_OOD_SPEC_HELP}")
        if pad:
            number(pad, "the padding", 0, 64, integer=True)
    return ood


def load_splits(
    dataset: str, ood: str, *, n_train: int | None, n_eval: int | None, random_state: int = 0,
) -> tuple[_Split, _Split, _Split]:
    """Train, ID-eval and OOD splits from zoo names and an OOD spec (see :func:`build_ensemble`)."""
    from fmlab.data import dataset_info, load_dataset

    check_ood_spec(ood)
    rng = np.random.default_rng(random_state)
    splits = dataset_info(dataset).splits
    if "test" in splits:
        train = _take(load_dataset(dataset, split="train"), n_train, rng)
        test = _take(load_dataset(dataset, split="test"), n_eval, rng)
    else:  # one split: hold out a disjoint evaluation part
        full = _take(load_dataset(dataset, split=splits[0]), None, rng)
        perm = rng.permutation(len(full.labels))
        n_ev = min(n_eval or len(perm) // 3, len(perm) // 2)
        ev, tr = perm[:n_ev], perm[n_ev:][: n_train or None]
        pick = (lambda ix: full.inputs[ix]) if isinstance(full.inputs, np.ndarray) else (
            lambda ix: [full.inputs[i] for i in ix])
        train, test = _Split(pick(tr), full.labels[tr]), _Split(pick(ev), full.labels[ev])

    kind, _, arg = ood.partition(":")
    if kind == "corrupt":
        from fmlab.data import corrupt

        name, _, sev = arg.partition(":")
        images = corrupt(test.inputs, name, int(sev or 3), seed=random_state)
        shifted = _Split(images, test.labels)
    elif kind == "rotate":
        from fmlab.data import rotate_images

        shifted = _Split(rotate_images(test.inputs, float(arg or 45)), test.labels)
    elif kind == "typos":
        if isinstance(test.inputs, np.ndarray):
            raise ValueError(f"OOD spec {ood!r} applies to text datasets; {dataset!r} has images.")
        shifted = _Split(corrupt_text(test.inputs, float(arg or 0.3), seed=random_state),
                         test.labels)
    else:
        ood, _, pad = ood.partition("+pad")
        name, _, split = ood.partition(":")
        try:
            other_splits = dataset_info(name).splits
        except KeyError:
            raise ValueError(
                f"Invalid OOD spec {ood!r}. Use 'corrupt:NAME:SEVERITY' (images), "
                "'rotate:DEGREES' (images), 'typos:RATE' (text) or a dataset name such as "
                "'digits' (optionally 'NAME:SPLIT', and '+padN' to pad images by N pixels)."
            ) from None
        other = load_dataset(name, split=split or ("test" if "test" in other_splits
                                                    else other_splits[0]))
        shifted = _take(other, n_eval, rng)
        if pad:  # e.g. 'digits+pad2': the 8x8 UCI digits fill their frame, MNIST's do not
            if not isinstance(shifted.inputs, np.ndarray):
                raise ValueError(f"'+pad' in OOD spec {ood!r} applies to image datasets only.")
            p = int(pad)
            width = ((0, 0), (p, p), (p, p)) + ((0, 0),) * (shifted.inputs.ndim - 3)
            shifted = _Split(np.pad(shifted.inputs, width), shifted.labels)
        if int(shifted.labels.max()) > int(train.labels.max()):
            raise ValueError(f"OOD dataset {name!r} has labels outside {dataset!r}'s classes.")
    return train, test, shifted


def build_ensemble(
    backbone: str | Sequence[str],
    dataset: str,
    *,
    ood: str,
    n_models: int = 20,
    diversity: str = "head_init",
    n_train: int | None = 2000,
    n_eval: int | None = 1000,
    feature_settings: dict[str, Any] | None = None,
    random_state: int = 0,
    progress: Callable[..., Any] | None = None,
    **head_kwargs: Any,
) -> Ensemble:
    """Build an ensemble from a zoo backbone (or several) and a zoo dataset under a shift.

    Features of the training, ID-evaluation and OOD inputs are extracted once per backbone and
    cached (:func:`extract_features`); heads are then trained by :func:`train_heads`.

    Args:
        backbone: A backbone name (:func:`list_backbones`), ``"cnn"`` for small CNNs trained
            from scratch on the images (:func:`train_small_cnns`), or several: the models are
            split evenly between them (an ensemble across backbones).
        dataset: Zoo dataset (``"mnist"``, ``"fashion-mnist"``, ``"digits"``,
            ``"rotten-tomatoes"``); its ``train`` split trains the heads and ``test`` is ID data.
        ood: The shift: ``"corrupt:fog:3"`` (a ``fmlab.data.corrupt`` corruption and severity),
            ``"rotate:45"``, ``"typos:0.3"`` (text) or another dataset with the same classes
            (``"digits"``, ``"pang-lee-polarity"``; ``"NAME:SPLIT"`` picks a split and a
            ``"+padN"`` suffix pads images by N pixels, e.g. ``"digits+pad2"`` to give the 8×8
            UCI digits MNIST's empty margin).
        n_models: Ensemble size.
        diversity: See :func:`train_heads`.
        n_train, n_eval: Subsample sizes (``None`` = all).
        feature_settings: Backbone options, e.g. ``{"resolution": 64}``.
        random_state: Seed for subsampling, corruption and training.
        progress: Optional progress wrapper.
        **head_kwargs: Passed to :func:`train_heads` (``epochs``, ``lr``, ``hidden``, ...).

    Returns:
        An :class:`Ensemble` with splits ``"id"`` and ``"ood"`` (labels for both).
    """
    from fmlab.ood._features import extract_features

    backbones = [backbone] if isinstance(backbone, str) else list(backbone)
    if not backbones:
        raise ValueError("build_ensemble needs at least one backbone.")
    train, test, shifted = load_splits(dataset, ood, n_train=n_train, n_eval=n_eval,
                                       random_state=random_state)
    settings = dict(feature_settings or {})
    parts = []
    counts = [len(range(b, n_models, len(backbones))) for b in range(len(backbones))]
    for b, (name, count) in enumerate(zip(backbones, counts, strict=True)):
        if count == 0:
            continue
        if name == "cnn":  # small CNNs trained from scratch on the images (28x28 grey)
            size = int(settings.get("resolution", 28))
            imgs = {key: extract_features("pixels", split.inputs, resolution=size).reshape(
                        -1, size, size)
                    for key, split in (("train", train), ("id", test), ("ood", shifted))}
            cnn_kwargs = {k: v for k, v in head_kwargs.items() if k != "hidden"}
            parts.append(train_small_cnns(
                imgs["train"], train.labels, {"id": imgs["id"], "ood": imgs["ood"]},
                n_models=count, diversity=diversity, random_state=random_state + 7919 * b,
                eval_labels={"id": test.labels, "ood": shifted.labels},
                member_info={"backbone": name}, progress=progress, **cnn_kwargs,
            ))
            continue
        feats = {key: extract_features(name, split.inputs, progress=progress, **settings)
                 for key, split in (("train", train), ("id", test), ("ood", shifted))}
        parts.append(train_heads(
            feats["train"], train.labels, {"id": feats["id"], "ood": feats["ood"]},
            n_models=count, diversity=diversity, random_state=random_state + 7919 * b,
            eval_labels={"id": test.labels, "ood": shifted.labels},
            member_info={"backbone": name}, progress=progress, **head_kwargs,
        ))
    probs = {s: np.concatenate([p.probs[s] for p in parts]) for s in ("id", "ood")}
    members = [m for p in parts for m in p.members]
    info = {"backbone": backbones, "dataset": dataset, "ood": ood, "n_train": len(train.labels),
            "n_id": len(test.labels), "n_ood": len(shifted.labels),
            "feature_settings": settings, "random_state": random_state}
    return Ensemble(probs=probs, labels={"id": test.labels, "ood": shifted.labels},
                    members=members, diversity=diversity, info=json.loads(json.dumps(info)))
