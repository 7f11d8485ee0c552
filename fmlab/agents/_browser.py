"""Headless Chromium driven by Playwright, and the observations a web agent sees.

:class:`Browser` opens pages, labels every interactive element and every standalone picture with a
set-of-marks number, and returns an :class:`Observation`: the screenshot (with the marks drawn on
by :meth:`Observation.som_screenshot`), the pictures the page loaded (fetched through the browser)
and an accessibility-tree text in which each picture is replaced by its caption, as the
captioner-augmented agents of Wu et al. see pages. :meth:`Browser.act` carries out an
:class:`~fmlab.agents.Action`.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmlab._imports import require
from fmlab.agents._actions import Action, parse_action
from fmlab.exceptions import FmlabError

__all__ = [
    "Browser",
    "BrowserUnavailableError",
    "Mark",
    "Observation",
    "draw_marks",
    "find_chromium",
]

#: The flags of a quiet headless Chromium on a machine without network (no background calls).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)
INSTALL_CHROMIUM = "sudo apt-get install -y chromium"

Captioner = Callable[[list[np.ndarray]], list[str]]


class BrowserUnavailableError(FmlabError, OSError):
    """Chromium is not installed or does not start. The message gives the install command."""


def find_chromium(executable: str | None = None) -> str:
    """Path of the Chromium to drive: ``executable`` if given, else ``chromium`` on PATH.

    Raises:
        BrowserUnavailableError: nothing found; the message has the exact install command.
    """
    if executable is not None:
        if Path(executable).is_file() or shutil.which(executable):
            return str(shutil.which(executable) or executable)
        raise BrowserUnavailableError(
            f"The browser executable {executable!r} does not exist. Install Chromium with: "
            f"{INSTALL_CHROMIUM}  (or pass the path of an installed Chromium)"
        )
    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailableError(
        f"Headless Chromium is not installed. Install it with: {INSTALL_CHROMIUM}"
    )


@dataclass(frozen=True)
class Mark:
    """One labelled element: ``id`` (the set-of-marks number), ``role``, accessible ``name``,
    the URLs of the pictures inside it and its ``box`` ``(x, y, w, h)`` in page pixels."""

    id: int
    role: str
    name: str
    images: tuple[str, ...]
    box: tuple[float, float, float, float]
    href: str = ""


@dataclass
class Observation:
    """What an agent sees of one page.

    Attributes:
        url: The page URL. ``path`` is its path and query (what the text shows).
        marks: The labelled elements, in page order.
        screenshot: ``uint8 (H, W, 3)``, without marks (see :meth:`som_screenshot`).
        images: Picture URL -> ``uint8 (h, w, 3)`` as the browser loaded it.
        captions: Picture URL -> caption (empty when no captioner was given).
    """

    url: str
    marks: list[Mark]
    screenshot: np.ndarray = field(repr=False)
    images: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def mark(self, mark_id: int) -> Mark:
        for m in self.marks:
            if m.id == mark_id:
                return m
        raise KeyError(f"No element [{mark_id}] on {self.path}.")

    def describe(self, m: Mark) -> str:
        """One line of the accessibility text: ``[5] link "Deal 1 · $3.50" [image: a pizza]``."""
        line = f"[{m.id}] {m.role} {_quote(m.name)}" if m.name else f"[{m.id}] {m.role}"
        for src in m.images:
            caption = self.captions.get(src, "")
            line += f" [image: {caption}]" if caption else " [image]"
        return line

    @property
    def text(self) -> str:
        """The accessibility-tree text with captions in place of pictures."""
        return "\n".join([f"URL: {self.path}", *(self.describe(m) for m in self.marks)])

    def som_screenshot(self, highlight: Sequence[int] = ()) -> np.ndarray:
        """The screenshot with set-of-marks boxes and labels drawn on (``highlight`` in red)."""
        return draw_marks(self.screenshot, self.marks, highlight=highlight)


def _quote(s: str) -> str:
    return '"' + s.replace('"', "'") + '"'


def draw_marks(
    screenshot: np.ndarray, marks: Sequence[Mark], *, highlight: Sequence[int] = ()
) -> np.ndarray:
    """Draw each mark's box and number on a copy of ``screenshot`` (set-of-marks prompting)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(screenshot).convert("RGB")
    draw = ImageDraw.Draw(img)
    for m in marks:
        x, y, w, h = m.box
        colour = (220, 20, 20) if m.id in highlight else (20, 90, 220)
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=3 if m.id in highlight else 2)
        label = str(m.id)
        draw.rectangle((x, y, x + 7 * len(label) + 4, y + 12), fill=colour)
        draw.text((x + 2, y), label, fill=(255, 255, 255))
    return np.asarray(img)


_MARK_JS = """
() => {
  document.querySelectorAll('[data-som]').forEach(e => e.removeAttribute('data-som'));
  const roles = {A: 'link', BUTTON: 'button', TEXTAREA: 'textbox', SELECT: 'combobox', IMG: 'img'};
  const out = [];
  let n = 0;
  for (const el of document.querySelectorAll('a, button, input, textarea, select, img')) {
    if (el.tagName === 'IMG' && el.closest('a, button')) continue;
    if (el.tagName === 'INPUT' && el.type === 'hidden') continue;
    const r = el.getBoundingClientRect();
    const st = getComputedStyle(el);
    if (r.width === 0 || r.height === 0) continue;
    if (st.visibility === 'hidden' || st.display === 'none') continue;
    n += 1;
    el.setAttribute('data-som', String(n));
    let role = roles[el.tagName] || 'textbox';
    if (el.tagName === 'INPUT' && ['submit', 'button'].includes(el.type)) role = 'button';
    const text = el.tagName === 'IMG' ? (el.alt || '')
      : (el.getAttribute('aria-label') || el.innerText || el.value || el.placeholder || '');
    const imgs = el.tagName === 'IMG' ? [el] : Array.from(el.querySelectorAll('img'));
    out.push({id: n, role: role, name: text.trim().replace(/\\s+/g, ' '),
              images: imgs.map(i => i.src), href: el.href || '',
              box: [r.x + window.scrollX, r.y + window.scrollY, r.width, r.height]});
  }
  return out;
}
"""


class _Playwright:
    """One Playwright driver per thread, shared by every :class:`Browser` of that thread.

    Playwright's sync API runs an event loop in its thread, so a second ``sync_playwright()``
    in the same thread fails; browsers therefore share the driver, which stops with the last.
    """

    _local = threading.local()

    @classmethod
    def acquire(cls) -> Any:
        state = cls._local.__dict__
        if not state.get("users"):
            sync_api = require("playwright.sync_api", feature="fmlab.agents.Browser")
            state["driver"] = sync_api.sync_playwright().start()
            state["users"] = 0
        state["users"] += 1
        return state["driver"]

    @classmethod
    def release(cls) -> None:
        state = cls._local.__dict__
        state["users"] = state.get("users", 1) - 1
        if state["users"] <= 0:
            driver, state["driver"], state["users"] = state.get("driver"), None, 0
            if driver is not None:
                try:
                    driver.stop()
                except Exception:  # a driver that already died is not an error
                    pass


class Browser:
    """A headless Chromium (Debian's ``chromium``) driven through Playwright.

    Each browser has a fresh, empty profile (removed on :meth:`close`). Use as a context manager.

    Args:
        executable: Chromium to run; default ``chromium`` on PATH.
        viewport: ``(width, height)`` of the page in CSS pixels.
        timeout_s: How long one navigation or click may take.

    Raises:
        BrowserUnavailableError: Chromium is missing (with ``sudo apt-get install -y chromium``)
            or does not start.
        MissingDependencyError: the ``playwright`` package is missing (with the pip command).

    Example:
        >>> with ShopSite(default_catalog()) as site, Browser() as browser:  # doctest: +SKIP
        ...     obs = browser.goto(site.url + "/").observe()
        ...     print(obs.text)
    """

    def __init__(
        self,
        *,
        executable: str | None = None,
        viewport: tuple[int, int] = (800, 600),
        timeout_s: float = 15.0,
    ) -> None:
        self.executable = executable
        self.viewport = viewport
        self.timeout_s = timeout_s
        self._pw: Any = None
        self._context: Any = None
        self._page: Any = None
        self._profile: str | None = None
        self._caption_cache: dict[tuple[int, str], str] = {}

    def start(self) -> Browser:
        if self._page is not None:
            return self
        executable = find_chromium(self.executable)
        self._pw = _Playwright.acquire()
        self._profile = tempfile.mkdtemp(prefix="fmlab-chromium-")
        try:
            self._context = self._pw.chromium.launch_persistent_context(
                self._profile,
                executable_path=executable,
                headless=True,
                args=list(CHROMIUM_FLAGS[1:]),  # Playwright adds its own --headless
                viewport={"width": self.viewport[0], "height": self.viewport[1]},
            )
        except Exception as exc:
            self.close()
            raise BrowserUnavailableError(
                f"Chromium at {executable} did not start: {str(exc).splitlines()[0]}. "
                f"Reinstall it with: {INSTALL_CHROMIUM}"
            ) from exc
        self._context.set_default_timeout(self.timeout_s * 1000)
        self._page = self._context.pages[0] if self._context.pages else self._context.new_page()
        return self

    def close(self) -> None:
        if self._context is not None:
            try:
                self._context.close()
            except Exception:  # closing a browser that already died is not an error
                pass
        if self._pw is not None:
            _Playwright.release()
        self._pw = self._context = self._page = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def page(self) -> Any:
        if self._page is None:
            raise RuntimeError("The browser is not running; call start() or use 'with Browser()'.")
        return self._page

    @property
    def url(self) -> str:
        return str(self.page.url)

    def goto(self, url: str) -> Browser:
        """Open ``url`` and wait for it to load; return ``self``."""
        self.page.goto(url, wait_until="load")
        return self

    def observe(self, captioner: Captioner | None = None) -> Observation:
        """Label the page's elements and return what an agent sees.

        Args:
            captioner: Maps a list of ``uint8 (h, w, 3)`` pictures to their captions; each
                picture on the page is replaced by its caption in :attr:`Observation.text`.
                Captions are cached per picture content.
        """
        from PIL import Image

        page = self.page
        raw = page.evaluate(_MARK_JS)
        marks = [
            Mark(int(r["id"]), r["role"], r["name"], tuple(r["images"]),
                 tuple(float(v) for v in r["box"]), r["href"])  # type: ignore[arg-type]
            for r in raw
        ]
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(type="png"))).convert("RGB"))
        srcs = list(dict.fromkeys(s for m in marks for s in m.images))
        images = {}
        for src in srcs:
            body = self._context.request.get(src).body()
            images[src] = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        captions: dict[str, str] = {}
        if captioner is not None and srcs:
            keys = {s: (id(captioner), hashlib.sha1(images[s].tobytes()).hexdigest()) for s in srcs}
            todo = [s for s in srcs if keys[s] not in self._caption_cache]
            if todo:
                new = captioner([images[s] for s in todo])
                for s, c in zip(todo, new, strict=True):
                    self._caption_cache[keys[s]] = str(c)
            captions = {s: self._caption_cache[keys[s]] for s in srcs}
        return Observation(self.url, marks, shot, images, captions)

    def act(self, action: Action | str) -> None:
        """Carry out ``action`` on the current page (labels from the last :meth:`observe`).

        Raises:
            ActionParseError: a string that is not one action. KeyError: no such element.
        """
        if isinstance(action, str):
            action = parse_action(action)
        if action.kind == "stop":
            return
        loc = self.page.locator(f'[data-som="{action.target}"]')
        if loc.count() != 1:
            raise KeyError(f"No element [{action.target}] on {self.url}.")
        if action.kind == "click":
            loc.click()
        else:
            loc.fill(action.text)
            # Enter submits a text field's form; a textarea would take it as a newline instead
            if loc.evaluate("e => e.tagName") == "TEXTAREA":
                with self.page.expect_navigation(wait_until="load"):
                    loc.evaluate("e => e.form && e.form.requestSubmit()")
            else:
                loc.press("Enter")
        self.page.wait_for_load_state("load")
