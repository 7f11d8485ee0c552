"""The two SAM studies: label noise (arXiv 2405.03676) and feature balance (arXiv 2405.20439).

Nothing heavy is imported at module level: ``fmlab reproduce --list`` imports this module.
"""

from __future__ import annotations

from typing import Any

from fmlab._device import eval_mode
from fmlab.studies._base import Claim, Study, StudyContext, StudyResult
from fmlab.studies._claims import NotComputed, Verdict, claim_check, mean_interval
from fmlab.studies._options import Option

__all__ = ["FeatureBalanceStudy", "LabelNoiseStudy"]

_METHOD_LABELS = {
    "sgd": "SGD",
    "sam": "SAM",
    "logit": "logit-SAM (L-SAM)",
    "jacobian": "Jacobian-SAM (J-SAM)",
    "penalty": "SGD + last-layer penalties",
}


def _subsample(n_total: int, n: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_total)[: min(n, n_total)])


class LabelNoiseStudy(Study):
    """Why SAM is robust to label noise: the Jacobian effect vs the logit effect."""

    name = "sam.label_noise"
    title = "SAM and label noise: the Jacobian term, not the logit term, carries SAM's gain"
    capability = "sam"
    paper = ("Baek, Kolter, Raghunathan. Why is SAM Robust to Label Noise? ICLR 2024, "
             "arXiv 2405.03676")
    summary = (
        "A small network on a subsample of MNIST (or Fashion-MNIST) with symmetric label noise, "
        "trained with SGD, SAM, logit-only SAM, Jacobian-only SAM and SGD with the last-layer "
        "weight-norm and feature-norm penalties (all with the same momentum SGD base, lr 0.1, "
        "rho 0.1, n-SAM). Trained long enough that SGD memorises the flipped labels, so the "
        "clean test accuracy peaks and then falls. Early stopping picks the epoch of the best "
        "accuracy on a validation split carved from the (noisy) training data, never the test "
        "set; claims compare methods seed by seed (same data, noise and initialisation) with "
        "95% t-intervals over seeds. Quick: 2-layer MLP on 14x14 images, 0 and 40 % noise, "
        "1,000 training + 200 validation images, 40 epochs, 3 seeds; full: the same MLP, "
        "0/10/30/50 % noise, 2,000 + 500 images, 100 epochs, 5 seeds."
    )
    requires = ("torch",)
    options = (
        Option("dataset", str, "mnist", choices=("mnist", "fashion-mnist"),
               help="the image dataset"),
        Option("noise", list, [0.0, 0.4], [0.0, 0.1, 0.3, 0.5], item=float, low=0.0, high=0.9,
               help="symmetric label-noise rates"),
        Option("methods", list, list(_METHOD_LABELS), item=str, choices=tuple(_METHOD_LABELS),
               help="training methods to compare"),
        Option("n_train", int, 1000, 2000, low=100, help="training subsample size"),
        Option("n_val", int, 200, 500, low=20,
               help="validation images carved from the training data (noisy labels), for "
                    "early stopping"),
        Option("n_test", int, 2000, 10000, low=100, help="test subsample size"),
        Option("epochs", int, 40, 100, low=1, help="epochs per run"),
        Option("seeds", int, 3, 5, low=1, help="number of seeds (intervals need 2 or more)"),
        Option("model", str, "mlp", choices=("mlp", "cnn"),
               help="mlp (2 hidden ReLU layers) or cnn (SmallCNN)"),
        Option("downsample", int, 2, low=1, high=7,
               help="average-pool the 28x28 images by this factor (2: 14x14)"),
        Option("hidden", int, None, low=1, none_ok=True,
               help="MLP hidden width / CNN penultimate width (null: 256 for mlp, 64 for cnn)"),
        Option("width", int, 8, low=1, help="channels of the CNN's first conv"),
        Option("rho", float, 0.1, low=0.0, help="SAM radius (batch-level perturbation)"),
        Option("lr", float, 0.1, low=0.0, help="SGD learning rate (momentum 0.9, wd 5e-4)"),
        Option("batch_size", int, 100, low=1, help="minibatch size"),
        Option("weight_penalty", float, 1e-2, low=0.0,
               help="lambda_1 of the last-layer weight norm"),
        Option("feature_penalty", float, 1e-2, low=0.0,
               help="lambda_2 of the penultimate-feature norm"),
    )

    def run(self, ctx: StudyContext) -> StudyResult:
        import torch

        from fmlab.data import add_label_noise, load_dataset
        from fmlab.sam._models import SmallCNN, SmallMLP
        from fmlab.sam._train import images_to_tensor, train_classifier

        o = ctx.option
        dataset, noise, methods = o("dataset"), o("noise"), o("methods")
        n_train, n_val, n_test = o("n_train"), o("n_val"), o("n_test")
        epochs, seeds = o("epochs"), o("seeds")
        arch, down, width = o("model"), o("downsample"), o("width")
        hidden = o("hidden") or (256 if arch == "mlp" else 64)
        rho, lr, batch_size = o("rho"), o("lr"), o("batch_size")
        lam_w, lam_f = o("weight_penalty"), o("feature_penalty")

        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        train, test = load_dataset(dataset, split="train"), load_dataset(dataset, split="test")
        idx = _subsample(len(train.labels), n_train + n_val, ctx.seed)

        def prep(images: Any) -> Any:
            x = images_to_tensor(images)  # (N, 1, 28, 28)
            return torch.nn.functional.avg_pool2d(x, down) if down > 1 else x

        x_all = prep(train.images[idx])
        y_all = train.labels[idx]
        tidx = _subsample(len(test.labels), n_test, ctx.seed + 1)
        x_te = prep(test.images[tidx])
        y_te = torch.as_tensor(test.labels[tidx])

        runs: list[dict[str, Any]] = []
        jobs = [(r, m, s) for r in noise for s in range(seeds) for m in methods]
        for rate, method, s in ctx.progress(jobs, desc="label noise runs"):
            # the noise hits training and validation alike: a user only has noisy labels
            noisy, _flipped = add_label_noise(y_all, rate, n_classes=10, seed=ctx.seed + s)
            torch.manual_seed(ctx.seed + s)
            model = (SmallMLP(x_all[0].numel(), n_classes=10, hidden=hidden) if arch == "mlp"
                     else SmallCNN(n_classes=10, width=width, hidden=hidden))
            res = train_classifier(
                model, x_all[:n_train], torch.as_tensor(noisy[:n_train]), x_te, y_te,
                method="sgd" if method == "penalty" else method, rho=rho, lr=lr,
                epochs=epochs, batch_size=batch_size,
                weight_penalty=lam_w if method == "penalty" else 0.0,
                feature_penalty=lam_f if method == "penalty" else 0.0,
                y_true=torch.as_tensor(y_all[:n_train]), seed=ctx.seed + s,
                x_val=x_all[n_train:], y_val=torch.as_tensor(noisy[n_train:]),
            )
            runs.append({"noise": rate, "method": method, "seed": s, **res.to_dict()})

        summary = _summarise_noise(runs, noise, methods)
        figures = {
            "accuracy_curves.png": "Clean test accuracy per epoch (mean over seeds), one panel "
                                   "per noise rate.",
            "best_accuracy.png": "Clean test accuracy at the early-stopping epoch (chosen on the "
                                 "validation split; bars, mean over seeds) and at the final "
                                 "epoch (black ticks) per method.",
            "example_weighting.png": (
                "Clean vs flipped training examples over training at the highest noise rate: "
                "accuracy on clean examples, memorisation of flipped labels, and the ratio of "
                "their mean logit-term weights ||softmax(f) - e_y||."
            ),
        }
        _plot_noise(ctx, runs, noise, methods)
        rows = [{k: v for k, v in r.items() if k != "history"} for r in runs]
        claims = noise_claims(rows)
        table = [
            {"noise": r, "method": _METHOD_LABELS[m],
             "early-stopped acc": round(summary[(r, m)]["stopped"], 4),
             "final acc": round(summary[(r, m)]["final"], 4),
             "stop epoch": summary[(r, m)]["stopped_epoch"],
             "oracle best acc (test-selected)": round(summary[(r, m)]["best"], 4),
             "step time (ms)": round(1000 * summary[(r, m)]["step_time"], 1)}
            for r in noise for m in methods
        ]
        metrics = {
            "config": {"dataset": dataset, "noise": noise, "methods": methods,
                       "n_train": n_train, "n_val": n_val, "n_test": n_test, "epochs": epochs,
                       "seeds": seeds, "model": arch, "downsample": down, "hidden": hidden,
                       "width": width, "rho": rho, "lr": lr, "batch_size": batch_size,
                       "weight_penalty": lam_w, "feature_penalty": lam_f},
            "summary": [{"noise": r, "method": m, **summary[(r, m)]}
                        for r in noise for m in methods],
            "runs": runs,
        }
        return StudyResult(metrics=metrics, claims=claims, figures=figures,
                           tables={"Clean test accuracy (mean over seeds)": table})


def _summarise_noise(runs: list[dict[str, Any]], noise: list[float],
                     methods: list[str]) -> dict[tuple[float, str], dict[str, float]]:
    import numpy as np

    out = {}
    for r in noise:
        for m in methods:
            rs = [x for x in runs if x["noise"] == r and x["method"] == m]
            out[(r, m)] = {
                "stopped": float(np.mean([x["stopped_test_acc"] for x in rs])),
                "stopped_epoch": float(np.mean([x["stopped_epoch"] for x in rs])),
                "best": float(np.mean([x["best_test_acc"] for x in rs])),
                "final": float(np.mean([x["final_test_acc"] for x in rs])),
                "best_epoch": float(np.mean([x["best_epoch"] for x in rs])),
                "step_time": float(np.mean([x["step_time"] for x in rs])),
            }
    return out


_NOISE_REF = ("arXiv 2405.03676 (abstract; ResNet-18/CIFAR-10: SAM about +17 points at 30 % "
              "noise)")


def _gaps(rows: list[dict[str, Any]], noise: float, a: str, b: str,
          key: str = "stopped_test_acc") -> list[float]:
    """Per seed, 100 * (key of method ``a`` - key of method ``b``) at ``noise`` (paired: same
    seed = same data, noise and initialisation)."""
    by = {(r["noise"], r["method"], r["seed"]): r[key] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = [100 * (by[(noise, a, s)] - by[(noise, b, s)]) for s in seeds
           if (noise, a, s) in by and (noise, b, s) in by]
    if len(out) < 2:
        raise NotComputed(f"{len(out)} seed(s) with both {a} and {b} at {noise:.0%} noise; an "
                          "interval needs 2 or more")
    return out


def _top_noise(rows: list[dict[str, Any]]) -> float:
    noisy = [r["noise"] for r in rows if r["noise"] > 0]
    if not noisy:
        raise NotComputed("no run with label noise")
    return max(noisy)


@claim_check("Under label noise SAM's early-stopped test accuracy is clearly above SGD's.",
             criterion="at the highest noise rate: mean SAM - SGD gap >= 1 point and its 95% "
                       "interval over seeds above 0", reference=_NOISE_REF)
def sam_beats_sgd(rows: list[dict[str, Any]]) -> Verdict:
    top = _top_noise(rows)
    iv = mean_interval(_gaps(rows, top, "sam", "sgd"))
    return Verdict(f"at {top:.0%} noise, SAM - SGD = {iv.format(2)} points",
                   iv.mean >= 1 and iv.low > 0, value=iv.mean, interval=iv.bounds)


@claim_check("SAM's gain over SGD grows with the noise rate.",
             criterion="per seed, gap at the highest noise minus gap without noise; its 95% "
                       "interval above 0", reference=_NOISE_REF)
def gain_grows_with_noise(rows: list[dict[str, Any]]) -> Verdict:
    top = _top_noise(rows)
    g_top, g0 = _gaps(rows, top, "sam", "sgd"), _gaps(rows, 0.0, "sam", "sgd")
    iv = mean_interval([a - b for a, b in zip(g_top, g0, strict=False)])
    return Verdict(f"gap {sum(g0) / len(g0):+.1f} points at 0 %, {sum(g_top) / len(g_top):+.1f} "
                   f"at {top:.0%}; growth {iv.format(2)}", iv.low > 0, value=iv.mean,
                   interval=iv.bounds)


@claim_check("J-SAM (Jacobian term only) recovers most of SAM's gain.",
             criterion="SAM's gain interval above 0, J-SAM's gain interval above 0 and its mean "
                       ">= 50 % of SAM's", reference=_NOISE_REF)
def jsam_recovers(rows: list[dict[str, Any]]) -> Verdict:
    top = _top_noise(rows)
    sam, jac = mean_interval(_gaps(rows, top, "sam", "sgd")), mean_interval(
        _gaps(rows, top, "jacobian", "sgd"))
    share = jac.mean / sam.mean if sam.mean > 0 else float("nan")
    return Verdict(f"J-SAM {jac.format(2)} vs SAM {sam.format(2)} points ({share:.0%})",
                   sam.low > 0 and jac.low > 0 and jac.mean >= 0.5 * sam.mean, value=share,
                   interval=jac.bounds)


@claim_check("Logit-SAM (logit term only) recovers much less of SAM's gain than J-SAM.",
             criterion="per seed J-SAM - L-SAM interval above 0, and L-SAM's mean gain < 50 % "
                       "of SAM's", reference=_NOISE_REF)
def lsam_recovers_less(rows: list[dict[str, Any]]) -> Verdict:
    top = _top_noise(rows)
    sam = mean_interval(_gaps(rows, top, "sam", "sgd"))
    logit = mean_interval(_gaps(rows, top, "logit", "sgd"))
    diff = mean_interval(_gaps(rows, top, "jacobian", "logit"))
    return Verdict(f"L-SAM {logit.format(2)}, SAM {sam.format(2)}; J-SAM - L-SAM "
                   f"{diff.format(2)} points", diff.low > 0 and logit.mean < 0.5 * sam.mean,
                   value=diff.mean, interval=diff.bounds)


@claim_check("The last-layer penalties recover most of SAM's gain.",
             criterion="penalty gain interval above 0 and its mean >= 50 % of SAM's",
             reference=_NOISE_REF)
def penalties_recover(rows: list[dict[str, Any]]) -> Verdict:
    top = _top_noise(rows)
    sam = mean_interval(_gaps(rows, top, "sam", "sgd"))
    pen = mean_interval(_gaps(rows, top, "penalty", "sgd"))
    return Verdict(f"penalties {pen.format(2)} vs SAM {sam.format(2)} points",
                   pen.low > 0 and pen.mean >= 0.5 * sam.mean, value=pen.mean,
                   interval=pen.bounds)


@claim_check("The last-layer penalties cost about an SGD step (SAM costs two).",
             criterion="95% interval of the penalty / SGD step-time ratio over seeds and noise "
                       "rates below 1.15 (timed on a possibly shared machine)",
             reference=_NOISE_REF)
def penalty_step_cost(rows: list[dict[str, Any]]) -> Verdict:
    by = {(r["noise"], r["method"], r["seed"]): r["step_time"] for r in rows}
    ratios = [by[(n, "penalty", s)] / by[(n, "sgd", s)] for (n, m, s) in by
              if m == "sgd" and (n, "penalty", s) in by]
    sam = [by[(n, "sam", s)] / by[(n, "sgd", s)] for (n, m, s) in by
           if m == "sgd" and (n, "sam", s) in by]
    if len(ratios) < 2:
        raise NotComputed(f"{len(ratios)} paired penalty/SGD timings")
    iv = mean_interval(ratios)
    return Verdict(f"penalty / SGD step time {iv.format(3)}"
                   + (f"; SAM / SGD {sum(sam) / len(sam):.2f}" if sam else ""),
                   iv.high < 1.15, value=iv.mean, interval=iv.bounds)


@claim_check("Under label noise early stopping matters: SGD's test accuracy at the "
             "validation-chosen epoch is above its final accuracy (it memorises the noise).",
             criterion="SGD at the highest noise: early-stopped - final >= 1 point on average, "
                       "95% interval above 0", reference=_NOISE_REF)
def early_stopping_matters(rows: list[dict[str, Any]]) -> Verdict:
    top = _top_noise(rows)
    sgd = [r for r in rows if r["noise"] == top and r["method"] == "sgd"]
    if len(sgd) < 2:
        raise NotComputed(f"{len(sgd)} SGD seed(s) at {top:.0%} noise")
    iv = mean_interval([100 * (r["stopped_test_acc"] - r["final_test_acc"]) for r in sgd])
    return Verdict(f"SGD at {top:.0%} noise: early-stopped - final = {iv.format(2)} points",
                   iv.mean >= 1 and iv.low > 0, value=iv.mean, interval=iv.bounds)


def noise_claims(rows: list[dict[str, Any]]) -> list[Claim]:
    """The label-noise claims for the methods that ran (per-run rows: noise, method, seed,
    stopped_test_acc, final_test_acc, step_time)."""
    methods = {r["method"] for r in rows}
    checks = [(sam_beats_sgd, {"sam"}), (gain_grows_with_noise, {"sam"}),
              (jsam_recovers, {"sam", "jacobian"}), (lsam_recovers_less, {"sam", "jacobian",
                                                                         "logit"}),
              (penalties_recover, {"sam", "penalty"}), (penalty_step_cost, {"penalty"}),
              (early_stopping_matters, set())]
    return [fn(rows) for fn, need in checks if need | {"sgd"} <= methods]


def _plot_noise(ctx: StudyContext, runs: list[dict[str, Any]], noise: list[float],
                methods: list[str]) -> None:
    from fmlab._plotting import pyplot

    plt = pyplot()
    import numpy as np

    colors = dict(zip(_METHOD_LABELS, ["#444444", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e"],
                      strict=True))

    def mean_curve(r: float, m: str, key: str) -> np.ndarray:
        rows = [x["history"] for x in runs if x["noise"] == r and x["method"] == m]
        rows = [[h.get(key, np.nan) for h in hist] for hist in rows]
        return np.nanmean(np.asarray(rows, dtype=float), axis=0)

    fig, axes = plt.subplots(1, len(noise), figsize=(4 * len(noise), 3.3), squeeze=False)
    for ax, r in zip(axes[0], noise, strict=True):
        for m in methods:
            acc = mean_curve(r, m, "test_acc")
            ax.plot(np.arange(1, len(acc) + 1), acc, label=_METHOD_LABELS[m], color=colors[m])
        ax.set_title(f"{r:.0%} symmetric noise")
        ax.set_xlabel("epoch")
        ax.set_ylabel("clean test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    ctx.save_figure(fig, "accuracy_curves.png", dpi=110)

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(noise) * len(methods) / 3, 3.3))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        best = [np.mean([x["stopped_test_acc"] for x in runs if x["noise"] == r
                         and x["method"] == m]) for r in noise]
        final = [np.mean([x["final_test_acc"] for x in runs if x["noise"] == r
                          and x["method"] == m]) for r in noise]
        pos = np.arange(len(noise)) + j * width
        ax.bar(pos, best, width, color=colors[m], label=_METHOD_LABELS[m])
        ax.scatter(pos, final, color="black", marker="_", s=80, zorder=3)
    ax.set_xticks(np.arange(len(noise)) + 0.4 - width / 2, [f"{r:.0%}" for r in noise])
    ax.set_xlabel("label noise (bars: early-stopped epoch; black ticks: final epoch)")
    ax.set_ylabel("clean test accuracy")
    lo = min(x["final_test_acc"] for x in runs)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.legend(fontsize=7)
    ctx.save_figure(fig, "best_accuracy.png", dpi=110)

    top = max(noise)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    for m in methods:
        for ax, key in zip(axes[:2], ("clean_fit", "noisy_fit"), strict=True):
            c = mean_curve(top, m, key)
            ax.plot(np.arange(1, len(c) + 1), c, color=colors[m], label=_METHOD_LABELS[m])
        if top > 0:
            ratio = mean_curve(top, m, "clean_weight") / mean_curve(top, m, "noisy_weight")
            axes[2].plot(np.arange(1, len(ratio) + 1), ratio, color=colors[m])
    axes[0].set_title("train accuracy on clean examples")
    axes[1].set_title("flipped examples fit to their noisy label")
    axes[2].set_title("mean weight clean / flipped")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{top:.0%} label noise", fontsize=10)
    ctx.save_figure(fig, "example_weighting.png", dpi=110)


# -- the controlled toy ---------------------------------------------------------------------------
# Inputs in R^dim: coordinate 0 carries the easy feature (+-easy), coordinate 1 the hard one
# (+-hard), the rest are Gaussian noise. In training both features equal the label (perfectly
# predictive); the probe data draw them independently. A margin ratio of 5:1 makes the easy
# feature the one gradient descent fits first. (The easy feature's probe sits at its ceiling
# here by construction, so the "keeps the easy feature" claim is made on dominoes only.)
_TOY = {"easy": 1.0, "hard": 0.2, "dim": 30, "noise": 1.0, "width": 64, "n_train": 500,
        "n_probe": 2000, "epochs": 40, "lr": 0.2, "rho": 0.5, "batch_size": 50}


class FeatureBalanceStudy(Study):
    """SAM learns the hard feature too: a controlled toy, then linear probes on dominoes."""

    name = "sam.feature_balance"
    title = "SAM balances feature learning: a controlled toy, then dominoes"
    capability = "sam"
    paper = ("Springer, Nagarajan, Raghunathan. Sharpness-Aware Minimization Enhances Feature "
             "Quality via Balanced Learning. ICLR 2024, arXiv 2405.20439")
    summary = (
        "First the paper's controlled setting: a toy whose label is carried by an easy and a "
        "hard feature of set strengths (both fully predictive in training), learned by a "
        "two-layer ReLU network; linear probes of its hidden layer on decorrelated data measure "
        "how well each feature is learned, against the same probe at initialisation. Then "
        "dominoes: an MNIST digit (easy feature, 4 vs 9 so its probe is not at ceiling) over a "
        "Fashion-MNIST item (hard feature, pullover vs shirt), a small CNN, probes of its "
        "penultimate features; and a spurious variant (label = clothing, digit agrees 95 %) "
        "scored by worst-group accuracy. SGD lr 0.05 (momentum 0.9), rho 0.1; SAM and SGD share "
        "data and initialisation per seed; claims use 95% t-intervals of the per-seed "
        "differences. Toy: 500 training points in 30 dimensions, margins 1.0 and 0.2, width 64, "
        "lr 0.2, rho 0.5, 40 epochs. Quick: 3 seeds, 1,500 dominoes, 8 epochs; full: 5 seeds, "
        "8,000, 20."
    )
    requires = ("torch", "sklearn")
    options = (
        Option("n_train", int, 1500, 8000, low=100, help="training dominoes"),
        Option("n_probe", int, 2000, 4000, low=100,
               help="decorrelated dominoes for the probes (half fit, half scored)"),
        Option("epochs", int, 8, 20, low=1, help="epochs per dominoes run"),
        Option("seeds", int, 3, 5, low=1, help="number of seeds (intervals need 2 or more)"),
        Option("rho", float, 0.1, low=0.0, help="SAM radius"),
        Option("lr", float, 0.05, low=0.0, help="SGD learning rate (momentum 0.9)"),
        Option("downsample", int, 2, low=1, high=14,
               help="average-pool the 56x28 dominoes by this factor (2: 28x14)"),
        Option("digit_classes", list, [4, 9], item=int, low=0, high=9,
               help="the two digits of the easy feature"),
        Option("fashion_classes", list, ["Pullover", "Shirt"], item=str,
               help="the two clothing classes of the hard feature"),
        Option("p_spurious", float, 0.95, low=0.5, high=1.0,
               help="digit-label agreement in the spurious variant's training set"),
        Option("toy_easy", float, _TOY["easy"], low=0.0,
               help="toy: margin of the easy feature"),
        Option("toy_hard", float, _TOY["hard"], low=0.0,
               help="toy: margin of the hard feature"),
        Option("toy_epochs", int, _TOY["epochs"], low=1, help="toy: training epochs"),
        Option("toy_rho", float, _TOY["rho"], low=0.0, help="toy: SAM radius"),
    )

    def run(self, ctx: StudyContext) -> StudyResult:
        import numpy as np
        import torch

        from fmlab.data import make_dominoes
        from fmlab.sam._models import SmallCNN
        from fmlab.sam._train import images_to_tensor, train_classifier

        o = ctx.option
        n_train, n_probe, epochs, seeds = o("n_train"), o("n_probe"), o("epochs"), o("seeds")
        rho, down, lr, p_sp = o("rho"), o("downsample"), o("lr"), o("p_spurious")
        fashion, digits = tuple(o("fashion_classes")), tuple(o("digit_classes"))
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

        toy_rows = [run_toy(method, seed=ctx.seed + s, rho=o("toy_rho"), easy=o("toy_easy"),
                            hard=o("toy_hard"), epochs=o("toy_epochs"))
                    for s in ctx.progress(range(seeds), desc="toy seeds")
                    for method in ("sgd", "sam")]

        def prep(images: Any) -> Any:
            x = images_to_tensor(images)  # (N, 1, 56, 28)
            return torch.nn.functional.avg_pool2d(x, down) if down > 1 else x

        runs: list[dict[str, Any]] = []
        jobs = [(s, m) for s in range(seeds) for m in ("sgd", "sam")]
        for s, method in ctx.progress(jobs, desc="dominoes runs"):
            seed = ctx.seed + s
            tr = make_dominoes(n_train, p=1.0, split="train", fashion_classes=fashion,
                               digit_classes=digits, seed=seed)
            pr = make_dominoes(n_probe, p=0.5, split="test", fashion_classes=fashion,
                               digit_classes=digits, seed=seed + 1000)
            x_pr = prep(pr.images)
            torch.manual_seed(seed)
            model = SmallCNN(n_classes=2, width=8, hidden=32)
            init_probe = _probe(model, x_pr, pr.attributes, seed)
            res = train_classifier(model, prep(tr.images), torch.as_tensor(tr.labels),
                                   x_pr, torch.as_tensor(pr.labels), method=method, rho=rho,
                                   lr=lr, epochs=epochs, seed=seed)
            probe = _probe(model, x_pr, pr.attributes, seed)
            gini = _weight_gini(model, prep(tr.images[:1000]),
                                torch.as_tensor(tr.labels[:1000]), rho)

            # spurious variant: label = clothing item, the digit agrees on p_sp of the examples
            sp_tr = make_dominoes(n_train, p=p_sp, split="train", label="fashion",
                                  fashion_classes=fashion, digit_classes=digits, seed=seed + 2000)
            sp_te = make_dominoes(n_probe, p=0.5, split="test", label="fashion",
                                  fashion_classes=fashion, digit_classes=digits, seed=seed + 3000)
            torch.manual_seed(seed)
            sp_model = SmallCNN(n_classes=2, width=8, hidden=32)
            x_sp_te = prep(sp_te.images)
            train_classifier(sp_model, prep(sp_tr.images),
                             torch.as_tensor(sp_tr.labels), x_sp_te,
                             torch.as_tensor(sp_te.labels), method=method, rho=rho, lr=lr,
                             epochs=epochs, seed=seed)
            groups = _group_accuracy(sp_model, x_sp_te, sp_te.labels, sp_te.attributes["group"])
            runs.append({"seed": s, "method": method, "probe": probe, "init_probe": init_probe,
                         "id_acc": res.history[-1]["test_acc"], "train_loss":
                         res.history[-1]["train_loss"], "gini": gini, "groups": groups,
                         "worst_group": min(groups.values()),
                         "avg_acc": float(np.mean(list(groups.values())))})

        summary = {m: _mean_feature_run([r for r in runs if r["method"] == m])
                   for m in ("sgd", "sam")}
        _plot_features(ctx, summary, runs, toy_rows)
        rows = [{"seed": r["seed"], "method": r["method"], "easy": r["probe"]["digit"],
                 "hard": r["probe"]["fashion"], "easy_init": r["init_probe"]["digit"],
                 "hard_init": r["init_probe"]["fashion"], "worst_group": r["worst_group"],
                 "gini_w": r["gini"]["w"], "gini_w_eps": r["gini"]["w_eps"]} for r in runs]
        claims = [toy_sgd_prefers_easy(toy_rows), toy_sam_learns_hard(toy_rows),
                  sam_raises_hard_probe(rows),
                  sam_keeps_easy_probe(rows), sam_raises_worst_group(rows),
                  sam_evens_weights(rows)]
        table = [{"method": _METHOD_LABELS[m],
                  "digit probe": round(summary[m]["digit"], 4),
                  "digit probe at init": round(summary[m]["digit_init"], 4),
                  "fashion probe": round(summary[m]["fashion"], 4),
                  "fashion probe at init": round(summary[m]["fashion_init"], 4),
                  "worst-group acc": round(summary[m]["worst_group"], 4),
                  "average group acc": round(summary[m]["avg_acc"], 4),
                  "weight Gini at w": round(summary[m]["gini_w"], 3),
                  "weight Gini at w+eps": round(summary[m]["gini_w_eps"], 3)}
                 for m in ("sgd", "sam")]
        toy_table = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                     for r in toy_rows]
        metrics = {
            "config": {"n_train": n_train, "n_probe": n_probe, "epochs": epochs, "seeds": seeds,
                       "rho": rho, "lr": lr, "downsample": down, "fashion_classes": list(fashion),
                       "digit_classes": list(digits), "p_spurious": p_sp,
                       "toy": {**_TOY, "easy": o("toy_easy"), "hard": o("toy_hard"),
                               "epochs": o("toy_epochs"), "rho": o("toy_rho")}},
            "summary": summary, "runs": runs, "toy": toy_rows,
        }
        figures = {
            "toy_probes.png": (
                "Controlled toy: hidden-layer linear-probe accuracy of the easy and the hard "
                "feature at initialisation and after SGD and SAM (dots: seeds)."),
            "probe_accuracy.png": (
                "Dominoes: linear-probe accuracy of the digit (easy) and clothing (hard) "
                "feature on decorrelated dominoes after SGD and SAM (dots: seeds; dashed: the "
                "same probe on the untrained network)."),
            "worst_group.png": ("Spurious variant: per-group test accuracy (groups = label x "
                                "digit; minority groups are where the digit disagrees)."),
        }
        return StudyResult(metrics=metrics, claims=claims, figures=figures,
                           tables={"Toy probes per seed": toy_table,
                                   "Dominoes: feature probes and groups (mean over seeds)": table})




def make_two_feature_toy(n: int, *, easy: float, hard: float, dim: int, noise: float,
                         correlated: bool, seed: int) -> tuple[Any, Any, Any, Any]:
    """``(x, label, easy_attr, hard_attr)``: features equal to the label when ``correlated``,
    independent of each other otherwise (for probes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    e = 2 * y - 1
    h = e.copy() if correlated else 2 * rng.integers(0, 2, n) - 1
    x = noise * rng.normal(size=(n, dim))
    x[:, 0], x[:, 1] = easy * e, hard * h
    return x.astype(np.float32), y, (e > 0).astype(int), (h > 0).astype(int)


def run_toy(method: str, *, seed: int, rho: float, easy: float, hard: float,
            epochs: int) -> dict[str, Any]:
    """Train the toy's two-layer ReLU network with ``method``; probe accuracies of both features
    at initialisation and after training (hidden layer, half fit, half scored)."""
    import torch

    from fmlab.sam._train import train_classifier

    cfg = _TOY
    x, y, _, _ = make_two_feature_toy(cfg["n_train"], easy=easy, hard=hard, dim=cfg["dim"],
                                      noise=cfg["noise"], correlated=True, seed=seed)
    xp, _, ep, hp = make_two_feature_toy(cfg["n_probe"], easy=easy, hard=hard, dim=cfg["dim"],
                                         noise=cfg["noise"], correlated=False, seed=seed + 500)
    torch.manual_seed(seed)
    model = _ToyNet(cfg["dim"], cfg["width"])
    xt, xpt = torch.as_tensor(x), torch.as_tensor(xp)
    attrs = {"digit": ep, "fashion": hp}  # _probe's names: easy, hard
    init = _probe(model, xpt, attrs, seed)
    res = train_classifier(model, xt, torch.as_tensor(y), xt[:200], torch.as_tensor(y[:200]),
                           method=method, rho=rho, lr=cfg["lr"], epochs=epochs,
                           batch_size=cfg["batch_size"], seed=seed)
    after = _probe(model, xpt, attrs, seed)
    return {"seed": seed, "method": method, "easy": after["digit"], "hard": after["fashion"],
            "easy_init": init["digit"], "hard_init": init["fashion"],
            "train_acc": res.history[-1]["test_acc"]}


def _toy_net_class() -> Any:
    import torch

    class ToyNet(torch.nn.Module):
        """Two-layer ReLU network with ``features`` (the hidden layer) and ``head``."""

        def __init__(self, dim: int, width: int) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.ReLU())
            self.head = torch.nn.Linear(width, 2)

        def features(self, x: Any) -> Any:
            return self.body(x)

        def forward(self, x: Any) -> Any:
            return self.head(self.body(x))

    return ToyNet


def _ToyNet(dim: int, width: int) -> Any:  # noqa: N802 - reads as a class
    return _toy_net_class()(dim, width)


_FB_REF = "arXiv 2405.20439 (qualitative; CelebA / Waterbirds / CIFAR-MNIST probe numbers n/a)"


def _paired(rows: list[dict[str, Any]], key: str, scale: float = 100.0) -> list[float]:
    """Per seed, scale * (SAM's key - SGD's key)."""
    by = {(r["seed"], r["method"]): r[key] for r in rows}
    out = [scale * (by[(s, "sam")] - by[(s, "sgd")]) for (s, m) in by
           if m == "sgd" and (s, "sam") in by]
    if len(out) < 2:
        raise NotComputed(f"{len(out)} seed(s) with both SGD and SAM; an interval needs 2 or more")
    return out


def _mean(rows: list[dict[str, Any]], method: str, key: str) -> float:
    vals = [r[key] for r in rows if r["method"] == method]
    return float(sum(vals) / len(vals)) if vals else float("nan")


@claim_check("Toy: SGD learns the hard feature less than the easy one (both fully predictive "
             "in training).",
             criterion="per seed, SGD's easy - hard probe accuracy; 95% interval above 0",
             reference=_FB_REF + "; toy model, section 3")
def toy_sgd_prefers_easy(rows: list[dict[str, Any]]) -> Verdict:
    sgd = [r for r in rows if r["method"] == "sgd"]
    if len(sgd) < 2:
        raise NotComputed(f"{len(sgd)} SGD seed(s)")
    iv = mean_interval([100 * (r["easy"] - r["hard"]) for r in sgd])
    return Verdict(f"SGD probes: easy {_mean(rows, 'sgd', 'easy'):.1%}, hard "
                   f"{_mean(rows, 'sgd', 'hard'):.1%} (at init "
                   f"{_mean(rows, 'sgd', 'easy_init'):.1%} / "
                   f"{_mean(rows, 'sgd', 'hard_init'):.1%}); easy - hard {iv.format(2)} points",
                   iv.low > 0, value=iv.mean, interval=iv.bounds)


@claim_check("Toy: SAM learns the hard feature better than SGD.",
             criterion="per seed, SAM - SGD hard-probe accuracy; mean >= 1 point and 95% "
                       "interval above 0", reference=_FB_REF + "; toy model, section 3")
def toy_sam_learns_hard(rows: list[dict[str, Any]]) -> Verdict:
    iv = mean_interval(_paired(rows, "hard"))
    return Verdict(f"hard probe SAM {_mean(rows, 'sam', 'hard'):.1%} vs SGD "
                   f"{_mean(rows, 'sgd', 'hard'):.1%} (init {_mean(rows, 'sgd', 'hard_init'):.1%})"
                   f"; SAM - SGD {iv.format(2)} points", iv.mean >= 1 and iv.low > 0,
                   value=iv.mean, interval=iv.bounds)


@claim_check("Dominoes: SAM raises the hard feature's (clothing) linear-probe accuracy.",
             criterion="per seed, SAM - SGD clothing-probe accuracy; mean >= 1 point and 95% "
                       "interval above 0", reference=_FB_REF)
def sam_raises_hard_probe(rows: list[dict[str, Any]]) -> Verdict:
    iv = mean_interval(_paired(rows, "hard"))
    return Verdict(f"clothing probe SAM {_mean(rows, 'sam', 'hard'):.1%} vs SGD "
                   f"{_mean(rows, 'sgd', 'hard'):.1%} (untrained network "
                   f"{_mean(rows, 'sgd', 'hard_init'):.1%}); SAM - SGD {iv.format(2)} points",
                   iv.mean >= 1 and iv.low > 0, value=iv.mean, interval=iv.bounds)


@claim_check("Dominoes: ...without losing the easy feature (digit), whose probe is not at its "
             "ceiling.",
             criterion="SGD's digit probe < 99.5 % (else the claim cannot fail), and per seed "
                       "SAM - SGD digit-probe accuracy with 95% interval above -1 point",
             reference=_FB_REF)
def sam_keeps_easy_probe(rows: list[dict[str, Any]]) -> Verdict:
    sgd_easy = _mean(rows, "sgd", "easy")
    if sgd_easy >= 0.995:
        raise NotComputed(f"SGD's digit probe is at the ceiling ({sgd_easy:.1%}): a loss could "
                          "not show; pick harder digit_classes")
    iv = mean_interval(_paired(rows, "easy"))
    return Verdict(f"digit probe SAM {_mean(rows, 'sam', 'easy'):.1%} vs SGD {sgd_easy:.1%} "
                   f"(untrained {_mean(rows, 'sgd', 'easy_init'):.1%}); SAM - SGD "
                   f"{iv.format(2)} points", iv.low > -1, value=iv.mean, interval=iv.bounds)


@claim_check("Dominoes, spurious variant: SAM raises worst-group accuracy.",
             criterion="per seed, SAM - SGD worst-group accuracy; mean >= 1 point and 95% "
                       "interval above 0", reference=_FB_REF)
def sam_raises_worst_group(rows: list[dict[str, Any]]) -> Verdict:
    iv = mean_interval(_paired(rows, "worst_group"))
    return Verdict(f"worst group SAM {_mean(rows, 'sam', 'worst_group'):.1%} vs SGD "
                   f"{_mean(rows, 'sgd', 'worst_group'):.1%}; SAM - SGD {iv.format(2)} points",
                   iv.mean >= 1 and iv.low > 0, value=iv.mean, interval=iv.bounds)


@claim_check("The per-example loss weights at w+eps are more even than at w (lower Gini) for "
             "the SAM-trained network.",
             criterion="per SAM seed, Gini(w) - Gini(w+eps); 95% interval above 0",
             reference=_FB_REF)
def sam_evens_weights(rows: list[dict[str, Any]]) -> Verdict:
    sam = [r for r in rows if r["method"] == "sam"]
    if len(sam) < 2:
        raise NotComputed(f"{len(sam)} SAM seed(s)")
    iv = mean_interval([r["gini_w"] - r["gini_w_eps"] for r in sam])
    return Verdict(f"Gini {_mean(rows, 'sam', 'gini_w'):.3f} at w vs "
                   f"{_mean(rows, 'sam', 'gini_w_eps'):.3f} at w+eps; difference {iv.format(2)}",
                   iv.low > 0, value=iv.mean, interval=iv.bounds)


def _probe(model: Any, x: Any, attributes: dict[str, Any], seed: int) -> dict[str, float]:
    """Linear-probe accuracy of each attribute from penultimate features (half fit, half test)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    with eval_mode(model):
        feats = model.features(x).numpy()
    half = len(feats) // 2
    scaler = StandardScaler().fit(feats[:half])
    out = {}
    for name in ("digit", "fashion"):
        y = attributes[name]
        clf = LogisticRegression(max_iter=2000, random_state=seed)
        clf.fit(scaler.transform(feats[:half]), y[:half])
        out[name] = float(clf.score(scaler.transform(feats[half:]), y[half:]))
    return out


def _gini(w: Any) -> float:
    import numpy as np

    w = np.sort(np.asarray(w, dtype=float))
    n = len(w)
    if n == 0 or w.sum() == 0:
        return 0.0
    cum = np.cumsum(w)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def _weight_gini(model: Any, x: Any, y: Any, rho: float) -> dict[str, float]:
    """Gini of the per-example loss weights -l' = 1 - p_y at w and at w + eps (batch eps)."""
    import torch

    from fmlab.sam._optim import SAM, frozen_bn_stats

    with eval_mode(model, grad=True):  # BN and dropout in eval mode, gradients on
        opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=0.0)
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        with torch.no_grad():
            w_at = 1 - logits.softmax(1).gather(1, y[:, None]).squeeze(1)
        opt.first_step()
        with torch.no_grad(), frozen_bn_stats(model):
            w_eps = 1 - model(x).softmax(1).gather(1, y[:, None]).squeeze(1)
        opt.unperturb()
        opt.zero_grad()
    return {"w": _gini(w_at.numpy()), "w_eps": _gini(w_eps.numpy())}


def _group_accuracy(model: Any, x: Any, labels: Any, groups: Any) -> dict[str, float]:
    import numpy as np

    with eval_mode(model):
        pred = model(x).argmax(1).numpy()
    return {f"group{g}": float(np.mean(pred[groups == g] == labels[groups == g]))
            for g in sorted(set(groups.tolist()))}


def _mean_feature_run(rs: list[dict[str, Any]]) -> dict[str, float]:
    import numpy as np

    return {
        "digit": float(np.mean([r["probe"]["digit"] for r in rs])),
        "fashion": float(np.mean([r["probe"]["fashion"] for r in rs])),
        "digit_init": float(np.mean([r["init_probe"]["digit"] for r in rs])),
        "fashion_init": float(np.mean([r["init_probe"]["fashion"] for r in rs])),
        "id_acc": float(np.mean([r["id_acc"] for r in rs])),
        "worst_group": float(np.mean([r["worst_group"] for r in rs])),
        "avg_acc": float(np.mean([r["avg_acc"] for r in rs])),
        "gini_w": float(np.mean([r["gini"]["w"] for r in rs])),
        "gini_w_eps": float(np.mean([r["gini"]["w_eps"] for r in rs])),
        "fashion_probe_std": float(np.std([r["probe"]["fashion"] for r in rs])),
    }


def _plot_features(ctx: StudyContext, s: dict[str, dict[str, float]],
                   runs: list[dict[str, Any]], toy: list[dict[str, Any]]) -> None:
    from fmlab._plotting import pyplot

    plt = pyplot()
    import numpy as np

    colors = {"init": "#bbbbbb", "sgd": "#444444", "sam": "#d62728"}
    fig, ax = plt.subplots(figsize=(5, 3.3))
    for j, m in enumerate(("init", "sgd", "sam")):
        src = [r for r in toy if r["method"] == ("sgd" if m == "init" else m)]
        keys = ("easy_init", "hard_init") if m == "init" else ("easy", "hard")
        pos = np.arange(2) + j * 0.27
        ax.bar(pos, [np.mean([r[k] for r in src]) for k in keys], 0.25, color=colors[m],
               label="untrained" if m == "init" else _METHOD_LABELS[m])
        for k, key in enumerate(keys):
            ax.scatter([pos[k]] * len(src), [r[key] for r in src], color="black", s=8, zorder=3)
    ax.set_xticks(np.arange(2) + 0.27, ["easy feature", "hard feature"])
    ax.set_ylabel("hidden-layer probe accuracy")
    ax.set_ylim(0.4, 1.02)
    ax.legend(fontsize=8)
    ctx.save_figure(fig, "toy_probes.png", dpi=110)

    fig, ax = plt.subplots(figsize=(5, 3.3))
    for j, m in enumerate(("sgd", "sam")):
        vals = [s[m]["digit"], s[m]["fashion"]]
        pos = np.arange(2) + j * 0.38
        ax.bar(pos, vals, 0.36, color=colors[m], label=_METHOD_LABELS[m])
        for k, key in enumerate(("digit", "fashion")):
            pts = [r["probe"][key] for r in runs if r["method"] == m]
            ax.scatter([pos[k]] * len(pts), pts, color="black", s=8, zorder=3)
    for k, key in enumerate(("digit_init", "fashion_init")):
        ax.hlines(s["sgd"][key], k - 0.2, k + 0.58, colors="gray", linestyles="dashed")
    ax.set_xticks(np.arange(2) + 0.19, ["digit (easy)", "clothing (hard)"])
    ax.set_ylabel("linear-probe accuracy")
    ax.set_ylim(0.5, 1.0)
    ax.legend(fontsize=8)
    ctx.save_figure(fig, "probe_accuracy.png", dpi=110)

    fig, ax = plt.subplots(figsize=(5, 3.3))
    names = sorted(runs[0]["groups"])
    for j, m in enumerate(("sgd", "sam")):
        vals = [np.mean([r["groups"][g] for r in runs if r["method"] == m]) for g in names]
        ax.bar(np.arange(len(names)) + j * 0.38, vals, 0.36, color=colors[m],
               label=_METHOD_LABELS[m])
    ax.set_xticks(np.arange(len(names)) + 0.19,
                  ["y=0 digit agrees", "y=0 digit disagrees", "y=1 digit disagrees",
                   "y=1 digit agrees"][: len(names)], fontsize=7)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    ctx.save_figure(fig, "worst_group.png", dpi=110)
