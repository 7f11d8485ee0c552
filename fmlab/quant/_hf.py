"""Glue for Hugging Face causal LMs: load one from the zoo and tokenize the corpora with its
tokenizer, so :func:`quantize_model` and :func:`evaluate_loss` run on it unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fmlab.quant._data import DEFAULT_CORPORA, TokenData, load_corpus

__all__ = ["hf_token_data", "load_hf_lm"]


def load_hf_lm(name: str, *, dtype: Any = None) -> Any:
    """A causal LM from :func:`fmlab.models.load_causal_lm` (zoo name, ``hf:org/name``, folder)."""
    from fmlab.models import load_causal_lm

    model, _tok = load_causal_lm(name, dtype=dtype)
    return model.eval()


def hf_token_data(name: str, corpora: Sequence[str] = DEFAULT_CORPORA, *,
                  val_fraction: float = 0.1, seed: int = 0,
                  max_docs: int | None = 400) -> TokenData:
    """The corpora tokenized with model ``name``'s tokenizer, split by document like
    :func:`~fmlab.quant.load_token_data` (held-out validation first ``val_fraction``)."""
    from fmlab.models import load_causal_lm

    _model, tok = load_causal_lm(name)
    texts = [t for c in corpora for t in load_corpus(c)]
    order = np.random.default_rng(seed).permutation(len(texts))[:max_docs]
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    docs = [np.asarray(tok(texts[i])["input_ids"] + [eos], dtype=np.int64) for i in order]
    total = sum(len(d) for d in docs)
    cut, acc = 0, 0
    while cut < len(docs) and acc < val_fraction * total:
        acc += len(docs[cut])
        cut += 1
    return TokenData(np.concatenate(docs[cut:]), np.concatenate(docs[:cut]), len(tok), tok,
                     tuple(corpora))
