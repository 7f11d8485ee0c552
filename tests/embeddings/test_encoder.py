"""EchoEncoder on the tiny random Llama: the encode contract, exact spans, the mechanism, bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fmlab.embeddings import EchoEncoder, pool_hidden_states

SENTS = ["The cat sat on the mat.", "A dog runs.", "", "Stocks fell sharply today, analysts said.",
         "A dog runs."]


@pytest.fixture(scope="module")
def echo(tiny):
    return EchoEncoder(*tiny, template="echo", cache_size=0)


@pytest.fixture(scope="module")
def classical(tiny):
    return EchoEncoder(*tiny, template="classical", cache_size=0)


# -- the sentence-transformers contract -------------------------------------------------------------
def test_shapes_and_types(echo):
    d = echo.get_sentence_embedding_dimension()
    out = echo.encode(SENTS)
    assert isinstance(out, np.ndarray) and out.shape == (len(SENTS), d) and out.dtype == np.float32
    one = echo.encode("A dog runs.")
    assert one.shape == (d,)
    np.testing.assert_allclose(one, out[1], atol=1e-5)
    t = echo.encode(SENTS, convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (len(SENTS), d)
    lst = echo.encode(SENTS[:2], convert_to_numpy=False)
    assert isinstance(lst, list) and len(lst) == 2 and lst[0].shape == (d,)
    assert echo.encode([]).shape == (0, d)


def test_normalize_and_empty_string_gives_zeros(echo):
    out = echo.encode(SENTS, normalize_embeddings=True)
    norms = np.linalg.norm(out, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 3, 4]], 1.0, atol=1e-5)
    assert norms[2] == 0.0 and np.isfinite(out).all()  # "" has no pooled tokens: zeros, not NaN


def test_batch_size_invariance_and_determinism(echo):
    a = echo.encode(SENTS, batch_size=1)
    b = echo.encode(SENTS, batch_size=4)
    c = echo.encode(SENTS, batch_size=4)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(b, c)


def test_unknown_kwargs_listed(echo):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'batchsize'"):
        echo.encode(SENTS, batchsize=3)


@pytest.mark.parametrize(
    ("sentences", "kwargs", "error", "match"),
    [
        (None, {}, TypeError, "Got None"),
        (["ok", None], {}, TypeError, r"sentences\[1\] is None.*''"),
        (["ok", 3], {}, TypeError, r"sentences\[1\] is int"),
        (42, {}, TypeError, "Got int"),
        (["ok"], {"batch_size": 0}, ValueError, "'batch_size'.*range"),
        (["ok"], {"normalize_embeddings": "yes"}, TypeError, "must be a bool"),
        (["ok"], {"prompt_type": "passages"}, ValueError, "Invalid prompt_type"),
        (["ok"], {"prompt_name": "nope"}, ValueError, "Unknown prompt_name"),
        (["ok"], {"device": "meta"}, ValueError, "differs from the encoder's device"),
    ],
)
def test_bad_input(echo, sentences, kwargs, error, match):
    with pytest.raises(error, match=match):
        echo.encode(sentences, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pooling": "avg"}, ValueError, r"Invalid pooling 'avg'.*\('mean', 'last'\)"),
        ({"template": "ecko"}, ValueError, "Did you mean"),
        ({"max_length": 10_000}, ValueError, "exceeds the model's context"),
        ({"max_length": 1}, ValueError, "'max_length'"),
        ({"batch_size": -1}, ValueError, "'batch_size'"),
        ({"dtype": "fp8"}, ValueError, "'dtype' parameter of EchoEncoder"),
        ({"prompts": ["a"]}, TypeError, "'prompts'"),
    ],
)
def test_bad_constructor_args(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        EchoEncoder(*tiny, **kwargs)


def test_model_and_tokenizer_type_errors(tiny):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        EchoEncoder("smollm2", tiny[1])
    with pytest.raises(TypeError, match="tokenizer"):
        EchoEncoder(tiny[0], "tok")


# -- exact spans ----------------------------------------------------------------------------------
def test_pool_mask_covers_exactly_the_second_copy(echo):
    text = "The cat sat on the mat."
    item = echo.tokenize(text)
    expected = echo.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    pooled = [i for i, m in zip(item.input_ids, item.pool_mask, strict=True) if m]
    assert pooled == expected
    (a0, a1), (b0, b1) = item.copies
    assert item.input_ids[a0:a1] == item.input_ids[b0:b1] and b1 == len(item.input_ids)


def test_release_template_pools_copy_plus_eos(tiny):
    enc = EchoEncoder(*tiny, template="echo.release")
    item = enc.tokenize("hello world")
    tok = enc.tokenizer
    assert item.input_ids[0] == tok.bos_token_id and item.input_ids[-1] == tok.eos_token_id
    pooled = [i for i, m in zip(item.input_ids, item.pool_mask, strict=True) if m]
    assert pooled == tok("hello world", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_span_exact_when_tokenizer_merges_across_the_boundary(tiny, merging_tokenizer):
    model, _ = tiny
    enc = EchoEncoder(model, merging_tokenizer, template="Say: {x}, again: [[{x}]],")
    text = "It ended."
    item = enc.tokenize(text)
    joined = "Say: It ended., again: It ended.,"
    natural = merging_tokenizer(joined, add_special_tokens=False)["input_ids"]
    merged = merging_tokenizer.convert_tokens_to_ids(".,")
    assert merged in natural and merged not in item.input_ids  # the joined string would merge
    pooled = [i for i, m in zip(item.input_ids, item.pool_mask, strict=True) if m]
    assert pooled == merging_tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    assert merging_tokenizer.decode(pooled) == " " + text


def test_truncation_consistent_copies_and_error_mode(tiny):
    enc = EchoEncoder(*tiny, template="echo", max_length=64)
    long = "word " * 200
    item = enc.tokenize(long)
    (a0, a1), (b0, b1) = item.copies
    assert len(item.input_ids) <= 64 and item.truncated
    assert item.input_ids[a0:a1] == item.input_ids[b0:b1]
    out = enc.encode([long, "short"])
    assert np.isfinite(out).all() and enc.n_truncated_ == 1
    strict = EchoEncoder(*tiny, template="echo", max_length=64, truncate=False)
    with pytest.raises(ValueError, match="truncate=True"):
        strict.encode([long])


# -- the mechanism --------------------------------------------------------------------------------
def test_classical_prefix_states_ignore_the_end_but_echo_states_do_not(echo, classical):
    a, b = "the first words stay the same here", "the first words stay the same there"
    k = 20  # tokens of the shared prefix, in both copies
    c_a, c_b = classical.token_embeddings([a, b])
    e_a, e_b = echo.token_embeddings([a, b])
    np.testing.assert_allclose(c_a[:k], c_b[:k], atol=1e-5)  # causal: cannot see the change
    assert np.abs(e_a[:k] - e_b[:k]).max() > 1e-3  # second copy attends to the whole first copy


def test_pool_hidden_states_mean_last_and_empty():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    m = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]])
    mean = pool_hidden_states(h, m, "mean")
    last = pool_hidden_states(h, m, "last")
    torch.testing.assert_close(mean[0], h[0, 1:3].mean(0))
    torch.testing.assert_close(last[0], h[0, 2])
    assert (mean[1] == 0).all() and (last[1] == 0).all()


def test_last_pooling_runs(tiny):
    enc = EchoEncoder(*tiny, pooling="last")
    out = enc.encode(SENTS)
    assert np.abs(out[2]).sum() == 0 and np.abs(out[0]).sum() > 0


# -- never mutate the caller's objects -------------------------------------------------------------
def test_callers_tokenizer_and_model_untouched(tiny):
    model, tok = tiny
    before = (tok.padding_side, tok.pad_token, tok.truncation_side, len(tok))
    params = {k: v.clone() for k, v in model.state_dict().items()}
    enc = EchoEncoder(model, tok, dtype="bfloat16")
    enc.encode(SENTS)
    assert enc.tokenizer is not tok
    assert (tok.padding_side, tok.pad_token, tok.truncation_side, len(tok)) == before
    assert next(model.parameters()).dtype == torch.float32
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k])
    assert enc.dtype == torch.bfloat16


def test_bf16_close_to_fp32(tiny):
    a = EchoEncoder(*tiny).encode(SENTS[:2], normalize_embeddings=True)
    b = EchoEncoder(*tiny, dtype="bfloat16").encode(SENTS[:2], normalize_embeddings=True)
    assert (a * b).sum(1).min() > 0.99


# -- prompts --------------------------------------------------------------------------------------
def test_prompts_task_name_and_prompt_type(tiny):
    enc = EchoEncoder(*tiny, template="echo.release", prompts={"STSBenchmark": "Find paraphrases"})
    plain = enc.encode("hi there")
    by_task = enc.encode("hi there", task_name="STSBenchmark")
    doc = enc.encode("hi there", prompt_type="passage", task_name="STSBenchmark")
    assert not np.allclose(plain, by_task)
    np.testing.assert_allclose(doc, enc.encode_document("hi there"), atol=1e-6)
    assert not np.allclose(doc, plain)
    np.testing.assert_allclose(enc.encode("hi there", prompt="Find paraphrases"), by_task,
                               atol=1e-6)


# -- efficiency features --------------------------------------------------------------------------
def test_cache_returns_identical_vectors_and_respects_size(tiny):
    enc = EchoEncoder(*tiny, cache_size=3)
    a = enc.encode(SENTS)
    assert len(enc._cache) == 3
    b = enc.encode(SENTS)
    np.testing.assert_allclose(a, b, atol=1e-5)
    enc.clear_cache()
    assert len(enc._cache) == 0


def test_encode_corpus_writes_atomically_and_resumes(tiny, tmp_path):
    enc = EchoEncoder(*tiny, cache_size=0)
    texts = [f"sentence number {i}" for i in range(23)]
    ref = enc.encode(texts)
    out = tmp_path / "emb.npy"
    # simulate an interrupted run: the second chunk fails
    calls = {"n": 0}
    original = enc.encode

    def flaky(batch, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(batch, **kw)

    enc.encode = flaky  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        enc.encode_corpus(texts, out, chunk_size=10)
    assert not out.exists()
    state = json.loads((tmp_path / "emb.partial.json").read_text())
    assert state["n_done"] == 10
    enc.encode = original  # type: ignore[method-assign]
    seen = []
    enc.encode = lambda batch, **kw: (seen.append(len(batch)), original(batch, **kw))[1]
    path = enc.encode_corpus(texts, out, chunk_size=10)
    assert seen == [10, 3]  # resumed after the finished chunk
    np.testing.assert_allclose(np.load(path), ref, atol=1e-5)
    assert not (tmp_path / "emb.partial.npy").exists()
    with pytest.raises(ValueError, match=".npy"):
        enc.encode_corpus(texts, tmp_path / "emb.bin")


def test_copying_the_encoder_is_independent(echo):
    other = copy.deepcopy(echo)
    np.testing.assert_allclose(other.encode("A dog runs."), echo.encode("A dog runs."), atol=1e-6)


def test_import_is_cheap():
    code = ("import sys, fmlab.embeddings as e; e.get_template('echo'); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_mteb2_dataloader_input_matches_a_list(echo):
    from types import SimpleNamespace

    from torch.utils.data import DataLoader

    texts = ["a cat sleeps", "a dog runs", "rain falls on the roof"]
    loader = DataLoader([{"text": t} for t in texts], batch_size=2)  # batches {"text": [...]}
    meta = SimpleNamespace(name="STSBenchmark")
    got = echo.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(got, echo.encode(texts, task_name="STSBenchmark"), atol=1e-6)
    with pytest.raises(TypeError, match="batch 0 is a dict with keys \\['image'\\]"):
        echo.encode(iter([{"image": [1]}]))
