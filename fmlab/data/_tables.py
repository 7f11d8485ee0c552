"""Loaders of tables: country facts (countryinfo), analogies (gensim), and the reference tables
under the shared data root (scaling data, purple questions, counterfactual QA). pandas is imported
lazily.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import numpy as np

from fmlab._imports import require
from fmlab.data._files import _package_root, package_file, shared_file
from fmlab.data._schema import TableDataset
from fmlab.exceptions import DataUnavailableError

__all__ = [
    "load_cf_bio",
    "load_cf_capitals",
    "load_cf_world_facts",
    "load_chinchilla",
    "load_chinchilla_kyo",
    "load_countryinfo",
    "load_memo_trap",
    "load_openclip_curves",
    "load_purple_questions",
    "load_questions_words",
    "load_tmars_params",
]

_COUNTRYINFO = 'pip install "countryinfo==1.0.1"'


def _pd() -> Any:
    return require("pandas", feature="fmlab.data tables")


# -- countryinfo -----------------------------------------------------------------------------------
def load_countryinfo(split: str = "all") -> TableDataset:
    """Facts about 254 countries and territories, read from countryinfo's JSON files.

    Columns: ``name, capital, region, subregion, population, area, demonym, languages`` (list of
    ISO 639-1 codes), ``currencies`` (ISO 4217 codes), ``borders`` (ISO alpha-3 of neighbours),
    ``iso2, iso3, capital_lat, capital_lng, alt_spellings``. Missing facts are ``None``/NaN;
    249 entries have a capital (one file stores it as a list).
    """
    root = _package_root("countryinfo")
    if root is None or not (root / "data").is_dir():
        raise DataUnavailableError(f"countryinfo is not installed. Get it with: {_COUNTRYINFO}")
    rows = []
    for path in sorted((root / "data").glob("*.json")):
        rel = f"data/{path.name}"
        package_file("countryinfo", rel, distribution="countryinfo", install=_COUNTRYINFO)
        d = json.loads(path.read_text(encoding="utf-8"))
        capital = d.get("capital")
        if isinstance(capital, list):  # one file stores its capital as a one-element list
            capital = capital[0] if capital else None
        latlng = d.get("capital_latlng") or [None, None]
        iso = d.get("ISO") or {}
        rows.append({
            "name": d.get("name"), "capital": capital or None, "region": d.get("region") or None,
            "subregion": d.get("subregion") or None, "population": d.get("population"),
            "area": d.get("area"), "demonym": d.get("demonym") or None,
            "languages": list(d.get("languages") or []),
            "currencies": list(d.get("currencies") or []),
            "borders": list(d.get("borders") or []),
            "iso2": iso.get("alpha2"), "iso3": iso.get("alpha3"),
            "capital_lat": latlng[0] if len(latlng) > 1 else None,
            "capital_lng": latlng[1] if len(latlng) > 1 else None,
            "alt_spellings": list(d.get("altSpellings") or []),
        })
    return TableDataset(_pd().DataFrame(rows), "countryinfo", split)


def load_questions_words(split: str = "all") -> TableDataset:
    """Mikolov et al.'s 19,544 analogy questions ``a : b :: c : d`` in 14 sections.

    Columns: ``section`` (e.g. ``capital-common-countries``, ``gram8-plural``), ``a, b, c, d``.

    References:
        Mikolov et al. 2013, Efficient estimation of word representations, arXiv 1301.3781.
    """
    path = package_file("gensim", "test/test_data/questions-words.txt", distribution="gensim",
                        install='pip install "gensim==4.4.0"')
    rows = []
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
        elif line.strip():
            a, b, c, d = line.split()
            rows.append((section, a, b, c, d))
    return TableDataset(_pd().DataFrame(rows, columns=["section", "a", "b", "c", "d"]),
                        "questions-words", split)


# -- scaling data -------------------------------------------------------------------------------
def load_chinchilla(split: str = "all") -> TableDataset:
    """Epoch AI's extraction of the 245 Chinchilla training runs (Hoffmann et al. Fig. 4).

    Original columns ``x, y, color, Model Size, Training FLOP, hex_color, loss`` plus
    ``n_params`` (= Model Size), ``flops`` (= Training FLOP) and ``n_tokens`` = FLOP / (6 N).

    References:
        Besiroglu et al. 2024, Chinchilla scaling: a replication attempt, arXiv 2404.10102;
        Hoffmann et al. 2022, arXiv 2203.15556.
    """
    path = shared_file("scaling-law-fitting/epoch_chinchilla_svg_extracted_data.csv")
    frame = _pd().read_csv(path)
    frame["n_params"] = frame["Model Size"].astype(float)
    frame["flops"] = frame["Training FLOP"].astype(float)
    frame["n_tokens"] = frame["flops"] / (6.0 * frame["n_params"])
    return TableDataset(frame, "chinchilla", split)


def load_chinchilla_kyo(split: str = "all") -> TableDataset:
    """kyo-takano/chinchilla's 234-run subset (``C, N, D, loss``), plus ``flops``, ``n_params``,
    ``n_tokens`` aliases.
    """
    frame = _pd().read_csv(shared_file("scaling-law-fitting/kyo_takano_chinchilla_llm_df.csv"))
    frame["flops"] = frame["C"].astype(float)
    frame["n_params"] = frame["N"].astype(float)
    frame["n_tokens"] = frame["D"].astype(float)
    return TableDataset(frame, "chinchilla-kyo", split)


_RUN = re.compile(r"Model-(?P<model>[^_]+)_Data-(?P<data>[^_]+)_Samples-(?P<samples>[^_]+)"
                  r"_lr-(?P<lr>[^_]+)_bs-(?P<bs>[^_.]+)")


def _count(text: str) -> float:
    scale = {"K": 1e3, "k": 1e3, "M": 1e6, "B": 1e9}
    return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)


def load_openclip_curves(split: str = "all") -> TableDataset:
    """ImageNet zero-shot learning curves of 29 OpenCLIP runs (3,359 checkpoints).

    Original columns ``imagenet-zeroshot-val-top1, imagenet-zeroshot-val-top5, name, epoch``, plus
    parsed ``model`` (B-32 ... g-14), ``data`` (80M/400M/2B), ``n_data`` and ``samples_seen``
    (floats), ``lr`` and ``batch_size``.

    References:
        Cherti et al. 2023, Reproducible scaling laws for contrastive language-image learning,
        arXiv 2212.07143; Goyal et al. 2024, Scaling laws for data filtering, arXiv 2404.07177.
    """
    frame = _pd().read_csv(
        shared_file("data-filtering-scaling/openclip_imagenet_zeroshot_learning_curves.csv"))
    parsed = frame["name"].str.extract(_RUN)
    if parsed.isna().any().any():
        raise DataUnavailableError("Unexpected run names in openclip_imagenet_zeroshot_learning_"
                                   "curves.csv; the file is not the released version.")
    frame["model"] = parsed["model"]
    frame["data"] = parsed["data"]
    frame["n_data"] = parsed["data"].map(_count)
    frame["samples_seen"] = parsed["samples"].map(_count)
    frame["lr"] = parsed["lr"].astype(float)
    frame["batch_size"] = parsed["bs"].map(_count)
    return TableDataset(frame, "openclip-curves", split)


def load_tmars_params(split: str = "all") -> TableDataset:
    """Released parameters of the data-filtering scaling law for the five T-MARS pools.

    One row per (fit, pool): ``id`` (``tmars_imagenet1k_utility`` / ``tmars_imagenet1k_data``),
    ``pool``, ``a``, ``b``, ``tau`` (the file's ``c_values``), ``d`` (NaN when the file stores none,
    as for the effective-data fit; the authors' scripts use 0.1), ``best_loss``.

    References:
        Goyal et al. 2024, Scaling laws for data filtering, arXiv 2404.07177.
    """
    rows = []
    path = shared_file("data-filtering-scaling/parameter_values.jsonl")
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        for k, pool in enumerate(rec["names"]):
            rows.append({"id": rec["id"], "pool": pool, "a": rec["a_values"][k],
                         "b": rec["b_values"][k], "tau": rec["c_values"][k],
                         "d": rec.get("d_value", np.nan), "best_loss": rec.get("best_loss")})
    return TableDataset(_pd().DataFrame(rows), "tmars-params", split)


# -- jailbreak and counterfactual QA ---------------------------------------------------------------
def load_purple_questions(split: str = "train") -> TableDataset:
    """Purple Questions: prompts that tempt a model to say "purple", with a ``chosen`` answer that
    avoids the word and a ``rejected`` one that uses it. 2,841 / 426 / 285 rows.

    References:
        Kim, Kotha, Raghunathan 2024, Testing the limits of jailbreaking defenses with the purple
        problem, arXiv 2403.14725.
    """
    obj = json.loads(shared_file(f"purple-problem/datasets/purple_questions_{split}.json")
                     .read_text(encoding="utf-8"))
    return TableDataset(_pd().DataFrame({k: obj[k] for k in ("prompt", "chosen", "rejected")}),
                        "purple-questions", split)


def _cf_json(relpath: str, name: str, split: str) -> TableDataset:
    obj = json.loads(shared_file(relpath).read_text(encoding="utf-8"))
    frame = _pd().DataFrame(obj)[["context", "question", "answer", "memory_answer"]]
    return TableDataset(frame, name, split)


def load_cf_world_facts(split: str = "test") -> TableDataset:
    """CF_World_Facts: 313 counterfactual passages with ``context, question, answer`` (the
    in-context answer) and ``memory_answer`` (the real-world one).

    References:
        Goyal, Baek, Kolter, Raghunathan 2024, Context-parametric inversion, arXiv 2410.10796.
    """
    return _cf_json("context-parametric-inversion/world_facts.json", "cf-world-facts", split)


def load_cf_capitals(split: str = "test") -> TableDataset:
    """CF_Capitals: the 196 capital-city passages of CF_World_Facts (same columns).

    References:
        Goyal et al. 2024, arXiv 2410.10796.
    """
    return _cf_json("context-parametric-inversion/country_capitals_only.json", "cf-capitals",
                    split)


def load_cf_bio(split: str = "test") -> TableDataset:
    """CF_Bio: 555 biographies (111 people x 5 substituted names) with ``context, question,
    answer`` (the substituted name) and ``memory_answer`` (the file's ``parametric_answer``).

    References:
        Goyal et al. 2024, arXiv 2410.10796.
    """
    path = shared_file("context-parametric-inversion/famous_biographies.jsonl")
    rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    frame = _pd().DataFrame(rows).rename(columns={"parametric_answer": "memory_answer"})
    return TableDataset(frame[["context", "question", "answer", "memory_answer"]], "cf-bio", split)


def load_memo_trap(split: str = "test") -> TableDataset:
    """MemoTrap proverb endings (CF_Quotes): 860 prompts asking for an unusual ending.

    Columns ``prompt``, ``classes`` (two candidate endings, parsed), ``answer_index`` and the
    derived ``answer`` (the requested ending) and ``memory_answer`` (the famous one).

    References:
        Liu, Liu 2023, MemoTrap (Inverse Scaling Prize round 2).
    """
    path = shared_file("context-parametric-inversion/memo-trap/1-proverb-ending.csv")
    frame = _pd().read_csv(path)
    frame["classes"] = [list(ast.literal_eval(c)) for c in frame["classes"]]
    frame["answer"] = [c[i] for c, i in zip(frame["classes"], frame["answer_index"], strict=True)]
    frame["memory_answer"] = [c[1 - i] for c, i in zip(frame["classes"], frame["answer_index"],
                                                         strict=True)]
    return TableDataset(frame, "memo-trap", split)
