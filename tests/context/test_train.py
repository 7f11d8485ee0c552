"""Fine-tuning loop, tracker callback, tracking over checkpoints, mitigations and the CLI, on the
tiny random model (seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmlab.cli import main
from fmlab.context import (
    CFTask,
    ReliabilityTracker,
    counterfactual_augment,
    filter_context_critical,
    finetune,
    make_instruction_mix,
    no_context_nll,
    track,
)
from fmlab.exceptions import ModelUnavailableError

EXAMPLES = [
    {"kind": "reading_novel", "relation": "capital", "context": f"The capital of Zed{i} is Qo{i}.",
     "question": f"What is the capital of Zed{i}?", "target": f"Qo{i}"} for i in range(4)
] + [{"kind": "closed_book", "relation": "capital", "context": "",
      "question": "What is the capital of France?", "target": "Paris"}]


def _probe() -> CFTask:
    return CFTask.from_items("probe", [
        {"id": str(i), "context": f"Now the capital of Land{i} is Bo{i}.",
         "question": f"Capital of Land{i}?", "answer": f"Bo{i}", "memory_answer": f"Ka{i}"}
        for i in range(4)])


@pytest.fixture(scope="module")
def tiny():
    from fmlab.models import tiny_causal_lm

    return tiny_causal_lm(seed=0, max_position_embeddings=1024)


def test_lora_finetune_learns_and_calls_back(tiny):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tracker = ReliabilityTracker([_probe()], EXAMPLES[:2], limit=None, every=5)
    res = finetune(model, tok, EXAMPLES, steps=10, batch_size=5, lr=1e-2, lora_rank=4,
                   eval_every=5, callbacks=[tracker])
    assert [h["step"] for h in res.history] == [0, 5, 10]
    assert {"counterfactual", "parametric", "heldout_nll", "heldout_acc"} <= set(res.history[1])
    assert res.losses[-1] < res.losses[0] - 0.5
    assert res.history[-1]["heldout_nll"] < res.history[0]["heldout_nll"]
    assert res.trainable_params < sum(p.numel() for p in model.parameters()) / 5
    assert res.n_tokens > 0 and res.callback_seconds > 0 and res.tokens_per_second > 0
    # the caller's model is untouched
    assert all(torch_equal(v, model.state_dict()[k]) for k, v in before.items())
    assert tracker.curve()["step"].tolist() == [0, 5, 10]


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_qk_only_full_finetune_changes_only_query_key(tiny):
    model, tok = tiny
    res = finetune(model, tok, EXAMPLES, steps=2, batch_size=2, lr=1e-2, lora_rank=None,
                   params="qk")
    after = dict(res.model.named_parameters())
    for name, p in model.named_parameters():
        changed = not torch_equal(p, after[name])
        assert changed == (".q_proj." in name or ".k_proj." in name), name


def test_filtering_and_augmentation():
    mix = make_instruction_mix(40, agree_share=0.5, seed=0)
    reading = [i for i, e in enumerate(mix) if e["context"]]
    nll = np.array([float(i) if e["context"] else np.nan for i, e in enumerate(mix)])
    kept = filter_context_critical(mix, nll, drop_share=0.25)
    assert len(kept) == len(mix) - round(0.25 * len(reading))
    dropped = [mix[i] for i in reading[:round(0.25 * len(reading))]]
    assert all(not any(d is k for k in kept) for d in dropped)
    aug = counterfactual_augment(mix, 0.25, seed=0)
    cf = [e for e in aug if e["kind"] == "counterfactual"]
    assert len(cf) == 10 and all(e["target"] in e["context"] for e in cf)
    with pytest.raises(ValueError, match="one value per example"):
        filter_context_critical(mix, nll[:3])


def test_no_context_nll_only_for_context_examples(tiny):
    model, tok = tiny
    nll = no_context_nll(model, tok, EXAMPLES)
    assert np.isnan(nll[-1]) and np.all(np.isfinite(nll[:-1])) and np.all(nll[:-1] > 0)


def test_track_over_checkpoints_and_bad_folders(tiny, tmp_path):
    model, tok = tiny
    for k in (0, 1):
        model.save_pretrained(tmp_path / f"ck{k}")
        tok.save_pretrained(tmp_path / f"ck{k}")
    rows = track([tmp_path / "ck0", tmp_path / "ck1"], [_probe()], steps=[0, 50], limit=None)
    assert [r["step"] for r in rows] == [0, 50]
    assert rows[0]["counterfactual"] == rows[1]["counterfactual"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="has no weights"):
        track([tmp_path / "empty"], [_probe()])
    with pytest.raises(ValueError, match="one entry per checkpoint"):
        track([tmp_path / "ck0"], [_probe()], steps=[1, 2])


def test_cli_toy_make_set_and_errors(tmp_path, capsys):
    assert main(["context", "toy", "--steps", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["m_c"][1] > out["m_c"][0] and out["m_c"][1] > out["m_c"][2]
    path = tmp_path / "caps.jsonl"
    assert main(["context", "make-set", "capital", "--n", "6", "--out", str(path)]) == 0
    assert len(path.read_text().splitlines()) == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "k1", "context": "c", "question": "q", "answer": "a"}) + "\n")
    capsys.readouterr()
    assert main(["context", "eval", "--model", "tiny-llama", "--tasks", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "Item 0" in err and "'k1'" in err and "memory_answer" in err
    (tmp_path / "nowt").mkdir()
    assert main(["context", "track", str(tmp_path / "nowt"), "--heldout", "0"]) == 1
    assert "has no weights" in capsys.readouterr().err
    assert main(["context", "tasks"]) == 0
    assert "cf_quotes" in capsys.readouterr().out


def test_tracker_as_transformers_trainer_callback(tiny):
    from types import SimpleNamespace

    import transformers

    model, tok = tiny
    tracker = ReliabilityTracker([_probe()], None, limit=2, every=5)
    cb = tracker.trainer_callback(tok)
    assert isinstance(cb, transformers.TrainerCallback)
    for step in (4, 5):
        cb.on_step_end(None, SimpleNamespace(global_step=step), None, model=model)
    assert [r["step"] for r in tracker.history] == [5]


def test_frozen_prefix_is_exact_and_guarded():
    """Cached prefix states + the tail reproduce the full forward pass: the same log-likelihoods
    and the same LoRA training losses; a model whose prefix differs, or a mismatched split, is
    refused."""
    import torch

    from fmlab.context import FrozenPrefix, HFCausalLM
    from fmlab.context._lm import LoglikelihoodRequest
    from fmlab.models import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=1, num_hidden_layers=4, max_position_embeddings=1024)
    prefix = FrozenPrefix(model, 2)
    reqs = [LoglikelihoodRequest(f"The capital of Land{i} is" + " so" * i, f"Bo{i}")
            for i in range(5)]
    full = HFCausalLM(model, tok, batch_size=3).loglikelihood(reqs)
    cached = HFCausalLM(model, tok, batch_size=3, prefix=prefix).loglikelihood(reqs)
    assert np.allclose([a for a, _ in full], [a for a, _ in cached], atol=1e-4)
    kw = dict(steps=3, batch_size=3, lr=1e-2, lora_rank=4, last_layers=2, seed=0)
    a = finetune(model, tok, EXAMPLES, prefix=False, **kw)
    b = finetune(model, tok, EXAMPLES, prefix=prefix, **kw)
    assert np.allclose(a.losses, b.losses, atol=1e-4) and a.losses[0] != a.losses[-1]
    with pytest.raises(ValueError, match="last_layers=3 leaves 1 frozen"):
        finetune(model, tok, EXAMPLES, prefix=prefix, **{**kw, "last_layers": 3})
    with pytest.raises(ValueError, match="n_frozen"):
        FrozenPrefix(model, 4)
    other, _ = tiny_causal_lm(seed=2, num_hidden_layers=4, max_position_embeddings=1024)
    with pytest.raises(ValueError, match="differ from the FrozenPrefix's reference"):
        HFCausalLM(other, tok, prefix=prefix).loglikelihood(reqs[:1])
    with pytest.raises(ValueError, match="trains parameters in its first 2 layers"):
        full_ft = finetune(model, tok, EXAMPLES, prefix=False, **{**kw, "lora_rank": None,
                                                                  "last_layers": None})
        prefix.logits(full_ft.model, [[1, 2, 3]], torch.ones(1, 3, dtype=torch.long),
                      torch.arange(3)[None], 1)
