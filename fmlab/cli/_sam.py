"""``fmlab sam``: the SAM variants and a one-call training run (``fmlab sam train``)."""

from __future__ import annotations

import argparse
from typing import Any

from fmlab._validation import Int, Real
from fmlab.cli._base import Command, UsageError, emit

_METHODS = ("sgd", "sam", "logit", "jacobian", "penalty")


class SamCommand(Command):
    name = "sam"
    help = "Sharpness-aware minimization: list the variants, train a small CNN with one."
    epilog = (
        "Examples:\n"
        "  fmlab sam variants\n"
        "  fmlab sam train --dataset fashion-mnist --method sam --rho 0.1 --noise 0.3 --epochs 3\n"
        "  fmlab sam train --method penalty --weight-penalty 1e-3 --feature-penalty 1e-3 --json\n"
        "  fmlab sam train --method jacobian --dry-run\n"
        "  fmlab reproduce sam.label_noise --quick --option noise=0,0.3 --option epochs=5\n"
        "  fmlab reproduce sam.feature_balance --full"
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        p = sub.add_parser("variants", help="list the SAM variants (where the logit term and "
                           "the Jacobian are evaluated)")
        p.add_argument("--json", action="store_true", help="print JSON")

        t = sub.add_parser(
            "train", help="train a small CNN on MNIST / Fashion-MNIST with label noise",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        t.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
        t.add_argument("--method", default="sam", choices=_METHODS,
                       help="variant; 'penalty' is SGD plus the last-layer penalties")
        t.add_argument("--rho", type=Real(0, closed="left"), default=0.05, help="SAM radius")
        t.add_argument("--adaptive", action="store_true", help="ASAM (use rho around 2)")
        t.add_argument("--scope", default="all", choices=("all", "last"),
                       help="perturb every parameter or only the last layer (LSAM)")
        t.add_argument("--lr", type=Real(0), default=0.05)
        t.add_argument("--momentum", type=Real(0, 1, closed="left"), default=0.9)
        t.add_argument("--weight-decay", type=Real(0, closed="left"), default=5e-4)
        t.add_argument("--epochs", type=Int(1), default=3)
        t.add_argument("--batch-size", type=Int(1), default=128)
        t.add_argument("--n-train", type=Int(1), default=3000, help="training subsample")
        t.add_argument("--n-test", type=Int(1), default=2000, help="test subsample")
        t.add_argument("--noise", type=Real(0, 0.9, closed="both"), default=0.0,
                       help="symmetric label-noise rate")
        t.add_argument("--weight-penalty", type=Real(0, closed="left"), default=1e-3,
                       help="lambda_1 (method 'penalty')")
        t.add_argument("--feature-penalty", type=Real(0, closed="left"), default=1e-3,
                       help="lambda_2 (method 'penalty')")
        t.add_argument("--seed", type=Int(0), default=0)
        t.add_argument("--json", action="store_true", help="print JSON")
        t.add_argument("--dry-run", action="store_true",
                       help="validate and print the resolved configuration; train nothing")

    def run(self, args: argparse.Namespace) -> int:
        if args.action == "variants":
            return self._variants(args)
        if args.action == "train":
            return self._train(args)
        return super().run(args)

    def _variants(self, args: argparse.Namespace) -> int:
        from fmlab.sam._variants import VARIANTS

        rows = []
        for name in VARIANTS.names():
            v = VARIANTS.get(name)
            rows.append({"name": name, "logit_at": v.logit_at, "jacobian_at": v.jacobian_at,
                         "description": VARIANTS.entry(name).description})
        text = "\n".join(f"{r['name']:<9} logit at {r['logit_at']:<6} Jacobian at "
                         f"{r['jacobian_at']:<6} {r['description']}" for r in rows)
        emit(rows, as_json=args.json, text=text)
        return 0

    def _train(self, args: argparse.Namespace) -> int:
        config: dict[str, Any] = {
            k: getattr(args, k) for k in (
                "dataset", "method", "rho", "adaptive", "scope", "lr", "momentum",
                "weight_decay", "epochs", "batch_size", "n_train", "n_test", "noise",
                "weight_penalty", "feature_penalty", "seed")
        }
        if args.dry_run:
            emit({"config": config, "dry_run": True}, as_json=args.json,
                 text="\n".join(f"{k}: {v}" for k, v in config.items()))
            return 0
        import numpy as np
        import torch

        from fmlab.data import add_label_noise, load_dataset
        from fmlab.sam._models import SmallCNN
        from fmlab.sam._train import images_to_tensor, train_classifier

        train = load_dataset(args.dataset, split="train")
        test = load_dataset(args.dataset, split="test")
        for flag, want, ds in (("--n-train", args.n_train, train), ("--n-test", args.n_test,
                                                                      test)):
            if want > len(ds.labels):
                raise UsageError(f"{flag} {want} exceeds the {len(ds.labels):,} examples of "
                                 f"{args.dataset}'s {ds.split} split.")
        rng = np.random.default_rng(args.seed)
        idx = rng.permutation(len(train.labels))[: args.n_train]
        tidx = rng.permutation(len(test.labels))[: args.n_test]
        y_clean = train.labels[idx]
        noisy, _ = add_label_noise(y_clean, args.noise, n_classes=10, seed=args.seed)
        torch.manual_seed(args.seed)
        penalty = args.method == "penalty"
        result = train_classifier(
            SmallCNN(n_classes=10), images_to_tensor(train.images[idx]), torch.as_tensor(noisy),
            images_to_tensor(test.images[tidx]), torch.as_tensor(test.labels[tidx]),
            method="sgd" if penalty else args.method, rho=args.rho, adaptive=args.adaptive,
            scope=args.scope, lr=args.lr, momentum=args.momentum,
            weight_decay=args.weight_decay, epochs=args.epochs, batch_size=args.batch_size,
            weight_penalty=args.weight_penalty if penalty else 0.0,
            feature_penalty=args.feature_penalty if penalty else 0.0,
            y_true=torch.as_tensor(y_clean), seed=args.seed,
        )
        out = {"config": config, **result.to_dict()}
        lines = [f"epoch {int(h['epoch']):>3}  loss {h['train_loss']:.4f}  "
                 f"test acc {h['test_acc']:.4f}" for h in result.history]
        lines.append(f"best test acc {result.best_test_acc:.4f} (epoch {result.best_epoch}), "
                     f"final {result.final_test_acc:.4f}, {1000 * result.step_time:.1f} ms/step")
        emit(out, as_json=args.json, text="\n".join(lines))
        return 0
