"""The one-layer attention model of the context-parametric inversion paper (§5, App. B).

A single attention head reads from the last token ``r`` (the relation) over the input
``[c, s, r]`` (context, subject, relation) or ``[s, r]``, followed by a value projection and a
frozen unembedding:

.. math::

    f_W(x) = W_H^\\top W_V \\, \\phi(x)^\\top \\operatorname{softmax}(\\phi(x) W_{KQ} \\phi(r)),

with orthonormal base embeddings, shared subject and context directions ``θ_S ⊥ θ_C``,
``φ(s) = √½ s̃ + √½ θ_S``, ``φ(c) = √½ c̃ + √½ θ_C``, ``φ(r) = r̃`` and answer embeddings
``φ(a) = ã`` that double as the frozen unembedding ``W_H``. The pretrained value matrix ``W_V`` is
set in closed form so that the value readouts hit the paper's assumptions exactly: a context's
readout puts probability ``delta_c`` on its answer, a memorised subject's puts ``delta_m`` on its
memorised answer, an unknown subject's is uniform (``1/K``).

Fine-tuning runs full-batch gradient descent on ``W_KQ`` (and on ``W_V`` with ``train_value``) from
``W_KQ = 0`` (uniform attention) over three kinds of points:

* **C** (context-critical): ``[c, s, r] → a``; only the context knows ``a``.
* **C+S** (non-critical): ``[c, s, r] → a``; the subject's memorised answer is ``a`` too.
* **S** (fact recall): ``[s, r] → a`` with a memorised subject.

The objective is the sum of the points' cross-entropies divided by ``|D_C| + |D_C+S|``, so adding
S points adds gradient without rescaling the context points' (Proposition 2 compares the two).
After each step the model is probed on counterfactual prompts ``[c', s, r]``: fresh contexts whose
answer differs from a fresh memorised subject's. ``M_C = σ(z)_{c'} / (σ(z)_{c'} + σ(z)_{s})`` is the
context's share of the answer probability; the attention components are ``θ_C^\\top W_KQ φ(r)``
and ``θ_S^\\top W_KQ φ(r)``.

References:
    Goyal, Baek, Kolter, Raghunathan 2025, Context-Parametric Inversion: Why Instruction
    Finetuning May Not Actually Improve Context Reliance, ICLR, arXiv 2410.10796, §5 and App. B.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from fmlab._validation import check_bool, check_int, check_real

__all__ = ["ToyConfig", "ToyResult", "simulate_toy"]


@dataclass(frozen=True)
class ToyConfig:
    """The toy's data and optimisation. The defaults are the constructed example on which
    Proposition 1 and Theorem 1 are checked (``|D_C| = |D_C+S|``, a large first step).

    Attributes:
        n_answers: Size ``K`` of the answer vocabulary.
        n_context_critical: ``|D_C|``.
        n_non_critical: ``|D_C+S|`` (set 0 for context-critical filtering).
        n_subject_only: ``|D_S|``, memorised fact-recall points added to fine-tuning.
        n_test: Counterfactual probe prompts.
        delta_c: Probability a context's value readout puts on its answer.
        delta_m: Probability a memorised subject's value readout puts on its answer.
        lr: Gradient-descent step size.
        steps: Gradient steps.
        train_value: Also train ``W_V`` (Proposition 3: C points become C+S points).
        seed: Seeds the answer assignment (the dynamics are symmetric in it).
    """

    n_answers: int = 8
    n_context_critical: int = 10
    n_non_critical: int = 10
    n_subject_only: int = 0
    n_test: int = 10
    delta_c: float = 0.7
    delta_m: float = 0.999
    lr: float = 20.0
    steps: int = 25
    train_value: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "ToyConfig"
        check_int(self.n_answers, "n_answers", owner=owner, low=2)
        check_int(self.n_context_critical, "n_context_critical", owner=owner, low=0)
        check_int(self.n_non_critical, "n_non_critical", owner=owner, low=0)
        check_int(self.n_subject_only, "n_subject_only", owner=owner, low=0)
        check_int(self.n_test, "n_test", owner=owner, low=1)
        check_int(self.steps, "steps", owner=owner, low=0)
        check_int(self.seed, "seed", owner=owner, low=0)
        uniform = 1.0 / self.n_answers
        check_real(self.delta_c, "delta_c", owner=owner, low=uniform, high=1.0)
        check_real(self.delta_m, "delta_m", owner=owner, low=uniform, high=1.0)
        check_real(self.lr, "lr", owner=owner, low=0.0)
        check_bool(self.train_value, "train_value", owner=owner)
        if self.n_context_critical + self.n_non_critical == 0:
            raise ValueError(
                "`n_context_critical + n_non_critical >= 1` must hold (fine-tuning needs context "
                "points), but got (n_context_critical=0, n_non_critical=0)."
            )


@dataclass(frozen=True)
class ToyResult:
    """Curves over gradient steps ``0..steps`` (each array has ``steps + 1`` entries).

    Attributes:
        theta_c: ``θ_C^T W_KQ φ(r)``, attention logit component along the shared context direction.
        theta_s: ``θ_S^T W_KQ φ(r)``, the same along the shared subject direction.
        m_c: Mean of ``M_C`` over the counterfactual probes (context's share of the answer mass).
        attention_context: Mean attention from ``r`` to the context on the probes.
        attention_subject: Mean attention from ``r`` to the subject on the probes.
        loss: The fine-tuning objective.
        subject_readout: Mean probability the value readout of a C point's subject puts on its
            answer (rises from ``1/K`` only when ``train_value``).
    """

    config: ToyConfig
    theta_c: np.ndarray
    theta_s: np.ndarray
    m_c: np.ndarray
    attention_context: np.ndarray
    attention_subject: np.ndarray
    loss: np.ndarray
    subject_readout: np.ndarray
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def peak_step(self) -> int:
        """The step at which ``M_C`` is largest."""
        return int(np.argmax(self.m_c))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"config": asdict(self.config)}
        for name in ("steps", "theta_c", "theta_s", "m_c", "attention_context",
                     "attention_subject", "loss", "subject_readout"):
            out[name] = np.asarray(getattr(self, name)).tolist()
        return out


def _logit(delta: float, k: int) -> float:
    """β such that ``softmax(β e_a)_a = delta`` over ``k`` answers."""
    return math.log(delta * (k - 1) / (1.0 - delta)) if delta < 1.0 else 50.0


def simulate_toy(config: ToyConfig | None = None, **overrides: Any) -> ToyResult:
    """Fine-tune the toy by gradient descent and record its curves.

    Args:
        config: The setup; ``ToyConfig()`` (the constructed example) when omitted.
        **overrides: Fields of :class:`ToyConfig` to replace, e.g. ``n_subject_only=10``.

    Returns:
        A :class:`ToyResult` with one entry per step ``0..steps``.

    Example:
        >>> res = simulate_toy(steps=2)
        >>> bool(res.m_c[1] > res.m_c[0] and res.m_c[1] > res.m_c[2])
        True

    References:
        Goyal et al. 2025, arXiv 2410.10796, Proposition 1, Theorem 1, Propositions 2 and 3.
    """
    import torch

    cfg = replace(config or ToyConfig(), **overrides) if overrides else (config or ToyConfig())
    if not isinstance(cfg, ToyConfig):
        raise TypeError(f"'config' must be a ToyConfig. Got {type(cfg).__name__} instead.")
    dt = torch.float64
    k = cfg.n_answers
    n_c, n_cs, n_s, n_t = (cfg.n_context_critical, cfg.n_non_critical, cfg.n_subject_only,
                           cfg.n_test)
    # Tokens, each with its own orthonormal basis vector: subjects of C, C+S, S and probe points,
    # contexts of C, C+S and probe points, answers, r, θ_S, θ_C.
    n_sub, n_ctx = n_c + n_cs + n_s + n_t, n_c + n_cs + n_t
    d = n_sub + n_ctx + k + 3
    i_ans, i_r, i_ts, i_tc = n_sub + n_ctx, n_sub + n_ctx + k, d - 2, d - 1
    eye = torch.eye(d, dtype=dt)
    half = math.sqrt(0.5)
    phi_sub = half * eye[:n_sub] + half * eye[i_ts]  # (n_sub, d)
    phi_ctx = half * eye[n_sub:n_sub + n_ctx] + half * eye[i_tc]  # (n_ctx, d)
    w_h = eye[i_ans:i_ans + k].T  # (d, K) frozen unembedding = answer embeddings

    gen = np.random.default_rng(cfg.seed)
    sub_ans = gen.integers(0, k, n_sub)
    ctx_ans = gen.integers(0, k, n_ctx)
    ctx_ans[n_c:n_c + n_cs] = sub_ans[n_c:n_c + n_cs]  # C+S: context and memory agree
    probe_sub = np.arange(n_c + n_cs + n_s, n_sub)
    probe_ctx = np.arange(n_c + n_cs, n_ctx)
    ctx_ans[probe_ctx] = (sub_ans[probe_sub] + 1 + gen.integers(0, k - 1, n_t)) % k  # conflict

    # Pretrained W_V in closed form: the readout W_H^T W_V φ(x) is β e_answer for contexts
    # (β_C) and memorised subjects (β_M) and zero for C points' subjects, r, θ_S and θ_C.
    beta_c, beta_m = _logit(cfg.delta_c, k), _logit(cfg.delta_m, k)
    w_v = torch.zeros(d, d, dtype=dt)
    sqrt2 = math.sqrt(2.0)
    rows_c = torch.as_tensor(i_ans + ctx_ans)
    w_v[rows_c, torch.arange(n_sub, n_sub + n_ctx)] = beta_c * sqrt2
    mem = torch.arange(n_c, n_sub)  # every subject except the C points' is memorised
    w_v[torch.as_tensor(i_ans + sub_ans[n_c:]), mem] = beta_m * sqrt2

    # Sequences as (N, 3, d) with a mask; S points put a zero vector in the context slot.
    def seqs(ctx: np.ndarray | None, sub: np.ndarray) -> torch.Tensor:
        n = len(sub)
        c = phi_ctx[torch.as_tensor(ctx)] if ctx is not None else torch.zeros(n, d, dtype=dt)
        return torch.stack([c, phi_sub[torch.as_tensor(sub)], eye[i_r].expand(n, d)], 1)

    train_sub = np.arange(n_c + n_cs)
    x_ctx = seqs(np.arange(n_c + n_cs), train_sub)  # (n_c + n_cs, 3, d)
    y_ctx = torch.as_tensor(ctx_ans[:n_c + n_cs])
    s_sub = np.arange(n_c + n_cs, n_c + n_cs + n_s)
    x_s, y_s = seqs(None, s_sub), torch.as_tensor(sub_ans[s_sub])
    x_all = torch.cat([x_ctx, x_s])  # (N, 3, d)
    y_all = torch.cat([y_ctx, y_s])
    mask = torch.ones(len(x_all), 3, dtype=torch.bool)
    mask[n_c + n_cs:, 0] = False
    x_probe = seqs(probe_ctx, probe_sub)  # (n_t, 3, d)
    a_ctx, a_mem = torch.as_tensor(ctx_ans[probe_ctx]), torch.as_tensor(sub_ans[probe_sub])

    w_kq = torch.zeros(d, d, dtype=dt, requires_grad=True)
    w_v.requires_grad_(cfg.train_value)
    params = [w_kq] + ([w_v] if cfg.train_value else [])
    norm = n_c + n_cs

    def forward(x: torch.Tensor, m: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        query = w_kq @ eye[i_r]  # (d,)
        scores = x @ query  # (N, 3)
        if m is not None:
            scores = scores.masked_fill(~m, float("-inf"))
        attn = torch.softmax(scores, -1)  # (N, 3)
        hidden = torch.einsum("nt,ntd->nd", attn, x)  # (N, d)
        return attn, hidden @ w_v.T @ w_h  # (N, 3), (N, K) logits

    rec: dict[str, list[float]] = {n: [] for n in ("theta_c", "theta_s", "m_c", "attention_context",
                                                    "attention_subject", "loss", "subject_readout")}
    crit_sub = phi_sub[:n_c]  # (n_c, d)
    crit_ans = torch.as_tensor(ctx_ans[:n_c])
    for step in range(cfg.steps + 1):
        attn, logits = forward(x_all, mask)
        loss = torch.nn.functional.cross_entropy(logits, y_all, reduction="sum") / norm
        with torch.no_grad():
            query = w_kq @ eye[i_r]
            rec["theta_c"].append(float(query[i_tc]))
            rec["theta_s"].append(float(query[i_ts]))
            p_attn, p_logits = forward(x_probe, None)
            prob = torch.softmax(p_logits, -1)
            pc, pm = prob.gather(1, a_ctx[:, None]), prob.gather(1, a_mem[:, None])
            rec["m_c"].append(float((pc / (pc + pm)).mean()))
            rec["attention_context"].append(float(p_attn[:, 0].mean()))
            rec["attention_subject"].append(float(p_attn[:, 1].mean()))
            rec["loss"].append(float(loss))
            if n_c:
                readout = torch.softmax(crit_sub @ w_v.T @ w_h, -1)  # (n_c, K)
                rec["subject_readout"].append(float(readout.gather(1, crit_ans[:, None]).mean()))
            else:
                rec["subject_readout"].append(float("nan"))
        if step == cfg.steps:
            break
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= cfg.lr * g
    return ToyResult(config=cfg, steps=np.arange(cfg.steps + 1),
                     **{n: np.asarray(v) for n, v in rec.items()})
