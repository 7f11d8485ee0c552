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
    ("broccoli", "Food & Drink"), ("hot dog", "Food & Drink"), ("pizza", "Food & Drink"),
    ("hamburger", "Food & Drink"), ("taco", "Food & Drink"), ("doughnut", "Food & Drink"),
    ("cookie", "Food & Drink"), ("croissant", "Food & Drink"), ("cheese wedge", "Food & Drink"),
    ("necktie", "Objects"), ("t-shirt", "Objects"), ("jeans", "Objects"), ("dress", "Objects"),
    ("crown", "Objects"), ("umbrella", "Objects"), ("guitar", "Objects"), ("books", "Objects"),
    ("camera", "Objects"), ("laptop", "Objects"), ("glasses", "Objects"), ("handbag", "Objects"),
)


def _placeholder(name: str, size: int) -> np.ndarray:
    """A flat icon (a coloured disc with the name's initials); stands in for the emoji art."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(sum(map(ord, name)))
    colour = tuple(int(c) for c in rng.integers(40, 230, size=3))
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    m = size // 8
    draw.ellipse((m, m, size - m, size - m), fill=colour)
    initials = "".join(w[0] for w in name.split()[:2]).upper()
    draw.text((size // 2 - 6, size // 2 - 6), initials, fill=(255, 255, 255))
    return np.asarray(img)


def product_images(names: list[str], *, size: int = 64) -> list[np.ndarray]:
    """The picture of each product name, ``uint8 (size, size, 3)``: the site's one image source."""
    return [_placeholder(n, size) for n in names]


def default_catalog(*, size: int = 64) -> list[Product]:
    """Every product in :data:`PRODUCTS` with its picture and a fixed price."""
    names = [n for n, _ in PRODUCTS]
    images = product_images(names, size=size)
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
