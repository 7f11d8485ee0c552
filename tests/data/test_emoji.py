"""The emoji image-text dataset: counts, schema, splits, captions and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.data import (
    EMOJI_HELDOUT_TEMPLATES,
    EMOJI_LICENSES,
    EMOJI_TEMPLATES,
    dataset_info,
    emoji_captions,
    emoji_concept_split,
    emoji_style_split,
    load_dataset,
)
from fmlab.exceptions import DataUnavailableError


@pytest.fixture(scope="module")
def emoji(request: pytest.FixtureRequest):
    from tests.conftest import _need

    _need("emoji")
    return load_dataset("emoji", split="all")


def test_schema_and_counts(emoji) -> None:
    assert emoji.images.shape == (3 * 1906, 64, 64, 3) and emoji.images.dtype == np.uint8
    a = emoji.attributes
    assert set(a) == {"style", "name", "keywords", "category", "subcategory", "codepoints",
                      "concept"}
    for style in ("google", "twitter", "openmoji"):
        part = a["concept"][a["style"] == style]
        assert np.array_equal(np.sort(part), np.arange(1906))  # same concepts in every style
    assert len(emoji.classes) == 9 and "Component" not in emoji.classes
    assert len(set(a["subcategory"])) == 98
    assert np.array_equal(np.asarray(emoji.classes)[emoji.labels], a["category"])
    hot_dog = np.flatnonzero(a["name"] == "hot dog")
    assert len(hot_dog) == 3 and set(a["category"][hot_dog]) == {"Food & Drink"}
    assert "sausage" in a["keywords"][hot_dog[0]]
    # white background: corners are white, the middle is not
    assert (emoji.images[:, 0, 0] == 255).all(axis=1).mean() > 0.9
    assert emoji.images[:, 24:40, 24:40].mean() < 230


def test_styles_are_different_drawings(emoji) -> None:
    a = emoji.attributes
    g = emoji.images[a["style"] == "google"].astype(float)
    t = emoji.images[a["style"] == "twitter"].astype(float)
    assert np.abs(g - t).mean() > 10  # another artist, not a copy


def test_subcategory_labels_and_one_style() -> None:
    from tests.conftest import _need

    _need("emoji")
    ds = load_dataset("emoji", split="openmoji", labels="subcategory")
    assert len(ds) == 1906 and ds.n_classes == 98
    assert np.array_equal(np.asarray(ds.classes)[ds.labels], ds.attributes["subcategory"])


def test_style_split(emoji) -> None:
    tr, va, te = emoji_style_split(emoji)
    assert {tuple(set(d.attributes["style"])) for d in (tr, va, te)} == {
        ("google",), ("twitter",), ("openmoji",)}
    tr2, _, te2 = emoji_style_split(emoji, train=("google", "twitter"), val=(), test="openmoji")
    assert len(tr2) == 2 * 1906 and len(te2) == 1906
    with pytest.raises(ValueError, match="overlap"):
        emoji_style_split(emoji, train="google", val="google")
    with pytest.raises(ValueError, match="apple"):
        emoji_style_split(emoji, train="apple")


def test_concept_split_holds_out_concepts(emoji) -> None:
    tr, te = emoji_concept_split(emoji, 0.2, seed=1)
    assert not set(tr.attributes["concept"]) & set(te.attributes["concept"])
    assert len(set(te.attributes["concept"])) == pytest.approx(0.2 * 1906, abs=10)
    # the same concepts are held out in every style, and the draw is seeded
    for style in ("google", "openmoji"):
        held = set(te.attributes["concept"][te.attributes["style"] == style])
        assert held == set(te.attributes["concept"])
    _, te_again = emoji_concept_split(emoji, 0.2, seed=1)
    _, te_other = emoji_concept_split(emoji, 0.2, seed=2)
    assert np.array_equal(te.attributes["concept"], te_again.attributes["concept"])
    assert set(te.attributes["concept"]) != set(te_other.attributes["concept"])
    with pytest.raises(ValueError, match="test_fraction"):
        emoji_concept_split(emoji, 1.0)


def test_captions_train_and_heldout_templates(emoji) -> None:
    sub = emoji.subset(np.arange(0, len(emoji), 7))
    train = emoji_captions(sub, "train", seed=0)
    held = emoji_captions(sub, "heldout", seed=0)
    assert len(train) == len(sub) and all(n in c for n, c in zip(sub.attributes["name"], train,
                                                                  strict=True))
    assert not set(EMOJI_TEMPLATES) & set(EMOJI_HELDOUT_TEMPLATES)
    prefixes = {t.split("{")[0] for t in EMOJI_HELDOUT_TEMPLATES if t.split("{")[0]}
    assert any(c.startswith(tuple(prefixes)) for c in held)
    assert emoji_captions(sub, "train", seed=0) == train
    assert emoji_captions(sub, ("{keyword}",), seed=0)[0] in sub.attributes["keywords"][0]
    with pytest.raises(ValueError, match="unknown field"):
        emoji_captions(sub, ("a {colour} thing",))
    with pytest.raises(ValueError, match="templates"):
        emoji_captions(sub, "test")


def test_info_records_licences() -> None:
    info = dataset_info("emoji")
    for style in ("Apache-2.0", "CC-BY 4.0", "CC BY-SA 4.0", "MIT"):
        assert style in info.license
    assert "Apple" in info.license  # says which sets are left out
    assert set(EMOJI_LICENSES) == {"google", "twitter", "openmoji", "keywords"}


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="background"):
        load_dataset("emoji", "all", background="pink")
    with pytest.raises(ValueError, match="labels"):
        load_dataset("emoji", "all", labels="name")
    with pytest.raises(ValueError, match="split"):
        load_dataset("emoji", "apple")


def test_corrupt_tarball_names_the_fix(tmp_path, monkeypatch) -> None:
    npm = tmp_path / "npm"
    npm.mkdir()
    (npm / "emoji-datasource-google-16.0.0.tgz").write_bytes(b"not a tarball")
    monkeypatch.setenv("FMLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataUnavailableError, match=r"corrupt.*npm pack --silent "
                                                   r"emoji-datasource-google@16.0.0"):
        load_dataset("emoji", "google")
    info = dataset_info("emoji")
    assert not info.available and "npm pack --silent openmoji@17.0.0" in info.install
