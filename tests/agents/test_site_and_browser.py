"""The shop site (a real HTTP server), the browser observations and the action language."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest

from fmlab.agents import (
    Action,
    ActionParseError,
    BrowserUnavailableError,
    ShopSite,
    SiteStartError,
    find_chromium,
    parse_action,
)


@pytest.mark.parametrize("reply, action", [
    ("click [7]", Action("click", 7)),
    ("  click [12]\n", Action("click", 12)),
    ("type [3] [hot dog]", Action("type", 3, "hot dog")),
    ("type [3] []", Action("type", 3, "")),
    ("stop [the red apple]", Action("stop", None, "the red apple")),
])
def test_actions_parse_and_print_back(reply, action):
    assert parse_action(reply) == action
    assert str(action) == reply.strip()


@pytest.mark.parametrize("reply", [
    "", "click 7", "click [7] please", "Click [7]", "click [7]\nclick [8]", "press [7]",
    "I would click [7]", "click [-1]", "type [3] hot dog", "click [a]",
])
def test_anything_but_one_action_is_refused(reply):
    with pytest.raises(ActionParseError, match="Not an action"):
        parse_action(reply)


def test_port_taken_is_a_clear_error_naming_the_port(products):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(SiteStartError, match=rf"127.0.0.1:{port}: port {port} is already in use"):
            ShopSite(products, port=port).start()


def test_missing_browser_names_the_install_command():
    with pytest.raises(BrowserUnavailableError, match=r"apt-get install -y chromium"):
        find_chromium("/nonexistent/chromium")


def test_site_serves_pages_and_keeps_state_over_http(fresh_site, products):
    url = fresh_site.url
    page = urllib.request.urlopen(url + "/search?q=apple").read().decode()
    assert "Red apple" in page and "Banana" not in page
    req = urllib.request.Request(url + "/cart/add/2", data=b"", method="POST")
    assert urllib.request.urlopen(req).geturl().endswith("/cart")
    req = urllib.request.Request(url + "/product/2/comment", data=b"text=tasty", method="POST")
    urllib.request.urlopen(req)
    state = fresh_site.state()
    assert state["cart"] == [2] and state["comments"] == {2: ["tasty"]}
    assert ("POST", "/cart/add/2") in state["requests"]
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url + "/product/999")


def test_the_attackers_picture_is_served_losslessly_and_reset_restores(fresh_site, products):
    rng = np.random.default_rng(0)
    adv = rng.random((3, 64, 64)).astype(np.float32)  # (3, H, W) float in [0, 1]
    fresh_site.set_image(5, adv)
    served = fresh_site.image(5)
    assert np.array_equal(served, np.rint(adv.transpose(1, 2, 0) * 255).astype(np.uint8))
    fresh_site.reset()
    assert np.array_equal(fresh_site.image(5), products[4].image)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        fresh_site.set_image(5, adv * 2)
    with pytest.raises(TypeError, match="uint8 pixels"):
        fresh_site.set_image(5, np.zeros((8, 8, 3), dtype=np.int64))


def test_observation_replaces_pictures_by_captions(fresh_site, browser):
    captioner = lambda images: [f"picture {i.mean():.0f}" for i in images]  # noqa: E731
    obs = browser.goto(fresh_site.url + "/list?ids=11,12,13&titles=0").observe(captioner)
    lines = obs.text.splitlines()
    assert lines[0] == "URL: /list?ids=11,12,13&titles=0"
    assert lines[1:5] == ['[1] link "Home"', '[2] textbox "Search products"',
                          '[3] button "Search"', '[4] link "Cart (0)"']
    assert lines[5].startswith('[5] link "Deal 1 · $') and "[image: picture " in lines[5]
    assert "hot dog" not in obs.text.lower()  # names hidden on this page: only captions tell
    assert len(obs.images) == 3 and all(im.shape == (64, 64, 3) for im in obs.images.values())
    som = obs.som_screenshot(highlight=[5])
    assert som.shape == obs.screenshot.shape and not np.array_equal(som, obs.screenshot)
    x, y, w, h = obs.mark(5).box
    assert som[int(y) + 1, int(x) + 40].tolist() == [220, 20, 20]  # the highlighted border


def test_actions_run_in_the_browser_and_change_site_state(fresh_site, browser):
    browser.goto(fresh_site.url + "/product/3").observe()
    browser.act("click [6]")  # Add to cart
    assert browser.url.endswith("/cart") and fresh_site.state()["cart"] == [3]
    browser.goto(fresh_site.url + "/product/3/comment").observe()
    browser.act("type [5] [lovely grapes]")
    assert browser.url.endswith("/product/3")
    assert fresh_site.state()["comments"] == {3: ["lovely grapes"]}
    obs = browser.observe()
    browser.act("type [2] [banana]")  # the search box submits on Enter
    assert "/search?q=banana" in browser.url
    with pytest.raises(KeyError, match=r"No element \[99\]"):
        browser.act("click [99]")
    assert obs.path == "/product/3"
