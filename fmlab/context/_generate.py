"""Conflict sets generated from the offline fact tables.

Facts come from countryinfo (capital, first official language, first currency of each country)
and WordNet 3.0 person glosses ("French painter (1840-1926)": nationality, occupation). Each fact
yields an item whose context either **contradicts** it (the value of another entity of the same
relation, stated in one of several templated passages) or **agrees** with it. The share of
agreeing items is a parameter, so instruction mixes with a known share of context-agrees-with-
knowledge examples can be built from the same code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmlab._validation import check_int, check_option, check_real
from fmlab.context._tasks import CFTask

__all__ = ["Fact", "RELATIONS_GEN", "facts", "make_conflict_set"]

# ISO 639-1 -> English name for the first official languages countryinfo lists.
_LANGUAGES = {
    "en": "English", "fr": "French", "es": "Spanish", "ar": "Arabic", "pt": "Portuguese",
    "nl": "Dutch", "de": "German", "zh": "Chinese", "it": "Italian", "el": "Greek",
    "ko": "Korean", "ro": "Romanian", "no": "Norwegian", "ps": "Pashto", "sq": "Albanian",
    "ca": "Catalan", "hy": "Armenian", "az": "Azerbaijani", "bn": "Bengali", "be": "Belarusian",
    "dz": "Dzongkha", "bs": "Bosnian", "ms": "Malay", "bg": "Bulgarian", "km": "Khmer",
    "hr": "Croatian", "cs": "Czech", "da": "Danish", "ti": "Tigrinya", "et": "Estonian",
    "am": "Amharic", "fo": "Faroese", "fi": "Finnish", "ka": "Georgian", "kl": "Greenlandic",
    "la": "Latin", "hu": "Hungarian", "is": "Icelandic", "hi": "Hindi", "id": "Indonesian",
    "fa": "Persian", "ga": "Irish", "he": "Hebrew", "ja": "Japanese", "kk": "Kazakh",
    "ky": "Kyrgyz", "lo": "Lao", "lv": "Latvian", "lt": "Lithuanian", "mk": "Macedonian",
    "dv": "Dhivehi", "mt": "Maltese", "mn": "Mongolian", "my": "Burmese", "ne": "Nepali",
    "pl": "Polish", "ru": "Russian", "rw": "Kinyarwanda", "sm": "Samoan", "sr": "Serbian",
    "sk": "Slovak", "sl": "Slovenian", "sv": "Swedish", "sw": "Swahili", "th": "Thai",
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese",
    "tk": "Turkmen", "tg": "Tajik", "si": "Sinhala", "so": "Somali", "ta": "Tamil",
    "mg": "Malagasy", "lb": "Luxembourgish", "ht": "Haitian Creole", "fj": "Fijian",
    "to": "Tongan", "mi": "Maori", "tl": "Filipino", "ny": "Chichewa", "sn": "Shona",
    "st": "Sotho", "tn": "Tswana", "ss": "Swati", "rn": "Kirundi", "sg": "Sango", "ln": "Lingala",
}
# ISO 4217 -> common English name, for the currencies of countryinfo (first listed).
_CURRENCIES = {
    "EUR": "euro", "USD": "United States dollar", "GBP": "pound sterling", "JPY": "yen",
    "CNY": "renminbi", "INR": "Indian rupee", "RUB": "Russian ruble", "BRL": "Brazilian real",
    "AUD": "Australian dollar", "CAD": "Canadian dollar", "CHF": "Swiss franc",
    "NZD": "New Zealand dollar", "DKK": "Danish krone", "NOK": "Norwegian krone",
    "SEK": "Swedish krona", "ISK": "Icelandic krona", "PLN": "zloty", "CZK": "Czech koruna",
    "HUF": "forint", "RON": "Romanian leu", "BGN": "lev", "TRY": "Turkish lira",
    "ILS": "shekel", "EGP": "Egyptian pound", "MAD": "Moroccan dirham", "DZD": "Algerian dinar",
    "TND": "Tunisian dinar", "NGN": "naira", "KES": "Kenyan shilling", "ZAR": "rand",
    "ETB": "birr", "GHS": "cedi", "XOF": "West African CFA franc",
    "XAF": "Central African CFA franc", "MXN": "Mexican peso", "ARS": "Argentine peso",
    "CLP": "Chilean peso", "COP": "Colombian peso", "PEN": "sol", "VES": "bolivar",
    "BOB": "boliviano", "PYG": "guarani", "UYU": "Uruguayan peso", "KRW": "won",
    "KPW": "North Korean won", "THB": "baht", "VND": "dong", "IDR": "rupiah",
    "MYR": "ringgit", "PHP": "Philippine peso", "PKR": "Pakistani rupee",
    "BDT": "taka", "LKR": "Sri Lankan rupee", "NPR": "Nepalese rupee", "AFN": "afghani",
    "IRR": "Iranian rial", "IQD": "Iraqi dinar", "SAR": "Saudi riyal", "AED": "UAE dirham",
    "QAR": "Qatari riyal", "KWD": "Kuwaiti dinar", "JOD": "Jordanian dinar",
    "UAH": "hryvnia", "GEL": "lari", "AMD": "dram", "AZN": "manat", "KZT": "tenge",
    "MNT": "tugrik", "ALL": "lek", "MKD": "denar", "RSD": "Serbian dinar",
    "BAM": "convertible mark", "HRK": "kuna", "BYR": "Belarusian ruble", "CUP": "Cuban peso",
    "DOP": "Dominican peso", "JMD": "Jamaican dollar", "HTG": "gourde", "CRC": "colon",
    "GTQ": "quetzal", "HNL": "lempira", "NIO": "cordoba", "PAB": "balboa", "AOA": "kwanza",
    "MZN": "metical", "ZMW": "kwacha", "BWP": "pula", "NAD": "Namibian dollar",
    "TZS": "Tanzanian shilling", "UGX": "Ugandan shilling", "RWF": "Rwandan franc",
    "SDG": "Sudanese pound", "LYD": "Libyan dinar", "SGD": "Singapore dollar",
    "HKD": "Hong Kong dollar", "TWD": "New Taiwan dollar", "MMK": "kyat", "KHR": "riel",
    "LAK": "kip", "BTN": "ngultrum", "MVR": "rufiyaa", "XCD": "East Caribbean dollar",
    "XPF": "CFP franc", "FJD": "Fijian dollar", "GMD": "dalasi", "ERN": "nakfa",
    "SOS": "Somali shilling", "MGA": "ariary", "MWK": "Malawian kwacha", "BIF": "Burundian franc",
}

RELATIONS_GEN = ("capital", "language", "currency", "nationality", "occupation")

_TEMPLATES: dict[str, dict[str, Any]] = {
    "capital": {
        "question": "What is the capital of {entity}?",
        "contexts": [
            "Following a constitutional reform, the capital of {entity} is now {value}. The "
            "government moved its ministries there last year.",
            "{value} is the capital of {entity}, and it hosts the national parliament.",
            "Visitors to {entity} usually start in {value}, the country's capital city.",
        ],
    },
    "language": {
        "question": "What is the official language of {entity}?",
        "contexts": [
            "After a language reform, the official language of {entity} is {value}. Schools "
            "and courts use it every day.",
            "In {entity}, the official language is {value}, spoken in government and schools.",
            "Most official documents in {entity} are written in {value}, its official language.",
        ],
    },
    "currency": {
        "question": "What is the currency of {entity}?",
        "contexts": [
            "Since the monetary reform, the currency of {entity} is the {value}. Shops price "
            "everything in it.",
            "The {value} is the official currency of {entity}.",
            "Travellers to {entity} pay with the {value}, the national currency.",
        ],
    },
    "nationality": {
        "question": "What was the nationality of {entity}?",
        "contexts": [
            "Recently found records show that {entity} was {value}, born and raised there.",
            "{entity} was a {value} {extra} whose work became famous worldwide.",
            "Biographers agree that {entity} was {value} by birth and by citizenship.",
        ],
    },
    "occupation": {
        "question": "What was the occupation of {entity}?",
        "contexts": [
            "Archival letters reveal that {entity} worked as a {value} for most of a lifetime.",
            "{entity} was a {extra} {value} known to historians of the period.",
            "By profession, {entity} was a {value}.",
        ],
    },
}


@dataclass(frozen=True)
class Fact:
    """One fact of a relation: ``entity`` has ``value``; ``extra`` fills template slots."""

    relation: str
    entity: str
    value: str
    extra: str = ""


@functools.lru_cache(maxsize=8)
def _country_facts(column: str) -> tuple[Fact, ...]:
    from fmlab.data import load_dataset

    names = {"languages": _LANGUAGES, "currencies": _CURRENCIES}.get(column)
    df = load_dataset("countryinfo").frame
    out = []
    for row in df.to_dict("records"):
        name, val = row["name"], row[column]
        if isinstance(val, list):
            val = val[0] if val else None
        if not name or not isinstance(val, str) or not val:
            continue
        if names is not None:
            if val not in names:
                continue
            val = names[val]
        out.append(Fact({"capital": "capital", "languages": "language",
                         "currencies": "currency"}[column], name, val))
    return tuple(out)


_PERSON = re.compile(r"^((?:[A-Z][a-z]+ ){1,2})([a-z][a-z-]*(?: [a-z][a-z-]*)?)"
                     r"(?= \(| and | who | of | noted | remembered | best | whose |;|$)")
_NATIONALITY_FIX = {"United States": "American"}


@functools.lru_cache(maxsize=1)
def _person_facts() -> tuple[tuple[str, str, str], ...]:
    """(name, nationality, occupation) from WordNet person glosses."""
    from fmlab.data import load_dataset

    g = load_dataset("wordnet-glosses")
    out, seen = [], set()
    for text, words, label in zip(g.texts, g.attributes["words"], g.labels, strict=True):
        if label != 0 or not words or not words[0][:1].isupper() or "(" not in text:
            continue
        if not re.search(r"\(\d{3,4}", text):  # persons carry (birth-death) years
            continue
        m = _PERSON.match(text)
        if not m:
            continue
        nat = _NATIONALITY_FIX.get(m.group(1).strip(), m.group(1).strip())
        occ = m.group(2).strip()
        if occ.endswith((" of", " and")) or len(occ) < 3:
            continue
        name = next((w for w in words if len(w.split()) == 2), words[-1])
        if name in seen:
            continue
        seen.add(name)
        out.append((name, nat, occ))
    return tuple(out)


def facts(relation: str) -> list[Fact]:
    """All facts of one relation from the offline tables (country relations need countryinfo,
    person relations the Debian WordNet files)."""
    check_option(relation, "relation", RELATIONS_GEN, owner="facts")
    if relation in ("capital", "language", "currency"):
        return list(_country_facts({"capital": "capital", "language": "languages",
                                    "currency": "currencies"}[relation]))
    people = _person_facts()
    if relation == "nationality":
        return [Fact("nationality", n, nat, occ) for n, nat, occ in people]
    return [Fact("occupation", n, occ, nat) for n, nat, occ in people]


def _substitute(values: list[str], i: int, rng: np.random.Generator) -> int:
    """Index of another fact whose value differs from fact ``i``'s."""
    others = [j for j in range(len(values)) if values[j].lower() != values[i].lower()]
    return int(others[rng.integers(len(others))])


def make_conflict_set(
    relation: str,
    *,
    n: int | None = None,
    agree_share: float = 0.5,
    seed: int = 0,
    fact_list: list[Fact] | None = None,
) -> CFTask:
    """A counterfactual QA task of one relation with contradicting and agreeing contexts.

    Args:
        relation: One of ``capital, language, currency, nationality, occupation``.
        n: Number of items (default: one per fact).
        agree_share: Share of items whose context states the true fact.
        seed: Seeds the fact sample, the templates and the substituted values.
        fact_list: Use these facts instead of the offline tables.

    Returns:
        A :class:`CFTask` named ``gen_<relation>`` with ``category = relation`` and ``relation``
        ``conflict`` or ``agree`` per item.
    """
    check_option(relation, "relation", RELATIONS_GEN, owner="make_conflict_set")
    share = check_real(agree_share, "agree_share", owner="make_conflict_set", low=0.0, high=1.0,
                       closed="both")
    check_int(seed, "seed", owner="make_conflict_set", low=0)
    pool = list(fact_list) if fact_list is not None else facts(relation)
    if len({f.value.lower() for f in pool}) < 2:
        raise ValueError(f"Relation {relation!r} needs facts with at least two distinct values "
                         f"to build conflicts. Got {len(pool)} fact(s).")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    if n is not None:
        check_int(n, "n", owner="make_conflict_set", low=1, high=len(pool))
        order = order[:n]
    tpl = _TEMPLATES[relation]
    values = [f.value for f in pool]
    n_agree = int(round(share * len(order)))
    items = []
    for k, i in enumerate(order):
        fact = pool[int(i)]
        agree = k < n_agree
        value = fact.value if agree else values[_substitute(values, int(i), rng)]
        context = tpl["contexts"][int(rng.integers(len(tpl["contexts"])))].format(
            entity=fact.entity, value=value, extra=fact.extra or "figure")
        items.append({"id": f"{relation}-{int(i)}", "context": context,
                      "question": tpl["question"].format(entity=fact.entity),
                      "answer": value, "memory_answer": fact.value, "category": relation,
                      "relation": "agree" if agree else "conflict"})
    order2 = rng.permutation(len(items))  # interleave agreeing and conflicting items
    return CFTask.from_items(f"gen_{relation}", [items[int(j)] for j in order2],
                             description=f"generated {relation} items, agree share {share:g}")


def _factory(relation: str) -> Callable[[], CFTask]:
    return lambda: make_conflict_set(relation)


_task_capital = _factory("capital")
_task_language = _factory("language")
_task_currency = _factory("currency")
_task_nationality = _factory("nationality")
_task_occupation = _factory("occupation")
