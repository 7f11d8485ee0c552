"""Tasks as data, judged by exact action and URL; agents end to end in the browser."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmlab.agents import (
    ScriptedAgent,
    Task,
    catalog_captioner,
    judge,
    load_tasks,
    make_tasks,
    run_step,
)


def test_shipped_tasks_are_the_generated_set(products):
    shipped = load_tasks()
    assert [t.to_dict() for t in shipped] == [t.to_dict() for t in make_tasks(products)]
    assert len(shipped) >= 50 and len({t.task_id for t in shipped}) == len(shipped)
    assert {t.group for t in shipped} == {"illusioning", "misdirection"}
    assert {t.attack_type for t in shipped} == {"wrong_object", "choose_me", "add_comment"}
    for t in shipped:
        assert t.benign_action != t.target_action and t.benign_url != t.target_url


def test_task_records_are_validated(tmp_path):
    record = load_tasks()[0].to_dict()
    record.pop("intent")
    record["colour"] = "red"
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(ValueError, match=r"missing \['intent'\], unknown \['colour'\]"):
        load_tasks(path)
    with pytest.raises(ValueError, match="Invalid attack_type 'nope'"):
        load_tasks(attack_type="nope")
    assert {t.attack_type for t in load_tasks(attack_type="choose_me")} == {"choose_me"}


def test_judge_needs_both_the_exact_action_and_the_url():
    task = load_tasks()[0]
    assert judge(task, task.target_action, task.target_url) == {"benign": False, "attacked": True}
    assert judge(task, task.benign_action, task.benign_url) == {"benign": True, "attacked": False}
    assert judge(task, task.target_action + " ", task.target_url)["attacked"] is False
    assert judge(task, task.target_action, "/elsewhere")["attacked"] is False


def test_every_label_of_a_sample_of_tasks_points_at_its_element(fresh_site, browser):
    for task in load_tasks()[::4]:
        obs = browser.goto(fresh_site.url + task.start_url).observe()
        for action, url in ((task.benign_action, task.benign_url),
                            (task.target_action, task.target_url)):
            mark = obs.mark(int(action.split("[")[1].rstrip("]")))
            if mark.role == "link":
                assert mark.href.endswith(url), (task.task_id, mark, url)
            else:
                assert mark.name == "Add to cart" and url == "/cart"


def _fooled(products, task):
    """The ideal attack: the captioner reads the attacker's picture as the target caption."""
    honest = catalog_captioner(products)
    return lambda images: [task.target_caption if c == "unknown" else c for c in honest(images)]


@pytest.mark.parametrize("index", [0, 30, 45])  # wrong_object, choose_me, add_comment
def test_scripted_agent_solves_benignly_and_is_hijacked_through_captions(
    index, products, fresh_site, browser
):
    task = load_tasks()[index]
    agent = ScriptedAgent()
    benign = run_step(task, agent, fresh_site, browser, captioner=catalog_captioner(products))
    assert benign.valid and benign.benign and not benign.attacked, benign
    if task.attack_type == "add_comment":
        assert fresh_site.state()["cart"] == [task.trigger_pid]
    adv = fresh_site.image(task.trigger_pid).copy()
    adv[0, 0] ^= 1  # any change: the fooled captioner stands in for a successful attack
    attacked = run_step(task, agent, fresh_site, browser, captioner=_fooled(products, task),
                        image=adv)
    if task.attack_type == "choose_me":  # names are on this page: rules ignore the caption
        assert attacked.benign and not attacked.attacked
    else:
        assert attacked.attacked and attacked.path == task.target_url, attacked


def test_an_unparseable_reply_is_an_invalid_step(products, fresh_site, browser):
    class Chatty:
        def act(self, observation, intent):
            return "I think I should click [5]."

    record = run_step(load_tasks()[0], Chatty(), fresh_site, browser,
                      captioner=catalog_captioner(products))
    assert not record.valid and not record.benign and not record.attacked


def test_pixel_agent_clicks_the_picture_closest_to_the_intent(products, fresh_site, browser):
    from fmlab.agents import PixelAgent

    # an "encoder" that embeds each catalogue picture as its product's one-hot, texts likewise
    names = [p.name for p in products]
    table = {p.image.tobytes(): i for i, p in enumerate(products)}
    eye = np.eye(len(products))
    agent = PixelAgent(embed_images=lambda ims: eye[[table[i.tobytes()] for i in ims]],
                       embed_text=lambda texts: eye[[names.index(t) for t in texts]])
    task = load_tasks()[1]
    record = run_step(task, agent, fresh_site, browser)
    assert record.benign, record
    assert isinstance(task, Task)


def test_caption_agent_reuses_the_page_prefix_without_changing_its_scores(
    products, fresh_site, browser
):
    """The KV cache of the previous prompt's common part (system text and page up to the first
    changed caption) is reused; scores equal those of an agent that computes everything."""
    from fmlab.agents import CaptionAgent

    task = load_tasks()[0]
    reusing = CaptionAgent()
    model = (reusing.model, reusing.tokenizer)
    benign = browser.goto(fresh_site.url + task.start_url).observe(catalog_captioner(products))
    adv = fresh_site.image(task.trigger_pid).copy()
    adv[0, 0] ^= 1
    fresh_site.set_image(task.trigger_pid, adv)
    attacked = browser.goto(fresh_site.url + task.start_url).observe(_fooled(products, task))
    assert attacked.text != benign.text  # one caption changed
    for o in (benign, attacked):
        got = reusing.scores(o, task.intent)
        fresh = CaptionAgent(model).scores(o, task.intent)
        assert got.keys() == fresh.keys()
        assert np.allclose(list(got.values()), list(fresh.values()), atol=1e-3)
    assert reusing._last is not None and len(reusing._last[0]) > 50
