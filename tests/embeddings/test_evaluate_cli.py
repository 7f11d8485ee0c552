"""Evaluation helpers on real data subsets (tiny LM), the toy experiment, and the ``fmlab embed``
CLI; plus slow checks on SmolLM2 / Gemma-3 / MiniLM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fmlab.cli import main
from fmlab.embeddings import (
    EchoEncoder,
    evaluate,
    evaluate_sts,
    make_toy_sentences,
    mteb_instructions,
    toy_experiment,
)


@pytest.fixture(scope="module")
def enc(tiny):
    return EchoEncoder(*tiny, template="echo")


def test_evaluate_sts_on_a_subset(enc):
    r = evaluate_sts(enc, "stsb", n=40, seed=1)
    assert r.task == "stsb" and r.split == "test" and r.n == 40 and r.details["n_total"] == 1379
    assert -100 <= r.score <= 100 and math.isfinite(r.details["pearson"])
    again = evaluate_sts(enc, "stsb", n=40, seed=1)
    assert again.score == pytest.approx(r.score, abs=1e-6)


def test_evaluate_tasks_and_pair_objects(enc, need):
    need("sickr")
    res = evaluate(enc, "wordsim353,sickr", n=30)
    assert [r.task for r in res] == ["wordsim353", "sickr"]
    assert res[1].split == "all" and res[1].details["n_total"] == 9927  # MTEB scores all pairs
    from fmlab.data import PairDataset

    pairs = PairDataset(["a cat", "a car", "the sea"], ["a kitten", "a bus", "a dog"],
                        np.array([4.0, 2.5, 0.5]), "toy")
    assert evaluate_sts(enc, pairs).n == 3


def test_each_distinct_text_is_encoded_once(enc):
    from fmlab.data import PairDataset

    seen: list[list[str]] = []

    class Counting:
        def encode(self, texts, **kw):
            seen.append(list(texts))
            return enc.encode(texts, **kw)

    t1, t2 = ["a cat", "a car", "a cat", "the sea"], ["a kitten", "a cat", "a dog", "a car"]
    pairs = PairDataset(t1, t2, np.array([4.0, 2.5, 1.0, 0.5]), "dupes")
    r = evaluate_sts(Counting(), pairs)
    assert seen == [["a cat", "a car", "the sea", "a kitten", "a dog"]]  # first-seen order
    assert r.score == pytest.approx(evaluate_sts(enc, pairs).score, abs=1e-6)
    a = enc.encode(t1, normalize_embeddings=True)
    b = enc.encode(t2, normalize_embeddings=True)
    cos = (a * b).sum(1)  # the same cosines as encoding every text, duplicates included
    from scipy.stats import spearmanr

    assert r.score == pytest.approx(100 * spearmanr(cos, [4.0, 2.5, 1.0, 0.5])[0], abs=1e-4)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda e: evaluate(e, "stsx"), ValueError, "Invalid task 'stsx'"),
        (lambda e: evaluate_sts(object(), "stsb", n=5), TypeError, "encode"),
        (lambda e: evaluate_sts(e, 3.0), TypeError, "text1, text2 and scores"),
        (lambda e: evaluate_sts(e, "stsb", n=1), ValueError, "'n'"),
    ],
)
def test_evaluate_errors(enc, call, error, match):
    with pytest.raises(error, match=match):
        call(enc)


def test_probe_runs_on_rotten_tomatoes(enc):
    from fmlab.embeddings import probe_classification

    r = probe_classification(enc, n_train=40, n_test=40)
    assert r.metric == "accuracy" and 0 <= r.score <= 100 and r.details["n_train"] == 40


def test_toy_classical_early_tokens_are_blind(tiny):
    data = make_toy_sentences(8, seed=0)
    assert all(t.startswith(e) for t, e in zip(data.texts, data.early, strict=True))
    res = toy_experiment(EchoEncoder(*tiny, template="classical"), data)
    # early tokens see nothing of the class-deciding clause: at most chance plus noise
    assert res["early_accuracy"] <= res["chance"] + 0.2
    assert res["mean_early_tokens"] > 10


def test_mteb_instructions():
    inst = mteb_instructions()
    assert inst["MSMARCO"].startswith("Given a web search query")


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_templates(capsys):
    assert main(["embed", "templates"]) == 0
    out = capsys.readouterr().out
    assert "echo" in out and "classical" in out and "[[{x}]]" in out


def test_cli_encode_and_eval(tmp_path, capsys):
    src = tmp_path / "s.txt"
    src.write_text("a cat sleeps\n\na dog runs\n", encoding="utf-8")
    out = tmp_path / "e.npy"
    code = main(["embed", "encode", str(src), "--model", "tiny-llama", "--template", "echo",
                 "--out", str(out), "--json", "--dtype", "float32"])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    arr = np.load(out)
    assert arr.shape == (3, info["dim"]) and not arr[1].any()  # the empty line is the zero vector
    code = main(["embed", "eval", "--tasks", "wordsim353", "--model", "tiny-llama",
                 "--template", "echo,classical", "--limit", "20", "--json", "--dtype", "float32"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["template"] for r in rows] == ["echo", "classical"] and rows[0]["n"] == 20


def test_cli_errors(tmp_path, capsys):
    assert main(["embed", "encode", str(tmp_path / "missing.txt"), "--out", "x.npy"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["embed", "eval", "--pooling", "avg"]) == 2


# -- real models (slow) ---------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_echo_beats_classical_on_stsb_subset():
    echo = EchoEncoder.from_pretrained("smollm2-135m-instruct", template="echo")
    classical = EchoEncoder(echo.model, echo.tokenizer, template="classical")
    e = evaluate_sts(echo, "stsb", n=150, seed=0).score
    c = evaluate_sts(classical, "stsb", n=150, seed=0).score
    assert e > c + 3, (e, c)


@pytest.mark.slow
def test_gemma3_encodes_with_exact_span():
    enc = EchoEncoder.from_pretrained("gemma-3-270m", template="echo")
    item = enc.tokenize("A man plays the guitar.")
    assert item.input_ids[0] == enc.tokenizer.bos_token_id  # Gemma expects BOS; added unpooled
    assert item.pool_mask[0] == 0
    pooled = [i for i, m in zip(item.input_ids, item.pool_mask, strict=True) if m]
    assert pooled == enc.tokenizer(" A man plays the guitar.", add_special_tokens=False)["input_ids"]
    out = enc.encode(["A man plays the guitar.", "Someone plays music.", "Stocks fell."],
                     normalize_embeddings=True)
    assert out.shape == (3, enc.get_sentence_embedding_dimension())
    assert out[0] @ out[1] > out[0] @ out[2]


@pytest.mark.slow
def test_minilm_through_the_same_evaluation():
    from fmlab.models import load_sentence_encoder

    r = evaluate_sts(load_sentence_encoder("all-minilm-l6-v2"), "stsb", n=200)
    assert r.score > 70  # a trained sentence encoder (MTEB STSBenchmark ~82)


def test_study_is_registered_and_light_to_import():
    from fmlab.studies import get_study

    study = get_study("embeddings.echo")
    assert study.capability == "embeddings" and "2402.15449" in study.paper


@pytest.mark.slow
def test_study_runs_on_small_subsets(tmp_path):
    from fmlab.studies import reproduce

    reproduce(["embeddings.echo"], out=tmp_path, scale="quick",
              options={"n_sts": 20, "n_probe": 30, "n_toy": 5, "n_word": 30},
              show_progress=False)
    metrics = json.loads((tmp_path / "embeddings.echo" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and len(metrics["claims"]) == 4


@pytest.mark.parametrize("template", ["classical", "echo"])
def test_study_scores_both_poolings_from_one_forward(tiny, template):
    from fmlab.embeddings._study import _OnePass

    texts = ["a cat sat", "", "the sea is wide today", "a cat sat"]
    store: dict = {}
    calls: list[int] = []
    mean = EchoEncoder(*tiny, template=template, pooling="mean")
    real_states = mean.token_embeddings
    mean.token_embeddings = lambda t, **kw: calls.append(len(t)) or real_states(t, **kw)
    for pooling in ("mean", "last"):
        got = _OnePass(mean, pooling, store).encode(texts, normalize_embeddings=True)
        ref = EchoEncoder(*tiny, template=template, pooling=pooling).encode(
            texts, normalize_embeddings=True)
        np.testing.assert_allclose(got, ref, atol=1e-5)
    assert calls == [3]  # one forward for the three distinct texts, both poolings
