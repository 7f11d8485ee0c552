"""The ``emoji`` image-text dataset: the same 1,906 emoji drawn by three artists (styles).

Sources (npm tarballs, fetched with ``npm pack`` by ``scripts/setup.sh`` and verified by SHA-256;
nothing is executed from them):

- ``emoji-datasource-google@16.0.0``: 64x64 PNGs of Google's Noto Emoji (images Apache-2.0), plus
  ``emoji.json`` with each emoji's name, category (10) and subcategory (99).
- ``emoji-datasource-twitter@16.0.0``: 64x64 PNGs of Twemoji (graphics CC-BY 4.0).
- ``openmoji@17.0.0``: colour SVGs of OpenMoji (CC BY-SA 4.0), rendered with ``cairosvg``.
- ``emojibase-data@17.0.0``: keywords (tags) per emoji (MIT).

The Apple and Facebook image sets of emoji-datasource are not used (not licensed for this).

One row per (style, emoji): skin-tone variants and the ``Component`` category (skin-tone and hair
swatches) are left out, so every style holds the same 1,906 concepts in 9 categories and 98
subcategories. Images are composited on a background colour and stored once per (size,
background) in a verified cache (built atomically; the first build renders ~1,900 SVGs and takes
~10-20 s on 2 cores; later loads read one ``.npy`` file).

Styles are natural domain shifts: :func:`emoji_style_split` trains on one artist and tests on
another; :func:`emoji_concept_split` holds out whole concepts; :func:`emoji_captions` writes
captions from templates, with a disjoint set of held-out templates.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from fmlab._paths import data_dir
from fmlab._validation import check_int, check_option, check_real
from fmlab.data._files import npm_file
from fmlab.data._schema import ImageDataset

__all__ = [
    "EMOJI_HELDOUT_TEMPLATES",
    "EMOJI_LICENSES",
    "EMOJI_PACKAGES",
    "EMOJI_STYLES",
    "EMOJI_TEMPLATES",
    "emoji_captions",
    "emoji_concept_split",
    "emoji_style_split",
    "load_emoji",
]

EMOJI_STYLES = ("google", "twitter", "openmoji")

#: npm package per source: (tarball name). Checksums live in ``_files.NPM_SHA256``.
EMOJI_PACKAGES = {
    "google": "emoji-datasource-google-16.0.0.tgz",
    "twitter": "emoji-datasource-twitter-16.0.0.tgz",
    "openmoji": "openmoji-17.0.0.tgz",
    "keywords": "emojibase-data-17.0.0.tgz",
}

EMOJI_LICENSES = {
    "google": "Apache-2.0 (Google Noto Emoji images; emoji-datasource-google package MIT)",
    "twitter": "CC-BY 4.0 (Twemoji graphics, Copyright Twitter/X; emoji-datasource-twitter "
               "package MIT)",
    "openmoji": "CC BY-SA 4.0 (OpenMoji, openmoji.org)",
    "keywords": "MIT (emojibase-data)",
}

#: Caption templates used for training. ``{name}``, ``{category}``, ``{subcategory}`` and
#: ``{keyword}`` are filled per image.
EMOJI_TEMPLATES = (
    "an emoji of a {name}",
    "{name}",
    "a {subcategory} icon: {name}",
    "an icon showing {name}",
    "a small picture of {name}",
    "{name}, from the {category} category",
    "a drawing of {name}",
    "an emoji: {name}",
)
#: Templates never used in training: evaluate on these to see whether a model learned the concept
#: or the wording.
EMOJI_HELDOUT_TEMPLATES = (
    "a picture of the {name} emoji",
    "this icon depicts {name}",
    "clip art of {name}",
    "a cartoon {name}",
)

_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
_FORMAT = 1  # bump when the build changes what it writes


def _norm(hexcode: str) -> str:
    """Canonical concept key: upper-case code points without the FE0F variation selector."""
    return "-".join(p for p in hexcode.upper().split("-") if p and p != "FE0F")


def _read_members(tgz: Path, wanted: Any) -> dict[str, bytes]:
    """Bytes of the members of ``tgz`` whose name satisfies ``wanted(name)`` (one pass)."""
    out: dict[str, bytes] = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            if member.isfile() and wanted(member.name):
                fh = tar.extractfile(member)
                if fh is not None:
                    out[member.name] = fh.read()
    return out


def _composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """``(H, W, 4)`` uint8 RGBA over an opaque background -> ``(H, W, 3)`` uint8."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32)
    rgb = rgba[..., :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _build(folder: Path, size: int, background: tuple[int, int, int]) -> None:
    """Render every style into ``folder/images.npy`` and write ``folder/meta.json``."""
    from PIL import Image

    from fmlab._imports import require

    tgz = {k: npm_file(v) for k, v in EMOJI_PACKAGES.items()}
    ds = _read_members(tgz["google"], lambda n: n == "package/emoji.json")
    table = [e for e in json.loads(ds["package/emoji.json"])
             if e["category"] != "Component" and e["has_img_google"] and e["has_img_twitter"]]
    kw = _read_members(tgz["keywords"], lambda n: n == "package/en/data.json")
    keywords = {_norm(e["hexcode"]): tuple(e.get("tags", ())) for e in
                json.loads(kw["package/en/data.json"])}
    om = _read_members(tgz["openmoji"], lambda n: n == "package/data/openmoji.json"
                       or (n.startswith("package/color/svg/") and n.endswith(".svg")))
    om_meta = {_norm(e["hexcode"]): e for e in json.loads(om["package/data/openmoji.json"])
               if not e.get("skintone")}
    table = [e for e in table if _norm(e["unified"]) in om_meta]
    table.sort(key=lambda e: e["sort_order"])

    from tqdm.auto import tqdm

    images: list[np.ndarray] = []
    styles: list[str] = []
    concept: list[int] = []
    for style in ("google", "twitter"):
        prefix = f"package/img/{style}/64/"
        pngs = _read_members(tgz[style], lambda n, p=prefix: n.startswith(p))
        for i, e in enumerate(tqdm(table, desc=f"emoji {style}", unit="img", disable=None)):
            im = Image.open(io.BytesIO(pngs[prefix + e["image"]])).convert("RGBA")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            images.append(_composite(np.asarray(im), background))
            styles.append(style)
            concept.append(i)
    cairosvg = require("cairosvg", feature="the emoji dataset (OpenMoji SVG rendering)")
    for i, e in enumerate(tqdm(table, desc="emoji openmoji (render SVG)", unit="img",
                                    disable=None)):
        svg = om[f"package/color/svg/{om_meta[_norm(e['unified'])]['hexcode']}.svg"]
        png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
        im = Image.open(io.BytesIO(png)).convert("RGBA")
        images.append(_composite(np.asarray(im), background))
        styles.append("openmoji")
        concept.append(i)
    np.save(folder / "images.npy", np.stack(images))  # (N, size, size, 3) uint8
    meta = {
        "concepts": [
            {"name": e["name"].lower(), "category": e["category"],
             "subcategory": e["subcategory"], "codepoints": e["unified"],
             "short_names": e.get("short_names", []),
             "keywords": list(keywords.get(_norm(e["unified"]), ()))}
            for e in table
        ],
        "style": styles,
        "concept": concept,
        "licenses": EMOJI_LICENSES,
        "packages": EMOJI_PACKAGES,
    }
    (folder / "meta.json").write_text(json.dumps(meta))


_MEMO: dict[tuple[str, int, str], tuple[np.ndarray, dict[str, Any]]] = {}


def _arrays(size: int, background: str) -> tuple[np.ndarray, dict[str, Any]]:
    from fmlab._cache import cached_build
    from fmlab.data._files import NPM_SHA256

    rgb = _BACKGROUNDS[background]
    key = {"format": _FORMAT, "size": size, "background": list(rgb),
           "tarballs": {v: NPM_SHA256[v] for v in EMOJI_PACKAGES.values()}}
    path = data_dir("emoji", create=False) / f"rendered-{size}px-{background}"
    for name in EMOJI_PACKAGES.values():  # fail early, with the install command
        npm_file(name)
    cached_build(path, lambda folder: _build(folder, size, rgb), key=key,
                 what=f"the emoji dataset at {size} px on {background}")
    memo = (str(path), size, background)
    stamp = (path / "images.npy").stat().st_mtime_ns
    if memo not in _MEMO or _MEMO[memo][1].get("_stamp") != stamp:
        images = np.load(path / "images.npy", allow_pickle=False)
        images.flags.writeable = False
        meta = json.loads((path / "meta.json").read_text())
        meta["_stamp"] = stamp
        _MEMO[memo] = (images, meta)
    return _MEMO[memo]


def load_emoji(split: str = "all", *, labels: str = "category", size: int = 64,
               background: str = "white") -> ImageDataset:
    """The ``emoji`` dataset: one image per (style, emoji), with names, keywords and categories.

    Args:
        split: ``"all"`` or one style: ``"google"``, ``"twitter"``, ``"openmoji"``.
        labels: What ``labels``/``classes`` hold: ``"category"`` (9 classes) or
            ``"subcategory"`` (98 classes). Both are always in ``attributes``.
        size: Image side in pixels (8-256; 64 is the PNGs' native size).
        background: Colour the transparent pixels are composited on: ``"white"``, ``"black"``
            or ``"gray"``.

    Returns:
        :class:`ImageDataset` with ``images`` uint8 ``(N, size, size, 3)`` and ``attributes``
        (all ``(N,)`` arrays): ``style``, ``name`` (``"hot dog"``), ``keywords`` (tuples of str),
        ``category``, ``subcategory``, ``codepoints`` (``"1F32D"``), ``concept`` (int id, the same
        emoji across styles). ``dataset_info("emoji")`` lists the licences per style.

    Example:
        >>> ds = load_emoji("openmoji")  # doctest: +SKIP
        >>> ds.images.shape, ds.attributes["name"][0]  # doctest: +SKIP
        ((1906, 64, 64, 3), 'grinning face')
    """
    check_option(split, "split", ("all", *EMOJI_STYLES), owner="load_emoji")
    check_option(labels, "labels", ("category", "subcategory"), owner="load_emoji")
    check_int(size, "size", owner="load_emoji", low=8, high=256)
    check_option(background, "background", tuple(_BACKGROUNDS), owner="load_emoji")
    images, meta = _arrays(int(size), background)
    concepts = meta["concepts"]
    style = np.asarray(meta["style"])
    concept = np.asarray(meta["concept"], dtype=np.int64)
    idx = np.arange(len(style)) if split == "all" else np.flatnonzero(style == split)
    concept = concept[idx]

    def column(field: str) -> np.ndarray:
        return np.asarray([c[field] for c in concepts])[concept]

    kws = np.empty(len(concepts), dtype=object)
    kws[:] = [tuple(c["keywords"]) for c in concepts]
    attributes = {
        "style": style[idx], "name": column("name"), "keywords": kws[concept],
        "category": column("category"), "subcategory": column("subcategory"),
        "codepoints": column("codepoints"), "concept": concept,
    }
    classes = tuple(sorted({c[labels] for c in concepts}))
    lab = np.searchsorted(np.asarray(classes), attributes[labels]).astype(np.int64)
    return ImageDataset(images[idx].copy(), lab, classes, "emoji", split, attributes)


def emoji_style_split(ds: ImageDataset, train: str | tuple[str, ...] = "google",
                      val: str | tuple[str, ...] = "twitter",
                      test: str | tuple[str, ...] = "openmoji",
                      ) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """Split by artist: train on one style (or several), validate on a second, test on a third.

    Args:
        ds: The ``emoji`` dataset (``split="all"``) or any subset of it.
        train, val, test: Style name(s); the three must not overlap (pass ``()`` for none).

    Returns:
        ``(train, val, test)`` datasets.
    """
    groups = [(train,) if isinstance(train, str) else tuple(train),
              (val,) if isinstance(val, str) else tuple(val),
              (test,) if isinstance(test, str) else tuple(test)]
    for part, styles in zip(("train", "val", "test"), groups, strict=True):
        for s in styles:
            check_option(s, part, EMOJI_STYLES, owner="emoji_style_split")
    flat = [s for g in groups for s in g]
    if len(flat) != len(set(flat)):
        raise ValueError(f"The styles of emoji_style_split must not overlap, but got train="
                         f"{groups[0]}, val={groups[1]}, test={groups[2]}.")
    style = ds.attributes["style"]
    return tuple(ds.subset(np.isin(style, g)) for g in groups)  # type: ignore[return-value]


def emoji_concept_split(ds: ImageDataset, test_fraction: float = 0.2, *, seed: int = 0,
                        stratify: bool = True) -> tuple[ImageDataset, ImageDataset]:
    """Hold out whole concepts: no emoji of the test part appears (in any style) in the train part.

    Args:
        ds: The ``emoji`` dataset or a subset (e.g. one style).
        test_fraction: Fraction of concepts held out, in (0, 1).
        seed: Seed of the draw (the same seed holds out the same concepts in every style).
        stratify: Hold out the same fraction of each category.

    Returns:
        ``(train, test)``.
    """
    check_real(test_fraction, "test_fraction", owner="emoji_concept_split", low=0.0, high=1.0,
               closed="neither")
    check_int(seed, "seed", owner="emoji_concept_split", low=0)
    concept = ds.attributes["concept"]
    ids, first = np.unique(concept, return_index=True)
    rng = np.random.default_rng(seed)
    groups = ds.attributes["category"][first] if stratify else np.zeros(len(ids))
    held: list[np.ndarray] = []
    for g in np.unique(groups):
        members = ids[groups == g]
        k = int(round(test_fraction * len(members)))
        held.append(rng.permutation(members)[:k])
    test = np.isin(concept, np.concatenate(held))
    return ds.subset(~test), ds.subset(test)


def emoji_captions(ds: ImageDataset, templates: str | tuple[str, ...] = "train", *,
                   seed: int = 0) -> list[str]:
    """One caption per image, from a template drawn per image (seeded).

    Args:
        ds: An ``emoji`` dataset.
        templates: ``"train"`` (:data:`EMOJI_TEMPLATES`), ``"heldout"``
            (:data:`EMOJI_HELDOUT_TEMPLATES`), or your own tuple of format strings with fields
            ``{name}``, ``{category}``, ``{subcategory}``, ``{keyword}``.
        seed: Seed of the template (and keyword) draw.

    Returns:
        ``len(ds)`` captions, e.g. ``"a food-fruit icon: red apple"``.
    """
    if isinstance(templates, str):
        check_option(templates, "templates", ("train", "heldout"), owner="emoji_captions")
        chosen = EMOJI_TEMPLATES if templates == "train" else EMOJI_HELDOUT_TEMPLATES
    else:
        chosen = tuple(templates)
        if not chosen or not all(isinstance(t, str) for t in chosen):
            raise TypeError("The 'templates' parameter of emoji_captions must be 'train', "
                            f"'heldout' or a non-empty tuple of str. Got {templates!r} instead.")
    check_int(seed, "seed", owner="emoji_captions", low=0)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(chosen), size=len(ds))
    a = ds.attributes
    out = []
    for i, t in enumerate(pick):
        kws = a["keywords"][i] or (a["name"][i],)
        try:
            out.append(chosen[int(t)].format(
                name=a["name"][i], category=a["category"][i].lower(),
                subcategory=a["subcategory"][i], keyword=kws[int(rng.integers(len(kws)))]))
        except (KeyError, IndexError) as exc:
            raise ValueError(f"Caption template {chosen[int(t)]!r} uses an unknown field "
                             f"({exc}); use {{name}}, {{category}}, {{subcategory}}, "
                             f"{{keyword}}.") from None
    return out
