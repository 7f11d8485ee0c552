"""Text for the small LM: corpora, a BPE tokenizer trained on them, a deterministic token stream.

The corpora come from the data zoo (:func:`fmlab.data.load_dataset`). The tokenizer (Hugging Face
``tokenizers`` byte-level BPE) and the encoded token arrays are cached under
``cache_dir("quant")`` keyed by a hash of the corpora and settings, so a second call costs
milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmlab._imports import require
from fmlab._paths import cache_dir
from fmlab._validation import check_int, check_real

__all__ = ["TokenData", "load_corpus", "load_token_data", "train_tokenizer"]

DEFAULT_CORPORA = ("wikipedia-sample", "lee-background")
_EOS = "<|endoftext|>"


def load_corpus(name: str) -> list[str]:
    """Texts of a text corpus of the data zoo (one string per document), e.g.
    ``"wikipedia-sample"``, ``"lee-background"``; see ``fmlab.data.list_datasets()``."""
    from fmlab.data import load_dataset

    texts = getattr(load_dataset(name), "texts", None)
    if not texts:
        raise ValueError(f"{name!r} is not a text corpus of the data zoo (it has no texts); use "
                         f"a text dataset such as {DEFAULT_CORPORA[0]!r}.")
    return [str(t) for t in texts]


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def train_tokenizer(
    corpora: Sequence[str] = DEFAULT_CORPORA,
    vocab_size: int = 512,
    *,
    cache: bool = True,
) -> Any:
    """Train (or load from the cache) a byte-level BPE tokenizer on the given corpora.

    Args:
        corpora: Corpus names for :func:`load_corpus`.
        vocab_size: Vocabulary size including the ``<|endoftext|>`` special token (>= 260).
        cache: Read and write ``cache_dir("quant", "tokenizers")``.

    Returns:
        A ``tokenizers.Tokenizer``.
    """
    vocab_size = check_int(vocab_size, "vocab_size", owner="train_tokenizer", low=260,
                           high=65535)
    tk = require("tokenizers", feature="fmlab.quant tokenizer training")

    def build() -> Any:
        texts = [t for name in corpora for t in load_corpus(name)]
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[_EOS], show_progress=False,
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        return tok

    if not cache:
        return build()
    from fmlab._cache import cached_build

    key = {"kind": "bpe-tokenizer", "corpora": list(corpora), "vocab_size": vocab_size}
    folder = cache_dir("quant", "tokenizers") / f"bpe-{_key(list(corpora), vocab_size)}"
    folder = cached_build(folder, lambda d: (d / "tokenizer.json").write_text(build().to_str()),
                          key=key, what="BPE tokenizer", announce=False)
    return tk.Tokenizer.from_file(str(folder / "tokenizer.json"))


@dataclass
class TokenData:
    """Encoded corpora split by document into train and held-out validation tokens.

    Attributes:
        train: Token ids of the training documents, EOS-separated, ``(n_train_available,)``.
        val: Token ids of the held-out documents.
        vocab_size: Tokenizer vocabulary size.
        tokenizer: The ``tokenizers.Tokenizer``.
        corpora: Corpus names.
    """

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    tokenizer: Any
    corpora: tuple[str, ...]

    def batches(
        self,
        n_tokens: int,
        batch_size: int,
        seq_len: int,
        *,
        seed: int = 0,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(inputs, targets)`` int64 arrays ``(B, T)`` with exactly ``n_tokens`` targets.

        The stream walks the training tokens from a seed-dependent offset, wrapping around (a new
        epoch) when they run out; the last batch is cut short (fewer rows, then a shorter last
        row) so that the targets add up to ``n_tokens`` exactly. Deterministic given the seed.
        """
        n_tokens = check_int(n_tokens, "n_tokens", owner="TokenData.batches", low=1)
        batch_size = check_int(batch_size, "batch_size", owner="TokenData.batches", low=1)
        seq_len = check_int(seq_len, "seq_len", owner="TokenData.batches", low=1)
        data = self.train
        n = len(data)
        if n <= seq_len + 1:
            raise ValueError(f"The training split has {n} tokens, too few for seq_len={seq_len}.")
        pos = int(np.random.default_rng(seed).integers(0, n))
        left = n_tokens
        while left > 0:
            rows = min(batch_size, math.ceil(left / seq_len))
            xs, ys = [], []
            for _ in range(rows):
                t = min(seq_len, left)
                idx = (pos + np.arange(t + 1)) % n
                chunk = data[idx].astype(np.int64)
                xs.append(chunk[:-1])
                ys.append(chunk[1:])
                pos = (pos + t) % n
                left -= t
            width = max(len(x) for x in xs)
            if any(len(x) != width for x in xs):  # only the very last row can be short
                last_x, last_y = xs.pop(), ys.pop()
                if xs:
                    yield np.stack(xs), np.stack(ys)
                yield last_x[None], last_y[None]
            else:
                yield np.stack(xs), np.stack(ys)

    def calibration(self, n_sequences: int, seq_len: int) -> np.ndarray:
        """``(n_sequences, seq_len)`` int64 windows evenly spaced over the *training* split (for
        GPTQ calibration: diverse text, never the validation documents)."""
        n_sequences = check_int(n_sequences, "n_sequences", owner="TokenData.calibration", low=1)
        seq_len = check_int(seq_len, "seq_len", owner="TokenData.calibration", low=1)
        starts = np.linspace(0, len(self.train) - seq_len - 1, n_sequences).astype(np.int64)
        return self.train[starts[:, None] + np.arange(seq_len)[None, :]].astype(np.int64)

    def val_batches(self, seq_len: int, batch_size: int = 16,
                    max_tokens: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Non-overlapping validation windows ``(B, T)``, in order, up to ``max_tokens`` targets."""
        data = self.val
        n_seq = (len(data) - 1) // seq_len
        if max_tokens is not None:
            n_seq = min(n_seq, max(1, max_tokens // seq_len))
        for start in range(0, n_seq, batch_size):
            idx = np.arange(start, min(start + batch_size, n_seq))[:, None] * seq_len
            window = data[idx + np.arange(seq_len + 1)[None, :]].astype(np.int64)
            yield window[:, :-1], window[:, 1:]


def load_token_data(
    corpora: Sequence[str] = DEFAULT_CORPORA,
    vocab_size: int = 512,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    cache: bool = True,
) -> TokenData:
    """Tokenize the corpora and split them by document into train and held-out validation.

    The split is deterministic: documents are shuffled with ``seed`` and the first
    ``val_fraction`` of the tokens (whole documents) form the validation split.

    Args:
        corpora: Corpus names (see :func:`load_corpus`).
        vocab_size: BPE vocabulary size.
        val_fraction: Share of tokens held out, in (0, 0.5].
        seed: Seed of the document shuffle.
        cache: Cache the tokenizer and the encoded arrays.
    """
    val_fraction = check_real(val_fraction, "val_fraction", owner="load_token_data", low=0.0,
                              high=0.5, closed="right")
    tok = train_tokenizer(corpora, vocab_size, cache=cache)
    eos = tok.token_to_id(_EOS)

    def split() -> tuple[np.ndarray, np.ndarray]:
        texts = [t for name in corpora for t in load_corpus(name)]
        order = np.random.default_rng(seed).permutation(len(texts))
        docs = [np.asarray(e.ids + [eos], dtype=np.uint16)
                for e in tok.encode_batch([texts[i] for i in order])]
        total = sum(len(d) for d in docs)
        cut, acc = 0, 0
        while cut < len(docs) and acc < val_fraction * total:
            acc += len(docs[cut])
            cut += 1
        return np.concatenate(docs[:cut]), np.concatenate(docs[cut:])  # (val, train)

    if not cache:
        val, train = split()
        return TokenData(train, val, tok.get_vocab_size(), tok, tuple(corpora))
    from fmlab._cache import cached_build
    from fmlab._io import read_npy

    def build(d: Any) -> None:
        val, train = split()
        np.save(d / "train.npy", train)
        np.save(d / "val.npy", val)

    key = _key(list(corpora), vocab_size, val_fraction, seed, tok.to_str()[:1000])
    folder = cached_build(cache_dir("quant", "tokens") / key, build,
                          key={"kind": "tokens", "id": key}, what="token arrays", announce=False)
    train, val = read_npy(folder / "train.npy"), read_npy(folder / "val.npy")
    return TokenData(train, val, tok.get_vocab_size(), tok, tuple(corpora))
