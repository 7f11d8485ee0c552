"""Small LM, token pipeline and quantization-aware training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmlab.quant import (
    LMConfig,
    PrecisionConfig,
    TinyLM,
    TrainConfig,
    evaluate_loss,
    get_format,
    set_precision,
    train_lm,
)


@pytest.mark.parametrize(("n_tokens", "batch_size", "seq_len"),
                         [(1000, 4, 64), (4096, 8, 64), (77, 3, 10), (1, 2, 8)])
def test_batches_deliver_exact_token_count(token_data, n_tokens, batch_size, seq_len) -> None:
    total, shapes = 0, []
    for x, y in token_data.batches(n_tokens, batch_size, seq_len, seed=3):
        assert x.shape == y.shape and x.dtype == np.int64
        assert np.array_equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
        total += y.size
        shapes.append(x.shape)
    assert total == n_tokens
    again = [x.shape for x, _ in token_data.batches(n_tokens, batch_size, seq_len, seed=3)]
    assert again == shapes


def test_batches_deterministic_and_seeded(token_data) -> None:
    a = next(token_data.batches(512, 4, 32, seed=1))[0]
    b = next(token_data.batches(512, 4, 32, seed=1))[0]
    c = next(token_data.batches(512, 4, 32, seed=2))[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_split_and_tokenizer(token_data) -> None:
    assert len(token_data.val) > 50_000 and len(token_data.train) > 8 * len(token_data.val)
    assert token_data.vocab_size == 512
    text = "The capital of France is Paris."
    ids = token_data.tokenizer.encode(text).ids
    assert token_data.tokenizer.decode(ids) == text
    # held-out documents: a long validation window does not occur in the training stream
    window = token_data.val[1000:1032]
    train = token_data.train
    hits = np.flatnonzero(train[:-32] == window[0])
    assert not any(np.array_equal(train[h:h + 32], window) for h in hits)


def test_model_shapes_and_param_count() -> None:
    cfg = LMConfig(vocab_size=100, d_model=32, n_layers=2, n_heads=4, max_seq_len=16)
    model = TinyLM(cfg)
    idx = torch.randint(0, 100, (2, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 16, 100) and loss is not None and loss.ndim == 0
    blocks = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embed"))
    assert model.n_params() == blocks  # tied head: non-embedding params are the blocks + norm
    assert model.n_params(non_embedding=False) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="exceeds max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_precision_config_and_quantized_forward() -> None:
    p = PrecisionConfig.from_bits(4, 8, 3)
    assert p.weights == get_format("int4_channel")
    assert p.activations.granularity == "token" and p.kv_cache.bits == 3
    assert PrecisionConfig.from_bits(16, None, 32).describe() == {
        "weights": "fp", "activations": "fp", "kv_cache": "fp"}
    torch.manual_seed(0)
    model = TinyLM(LMConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, max_seq_len=16))
    idx = torch.randint(0, 64, (2, 16))
    ref = model(idx)[0]
    outs = {}
    for name, prec in {"w": PrecisionConfig(weights=3), "a": PrecisionConfig(activations=3),
                       "kv": PrecisionConfig(kv_cache=3)}.items():
        set_precision(model, prec)
        outs[name] = model(idx)[0]
        assert not torch.allclose(outs[name], ref), name  # each component has an effect
    set_precision(model, PrecisionConfig.from_bits(3, 3, 3))
    _, loss = model(idx, idx)
    loss.backward()  # the STE lets gradients reach every weight
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    set_precision(model, PrecisionConfig())
    assert torch.allclose(model(idx)[0], ref)


def test_qat_training_exact_tokens_and_learning(token_data) -> None:
    cfg = LMConfig(d_model=32, n_layers=1, n_heads=2)
    tc = TrainConfig(batch_size=8, seq_len=32, eval_tokens=2048)
    res = train_lm(6000, model_config=cfg, precision=PrecisionConfig.from_bits(4, 8, 8),
                   train_config=tc, data=token_data, seed=0)
    assert res.n_tokens == 6000 and not res.diverged and np.isfinite(res.val_loss)
    assert res.train_losses[-1] < res.train_losses[0] - 0.5
    assert res.model.blocks[0].qkv.w_fmt == get_format("int4_channel")
    again = train_lm(6000, model_config=cfg, precision=PrecisionConfig.from_bits(4, 8, 8),
                     train_config=tc, data=token_data, seed=0)
    assert again.val_loss == res.val_loss  # deterministic given the seed
    assert abs(evaluate_loss(res.model, token_data, seq_len=32, max_tokens=2048)
               - res.val_loss) < 1e-6


def test_nan_loss_is_reported_not_raised(token_data) -> None:
    res = train_lm(4096, model_config=LMConfig(d_model=32, n_layers=1, n_heads=2),
                   train_config=TrainConfig(lr=1e4, seq_len=32, eval_tokens=1024),
                   data=token_data)
    assert res.diverged and np.isnan(res.val_loss) and res.n_tokens < 4096


ERRORS = [
    (lambda: LMConfig(d_model=30, n_heads=4), ValueError, r"divisible by `n_heads`"),
    (lambda: LMConfig(n_layers=0), ValueError, r"'n_layers' parameter of LMConfig"),
    (lambda: TrainConfig(lr=-1.0), ValueError, r"'lr' parameter of TrainConfig"),
    (lambda: PrecisionConfig(weights=1), ValueError, r"'weights' parameter must be an int"),
    (lambda: PrecisionConfig(kv_point="mid"), ValueError, r"Invalid kv_point 'mid'"),
    (lambda: set_precision(torch.nn.Linear(2, 2), PrecisionConfig()), TypeError, r"TinyLM"),
    (lambda: train_lm(0), ValueError, r"'n_tokens' parameter of train_lm"),
]


@pytest.mark.parametrize(("call", "error", "match"), ERRORS)
def test_errors(call, error, match) -> None:  # noqa: ANN001
    with pytest.raises(error, match=match):
        call()
