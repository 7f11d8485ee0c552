"""Tiny random models of real architectures: build fast, run forward and generate, are seeded."""

from __future__ import annotations

import pytest
import torch

from fmlab.models import tiny_causal_lm, tiny_clip


def test_tiny_causal_lm_forward_and_generate():
    model, tok = tiny_causal_lm()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    batch = tok(["hello world", "a"], return_tensors="pt", padding=True)
    logits = model(**batch).logits  # (2, T, V)
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)


def test_tiny_tokenizer_round_trips_and_has_chat_template():
    _, tok = tiny_causal_lm()
    text = "Héllo, wörld! 123 ✓"
    assert tok.decode(tok(text)["input_ids"]) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                   add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>"


def test_tiny_causal_lm_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, _ = tiny_causal_lm(seed=1)
    assert torch.equal(torch.rand(1), expected)
    b, _ = tiny_causal_lm(seed=1)
    c, _ = tiny_causal_lm(seed=2)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_tiny_causal_lm_config_overrides():
    model, _ = tiny_causal_lm(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                              num_key_value_heads=1, vocab_size=300)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (3, 32, 300)


def test_tiny_causal_lm_trains():
    model, tok = tiny_causal_lm()
    model.train()
    ids = tok(["abcabcabcabc"], return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seed": -1}, ValueError, r"'seed' parameter of tiny_causal_lm"),
        ({"seed": 1.5}, TypeError, r"'seed' parameter of tiny_causal_lm"),
        ({"vocab_size": 100}, ValueError, r"'vocab_size' parameter of tiny_causal_lm must be an "
                                          r"int >= 260"),
    ],
)
def test_tiny_causal_lm_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_causal_lm(**kwargs)


def test_tiny_clip_forward():
    model = tiny_clip(seed=0)
    assert type(model).__name__ == "CLIPModel"
    _, tok = tiny_causal_lm()
    text = tok(["a photo of a cat", "a dog"], return_tensors="pt", padding=True)
    pixels = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                    pixel_values=pixels)
    assert out.logits_per_image.shape == (3, 2)
    assert out.image_embeds.shape == (3, 32) and out.text_embeds.shape == (2, 32)


def test_tiny_clip_is_seeded():
    a, b, c = tiny_clip(seed=0), tiny_clip(seed=0), tiny_clip(seed=1)
    pa, pb, pc = (m.visual_projection.weight for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    with pytest.raises(ValueError, match="'seed' parameter of tiny_clip"):
        tiny_clip(seed=-3)
