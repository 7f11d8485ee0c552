"""Multimodal web agents in an offline shop, the setting of adversarial-image attacks.

An offline shopping site (:class:`ShopSite`: a real HTTP server on localhost, products with emoji
pictures and names from the data zoo, prices, search, product pages, cart, comments), driven in
headless Chromium (:class:`Browser`, via Playwright), seen as agents see it
(:class:`Observation`: a set-of-marks screenshot and an accessibility-tree text in which every
picture is replaced by its caption). Attack tasks are data (:func:`load_tasks`: 52 shipped
records over illusioning and goal misdirection); :func:`run_step` runs one step and judges it by
exact action match and the resulting URL. Agents: :class:`ScriptedAgent` (rules, no model),
:class:`CaptionAgent` (SmolLM2-135M-Instruct reading captions), :class:`PixelAgent` (a dual
encoder scoring pictures).

Example:
    >>> from fmlab.agents import Browser, ScriptedAgent, ShopSite, default_catalog, load_tasks
    >>> from fmlab.agents import catalog_captioner, run_step
    >>> products = default_catalog()                                    # doctest: +SKIP
    >>> with ShopSite(products) as site, Browser() as browser:          # doctest: +SKIP
    ...     task = load_tasks()[0]
    ...     record = run_step(task, ScriptedAgent(), site, browser,
    ...                       captioner=catalog_captioner(products))
    ...     print(record.action, record.benign)

References:
    Wu et al., Dissecting Adversarial Robustness of Multimodal LM Agents (arXiv:2406.12814).
"""

from __future__ import annotations

from fmlab.agents._actions import Action, ActionParseError, parse_action
from fmlab.agents._agents import (
    CaptionAgent,
    PixelAgent,
    ScriptedAgent,
    StepRecord,
    run_step,
    run_tasks,
)
from fmlab.agents._browser import (
    Browser,
    BrowserUnavailableError,
    Mark,
    Observation,
    draw_marks,
    find_chromium,
)
from fmlab.agents._catalog import PRODUCTS, catalog_captioner, default_catalog, product_images
from fmlab.agents._site import Product, ShopSite, SiteStartError, to_uint8_image
from fmlab.agents._tasks import Task, judge, load_tasks, make_tasks

__all__ = [
    "PRODUCTS",
    "Action",
    "ActionParseError",
    "Browser",
    "BrowserUnavailableError",
    "CaptionAgent",
    "Mark",
    "Observation",
    "PixelAgent",
    "Product",
    "ScriptedAgent",
    "ShopSite",
    "SiteStartError",
    "StepRecord",
    "Task",
    "catalog_captioner",
    "default_catalog",
    "draw_marks",
    "find_chromium",
    "judge",
    "load_tasks",
    "make_tasks",
    "parse_action",
    "product_images",
    "run_step",
    "run_tasks",
    "to_uint8_image",
]
