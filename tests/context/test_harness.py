"""The evaluation harness without a real model: scoring, tasks, metrics, JSONL resume, bad input;
and the batched greedy decoder against transformers' generate on the tiny model."""

from __future__ import annotations

import json

import pytest

from fmlab.context import (
    CFTask,
    FunctionLM,
    HFCausalLM,
    evaluate,
    get_task,
    load_task,
    make_conflict_set,
    score_generation,
)
from fmlab.context._evaluate import wilson_interval
from fmlab.context._lm import GenerationRequest, LoglikelihoodRequest

ECHO = FunctionLM(lambda r: r.item["context"], name="echo")


def _items(n=6):
    return [{"id": f"q{i}", "context": f"The capital of Land{i} is Newtown{i}.",
             "question": f"What is the capital of Land{i}?", "answer": f"Newtown{i}",
             "memory_answer": f"Oldtown{i}", "category": "even" if i % 2 == 0 else "odd"}
            for i in range(n)]


@pytest.mark.parametrize(("gen", "sub", "first", "exact"), [
    ("Lyon", (1, 0), "counterfactual", "counterfactual"),
    ("The answer is Lyon.\nParis was the capital before.", (1, 1), "counterfactual", "counterfactual"),
    ("Paris, not Lyon.", (1, 1), "other", "other"),
    ("Paris", (0, 1), "parametric", "parametric"),
    ("The capital of France is Lyon.", (1, 0), "counterfactual", "other"),
    ("I do not know.", (0, 0), "other", "other"),
    ("lyon!", (1, 0), "counterfactual", "counterfactual"),
])
def test_scoring_rules(gen, sub, first, exact):
    s = score_generation(gen, ["Lyon"], ["Paris"])
    assert (s["substring"]["counterfactual"], s["substring"]["parametric"]) == tuple(map(bool, sub))
    assert [k for k, v in s["first"].items() if v] == [first]
    assert [k for k, v in s["exact"].items() if v] == [exact]


def test_scoring_nested_answers_and_initials():
    s = score_generation("It is New Cairo.", ["New Cairo"], ["Cairo"])
    assert s["first"]["counterfactual"] and not s["first"]["parametric"]
    s = score_generation("P. W. Botha led the country.", ["P. W. Botha"], ["F. W. de Klerk"])
    assert s["first"]["counterfactual"]
    s = score_generation("Durres", ["Durrës"], ["Tirana"])  # accents are normalised
    assert s["exact"]["counterfactual"]


def test_echo_cannot_fool_exact_match(need):
    need("cf-capitals")
    need("cf-world-facts")
    rep = evaluate(ECHO, ["cf_world_facts"])
    sub = rep.task("cf_world_facts", "substring")
    # substring credits the echo with both answers for most passages (the memorised answer is
    # named in the passage too), exact match credits neither
    assert sub["counterfactual"]["value"] > 0.95 and sub["parametric"]["value"] > 0.8
    ex = rep.task("cf_world_facts", "exact")
    assert ex["counterfactual"]["value"] == 0 and ex["parametric"]["value"] == 0
    first = rep.task("cf_world_facts", "first")
    assert first["counterfactual"]["value"] + first["parametric"]["value"] < 0.5


def test_both_accuracies_on_stub_models(need):
    need("cf-capitals")
    need("cf-bio")
    oracle = FunctionLM(lambda r: r.item["answer"][0] + "\n", name="oracle")
    memory = FunctionLM(lambda r: f"It is {r.item['memory_answer'][0]}.", name="memory")
    tasks = ["cf_capitals", "cf_bio", "cf_quotes", "gen_capital"]
    a, b = evaluate(oracle, tasks, limit=40), evaluate(memory, tasks, limit=40)
    assert a.counterfactual_accuracy > 0.97 and a.parametric_accuracy < 0.03
    assert b.parametric_accuracy > 0.97 and b.counterfactual_accuracy < 0.03
    agree = [r for r in a.rows if r["relation"] == "agree" and r["scoring"] == "first"]
    assert agree and all(r["counterfactual"]["value"] > 0.95 for r in agree)
    assert "mean over tasks" in a.summary()


def test_loglikelihood_choice_and_categories():
    task = CFTask.from_items("toy", _items())
    lm = FunctionLM(None, lambda r: 0.0 if r.continuation.startswith("New") else -1.0)
    rep = evaluate(lm, [task], method="loglikelihood")
    assert rep.scoring == "choice" and rep.counterfactual_accuracy == 1.0
    cats = {r["category"] for r in rep.rows}
    assert cats == {"all", "even", "odd"}


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and 0.2 < hi < 0.35
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.19, abs=0.01)


def test_records_resume(tmp_path):
    calls = []
    lm = FunctionLM(lambda r: calls.append(r.item["id"]) or r.item["answer"][0], name="x")
    task = CFTask.from_items("toy", _items(10))
    out = tmp_path / "rec.jsonl"
    evaluate(lm, [task], output=out, limit=4, chunk_size=2)
    assert len(calls) == 4
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])  # a killed run's torn line
    rep = evaluate(lm, [task], output=out, chunk_size=3)
    assert len(calls) == 4 + 7  # the torn item and the 6 new ones
    assert len(rep.records) == 10 and rep.counterfactual_accuracy == 1.0
    assert len(out.read_text().splitlines()) == 10
    assert all("scores" in json.loads(x) for x in out.read_text().splitlines())
    with pytest.raises(ValueError, match="another configuration"):
        evaluate(FunctionLM(lambda r: "", name="other"), [task], output=out)


def test_generated_sets_have_both_relations():
    t = make_conflict_set("capital", n=40, agree_share=0.25, seed=1)
    rel = [it["relation"] for it in t.items]
    assert rel.count("agree") == 10 and rel.count("conflict") == 30
    for it in t.items:
        if it["relation"] == "conflict":
            assert it["answer"] != it["memory_answer"] and it["answer"][0] in it["context"]
        else:
            assert it["answer"] == it["memory_answer"]
    people = get_task("gen_nationality")
    assert len(people) > 1500 and people.items[0]["question"].startswith("What was the nation")


@pytest.mark.parametrize(("lines", "match"), [
    ([{"context": "c", "question": "q", "answer": "a"}], r"Item 0 .* missing field\(s\) 'memory_answer'"),
    ([{"id": "x", "context": "c", "question": "q", "answer": [], "memory_answer": "m"}],
     r"Item 0 .*id 'x'.* empty answer set in field 'answer'"),
    ([{"context": "c", "question": "q", "answer": " ", "memory_answer": "m"}], r"empty answer set"),
    ([{"context": "c", "question": "q", "answer": "a", "memory_answer": "m", "relation": "x"}],
     r"'relation' must be one of"),
])
def test_bad_task_files(tmp_path, lines, match):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    with pytest.raises(ValueError, match=match):
        load_task(path)


def test_bad_task_file_json_and_names(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"context": "c"}\nnot json\n')
    with pytest.raises(ValueError, match="Line 2 of task file"):
        load_task(path)
    with pytest.raises(KeyError, match="Unknown context task 'cf_capital'. Did you mean"):
        load_task("cf_capital")
    with pytest.raises(ValueError, match="Invalid method 'sample'"):
        evaluate(ECHO, ["cf_capitals"], method="sample")
    with pytest.raises(ValueError, match="Invalid scoring 'choice'"):
        evaluate(ECHO, ["cf_capitals"], scoring="choice")


@pytest.fixture(scope="module")
def tiny():
    from fmlab.models import tiny_causal_lm

    return tiny_causal_lm(seed=3)


def test_batched_greedy_matches_generate(tiny):
    import torch

    model, tok = tiny
    prompts = ["hello there", "The capital of France is", "a", "Question: what?\nAnswer:"]
    lm = HFCausalLM(model, tok, batch_size=3, max_new_tokens=8, chat=False, stop=("\n",))
    ours = lm.generate_until([GenerationRequest(p) for p in prompts])
    for p, got in zip(prompts, ours, strict=True):
        ids = tok(p, return_tensors="pt")
        with torch.no_grad():
            ref = model.generate(**ids, max_new_tokens=8, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        text = tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert got == text.split("\n")[0]
    # prompts that start alike: the shared part runs once and its KV cache is reused (the
    # layout [shared | pads | own tokens]); answers must not change
    head = "Answer the question using the background. "
    shared = [head + p for p in prompts]
    got = lm.generate_until([GenerationRequest(p) for p in shared])
    plain = HFCausalLM(model, tok, batch_size=3, max_new_tokens=8, chat=False, stop=("\n",),
                       share_prefix=False).generate_until([GenerationRequest(p) for p in shared])
    assert got == plain
    ids = tok(shared[1], return_tensors="pt")
    with torch.no_grad():
        ref = model.generate(**ids, max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    assert got[1] == tok.decode(ref[0, ids["input_ids"].shape[1]:],
                                skip_special_tokens=True).split("\n")[0]
    lls = lm.loglikelihood([LoglikelihoodRequest(p, "Paris") for p in prompts])
    one = HFCausalLM(model, tok, batch_size=1, chat=False).loglikelihood(
        [LoglikelihoodRequest(p, "Paris") for p in prompts])
    assert [x[0] for x in lls] == pytest.approx([x[0] for x in one], abs=1e-4)


def test_context_aware_decoding_changes_only_with_alpha(tiny):
    model, tok = tiny
    reqs = [GenerationRequest("Background: x\nQ: y", "Q: y", {"id": "0"})]
    plain = HFCausalLM(model, tok, max_new_tokens=6, chat=False).generate_until(reqs)
    zero = HFCausalLM(model, tok, max_new_tokens=6, chat=False, cad_alpha=0.0).generate_until(reqs)
    assert plain == zero
    with pytest.raises(ValueError, match="contrast prompt"):
        HFCausalLM(model, tok, cad_alpha=0.5, chat=False).generate_until(
            [GenerationRequest("p", None, {"id": "7"})])


def test_prompt_over_context_is_named(tiny):
    model, tok = tiny
    lm = HFCausalLM(model, tok, chat=False, max_new_tokens=8)
    long = CFTask.from_items("long", [{"id": "big", "context": "word " * 400, "question": "q",
                                       "answer": "a", "memory_answer": "b"}])
    with pytest.raises(ValueError, match=r"item 'big' of task 'long' has \d+ tokens.*context of 256"):
        evaluate(lm, [long])


def test_function_lm_without_loglikelihood_says_how_to_add_one() -> None:
    with pytest.raises(ValueError, match=r"'echo' was built without a loglikelihood.*pass "
                                         r"loglikelihood=fn"):
        ECHO.loglikelihood([LoglikelihoodRequest("Q: capital of France? A:", "Paris")])
