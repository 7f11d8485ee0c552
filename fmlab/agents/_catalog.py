"""The shop's catalogue: product names and categories, with pictures from one image source.

Every picture comes through :func:`product_images`; the names are emoji names (lower case, as
the ``emoji`` dataset of the data zoo spells them), so the site's pictures are what the zoo's
captioner and dual encoders were trained to describe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fmlab.agents._site import Product

__all__ = ["PRODUCTS", "catalog_captioner", "default_catalog", "product_images"]

#: (name, category) of every product the shop sells, in id order (ids start at 1).
PRODUCTS: tuple[tuple[str, str], ...] = (
    ("red apple", "Food & Drink"), ("banana", "Food & Drink"), ("grapes", "Food & Drink"),
    ("watermelon", "Food & Drink"), ("strawberry", "Food & Drink"), ("lemon", "Food & Drink"),
    ("pineapple", "Food & Drink"), ("cherries", "Food & Drink"), ("carrot", "Food & Drink"),
    ("broccoli", "Food & Drink"), ("hot dog", "Food & Drink"), ("slice of pizza", "Food & Drink"),
    ("hamburger", "Food & Drink"), ("taco", "Food & Drink"), ("doughnut", "Food & Drink"),
    ("cookie", "Food & Drink"), ("croissant", "Food & Drink"), ("cheese wedge", "Food & Drink"),
    ("necktie", "Objects"), ("t-shirt", "Objects"), ("jeans", "Objects"), ("dress", "Objects"),
    ("crown", "Objects"), ("umbrella", "Objects"), ("guitar", "Objects"), ("books", "Objects"),
    ("camera", "Objects"), ("personal computer", "Objects"), ("eyeglasses", "Objects"),
    ("handbag", "Objects"),
)


def product_images(names: list[str], *, style: str = "google", size: int = 64) -> list[np.ndarray]:
    """The picture of each product name, ``uint8 (size, size, 3)``: the site's one image source.

    Pictures are emoji art from the data zoo's ``emoji`` dataset (``style``: ``"google"``,
    ``"twitter"`` or ``"openmoji"``), composited on white.

    Raises:
        DataUnavailableError: the emoji dataset is not installed (the message says how).
        KeyError: a name that is not an emoji of that style.
    """
    from fmlab.data import load_dataset

    ds = load_dataset("emoji", split=style, size=size)
    index = {str(n): i for i, n in enumerate(ds.attributes["name"])}
    missing = [n for n in names if n not in index]
    if missing:
        raise KeyError(f"No {style} emoji named {missing}; product names must be emoji names.")
    return [ds.images[index[n]] for n in names]


def default_catalog(*, style: str = "google", size: int = 64) -> list[Product]:
    """Every product in :data:`PRODUCTS` with its emoji picture and a fixed price."""
    names = [n for n, _ in PRODUCTS]
    images = product_images(names, style=style, size=size)
    products = []
    for i, ((name, category), image) in enumerate(zip(PRODUCTS, images, strict=True), 1):
        price = round(1.0 + ((i * 37) % 23) * 0.75, 2)  # deterministic, varied
        products.append(Product(i, name, price, category, image))
    return products


def catalog_captioner(products: list[Product], *, template: str = "{}") -> Any:
    """A perfect captioner for the catalogue's own pictures (exact pixels -> product name).

    Pictures it does not know (an attacker's) get the caption ``"unknown"``. For tests and as
    the "ideal captioner" reference of benign runs.
    """
    table = {p.image.tobytes(): template.format(p.name) for p in products}

    def caption(images: list[np.ndarray]) -> list[str]:
        return [table.get(np.ascontiguousarray(im).tobytes(), "unknown") for im in images]

    return caption
