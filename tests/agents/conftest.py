"""One shop site and one headless Chromium for the whole agents test module set."""

from __future__ import annotations

import pytest

from fmlab._imports import is_available
from fmlab.testing import require_or_skip


@pytest.fixture(scope="session")
def products():
    from fmlab.agents import default_catalog
    from fmlab.exceptions import DataUnavailableError

    try:
        return default_catalog()
    except DataUnavailableError as exc:
        require_or_skip(str(exc))


@pytest.fixture(scope="session")
def site(products):
    from fmlab.agents import ShopSite

    with ShopSite(products) as s:
        yield s


@pytest.fixture(scope="session")
def browser():
    from fmlab.agents import Browser, BrowserUnavailableError, find_chromium

    if not is_available("playwright"):
        require_or_skip('playwright is not installed: pip install "fmlab[agents]"')
    try:
        find_chromium()
    except BrowserUnavailableError as exc:
        require_or_skip(str(exc))
    with Browser() as b:
        yield b


@pytest.fixture()
def fresh_site(site):
    site.reset()
    return site
