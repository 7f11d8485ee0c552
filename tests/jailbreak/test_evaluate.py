"""Defenses and evaluation end to end on a tiny random Llama (fast)."""

from __future__ import annotations

import json

import pytest
import torch

from fmlab.jailbreak import (
    Compose,
    JailbreakAttack,
    PerplexityFilter,
    create_defense,
    evaluate,
    generate,
    load_task,
    train_dpo,
)
from fmlab.models import tiny_causal_lm

PROMPTS = ["What colour is a plum?", "Name a colour.", "What colour are grapes?", "Say hi."]


@pytest.fixture(scope="module")
def lm():
    return tiny_causal_lm(seed=0)


@pytest.fixture
def task(tmp_path):
    # a definition the random model's outputs violate: any whitespace (it emits newlines)
    path = tmp_path / "task.yaml"
    path.write_text(
        "name: blank\njudge: {kind: regex, pattern: '\\s'}\ntarget: ' '\nrefusal: Refused.\n"
        f"prompts: {{train: {json.dumps(PROMPTS)}, test: {json.dumps(PROMPTS)}}}\n"
        "pairs:\n  train:\n"
        + "".join(f"    - {{prompt: '{p}', chosen: 'No.', rejected: 'eee'}}\n" for p in PROMPTS)
    )
    return load_task(path)


def test_output_filter_is_always_safe_and_records_resume(lm, task, tmp_path):
    model, tok = lm
    base = evaluate(model, tok, task=task, max_new_tokens=8, out_dir=tmp_path / "a").rows[0]
    enforced = evaluate(model, tok, task=task, defense="output_filter", max_new_tokens=8,
                        out_dir=tmp_path / "a").rows[0]
    assert enforced["dsr"] == 1.0 and enforced["n"] == len(PROMPTS)
    assert base["n"] == len(PROMPTS) and base["dsr"] < 1.0  # the random model emits newlines
    recs = [json.loads(x) for x in (tmp_path / "a" / "records.jsonl").read_text().splitlines()]
    assert {r["defense"] for r in recs} == {"none", "output_filter"}
    assert set(recs[0]) >= {"prompt", "suffix", "input", "output", "unsafe", "blocked"}
    # a kill mid-write leaves a cut line: the rerun redoes that example only
    path = tmp_path / "a" / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    again = evaluate(model, tok, task=task, defense="output_filter", max_new_tokens=8,
                     out_dir=tmp_path / "a").rows[0]
    assert again["n"] == len(PROMPTS) and again["dsr"] == 1.0


def test_generation_and_perplexity_match_plain_transformers(lm):
    """The shared-prefix greedy decoding and log-perplexity equal transformers' own generate
    and a plain per-text forward."""
    from fmlab.jailbreak._generate import log_perplexity, render

    model, tok = lm
    chats = [[{"role": "system", "content": "Be brief. " * 4}, {"role": "user", "content": p}]
             for p in PROMPTS]
    got = generate(model, tok, chats, max_new_tokens=6, batch_size=3)
    for c, g in zip(chats, got, strict=True):
        ids = tok(render(tok, c), add_special_tokens=False, return_tensors="pt")["input_ids"]
        want = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert g == tok.decode(want[0, ids.shape[1]:], skip_special_tokens=True)
    texts = [render(tok, c) for c in chats]
    ref = []
    for t in texts:
        ids = tok(t, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        ref.append(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])))
    assert log_perplexity(model, tok, texts) == pytest.approx(ref, rel=1e-4)
    assert log_perplexity(model, tok, texts, batch_size=1) == pytest.approx(ref, rel=1e-4)


def test_cells_on_the_same_inputs_share_answers(lm, task, monkeypatch):
    import fmlab.jailbreak._generate as gen

    model, tok = lm
    calls = []
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    answers: dict = {}
    raw = evaluate(model, tok, task=task, max_new_tokens=8, answers=answers).rows[0]
    enforced = evaluate(model, tok, task=task, defense="output_filter", max_new_tokens=8,
                        answers=answers).rows[0]
    assert calls == [len(PROMPTS), 0] and len(answers) == len(PROMPTS)
    assert raw["dsr"] < 1.0 and enforced["dsr"] == 1.0  # the filter still judged the answers
    evaluate(model, tok, task=task, max_new_tokens=9, answers=answers)  # another length: new
    assert calls[-1] == len(PROMPTS)


def test_perplexity_filter_blocks_and_calibrates(lm, task):
    model, tok = lm
    row = evaluate(model, tok, task=task, defense=PerplexityFilter(threshold=0.0),
                   max_new_tokens=4).rows[0]
    assert row["n_blocked"] == len(PROMPTS) and row["dsr"] == 1.0
    f = PerplexityFilter(quantile=1.0).fit(model, tok, task)
    assert f.threshold_ == pytest.approx(max(f.calibration_))


def test_composed_defenses_and_costs(lm, task):
    model, tok = lm
    d = create_defense("system_prompt+output_filter")
    assert isinstance(d, Compose) and len(d.defenses) == 2
    row = evaluate(model, tok, task=task, defense=d, defense_name="combo",
                   max_new_tokens=4).rows[0]
    assert row["dsr"] == 1.0 and row["defense_extra_tokens_per_prompt"] > 0
    # the tiny model's 256-token context cannot hold the demonstrations: check the transform
    d = create_defense("system_prompt+icl").fit(model, tok, task)
    rec_input = d.transform([[{"role": "user", "content": "hi"}]], model, tok)[0]
    assert rec_input[0]["role"] == "system" and len(rec_input) == 1 + 8 + 1


def test_adaptive_gcg_and_static_suffix_attacks(lm, task):
    model, tok = lm
    a = JailbreakAttack("gcg", gcg={"num_steps": 2, "search_width": 8, "topk": 8},
                        n_train_prompts=2)
    row = evaluate(model, tok, task=task, attack=a, max_new_tokens=4).rows[0]
    assert a.suffix_ and row["suffix"] == a.suffix_ and row["gcg_steps"] == 2
    # the model reads exactly the tokens GCG optimised: prompt tokens, then the suffix's own
    from fmlab.jailbreak._generate import render

    q = task.prompts("test")[0]
    ids = tok(render(tok, [{"role": "user", "content": a.apply(q)}]),
              add_special_tokens=False)["input_ids"]
    head = tok(render(tok, [{"role": "user", "content": q + "{optim_str}"}]).partition(
        "{optim_str}")[0], add_special_tokens=False)["input_ids"]
    opt = tok(a.suffix_, add_special_tokens=False)["input_ids"]
    assert ids[: len(head) + len(opt)] == head + opt
    s = JailbreakAttack("suffix", suffix="!!")
    assert s.apply("q") == "q !!"
    r = JailbreakAttack("repeat", suffix="zz")
    r.fit(model, tok, create_defense("none"), task)
    assert r.apply("q").count("zz") == 2
    p = JailbreakAttack("ppl_prefix", suffix="zz")
    p.fit(model, tok, create_defense("none"), task)
    assert p.apply("q").startswith("Yesterday") and p.apply("q").endswith("q zz")
    assert JailbreakAttack("suffix", suffix=" zz").apply("q") == "q zz"


def test_dpo_with_lora_lowers_its_loss_and_merges(lm, task):
    model, tok = tiny_causal_lm(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged, info = train_dpo(model, tok, task.pairs("train"), max_steps=6, batch_size=2, lr=1e-2)
    assert len(info["losses"]) == 6 and info["losses"][-1] < info["losses"][0]
    assert not any("lora" in k for k in merged.state_dict())
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)


def test_dpo_on_the_last_layers_reuses_the_frozen_states_exactly(task):
    from fmlab.context import FrozenPrefix
    from fmlab.jailbreak._dpo import _answer_logps, _encode_pairs

    model, tok = tiny_causal_lm(seed=1, num_hidden_layers=4)
    rows, n_answer = _encode_pairs(tok, task.pairs("train")[:3], 96)
    with torch.no_grad():
        full = _answer_logps(model, tok, rows, n_answer)
        tail = _answer_logps(model, tok, rows, n_answer, FrozenPrefix(model, 3))
    torch.testing.assert_close(tail, full, rtol=1e-4, atol=1e-4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged, info = train_dpo(model, tok, task.pairs("train"), max_steps=4, batch_size=2, lr=1e-2,
                             last_layers=1)
    assert info["losses"][-1] < info["losses"][0]
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("model.layers.3.") for k in changed)
    with pytest.raises(ValueError, match="last_layers"):
        train_dpo(model, tok, task.pairs("train"), max_steps=1, last_layers=5)


def test_dpo_adapter_cache_reuses_the_same_weights(task, tmp_path, monkeypatch):
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path / "cache"))
    kw = {"max_steps": 3, "batch_size": 2, "lr": 1e-2, "cache": True}
    first, info1 = train_dpo(*tiny_causal_lm(seed=1), task.pairs("train"), **kw)
    again, info2 = train_dpo(*tiny_causal_lm(seed=1), task.pairs("train"), **kw)
    assert not info1["cached"] and info2["cached"] and info2["losses"] == info1["losses"]
    for (k, a), b in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    # another setting or another model is another adapter, trained afresh
    _, info3 = train_dpo(*tiny_causal_lm(seed=1), task.pairs("train"), **{**kw, "lr": 2e-2})
    _, info4 = train_dpo(*tiny_causal_lm(seed=2), task.pairs("train"), **kw)
    assert not info3["cached"] and not info4["cached"]


def test_bad_inputs(lm, task):
    model, tok = lm
    with pytest.raises(ValueError, match="Invalid jailbreak attack 'gcgg'"):
        JailbreakAttack("gcgg")
    with pytest.raises(ValueError, match="needs a non-empty suffix"):
        JailbreakAttack("suffix")

    def broken(output):
        raise RuntimeError("judge down")

    from fmlab.jailbreak import ClassifierJudge

    with pytest.raises(RuntimeError, match="judge .* raised RuntimeError: judge down on the output"):
        evaluate(model, tok, task=task, judge=ClassifierJudge(broken), max_new_tokens=2)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        generate(model, tok, [[{"role": "user", "content": "word " * 300}]], max_new_tokens=4)
    with pytest.raises(KeyError, match="Unknown defense 'paraphrse'"):
        create_defense("paraphrse")
