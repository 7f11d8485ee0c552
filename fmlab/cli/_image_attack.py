"""``fmlab attack image``: PGD/BIM on a picture against a captioner or a CLIP ensemble.

A sub-action of ``fmlab attack`` (:mod:`fmlab.cli._jailbreak` adds it with :func:`configure`
and dispatches to :func:`run`).
"""

from __future__ import annotations

import argparse
from typing import Any

from fmlab._validation import InputFile, Int, OutputFile, Real

EPILOG = (
    "  fmlab attack image --image hotdog.png --objective captioner --target 'slice of pizza' \\\n"
    "      --eps 0.0625 --steps 300 --out adv.png\n"
    "  fmlab attack image --image hotdog.png --objective clip --target 'slice of pizza' \\\n"
    "      --negative 'hot dog' --encoders clip-emoji-0,clip-emoji-1 --attack pgd --momentum 1\n"
)


def configure(sub: Any) -> None:
    """Add the ``image`` sub-action to ``fmlab attack``'s subparsers."""
    p = sub.add_parser("image", help="perturb a picture so a captioner says, or a CLIP "
                                     "ensemble sees, a target text")
    p.add_argument("--image", type=InputFile(".png", ".jpg", ".jpeg"), required=True,
                   help="the clean picture (RGB; perturbed at its own resolution)")
    p.add_argument("--objective", choices=("captioner", "clip"), default="captioner")
    p.add_argument("--target", required=True, help="target caption (captioner) or concept (clip)")
    p.add_argument("--negative", default=None, help="clip: concept to push away from")
    p.add_argument("--captioner", default="captioner-emoji", help="captioner zoo name or path")
    p.add_argument("--encoders", default="clip-emoji-0,clip-emoji-1",
                   help="clip: comma-separated dual encoders of the ensemble")
    p.add_argument("--attack", choices=("bim", "pgd"), default="bim")
    p.add_argument("--eps", type=Real(0, 1, closed="right"), default=16 / 256,
                   help="L-inf (or L2) budget, pixels in [0, 1] (0.0625 = 16/256)")
    p.add_argument("--step-size", type=Real(0), default=1 / 255)
    p.add_argument("--steps", type=Int(0), default=300)
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--momentum", type=Real(0, closed="left"), default=0.0)
    p.add_argument("--decode-every", type=Int(1), default=10,
                   help="captioner: greedy decode and score every this many steps")
    p.add_argument("--seed", type=Int(0), default=0)
    p.add_argument("--out", type=OutputFile(".png"), default=None,
                   help="write the adversarial picture (uint8 PNG, within the budget)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _read(path: Any) -> Any:
    """The picture as float ``(3, H, W)`` in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    clean = np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8
    return torch.from_numpy(clean.copy()).permute(2, 0, 1).float() / 255.0


def run(args: argparse.Namespace) -> int:
    """Run ``fmlab attack image``."""
    import torch
    from PIL import Image

    from fmlab.attacks import (
        BIM,
        PGD,
        CaptionerObjective,
        ClipEnsembleObjective,
        format_eps,
        quantize,
    )
    from fmlab.cli._base import emit

    cls = BIM if args.attack == "bim" else PGD
    attack = cls(eps=args.eps, step_size=args.step_size, steps=args.steps, norm=args.norm,
                 momentum=args.momentum, random_state=args.seed)
    info: dict[str, Any] = {"attack": repr(attack), "eps": format_eps(args.eps)}
    if args.objective == "captioner":
        from fmlab.models import load_captioner

        captioner = load_captioner(args.captioner).eval()
        captioner.requires_grad_(False)
        x0 = _read(args.image)
        objective: Any = CaptionerObjective(captioner, args.target, decode_every=args.decode_every)
        result = attack(objective, x0)
        best = objective.best_image if objective.best_image is not None else result.x_adv
        info["caption_before"] = captioner.generate(x0[None])[0]
        info["caption_after"] = captioner.generate(best[None])[0]
        info["exact"] = info["caption_after"] == args.target
    else:
        from fmlab.models import load_clip

        members = [load_clip(n.strip()).eval() for n in args.encoders.split(",") if n.strip()]
        for m in members:
            m.requires_grad_(False)
        x0 = _read(args.image)
        objective = ClipEnsembleObjective(members, args.target, args.negative)
        result = attack(objective, x0, success=lambda x, loss: False)
        best = result.x_adv
        with torch.no_grad():
            info["loss_before"] = float(objective(x0[None])[0])
            info["loss_after"] = float(objective(best[None])[0])
    adv = quantize(best, x0, args.eps if args.norm == "linf" else None)  # (3, H, W) uint8
    info.update(steps_run=result.n_steps, stop_reason=result.stop_reason,
                best_loss=result.best_loss, seconds=round(result.elapsed_s, 2),
                max_change=int((adv.int() - torch.round(x0 * 255).int()).abs().max()))
    if args.out:
        from fmlab._io import atomic_write

        with atomic_write(args.out, "wb") as fh:
            Image.fromarray(adv.permute(1, 2, 0).numpy()).save(fh, format="PNG")
        info["out"] = str(args.out)
    emit(info, as_json=args.json, text="\n".join(f"{k}: {v}" for k, v in info.items()))
    return 0
