"""Tiny randomly initialised models of real architectures, for fast tests that need no weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fmlab._imports import require
from fmlab._validation import check_int

if TYPE_CHECKING:
    from transformers import CLIPModel, LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = ["tiny_causal_lm", "tiny_clip", "tiny_tokenizer"]

_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>")
# ChatML, as SmolLM2 uses, so chat-template code paths run on the tiny model too
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_LLAMA_DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: 256 byte tokens plus 4 special tokens.

    Every string round-trips exactly, it needs no files or training, and it carries a ChatML chat
    template (``<|im_start|>role\\n...<|im_end|>``). Special tokens: bos ``<|im_start|>``, eos
    ``<|im_end|>``, pad ``<pad>``, unk ``<|endoftext|>``. A fresh object is returned on every call.
    """
    tokenizers = require("tokenizers", feature="fmlab.models.tiny_causal_lm")
    transformers = require("transformers", feature="fmlab.models.tiny_causal_lm")
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(alphabet)}
    for tok in _SPECIALS:
        vocab[tok] = len(vocab)
    core = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = tokenizers.decoders.ByteLevel()
    core.add_special_tokens(list(_SPECIALS))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
        chat_template=_CHAT_TEMPLATE,
        model_max_length=_LLAMA_DEFAULTS["max_position_embeddings"],
    )


def tiny_causal_lm(
    seed: int = 0, **config: Any
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised Llama-architecture causal LM (~0.1M parameters) and a tokenizer.

    The defaults (2 layers, width 64, 4 query / 2 key-value heads, 260-token byte vocabulary, tied
    embeddings) build in milliseconds; any ``transformers.LlamaConfig`` field can be overridden.
    The global torch RNG is left untouched.

    Args:
        seed: Seed of the weight initialisation.
        **config: ``LlamaConfig`` overrides, e.g. ``num_hidden_layers=4, hidden_size=128``.
            ``vocab_size`` may grow beyond the tokenizer's 260 tokens, not shrink below it.

    Returns:
        ``(model, tokenizer)``: ``LlamaForCausalLM`` in eval mode and :func:`tiny_tokenizer`.

    Example:
        >>> model, tok = tiny_causal_lm(seed=0)
        >>> model(**tok(["hello"], return_tensors="pt")).logits.shape[-1]
        260

    References:
        Touvron et al., LLaMA: Open and Efficient Foundation Language Models (arXiv:2302.13971).
    """
    check_int(seed, "seed", owner="tiny_causal_lm", low=0)
    transformers = require("transformers", feature="fmlab.models.tiny_causal_lm")
    import torch

    tokenizer = tiny_tokenizer()
    n_tokens = len(tokenizer)
    settings = {**_LLAMA_DEFAULTS, "vocab_size": n_tokens, **config}
    if not isinstance(settings["vocab_size"], int) or settings["vocab_size"] < n_tokens:
        raise ValueError(
            f"The 'vocab_size' parameter of tiny_causal_lm must be an int >= {n_tokens} (the "
            f"tokenizer's size). Got {settings['vocab_size']!r} instead."
        )
    settings.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    try:
        cfg = transformers.LlamaConfig(**settings)
    except TypeError as exc:
        raise TypeError(f"Invalid LlamaConfig override for tiny_causal_lm: {exc}") from exc
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(cfg)
    return model.eval(), tokenizer


def tiny_clip(seed: int = 0) -> CLIPModel:
    """A randomly initialised ``transformers.CLIPModel`` with tiny towers.

    Text tower: 2 layers, width 32, the 260-token vocabulary of :func:`tiny_tokenizer` (so that
    tokenizer works with it), 32 positions. Vision tower: 2 layers, width 32, 32x32 images in 8x8
    patches. Projection dimension 32. The global torch RNG is left untouched.

    Args:
        seed: Seed of the weight initialisation.

    Returns:
        ``CLIPModel`` in eval mode: ``get_image_features(pixel_values=(B, 3, 32, 32))`` and
        ``get_text_features(input_ids=...)`` give ``(B, 32)``.

    References:
        Radford et al., Learning Transferable Visual Models From Natural Language Supervision
        (arXiv:2103.00020).
    """
    check_int(seed, "seed", owner="tiny_clip", low=0)
    transformers = require("transformers", feature="fmlab.models.tiny_clip")
    import torch

    n_tokens = 256 + len(_SPECIALS)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2}
    text = transformers.CLIPTextConfig(
        vocab_size=n_tokens, max_position_embeddings=32, bos_token_id=257, eos_token_id=258,
        pad_token_id=259, **tower,
    )
    vision = transformers.CLIPVisionConfig(image_size=32, patch_size=8, num_channels=3, **tower)
    cfg = transformers.CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.CLIPModel(cfg)
    return model.eval()
