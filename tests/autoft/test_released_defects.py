"""Released-code defects 2 and 5 (brief autoft.md §3) are not repeated.

2. The released trials never left a 500-step warmup (every trial ran at 2-20% of the lr).
5. ``--use_class_balanced_ood`` was parsed and never read; the OOD subset was an unseeded draw.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmlab.autoft import AutoFT, AutoFTParams, SearchSpace, finetune, make_task
from fmlab.autoft._emoji import draw_subset


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return make_task("toy")


def test_every_trial_step_runs_at_the_searched_lr(task) -> None:
    """Defect 2: the lr of every inner step of every trial is the trial's own lr."""
    s = AutoFT(n_trials=3, inner_steps=6, batch_size=32, space=SearchSpace(lr_base=1e-3),
               pruner="none", random_state=0).fit(task.model, task.train, task.ood_val)
    for t in s.study_.trials:
        lo, hi = t.user_attrs["lr_range"]
        assert lo == hi == pytest.approx(t.params["lr"], rel=1e-12)


def test_warmup_is_counted_in_the_run_and_ends_inside_it(task) -> None:
    """A warmup ramps up to the objective's lr within the run; one longer than the run (the
    released configuration: 500 warmup steps, 10-100 step trials) is refused."""
    p = AutoFTParams({"ce": 1.0}, lr=0.02)
    res = finetune(task.model, p, task.train, steps=6, warmup_steps=3)
    assert res.lrs[:3] == pytest.approx([0.02 / 3, 0.04 / 3, 0.02])
    assert res.lrs[3:] == pytest.approx([0.02] * 3)
    with pytest.raises(ValueError, match=r"warmup_steps <= steps.*warmup_steps=500, steps=10"):
        finetune(task.model, p, task.train, steps=10, warmup_steps=500)


def test_ood_subset_is_seeded_and_class_balanced() -> None:
    """Defect 5: the OOD-validation draw follows its seed, and class balance takes effect."""
    labels = np.repeat(np.arange(4), [400, 100, 60, 40])  # (600,) skewed classes
    a, b = draw_subset(labels, 120, 3), draw_subset(labels, 120, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, draw_subset(labels, 120, 4))
    assert len(np.unique(a)) == 120 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(np.bincount(labels[a], minlength=4), [30, 30, 30, 30])
    plain = np.bincount(labels[draw_subset(labels, 120, 3, class_balanced=False)], minlength=4)
    assert plain[0] > 60  # without balance the majority class dominates, as in the data
    rare = np.repeat(np.arange(3), [300, 100, 5])
    short = np.bincount(rare[draw_subset(rare, 90, 0)])
    assert short[2] == 5 and short.sum() == 90  # a rare class gives all it has; the rest fills
