"""Fixtures: the tiny random Llama from fmlab.models (loaded once per session) and a BPE tokenizer
with merges, to exercise token merges across template boundaries."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    from fmlab.models import tiny_causal_lm

    return tiny_causal_lm(seed=0)


@pytest.fixture(scope="session")
def merging_tokenizer():
    """A byte-level BPE whose merges join '.' and ',' (so '.,' is one token in a joined string)."""
    import tokenizers
    import transformers

    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(alphabet)}
    merges = [(".", ","), ("Ġ", "a")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>")
    for tok in specials:
        vocab[tok] = len(vocab)
    core = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = tokenizers.decoders.ByteLevel()
    core.add_special_tokens(list(specials))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<pad>", unk_token="<|endoftext|>",
    )
