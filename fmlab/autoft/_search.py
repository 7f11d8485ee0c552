"""AutoFT's search on Optuna (TPE by default), on the shared layer :mod:`fmlab._hpo`.

Each trial draws an objective from the search space, fine-tunes a copy of the pretrained model
for ``inner_steps`` steps on ID batches, and is scored on the OOD-validation set. Every
evaluation is reported with ``trial.report`` so that the pruner works (the released code created
a pruner but never reported). The study is *maximised* on the metric.

How trials are neither lost nor run twice across workers: a trial counts against ``n_trials``
once finished (complete or pruned). A worker that dies mid-trial leaves it RUNNING; after the
grace period a live worker fails it and re-queues its parameters (:mod:`fmlab._hpo`), so the
same objective runs to completion once. A worker that finds the budget already claimed by
trials numbered before its own (a race at the end) records its trial as surplus and prunes it
without training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from fmlab import _hpo as hpo
from fmlab._validation import check_int, check_option, check_real
from fmlab.autoft._space import AutoFTParams, SearchSpace

__all__ = ["AutoFT", "run_autoft_worker"]

_PARAMS_ATTR = "fmlab_params"  # the objective a trial used, in the released key format
_BUDGET_ATTR = "fmlab_n_trials"  # the search's trial budget (the latest start sets it)


def _check_space(space: Any) -> Any:
    if space is None:
        return SearchSpace()
    if not callable(space):
        raise TypeError(f"The 'space' parameter of AutoFT must be a SearchSpace or a function "
                        f"trial -> AutoFTParams. Got {type(space).__name__} instead.")
    return space


def _space_spec(space: Any) -> dict[str, Any]:
    if isinstance(space, SearchSpace):
        return space.to_dict()
    return {"define_by_run": f"{getattr(space, '__module__', '?')}:"
                             f"{getattr(space, '__qualname__', type(space).__name__)}"}


class _Objective:
    """The Optuna objective of one search (picklable for local worker processes)."""

    def __init__(self, model: Any, train: Any, ood_val: Any, space: Any, cfg: dict[str, Any],
                 id_val: Any = None) -> None:
        self.model, self.train, self.ood_val, self.space, self.cfg = (model, train, ood_val,
                                                                      space, cfg)
        self.id_val = id_val

    def __call__(self, trial: Any) -> float:
        import optuna

        from fmlab.autoft._finetune import finetune

        params = self.space(trial)
        if isinstance(params, Mapping):
            params = AutoFTParams.from_dict(params)
        if not isinstance(params, AutoFTParams):
            raise TypeError(f"The search space must return AutoFTParams (or a dict in the "
                            f"released key format). Got {type(params).__name__}.")
        if _is_surplus(trial, int(self.cfg["n_trials"])):
            trial.set_user_attr(hpo.SURPLUS_ATTR, True)
            raise optuna.TrialPruned("the trial budget was already claimed by other workers")
        trial.set_user_attr(_PARAMS_ATTR, params.to_dict())

        def on_eval(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} ({value:.4g})")

        select = self.id_val is not None and self.cfg.get("select") == "id_val"
        res = finetune(self.model, params, self.train, steps=int(self.cfg["inner_steps"]),
                       batch_size=int(self.cfg["batch_size"]),
                       eval_data=self.id_val if select else self.ood_val,
                       score_data=self.ood_val if select else None, keep_best=select,
                       metric=self.cfg["metric"], eval_every=self.cfg["eval_every"],
                       on_eval=on_eval, dcm_sign=self.cfg["dcm_sign"],
                       schedule=self.cfg.get("schedule", "constant"))
        trial.set_user_attr("optimizer", res.optimizer)
        if res.lrs:  # the lr every step really ran at (no warmup the trial cannot leave)
            trial.set_user_attr("lr_range", [min(res.lrs), max(res.lrs)])
        trial.set_user_attr("diverged", res.diverged)
        trial.set_user_attr("seconds", res.seconds)
        import os
        import socket

        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return float(res.score if select else res.history[-1][1])


def _is_surplus(trial: Any, n_trials: int) -> bool:
    """Whether ``n_trials`` live or finished trials numbered before this one already exist."""
    from optuna.trial import TrialState

    before = [t for t in trial.study.get_trials(deepcopy=False)
              if t.number < trial.number and t.state != TrialState.FAIL
              and t.state != TrialState.WAITING and not t.user_attrs.get(hpo.SURPLUS_ATTR)]
    return len(before) >= n_trials


def _plan(n_trials: int) -> hpo.Plan:
    from optuna.trial import TrialState

    def plan(trials: list[Any]) -> Any:
        done = len(hpo.finished_trials(trials))
        if done >= n_trials:
            return "done"
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        return "start" if waiting or done + running < n_trials else "wait"

    return plan


def _sampler(name: str, seed: int | None, n_startup: int) -> Any:
    optuna = hpo.optuna_module()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(name: str) -> Any:
    optuna = hpo.optuna_module()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


class AutoFT:
    """Search the fine-tuning objective on a small OOD-validation set (Choi et al.).

    Args:
        n_trials: Trials in the search (the budget across all workers).
        inner_steps: AdamW steps per trial, from the pretrained weights.
        batch_size: ID batch size in the trials.
        space: A :class:`SearchSpace` (default: the released one) or a define-by-run function
            ``space(trial) -> AutoFTParams``.
        metric: ``"accuracy"``, ``"macro_f1"`` or ``"worst_group_accuracy"`` on OOD-validation.
        eval_every: Evaluate (and report to the pruner) every this many inner steps (default:
            only after the last step, ``inner_steps // 4`` when a pruner is used).
        schedule: The trials' lr schedule, ``"constant"`` or ``"cosine"`` over the trial's own
            steps (it scales the trial's lr, never replaces it). ``"cosine"`` with
            ``inner_steps`` equal to the final run's steps makes each trial the final run
            itself, scored on OOD validation.
        select: Which weights of a trial are scored on OOD validation: ``"last"`` (default)
            or ``"id_val"``, the step with the best ID-validation metric, as the final run
            picks it (needs ``id_val_data`` in :meth:`fit`; a named task brings its own).
        sampler: ``"tpe"`` (default) or ``"random"``, seeded with ``random_state``.
        pruner: ``"median"`` (default) or ``"none"``.
        n_startup_trials: Random trials before TPE starts modelling.
        storage: Database URL (default: an in-memory SQLite for one process). SQLite on one
            machine, PostgreSQL for many.
        study_name: Study name in ``storage``; an existing study with the same search
            specification is resumed (a different one is refused, with the differences).
        workers: Worker processes on this machine (needs a named task: :meth:`fit_task`).
        heartbeat, grace_period: Seconds between heartbeats; seconds of silence after which a
            trial's worker counts as dead and its parameters are re-queued.
        dcm_sign: ``"maximize_entropy"`` (default, confidence minimisation) or ``"released"``.
        random_state: Seed of the sampler; the same seed gives the same best parameters.

    Attributes:
        best_params_: The best :class:`AutoFTParams` (exactly what its trial used).
        best_value_: Its OOD-validation metric.
        study_: The Optuna study.

    Example:
        >>> from fmlab.autoft import AutoFT, make_task  # doctest: +SKIP
        >>> task = make_task("toy")  # doctest: +SKIP
        >>> search = AutoFT(n_trials=20, inner_steps=20, random_state=0)  # doctest: +SKIP
        >>> search.fit(task.model, task.train, task.ood_val).best_params_  # doctest: +SKIP

    References:
        Choi, Lee, Chen, Zhou, Raghunathan, Finn. AutoFT: Learning an Objective for Robust
        Fine-Tuning. arXiv 2401.10220.
    """

    def __init__(self, n_trials: int = 50, inner_steps: int = 20, batch_size: int = 64, *,
                 space: SearchSpace | Callable[[Any], AutoFTParams] | None = None,
                 metric: str = "accuracy", eval_every: int | None = None,
                 schedule: Literal["constant", "cosine"] = "constant",
                 select: Literal["last", "id_val"] = "last",
                 sampler: Literal["tpe", "random"] = "tpe",
                 pruner: Literal["median", "none"] = "median", n_startup_trials: int = 10,
                 storage: str | None = None, study_name: str = "autoft", workers: int = 1,
                 heartbeat: float = 10.0, grace_period: float | None = None,
                 dcm_sign: Literal["maximize_entropy", "released"] = "maximize_entropy",
                 random_state: int | None = None) -> None:
        self.n_trials = n_trials
        self.inner_steps = inner_steps
        self.batch_size = batch_size
        self.space = space
        self.metric = metric
        self.eval_every = eval_every
        self.schedule = schedule
        self.select = select
        self.sampler = sampler
        self.pruner = pruner
        self.n_startup_trials = n_startup_trials
        self.storage = storage
        self.study_name = study_name
        self.workers = workers
        self.heartbeat = heartbeat
        self.grace_period = grace_period
        self.dcm_sign = dcm_sign
        self.random_state = random_state

    # -- configuration ---------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        from fmlab.autoft._finetune import METRICS

        o = "AutoFT"
        check_int(self.n_trials, "n_trials", owner=o, low=1)
        check_int(self.inner_steps, "inner_steps", owner=o, low=1)
        check_int(self.batch_size, "batch_size", owner=o, low=1)
        check_option(self.metric, "metric", METRICS, owner=o)
        check_option(self.schedule, "schedule", ("constant", "cosine"), owner=o)
        check_option(self.select, "select", ("last", "id_val"), owner=o)
        check_option(self.sampler, "sampler", ("tpe", "random"), owner=o)
        check_option(self.pruner, "pruner", ("median", "none"), owner=o)
        check_option(self.dcm_sign, "dcm_sign", ("maximize_entropy", "released"), owner=o)
        check_int(self.n_startup_trials, "n_startup_trials", owner=o, low=0)
        check_int(self.workers, "workers", owner=o, low=1)
        check_real(self.heartbeat, "heartbeat", owner=o, low=0.0)
        if self.random_state is not None:
            check_int(self.random_state, "random_state", owner=o, low=0)
        every = self.eval_every
        if every is None:
            every = max(1, self.inner_steps // 4) if self.pruner != "none" else self.inner_steps
        check_int(every, "eval_every", owner=o, low=1)
        return {"n_trials": self.n_trials, "inner_steps": self.inner_steps,
                "batch_size": self.batch_size, "metric": self.metric, "eval_every": every,
                "schedule": self.schedule, "select": self.select,
                "sampler": self.sampler, "pruner": self.pruner,
                "n_startup_trials": self.n_startup_trials, "dcm_sign": self.dcm_sign,
                "random_state": self.random_state}

    def _open(self, cfg: dict[str, Any], space: Any, task: dict[str, Any] | None
              ) -> tuple[Any, Any, str]:
        if self.storage is None:  # one process: Optuna's in-memory storage, no heartbeats
            url, st = "memory", hpo.optuna_module().storages.InMemoryStorage()
        else:
            url = self.storage
            st = hpo.open_storage(url, heartbeat=self.heartbeat,
                                  grace_period=self.grace_period)
        # the budget may grow when a search is resumed; everything else must match
        spec = {"config": {k: v for k, v in cfg.items() if k != "n_trials"},
                "space": _space_spec(space), "task": task}
        study = hpo.open_study(self.study_name, st, direction="maximize",
                               sampler=_sampler(cfg["sampler"], cfg["random_state"],
                                                cfg["n_startup_trials"]),
                               pruner=_pruner(cfg["pruner"]), spec=spec,
                               what="search specification")
        study.set_user_attr(_BUDGET_ATTR, cfg["n_trials"])
        return study, st, url

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, model: Any, train_data: Any, ood_val_data: Any, *, test_data: Any = None,
            id_val_data: Any = None) -> AutoFT:
        """Search in this process; returns ``self``.

        Args:
            model: The pretrained :class:`~fmlab.autoft.FineTunable` (never modified).
            train_data: ID :class:`~fmlab.autoft.TensorData`.
            ood_val_data: The small OOD-validation set.
            test_data: Optional test set(s) (a TensorData or a dict of them): refused if the
                OOD-validation set overlaps any.
            id_val_data: ID validation, which picks each trial's step when
                ``select="id_val"``.
        """
        cfg = self._config()
        if cfg["select"] == "id_val" and id_val_data is None:
            raise ValueError("AutoFT(select='id_val') picks each trial's step on ID validation: "
                             "pass fit(..., id_val_data=...), or use select='last'.")
        if self.workers > 1:
            raise ValueError("AutoFT(workers>1) needs a task other processes can rebuild: use "
                             "fit_task('name', ...) with a registered task, or workers=1.")
        space = _check_space(self.space)
        _check_disjoint(ood_val_data, test_data)
        self._fit(cfg, space, model, train_data, ood_val_data, None, id_val_data)
        return self

    def fit_task(self, task: str, **task_options: Any) -> AutoFT:
        """Search on the registered task ``task`` (see ``TASKS``) with ``workers`` local
        processes; other machines join with :func:`run_autoft_worker` / ``fmlab autoft work``."""
        from fmlab.autoft._tasks import make_task

        cfg, space = self._task_config(task)
        t = make_task(task, **task_options)
        _check_disjoint(t.ood_val, t.tests)
        self._fit(cfg, space, t.model, t.train, t.ood_val, {"name": task,
                                                            "options": task_options}, t.id_val)
        return self

    def create(self, task: str, **task_options: Any) -> Any:
        """Create (or re-open) the shared search on task ``task`` without working on it, e.g.
        to :meth:`optuna.Study.enqueue_trial` objectives first; returns the study. Workers then
        join with :func:`run_autoft_worker`."""
        if self.storage is None:
            raise ValueError("AutoFT.create needs a storage other workers reach, e.g. "
                             "storage='sqlite:///autoft.db'.")
        cfg, space = self._task_config(task)
        return self._open(cfg, space, {"name": task, "options": task_options})[0]

    def _task_config(self, task: str) -> tuple[dict[str, Any], Any]:
        from fmlab.autoft._tasks import TASKS

        cfg = self._config()
        TASKS.entry(task)
        space = _check_space(self.space)
        if not isinstance(space, SearchSpace) and (self.workers > 1 or self.storage):
            raise ValueError("A define-by-run search space lives in this process only; for a "
                             "shared search use a SearchSpace (data), or fit() in one process.")
        return cfg, space

    def _fit(self, cfg: dict[str, Any], space: Any, model: Any, train: Any, ood_val: Any,
             task: dict[str, Any] | None, id_val: Any = None) -> None:
        if self.workers > 1 and self.storage is None:
            raise ValueError("AutoFT(workers>1) needs a storage every process reaches, e.g. "
                             "storage='sqlite:///autoft.db'.")
        study, st, url = self._open(cfg, space, task)
        procs = hpo.start_local_workers(run_autoft_worker, (url, self.study_name),
                                        self.workers - 1,
                                        kwargs={"heartbeat": self.heartbeat,
                                                "grace_period": self.grace_period},
                                        label="fmlab-autoft-worker") if self.workers > 1 else []
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat
        try:
            hpo.run_worker(study, _Objective(model, train, ood_val, space, cfg, id_val),
                           _plan(cfg["n_trials"]), storage=st, grace_period=grace,
                           poll=min(self.heartbeat, 2.0))
        finally:
            for p in procs:
                p.join()
        hpo.join_local_workers(procs, url, "run the same search again to resume it.")
        self._set_result(study)

    def _set_result(self, study: Any) -> None:
        self.study_ = study
        self.best_value_, self.best_params_ = best_of(study)

    def save_best(self, path: str | Path) -> Path:
        """Write :attr:`best_params_` as JSON in the released key format."""
        from fmlab.exceptions import NotFittedError

        if not hasattr(self, "best_params_"):
            raise NotFittedError("This AutoFT instance is not fitted yet; call fit() before "
                                 "save_best().")
        return self.best_params_.save(path)  # type: ignore[no-any-return]


def best_of(study: Any) -> tuple[float, AutoFTParams]:
    """The best complete trial's value and the objective it used.

    Ties (frequent with accuracy on a few hundred examples) go to the smallest objective in its
    canonical JSON form, not to the earliest trial, so the best depends only on which objectives
    ran, not on which worker ran them in which order.
    """
    import json

    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if _PARAMS_ATTR in t.user_attrs]
    if not done:
        raise RuntimeError(f"The study {study.study_name!r} has no completed trial yet.")
    top = max(t.value for t in done)
    best = min((t for t in done if t.value == top),
               key=lambda t: json.dumps(t.user_attrs[_PARAMS_ATTR], sort_keys=True))
    return float(best.value), AutoFTParams.from_dict(best.user_attrs[_PARAMS_ATTR])


def _check_disjoint(ood_val: Any, tests: Any) -> None:
    from fmlab.autoft._finetune import overlapping_ids

    if tests is None:
        return
    items = tests.items() if isinstance(tests, Mapping) else [("test", tests)]
    for name, data in items:
        overlapping_ids(ood_val, data, ("ood_val", str(name)))


def run_autoft_worker(storage: str, name: str = "autoft", *, heartbeat: float = 10.0,
                      grace_period: float | None = None, poll: float | None = None,
                      max_trials: int | None = None) -> int:
    """Join the search ``name`` in ``storage`` and work until its budget is done; returns the
    trials this worker ran. The study must have been started on a named task
    (:meth:`AutoFT.fit_task` or ``fmlab autoft search``) with a data search space."""
    from fmlab.autoft._tasks import make_task

    st = hpo.open_storage(storage, heartbeat=heartbeat, grace_period=grace_period)
    spec = hpo.stored_spec(name, st) or {}
    if not spec.get("task") or "define_by_run" in spec.get("space", {}):
        raise ValueError(f"The search {name!r} was started in one process (on in-memory data "
                         f"or a define-by-run space); other workers cannot rebuild it. Start "
                         f"it with 'fmlab autoft search --task ...' to share it.")
    cfg, space = dict(spec["config"]), SearchSpace.from_dict(spec["space"])
    study = hpo.open_study(name, st, create=False,
                           sampler=_sampler(cfg["sampler"], cfg["random_state"],
                                            cfg["n_startup_trials"]),
                           pruner=_pruner(cfg["pruner"]))
    cfg["n_trials"] = int(study.user_attrs[_BUDGET_ATTR])
    task = make_task(spec["task"]["name"], **spec["task"]["options"])
    grace = grace_period if grace_period is not None else 2 * heartbeat
    return hpo.run_worker(study, _Objective(task.model, task.train, task.ood_val, space, cfg,
                                            task.id_val),
                          _plan(int(cfg["n_trials"])), storage=st, grace_period=grace,
                          poll=poll if poll is not None else min(heartbeat, 2.0),
                          max_trials=max_trials)
