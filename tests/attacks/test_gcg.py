"""GCG on a tiny random Llama (fast) and, marked slow, on SmolLM2-135M-Instruct."""

from __future__ import annotations

import pytest
import torch

from fmlab.attacks import GCG, TargetObjective, create_attack
from fmlab.models import tiny_causal_lm
from fmlab.testing.attacks import check_attack


@pytest.fixture(scope="module")
def lm():
    return tiny_causal_lm(seed=0)


@pytest.fixture
def objective(lm):
    return TargetObjective(*lm, "What colour is a plum?", "Purple")


def test_gcg_passes_attack_contract(lm, objective):
    x0 = objective.encode_suffix("x x x x x")
    allowed = objective.allowed_tokens()
    check_attack(GCG(num_steps=5, search_width=16, topk=8), objective, x0,
                 constraint=lambda xa, x: bool(allowed[xa].all()) and xa.shape == x.shape)


def test_prefix_cache_gives_the_same_losses(objective):
    xs = torch.stack([objective.encode_suffix("x x x x x"), objective.encode_suffix("a b c d e")])
    for w in (0.0, 0.5):
        a = objective.losses(xs, use_prefix_cache=True, ppl_weight=w)
        b = objective.losses(xs, use_prefix_cache=False, ppl_weight=w)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # chunked scoring equals one batch
    torch.testing.assert_close(objective.losses(xs, batch_size=1), objective.losses(xs))


def test_shared_prefix_scoring_is_exact(objective):
    """GCG-shaped candidates (one swap each) scored through the shared suffix prefix give the
    same losses as full scoring, chunked or not."""
    x = objective.encode_suffix("x x x x x x x x")
    g = torch.Generator().manual_seed(0)
    cands = x.repeat(24, 1)
    cands[torch.arange(24), torch.randint(0, x.numel(), (24,), generator=g)] = torch.randint(
        32, 120, (24,), generator=g)
    cands[5] = x
    full = objective.losses(cands, use_prefix_cache=False)
    torch.testing.assert_close(objective.losses(cands), full, rtol=1e-4, atol=1e-5)
    # after a gradient pass at x, the packed scoring reuses its keys and values of the suffix
    objective.token_gradients(x)
    assert torch.equal(objective._prompts[0].suffix_kv[0], x)
    torch.testing.assert_close(objective.losses(cands), full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(objective.losses(cands, batch_size=5), full, rtol=1e-4, atol=1e-5)
    assert objective._packed_ok and objective._segments  # the segment attention was used
    # the block-mask packing (models the segment attention cannot serve) is exact too
    p = objective._prompts[0]
    objective._segments = False
    torch.testing.assert_close(objective._packed_losses(p, cands, 7), full, rtol=1e-4,
                               atol=1e-5)
    objective._segments = True
    # two swaps per candidate, and candidates of a universal (two-prompt) objective
    two = x.repeat(16, 1)
    two[:, 2] = torch.randint(32, 120, (16,), generator=g)
    two[:, 6] = torch.randint(32, 120, (16,), generator=g)
    torch.testing.assert_close(objective.losses(two),
                               objective.losses(two, use_prefix_cache=False), rtol=1e-4, atol=1e-5)
    uni = TargetObjective(objective.model, objective.tokenizer,
                          ["What colour is a plum?", "Name a royal colour."], "Purple")
    torch.testing.assert_close(uni.losses(cands), uni.losses(cands, use_prefix_cache=False),
                               rtol=1e-4, atol=1e-5)


def test_losses_match_a_plain_forward_of_the_whole_sequence(objective):
    """Reference: the model run on prompt + suffix + template tail + target in one plain forward,
    and the mean cross-entropy at the target positions; duplicates are scored once."""
    p = objective._prompts[0]
    xs = torch.stack([objective.encode_suffix(s) for s in ("x x x x x", "a b c d e", "x x x x x")])
    m = p.target_ids.shape[1]
    assert m > 1  # the tiny byte vocabulary spells "Purple" over several tokens
    ref = []
    for x in xs:
        ids = torch.cat([p.before_ids[0], x, p.after_ids[0], p.target_ids[0]])[None]
        with torch.no_grad():
            logits = objective.model(input_ids=ids).logits[0, -m - 1:-1]
        ref.append(torch.nn.functional.cross_entropy(logits, p.target_ids[0]))
    torch.testing.assert_close(objective.losses(xs), torch.stack(ref), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(objective.losses(xs, use_prefix_cache=False), torch.stack(ref),
                               rtol=1e-4, atol=1e-5)


def test_token_gradient_equals_the_one_hot_gradient(objective):
    x = objective.encode_suffix("x x y x x")
    p = objective._prompts[0]
    W = objective.model.get_input_embeddings().weight
    one_hot = torch.nn.functional.one_hot(x, W.shape[0]).to(W.dtype).requires_grad_(True)
    e = torch.cat([p.before_ids[0], x, p.after_ids[0], p.target_ids[0]])
    embeds = objective.model.get_input_embeddings()(e[None]).detach()
    Lb = p.before_ids.shape[1]
    embeds = torch.cat([embeds[:, :Lb], (one_hot @ W)[None], embeds[:, Lb + len(x):]], dim=1)
    m = p.target_ids.shape[1]
    logits = objective.model(inputs_embeds=embeds).logits[0, -m - 1:-1]
    loss = torch.nn.functional.cross_entropy(logits, p.target_ids[0])
    (want,) = torch.autograd.grad(loss, one_hot)
    grad, value = objective.token_gradients(x)
    assert value == pytest.approx(float(loss.detach()), rel=1e-5)
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6)


def test_token_gradient_matches_finite_difference_direction(objective):
    """The one-hot gradient at a swap predicts the loss change to first order: its ranking of
    single-token swaps correlates with the true loss changes."""
    x = objective.encode_suffix("x x x x x")
    grad, loss = objective.token_gradients(x)
    assert grad.shape == (x.shape[0], objective.model.get_input_embeddings().weight.shape[0])
    assert loss == pytest.approx(float(objective.losses(x[None])[0]), rel=1e-5)
    pos = 2
    toks = torch.arange(32, 120)
    cands = x.repeat(len(toks), 1)
    cands[:, pos] = toks
    true = objective.losses(cands) - loss
    pred = grad[pos, toks] - grad[pos, x[pos]]
    corr = torch.corrcoef(torch.stack([true, pred]))[0, 1]
    assert corr > 0.3, corr


def test_allowed_tokens_are_printable_ascii_without_specials(objective):
    allowed = objective.allowed_tokens()
    tok = objective.tokenizer
    for i in tok.all_special_ids:
        assert not allowed[i]
    for i in torch.nonzero(allowed).flatten().tolist():
        s = tok.decode([i])
        assert s.isascii() and s.isprintable()
    assert objective.allowed_tokens(allow_non_ascii=True).sum() >= allowed.sum()
    # the mask (decoded through the fast tokenizer's backend) equals the rule applied to
    # batch_decode's texts, token by token
    texts = tok.batch_decode([[i] for i in range(len(tok))])
    want = torch.tensor([bool(t) and t.isascii() and t.isprintable() for t in texts])
    want[tok.all_special_ids] = False
    assert torch.equal(allowed[: len(tok)], want)


def test_gcg_lowers_loss_and_respects_filters(objective):
    res = GCG(num_steps=8, search_width=32, topk=16, random_state=1)(objective, progress=False)
    assert res.best_loss < res.losses[0] or res.best_loss < objective.losses(
        objective.encode_suffix(GCG().optim_str_init)[None])[0]
    assert objective.retokenizes(res.x_adv[None]).all()
    assert objective.encode_suffix(res.best_string).tolist() == res.x_adv.tolist()
    # one gradient pass per step plus the candidates that survived the round-trip filter
    assert len(res.losses) < res.n_queries <= len(res.losses) * (1 + 32)


def test_universal_mode_is_the_mean_of_prompt_losses(lm):
    both = TargetObjective(*lm, ["Name a fruit.", "Name a colour."], ["Plum", "Purple"])
    one = TargetObjective(*lm, "Name a fruit.", "Plum")
    two = TargetObjective(*lm, "Name a colour.", "Purple")
    x = both.encode_suffix("x x x")[None]
    torch.testing.assert_close(both.losses(x), (one.losses(x) + two.losses(x)) / 2)
    res = GCG(num_steps=3, search_width=16, topk=8)(both, progress=False)
    assert len(res.losses) == 3


def test_early_stop_when_greedy_output_is_the_target(lm):
    model, tok = lm
    probe = TargetObjective(model, tok, "Name a fruit.", "x")
    ids = torch.cat([probe._prompts[0].before_ids, probe.encode_suffix("x x")[None],
                     probe._prompts[0].after_ids], dim=1)
    greedy = tok.decode([int(model(ids).logits[0, -1].argmax())])
    obj = TargetObjective(model, tok, "Name a fruit.", greedy)
    assert obj.is_success(obj.encode_suffix("x x"))
    res = GCG(num_steps=20, search_width=8, topk=8, early_stop=True)(obj, "x x", progress=False)
    assert res.stop_reason == "success" and res.n_steps < 20 and obj.is_success(res.x_adv)
    assert not GCG(num_steps=2, search_width=8, topk=8)(obj, "x x", progress=False).success


def test_ppl_weight_trades_target_loss_for_suffix_perplexity(objective):
    x = objective.encode_suffix("x x x x x")
    plain = objective.losses(x[None])
    with_ppl = objective.losses(x[None], ppl_weight=1.0)
    assert with_ppl > plain


def test_registry_and_params():
    g = create_attack("gcg", num_steps=3, topk=4)
    assert isinstance(g, GCG) and g.get_params()["topk"] == 4
    for field in ("num_steps", "search_width", "topk", "n_replace", "optim_str_init",
                  "early_stop", "use_prefix_cache", "allow_non_ascii", "filter_ids", "batch_size"):
        assert field in g.get_params()  # nanoGCG's GCGConfig names


@pytest.mark.parametrize(("kwargs", "err", "msg"), [
    ({"optim_str_init": ""}, ValueError, "suffix of length 0"),
    ({"search_width": 0}, ValueError, "'search_width' parameter of GCG"),
    ({"topk": 1.5}, TypeError, "'topk' parameter of GCG"),
    ({"ppl_weight": -1.0}, ValueError, "'ppl_weight'"),
    ({"early_stop": "yes"}, TypeError, "'early_stop'"),
])
def test_gcg_parameter_errors(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        GCG(**kwargs)


def test_objective_errors(lm):
    model, tok = lm
    with pytest.raises(ValueError, match="'target' parameter of TargetObjective must be a non-empty"):
        TargetObjective(model, tok, "hi", "")
    with pytest.raises(ValueError, match="more than the model's context"):
        TargetObjective(model, tok, "word " * 400, "Purple")
    with pytest.raises(TypeError, match="not a decoder-only causal LM"):
        TargetObjective(model.model, tok, "hi", "Purple")
    with pytest.raises(ValueError, match="2 prompts but 3 targets"):
        TargetObjective(model, tok, ["a", "b"], ["x", "y", "z"])
    obj = TargetObjective(model, tok, "hi", "Purple")
    with pytest.raises(TypeError, match="GCG attacks a TargetObjective"):
        GCG(num_steps=1)(lambda xs: xs.sum(), torch.zeros(3))
    with pytest.raises(ValueError, match="length 0"):
        GCG(num_steps=1)(obj, torch.zeros(0, dtype=torch.long))


@pytest.mark.slow
def test_gcg_on_smollm2_lowers_purple_loss():
    from fmlab.models import load_causal_lm

    obj = TargetObjective(*load_causal_lm("smollm2-135m-instruct"),
                          "What is the colour of a plum?", "Purple")
    res = GCG(num_steps=5, search_width=32, topk=32)(obj, progress=False)
    start = float(obj.losses(obj.encode_suffix(GCG().optim_str_init)[None])[0])
    assert res.best_loss < start


def test_progressive_goals_add_prompts_as_they_succeed(lm, tmp_path):
    """Stages over 1, 2, ... prompts share the step budget; each stage runs the one loop, and a
    rerun resumes from the stage snapshots with the same answer."""
    obj = TargetObjective(*lm, ["What colour is a plum?", "Name a colour.", "Say hi."], "Purple")
    x0 = obj.encode_suffix("x x x x")
    target_calls: list[int] = []

    def succeed_on_the_second_step(x, loss):  # the loop's success override, per stage
        target_calls.append(1)
        return len(target_calls) % 2 == 0

    gcg = GCG(num_steps=9, search_width=4, topk=4, progressive_goals=True)
    res = gcg(obj, x0, success=succeed_on_the_second_step, snapshot_dir=tmp_path)
    assert res.extras["stage_steps"] == [2, 2, 2] and res.success
    assert res.extras["goals_reached"] == 3 and res.n_steps == 6 == len(res.losses)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["goals-1", "goals-2", "goals-3"]
    again = gcg(obj, x0, success=lambda x, loss: True, snapshot_dir=tmp_path)
    assert again.best_string == res.best_string and again.n_steps == 6
    # out of budget before the last goal: not a success, and the goals reached are counted
    short = GCG(num_steps=3, search_width=4, topk=4, progressive_goals=True)(
        obj, x0, success=lambda x, loss: False)
    assert not short.success and short.extras["goals_reached"] == 0 and short.n_steps == 3


def test_segment_attention_equals_per_candidate_attention():
    """The packed attention (candidates longest first, padded rows in buckets of similar
    length, each seeing its visible part of the cache) equals attention run candidate by
    candidate over its cache prefix and its own earlier tokens."""
    from fmlab.attacks._gcg import _segment_attention, _Segments

    g = torch.Generator().manual_seed(0)
    Hkv, grp, d, P = 2, 3, 8, 7
    n_tok = torch.tensor([9, 9, 8, 5, 4, 4, 2, 1])  # several buckets
    past = torch.tensor([3, 4, 4, 5, 6, 7, 7, 7])
    Q = int(n_tok.sum())
    query = torch.randn(1, Hkv * grp, Q, d, generator=g)
    key = torch.randn(1, Hkv, P + Q, d, generator=g)
    value = torch.randn(1, Hkv, P + Q, d, generator=g)
    seg = _Segments(n_tok, past, P)
    out, _ = _segment_attention(None, query, key, value, None, fmlab_segments=seg)
    assert len(seg.layout(grp, query.dtype)) > 1
    want, lo = [], 0
    for n, p in zip(n_tok.tolist(), past.tolist(), strict=True):
        keys = torch.cat([key[0, :, :p], key[0, :, P + lo:P + lo + n]], 1)  # (Hkv, p + n, d)
        vals = torch.cat([value[0, :, :p], value[0, :, P + lo:P + lo + n]], 1)
        mask = torch.cat([torch.ones(n, p, dtype=torch.bool),
                          torch.ones(n, n, dtype=torch.bool).tril()], 1)
        q = query[0, :, lo:lo + n]  # (H, n, d)
        o = torch.nn.functional.scaled_dot_product_attention(
            q, keys.repeat_interleave(grp, 0), vals.repeat_interleave(grp, 0), attn_mask=mask)
        want.append(o.transpose(0, 1))  # (n, H, d)
        lo += n
    torch.testing.assert_close(out[0], torch.cat(want), rtol=1e-5, atol=1e-6)


def test_fast_forwards_only_where_exact(objective):
    """Scoring swaps the model's RMS norms for the fused kernel and its gated SiLU MLPs for an
    in-place forward, only for module classes whose own forward they reproduce (checked once
    per class): variants such as Gemma's ``1 + weight`` norm or a GELU MLP keep their
    forward, and every forward is restored afterwards."""
    model = objective.model
    names = [type(m).__name__ for m in model.modules()]
    n_model = sum(n.endswith("RMSNorm") or n.endswith("MLP") for n in names)
    fast = objective._fast_forwards()
    assert len(fast) == n_model > 0
    d = model.config.hidden_size

    class OnePlusRMSNorm(torch.nn.Module):  # Gemma-style: scales by (1 + weight)
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(d))
            self.variance_epsilon = 1e-6

        def forward(self, x):
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
            return (1 + self.weight) * x

    class GeluMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj = torch.nn.Linear(d, 8), torch.nn.Linear(d, 8)
            self.down_proj = torch.nn.Linear(8, d)

        def forward(self, x):
            return self.down_proj(torch.nn.functional.gelu(self.gate_proj(x)) * self.up_proj(x))

    model.add_module("extra_norm", OnePlusRMSNorm())
    model.add_module("extra_mlp", GeluMLP())
    try:
        objective._fast = None
        assert len(objective._fast_forwards()) == n_model  # the variants are left alone
        x = torch.randn(5, d)
        with torch.no_grad():
            want = [m(x) for m, _ in fast]
            with objective._attention(True):
                assert all("forward" in vars(m) for m, _ in fast)
                got = [m(x) for m, _ in fast]
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not any("forward" in vars(m) for m in model.modules())
    finally:
        del model.extra_norm, model.extra_mlp
        objective._fast = None
