"""Post-training quantization: RTN and GPTQ on the small LM."""

from __future__ import annotations

import copy

import pytest
import torch

from fmlab.quant import evaluate_loss, fake_quantize, gptq_quantize_weight, quantize_model


def _calib(token_data, n_seq: int = 64, seq_len: int = 64) -> torch.Tensor:
    ids = torch.from_numpy(token_data.train[-n_seq * seq_len:].astype("int64"))
    return ids.view(n_seq, seq_len)


def test_gptq_layer_error_below_rtn() -> None:
    # A real layer problem: correlated inputs, where error feedback pays off.
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(2048, 64, generator=gen) @ torch.randn(64, 64, generator=gen)  # (n, d_in)
    W = torch.randn(32, 64, generator=gen)
    H = 2 * X.T @ X / len(X)
    for fmt in ("int3_channel", "int4_channel", "int4_g16", "fp4_e2m1_channel"):
        from fmlab.quant import make_format

        f = make_format("int", 4, granularity="group", group_size=16) if fmt == "int4_g16" \
            else fmt
        rtn = fake_quantize(W, f)
        for act_order in (False, True):
            q, _ = gptq_quantize_weight(W, H, f, act_order=act_order, block_size=16)
            e_gptq = ((q - W) @ X.T).square().sum()
            e_rtn = ((rtn - W) @ X.T).square().sum()
            assert e_gptq < 0.8 * e_rtn, (fmt, act_order)
            # GPTQ stays on the quantization grid of its format
            if fmt == "int3_channel":
                s = W.abs().amax(1, keepdim=True) / 3
                assert torch.allclose(q / s, (q / s).round(), atol=1e-4)


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_beats_rtn_per_layer_on_small_lm(trained_lm, token_data, bits) -> None:
    """On every linear layer of the trained small LM, GPTQ's output error on held-out inputs is
    below round-to-nearest's."""
    model = trained_lm.model
    calib = _calib(token_data)
    rtn = quantize_model(model, bits, method="rtn").model
    gptq = quantize_model(model, bits, method="gptq", calibration=calib).model
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(
        lambda _m, inp, _o, n=n: inputs.__setitem__(n, inp[0].reshape(-1, inp[0].shape[-1])))
        for n, m in model.blocks.named_modules() if isinstance(m, torch.nn.Linear)]
    x, _ = next(token_data.val_batches(64, batch_size=16))
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    mods = dict(model.blocks.named_modules())
    for name, X in inputs.items():
        W = mods[name].weight
        err = {k: ((dict(m.blocks.named_modules())[name].weight - W) @ X.T).square().sum()
               for k, m in (("rtn", rtn), ("gptq", gptq))}
        assert err["gptq"] < err["rtn"], name


@pytest.mark.slow
@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_beats_rtn_perplexity_on_small_lm(token_data, bits) -> None:
    from fmlab.quant import LMConfig, TrainConfig, train_lm

    res = train_lm(300_000, model_config=LMConfig(d_model=64, n_layers=2, n_heads=4),
                   train_config=TrainConfig(eval_tokens=16384), data=token_data, seed=0)
    kw = {"seq_len": 64, "max_tokens": 16384}
    base = res.val_loss
    rtn = evaluate_loss(quantize_model(res.model, bits, method="rtn").model, token_data, **kw)
    gptq = evaluate_loss(quantize_model(res.model, bits, method="gptq",
                                        calibration=_calib(token_data)).model, token_data, **kw)
    assert rtn > base and gptq - base < rtn - base


def test_8bit_near_lossless_and_copy_semantics(trained_lm, token_data) -> None:
    model = trained_lm.model
    before = copy.deepcopy(model.state_dict())
    res = quantize_model(model, "int8_channel", method="gptq", calibration=_calib(token_data),
                         act_order=True)
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k])
    loss = evaluate_loss(res.model, token_data, seq_len=128, max_tokens=8192)
    assert abs(loss - trained_lm.val_loss) < 0.02
    assert res.method == "gptq" and len(res.layers) == 4 and res.errors


ERRORS = [
    ({"fmt": 4, "method": "gptq"}, ValueError, r"needs calibration token ids"),
    ({"fmt": 4, "method": "gptq", "calibration": torch.zeros(2, 8, dtype=torch.long)},
     ValueError, r"calibration set is too small: 16 tokens"),
    ({"fmt": 4, "method": "awq"}, ValueError, r"Invalid method 'awq'"),
    ({"fmt": 17}, ValueError, r"quantize_model needs a weight format below 16 bits"),
    ({"fmt": "int4_g48", "method": "rtn"}, Exception, r"Unknown quantization format"),
    ({"fmt": "int4_g128", "method": "rtn"}, ValueError, r"group_size=128 must divide"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), ERRORS)
def test_errors(trained_lm, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        quantize_model(trained_lm.model, **kwargs)


def test_hugging_face_model_gptq_beats_rtn() -> None:
    """GPTQ on a (tiny, random) Hugging Face Llama: blocks are found, the captured KV cache is
    not replayed, and GPTQ's logits stay closer to the original than RTN's."""
    from fmlab import models

    model, _tok = models.tiny_causal_lm(seed=0)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (8, 64), generator=gen)
    calib = torch.randint(0, vocab, (64, 64), generator=gen)
    with torch.no_grad():
        base = model(ids).logits
        err = {}
        for method in ("rtn", "gptq"):
            q = quantize_model(model, 3, method=method, calibration=calib)
            err[method] = (q.model(ids).logits - base).square().mean()
            assert len(q.layers) == 7 * model.config.num_hidden_layers
    assert err["gptq"] < err["rtn"]


def test_true_sequential_stages(trained_lm, token_data) -> None:
    """Layers reading the same input form one stage; later stages see the quantized earlier ones,
    so their weights differ from the one-pass variant while the first stage's do not."""
    from fmlab.quant._ptq import _linears, _stages

    model = trained_lm.model
    block = model.blocks[0]
    x = model.embed(torch.from_numpy(token_data.val[:64].astype("int64"))[None])
    sample = ((x, model.rope_cos[:64], model.rope_sin[:64]), {})
    with torch.no_grad():
        stages = _stages(block, _linears(block), sample)
    assert stages == [["qkv"], ["proj"], ["gate_up"], ["down"]]
    calib = _calib(token_data)
    seq = quantize_model(model, 3, calibration=calib).model
    one = quantize_model(model, 3, calibration=calib, true_sequential=False).model
    for name in ("qkv", "proj", "down"):
        same = torch.equal(getattr(seq.blocks[0], name).weight, getattr(one.blocks[0], name).weight)
        assert same is (name == "qkv"), name
    with pytest.raises(TypeError, match="'true_sequential' parameter of quantize_model"):
        quantize_model(model, 3, calibration=calib, true_sequential="yes")


def test_true_sequential_groups_hugging_face_projections() -> None:
    from fmlab import models
    from fmlab.quant._ptq import _linears, _stages

    model, _tok = models.tiny_causal_lm(seed=0)
    layer = model.model.layers[0]
    seen: list = []
    hook = layer.register_forward_pre_hook(lambda _m, a, k: seen.append((a, k)), with_kwargs=True)
    with torch.no_grad():
        model(torch.randint(0, model.config.vocab_size, (1, 16)), use_cache=False)
        hook.remove()
        stages = _stages(layer, _linears(layer), seen[0])
    flat = [sorted(n.split(".")[-1] for n in st) for st in stages]
    assert flat == [["k_proj", "q_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"],
                    ["down_proj"]]


def test_format_is_resolved_once_at_the_public_boundary(monkeypatch):
    """quantize_model resolves its format name once; inner functions take the QuantFormat."""
    import torch

    from fmlab.quant import _fake, _formats, _ptq
    from fmlab.quant._model import LMConfig, TinyLM

    calls = []
    original = _formats.get_format

    def counting(name):
        calls.append(name)
        return original(name)

    for module in (_formats, _fake, _ptq):
        monkeypatch.setattr(module, "get_format", counting)
    torch.manual_seed(0)
    model = TinyLM(LMConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_seq_len=16))
    calib = torch.randint(0, 64, (8, 16))
    for method in ("rtn", "gptq"):
        calls.clear()
        _ptq.quantize_model(model, "int4_channel", method=method, calibration=calib)
        assert calls == ["int4_channel"], (method, calls)
