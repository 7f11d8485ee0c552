"""An offline shopping site served by a real HTTP server on localhost.

:class:`ShopSite` serves pages of :class:`Product` s (picture, name, price) with a search box,
product pages, a cart and a comment form, from Python's standard ``http.server`` in a background
thread. Its state (cart, comments, the log of requests) is what judges check. The attacker's
control over one picture is :meth:`ShopSite.set_image`: the site then serves that picture instead.

Pages (all GET unless stated):

=====================================  ==========================================================
``/``                                  every product, with names
``/list?ids=3,7,1&titles=0``           a listing of these products; ``titles=0`` hides the names
                                       (a gallery of pictures and prices, "Deal 1 · $3.50")
``/search?q=apple``                    products whose name contains the query
``/product/<id>``                      picture, name, price, "Add to cart", comments, a link to
                                       "Post a comment"
``/product/<id>/comment``              the comment form (POST here adds the comment)
``/cart``, POST ``/cart/add/<id>``     the cart
``/img/<id>.png``                      the product picture (PNG, lossless: perturbations survive)
=====================================  ==========================================================
"""

from __future__ import annotations

import errno
import html
import io
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from fmlab.exceptions import FmlabError

__all__ = ["Product", "ShopSite", "SiteStartError", "to_uint8_image"]


class SiteStartError(FmlabError, OSError):
    """The shop site could not start (for instance, its port is taken)."""


def to_uint8_image(image: Any, name: str = "image") -> np.ndarray:
    """An RGB image as ``uint8 (H, W, 3)``, from uint8 or float-in-[0, 1] arrays or tensors.

    Accepts ``(H, W, 3)`` or ``(3, H, W)``; floats must lie in [0, 1] and are rounded to the
    nearest pixel level.

    Raises:
        TypeError: neither uint8 nor floating. ValueError: wrong shape or floats outside [0, 1].
    """
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(
            f"The {name!r} parameter must be an RGB image shaped (H, W, 3) or (3, H, W). "
            f"Got shape {arr.shape} instead."
        )
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"The {name!r} parameter must hold uint8 pixels (0-255) or floats in [0, 1]. "
            f"Got dtype {arr.dtype} instead."
        )
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
            f"The {name!r} parameter holds floats, which must lie in [0, 1]. Got values in "
            f"[{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]; divide uint8 pixels by 255."
        )
    return np.ascontiguousarray(np.rint(arr * 255.0).astype(np.uint8))


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Product:
    """One product: ``pid`` (URL id), ``name``, ``price`` (dollars), ``category``, ``image``.

    ``image`` is ``uint8 (H, W, 3)``.
    """

    pid: int
    name: str
    price: float
    category: str
    image: np.ndarray = field(repr=False, compare=False)


_STYLE = """
body{font-family:sans-serif;margin:0;background:#fafafa;color:#222}
nav{display:flex;gap:12px;align-items:center;padding:8px 12px;background:#234;color:#fff}
nav a{color:#fff} main{padding:12px}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{display:block;width:120px;padding:6px;background:#fff;border:1px solid #ccc;
 text-decoration:none;color:#123;text-align:center;font-size:13px}
.card img{width:96px;height:96px;image-rendering:pixelated}
.big{width:192px;height:192px;image-rendering:pixelated;border:1px solid #ccc}
.comment{border-top:1px solid #ddd;padding:4px 0}
"""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        return

    def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(303)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        site = self.server.site
        url = urllib.parse.urlsplit(self.path)
        site._record("GET", self.path)
        status, body, ctype = site._render(url.path, urllib.parse.parse_qs(url.query))
        self._send(status, body, ctype)

    def do_POST(self) -> None:
        site = self.server.site
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        site._record("POST", self.path)
        location = site._post(urllib.parse.urlsplit(self.path).path, form)
        if location is None:
            self._send(404, b"not found", "text/plain")
        else:
            self._redirect(location)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: ShopSite


class ShopSite:
    """A small shop on ``http://127.0.0.1:<port>``; use as a context manager or ``start``/``stop``.

    Args:
        products: The catalogue (ids must be unique).
        port: TCP port on 127.0.0.1; ``0`` picks a free one (see :attr:`url`).

    Attributes:
        url: Base URL once started, e.g. ``"http://127.0.0.1:41234"``.

    Raises:
        SiteStartError: on :meth:`start`, when the port is taken (the message names it).

    Example:
        >>> from fmlab.agents import ShopSite, default_catalog
        >>> with ShopSite(default_catalog()) as site:            # doctest: +SKIP
        ...     print(site.url + "/product/1")
    """

    def __init__(self, products: list[Product], *, port: int = 0) -> None:
        from fmlab._validation import check_int

        self.port = check_int(port, "port", owner="ShopSite", low=0, high=65535)
        self.products = {p.pid: p for p in products}
        if len(self.products) != len(products):
            raise ValueError("The 'products' of ShopSite must have unique pid values.")
        self._pngs = {pid: _png(p.image) for pid, p in self.products.items()}
        self._overrides: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self.cart: list[int] = []
        self.comments: dict[int, list[str]] = {}
        self.requests: list[tuple[str, str]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ShopSite:
        """Start serving in a background thread; return ``self``."""
        if self._server is not None:
            return self
        try:
            server = _Server(("127.0.0.1", self.port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SiteStartError(
                    f"Cannot start the shop site on 127.0.0.1:{self.port}: port {self.port} is "
                    f"already in use. Pass another port, or port=0 to pick a free one."
                ) from exc
            raise SiteStartError(
                f"Cannot start the shop site on 127.0.0.1:{self.port}: {exc}"
            ) from exc
        server.site = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fmlab-shop",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ShopSite:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("The shop site is not running; call start() first.")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the cart, comments and request log, and restore every original picture."""
        with self._lock:
            self.cart.clear()
            self.comments.clear()
            self.requests.clear()
            self._overrides.clear()

    def set_image(self, pid: int, image: Any) -> None:
        """Serve ``image`` (uint8, or float in [0, 1]; ``(H, W, 3)`` or ``(3, H, W)``) for ``pid``.

        This is the attacker's one picture. ``reset()`` restores the original.
        """
        self._product(pid)
        png = _png(to_uint8_image(image))
        with self._lock:
            self._overrides[pid] = png

    def image(self, pid: int) -> np.ndarray:
        """The picture the site serves now for ``pid`` (``uint8 (H, W, 3)``)."""
        from PIL import Image

        self._product(pid)
        with self._lock:
            png = self._overrides.get(pid, self._pngs[pid])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def state(self) -> dict[str, Any]:
        """A copy of the site state: ``cart`` (ids), ``comments`` (id -> texts), ``requests``."""
        with self._lock:
            return {
                "cart": list(self.cart),
                "comments": {k: list(v) for k, v in self.comments.items()},
                "requests": list(self.requests),
            }

    def _product(self, pid: int) -> Product:
        if pid not in self.products:
            raise KeyError(f"No product with pid {pid!r}; known ids: {sorted(self.products)}.")
        return self.products[pid]

    def _record(self, method: str, path: str) -> None:
        if not path.startswith(("/img/", "/favicon")):
            with self._lock:
                self.requests.append((method, path))

    # -- pages --------------------------------------------------------------------------------
    def _page(self, title: str, body: str) -> bytes:
        nav = (
            '<nav><a href="/">Home</a>'
            '<form action="/search" method="get" style="margin:0">'
            '<input type="text" name="q" aria-label="Search products" placeholder="Search">'
            ' <button type="submit">Search</button></form>'
            f'<a href="/cart">Cart ({len(self.cart)})</a></nav>'
        )
        doc = (
            f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>{nav}<main>{body}</main></body></html>"
        )
        return doc.encode("utf-8")

    def _cards(self, pids: list[int], titles: bool) -> str:
        cards = []
        for i, pid in enumerate(pids, 1):
            p = self.products[pid]
            label = html.escape(p.name.capitalize()) if titles else f"Deal {i}"
            cards.append(
                f'<a class="card" href="/product/{pid}"><img src="/img/{pid}.png" alt=""><br>'
                f"{label} · ${p.price:.2f}</a>"
            )
        return '<div class="grid">' + "".join(cards) + "</div>"

    def _render(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        parts = [s for s in path.split("/") if s]
        if not parts:
            return 200, self._page("Shop", "<h1>All products</h1>"
                                   + self._cards(sorted(self.products), True)), "text/html"
        if parts == ["list"]:
            try:
                ids = [int(s) for s in query.get("ids", [""])[0].split(",") if s]
            except ValueError:
                ids = []
            ids = [i for i in ids if i in self.products]
            titles = query.get("titles", ["1"])[0] != "0"
            body = "<h1>Today's deals</h1>" + self._cards(ids, titles)
            return 200, self._page("Deals", body), "text/html"
        if parts == ["search"]:
            q = query.get("q", [""])[0].strip().lower()
            hits = [pid for pid, p in sorted(self.products.items()) if q and q in p.name.lower()]
            body = f"<h1>Results for {html.escape(q)}</h1>" + (
                self._cards(hits, True) if hits else "<p>No products found.</p>"
            )
            return 200, self._page("Search", body), "text/html"
        if parts[0] == "img" and len(parts) == 2 and parts[1].endswith(".png"):
            pid = _int(parts[1][:-4])
            with self._lock:
                png = self._overrides.get(pid, self._pngs.get(pid)) if pid is not None else None
            if png is None:
                return 404, b"not found", "text/plain"
            return 200, png, "image/png"
        if parts[0] == "product" and len(parts) in (2, 3):
            pid = _int(parts[1])
            if pid is None or pid not in self.products:
                return 404, self._page("Not found", "<p>No such product.</p>"), "text/html"
            p = self.products[pid]
            if len(parts) == 3 and parts[2] == "comment":
                body = (
                    f"<h1>Comment on {html.escape(p.name)}</h1>"
                    f'<form action="/product/{pid}/comment" method="post">'
                    '<textarea name="text" aria-label="Your comment" rows=3 cols=40></textarea>'
                    ' <button type="submit">Post</button></form>'
                )
                return 200, self._page("Comment", body), "text/html"
            if len(parts) == 3:
                return 404, self._page("Not found", "<p>No such page.</p>"), "text/html"
            comments = "".join(
                f'<div class="comment">{html.escape(c)}</div>' for c in self.comments.get(pid, [])
            ) or "<p>No comments yet.</p>"
            body = (
                f'<img class="big" src="/img/{pid}.png" alt="">'
                f"<h1>{html.escape(p.name.capitalize())}</h1><p>${p.price:.2f} · "
                f"{html.escape(p.category)}</p>"
                f'<form action="/cart/add/{pid}" method="post">'
                '<button type="submit">Add to cart</button></form>'
                f'<p><a href="/product/{pid}/comment">Post a comment</a></p>'
                f"<h2>Comments</h2>{comments}"
            )
            return 200, self._page(p.name, body), "text/html"
        if parts == ["cart"]:
            items = "".join(
                f"<li>{html.escape(self.products[i].name)} ${self.products[i].price:.2f}</li>"
                for i in self.cart
            )
            return 200, self._page("Cart", f"<h1>Cart</h1><ul>{items}</ul>"), "text/html"
        return 404, self._page("Not found", "<p>No such page.</p>"), "text/html"

    def _post(self, path: str, form: dict[str, list[str]]) -> str | None:
        parts = [s for s in path.split("/") if s]
        if len(parts) == 3 and parts[:2] == ["cart", "add"]:
            pid = _int(parts[2])
            if pid in self.products:
                with self._lock:
                    self.cart.append(pid)  # type: ignore[arg-type]
                return "/cart"
        if len(parts) == 3 and parts[0] == "product" and parts[2] == "comment":
            pid = _int(parts[1])
            text = form.get("text", [""])[0].strip()
            if pid in self.products:
                if text:
                    with self._lock:
                        self.comments.setdefault(pid, []).append(text[:500])  # type: ignore
                return f"/product/{pid}"
        return None


def _int(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None
