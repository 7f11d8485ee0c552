"""The offline data zoo: datasets by name, with checksums, and generators for what is not offline.

Load by name (``list_datasets()`` shows what exists, ``dataset_info(name)`` whether it is on this
machine and how to get it)::

    from fmlab.data import load_dataset, make_dominoes, corrupt, add_label_noise
    mnist = load_dataset("mnist", split="test")        # ImageDataset, images uint8 (10000, 28, 28)
    noisy, flipped = add_label_noise(mnist.labels, 0.3, n_classes=10, seed=0)
    dom = make_dominoes(4000, p=1.0, seed=0)           # digit on top, clothing item below
    foggy = corrupt(mnist.images[:256], "fog", severity=3)

Emoji image-text data (three artists' styles as domain shifts)::

    from fmlab.data import emoji_captions, emoji_style_split
    train, val, test = emoji_style_split(load_dataset("emoji", split="all"))
    captions = emoji_captions(train, "train")          # held-out templates: "heldout"

Kinds: ``ImageDataset`` (mnist, fashion-mnist, digits, emoji), ``TextDataset`` (rotten-tomatoes,
corpora), ``PairDataset`` (stsb, sickr, wordsim353, simlex999, lee), ``TableDataset``
(countryinfo, scaling and reference tables). Importing this package imports numpy only; pandas
and gensim load on first use.
"""

from __future__ import annotations

from fmlab.data._catalog import dataset_info, list_datasets, load_dataset
from fmlab.data._corruptions import CORRUPTIONS, corrupt
from fmlab.data._emoji import (
    EMOJI_HELDOUT_TEMPLATES,
    EMOJI_LICENSES,
    EMOJI_STYLES,
    EMOJI_TEMPLATES,
    emoji_captions,
    emoji_concept_split,
    emoji_style_split,
)
from fmlab.data._generators import colored_digits, make_dominoes, rotate_images, rotated_digits
from fmlab.data._noise import add_label_noise
from fmlab.data._schema import DatasetInfo, ImageDataset, PairDataset, TableDataset, TextDataset

__all__ = [
    "CORRUPTIONS",
    "EMOJI_HELDOUT_TEMPLATES",
    "EMOJI_LICENSES",
    "EMOJI_STYLES",
    "EMOJI_TEMPLATES",
    "DatasetInfo",
    "ImageDataset",
    "PairDataset",
    "TableDataset",
    "TextDataset",
    "add_label_noise",
    "colored_digits",
    "corrupt",
    "dataset_info",
    "emoji_captions",
    "emoji_concept_split",
    "emoji_style_split",
    "list_datasets",
    "load_dataset",
    "make_dominoes",
    "rotate_images",
    "rotated_digits",
]
