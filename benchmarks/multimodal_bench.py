"""The multimodal zoo: prepare times, embedding throughput against the bare backbone, captioner
speed, and the quality of every member (from the model cards), with the ensemble's agreement.

Run (one thread, as the budget is stated): ``OMP_NUM_THREADS=1 python
benchmarks/multimodal_bench.py [--user-cache] [--repeat 3]``. Prints a table and writes
``benchmarks/results/multimodal.json``.

- Prepare time (default): every model is prepared from an EMPTY temporary cache (``FMLAB_CACHE``;
  the rendered emoji and the converted SmolLM2 weights, which are not part of this cost, are
  reused), one ``fmlab models prepare`` process per model, in the order a fresh machine runs them:
  the frozen towers' emoji features (shared by all), ``clip-emoji-0/1/2``, ``captioner-emoji``.
  Each step reports CPU seconds (user + sys of the child process, robust to a busy machine) and
  wall seconds with the load average at its start; ``process_overhead`` is one bare Python
  process importing torch, transformers and fmlab's model modules (paid once per process). Then
  each prepared model is loaded from that cache (a cache hit: ``load_s``, separate from the
  build). The rest of the run uses the fresh cache, so every figure is from this code.
  ``--user-cache`` skips the fresh build and uses the user's cache (preparing what is missing).
- Throughput: ``clip-emoji-0`` zero-shot image embeddings (preprocess + EfficientNet-Lite0 +
  projection, batch 64) against EfficientNet-Lite0 alone on the same pixel values (the floor: the
  projection should cost almost nothing).
- Captioner: greedy captions per second (batch 64, up to 12 new tokens) and ``caption_loss``
  forward + backward time per image (batch 8, gradient w.r.t. float pixels), the inner loop of a
  captioner attack.
- Quality: each model card's held-out scores, and the members' pairwise zero-shot agreement on the
  held-out style (:func:`fmlab.models._recipes.member_agreement`).

The machine is shared: read the ratios, measured side by side in one run, and CPU seconds rather
than wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "multimodal.json"
MEMBERS = ("clip-emoji-0", "clip-emoji-1", "clip-emoji-2")
PREPARED = (*MEMBERS, "captioner-emoji")


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (this process) of ``fn()`` over ``repeat``."""
    walls, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _child(args: list[str]) -> dict[str, float]:
    """Run ``python ARGS`` and return its CPU seconds (user + sys), wall seconds and start load."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": cpu, "wall_s": wall, "load_avg_1min_at_start": load}


def fresh_cache() -> tuple[str, dict[str, str | None]]:
    """Point FMLAB_CACHE at an empty folder (keeping the data and the converted SmolLM2)."""
    from fmlab._paths import data_dir
    from fmlab.models._zoo import model_cache_path

    smollm2 = model_cache_path("smollm2-135m-instruct")  # the user's converted copy
    old = {k: os.environ.get(k) for k in ("FMLAB_CACHE", "FMLAB_DATA_DIR")}
    os.environ["FMLAB_DATA_DIR"] = str(data_dir())  # the rendered emoji are data, not a prepare
    tmp = tempfile.mkdtemp(prefix="fmlab-mm-bench-")
    os.environ["FMLAB_CACHE"] = tmp
    if smollm2.is_dir():  # the GGUF conversion is not part of this cost
        link = model_cache_path("smollm2-135m-instruct")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(smollm2)
    return tmp, old


def prepare_times(fresh: bool) -> dict[str, Any]:
    from fmlab.models import load_captioner, load_clip, prepare_model

    out: dict[str, Any] = {"fresh": fresh, "threads": os.environ.get("OMP_NUM_THREADS")}
    if fresh:
        out["process_overhead"] = _child(["-c", "import torch, transformers, fmlab.models._clip, "
                                          "fmlab.models._captioner"])
        out["emoji-features"] = _child(["-c", "from fmlab.models._towers import emoji_features; "
                                        "emoji_features()"])
        for name in PREPARED:
            out[name] = _child(["-m", "fmlab", "models", "prepare", name])
        steps = ("emoji-features", *PREPARED)
        out["total_cpu_s"] = sum(out[s]["cpu_s"] for s in steps)
        out["total_wall_s"] = sum(out[s]["wall_s"] for s in steps)
        out["budget_cpu_s"] = 180.0
    else:
        for name in PREPARED:
            prepare_model(name)
    for name in PREPARED:
        load = load_captioner if name == "captioner-emoji" else load_clip
        start = time.perf_counter()
        load(name)
        out.setdefault(name, {})["load_s"] = time.perf_counter() - start
    return out


def throughput(repeat: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from fmlab.data import load_dataset
    from fmlab.models import load_clip

    images = load_dataset("emoji", "openmoji").images[:64]
    clip = load_clip("clip-emoji-0")
    px = clip.preprocess(images)
    load = os.getloadavg()[0]
    with torch.inference_mode():
        clip.encode_images(images)  # warm-up
        t_clip, c_clip = _time(lambda: clip.encode_images(images, normalize=False), repeat)
        t_back, c_back = _time(lambda: clip.vision_model(px), repeat)
        t_pre, _ = _time(lambda: clip.preprocess(images), repeat)
    del np
    return {"batch": 64, "image_size": int(px.shape[-1]), "load_avg_1min_at_start": load,
            "clip_emoji_images_per_s": 64 / t_clip,
            "efficientnet_lite0_images_per_s": 64 / t_back,
            "clip_emoji_images_per_cpu_s": 64 / c_clip,
            "efficientnet_lite0_images_per_cpu_s": 64 / c_back,
            "preprocess_images_per_s": 64 / t_pre,
            "clip_over_backbone_time": t_clip / t_back,
            "clip_over_backbone_cpu": c_clip / c_back}


def captioner_speed(repeat: int) -> dict[str, Any]:
    import torch

    from fmlab.data import load_dataset
    from fmlab.models import load_captioner, model_info

    images = load_dataset("emoji", "openmoji").images[:64]
    trained = model_info("captioner-emoji").cached
    if trained:
        cap = load_captioner("captioner-emoji")
    else:  # speed does not depend on the mapper's weights: time an untrained one
        from fmlab.models._captioner import EmojiCaptioner, _load_lm, _slot_labels
        from fmlab.models._recipes import CaptionerConfig
        from fmlab.models._towers import load_efficientnet_tower

        cfg = CaptionerConfig()
        lm, tok = _load_lm(cfg)
        names = load_dataset("emoji", "google").attributes["name"]
        cap = EmojiCaptioner(cfg, load_efficientnet_tower(), lm, tok,
                             _slot_labels(tok, names, cfg.prefix_length)[0]).eval()
    load = os.getloadavg()[0]
    cap.generate(images[:4])
    t_gen, c_gen = _time(lambda: cap.generate(images, max_new_tokens=12), max(1, repeat - 1))
    x = torch.from_numpy(images[:8]).float().div(255).requires_grad_(True)

    def fwd_bwd() -> None:
        x.grad = None
        cap.caption_loss(x, ["a painting of a woman"]).backward()

    fwd_bwd()
    t_loss, c_loss = _time(fwd_bwd, repeat)
    return {"trained_mapper": trained, "load_avg_1min_at_start": load,
            "captions_per_s_greedy_batch64": 64 / t_gen,
            "captions_per_cpu_s_greedy_batch64": 64 / c_gen,
            "caption_loss_fwd_bwd_s_per_image_batch8": t_loss / 8,
            "caption_loss_fwd_bwd_cpu_s_per_image_batch8": c_loss / 8}


def quality() -> dict[str, Any]:
    from fmlab.models import model_info
    from fmlab.models._recipes import member_agreement

    out: dict[str, Any] = {name: model_info(name).card["quality"] for name in PREPARED
                           if model_info(name).card is not None}
    out["agreement"] = member_agreement(MEMBERS)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--user-cache", action="store_true",
                        help="use (and fill) the user's cache instead of timing a fresh prepare")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    import torch

    fresh = not args.user_cache
    tmp, old = fresh_cache() if fresh else (None, {})
    try:
        result: dict[str, Any] = {
            "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
            "prepare": prepare_times(fresh),
            "throughput": throughput(args.repeat),
            "captioner": captioner_speed(args.repeat),
            "quality": quality(),
        }
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_avg_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"wrote {RESULTS}")
    return 0


def report(result: dict[str, Any]) -> str:
    """The benchmark's figures as text."""
    p, t, c = result["prepare"], result["throughput"], result["captioner"]
    lines = []
    if p["fresh"]:
        o = p["process_overhead"]
        lines.append(f"prepare from an empty cache, {p['threads']} thread(s); per-process "
                     f"overhead {o['cpu_s']:.1f} CPU-s")
        for name in ("emoji-features", *PREPARED):
            r = p[name]
            lines.append(f"  {name:16s} {r['cpu_s']:6.1f} CPU-s  wall {r['wall_s']:6.1f} s "
                         f"(load {r['load_avg_1min_at_start']:.1f})"
                         + (f"  load from cache {r['load_s']:.1f} s" if "load_s" in r else ""))
        lines.append(f"  total            {p['total_cpu_s']:6.1f} CPU-s  wall "
                     f"{p['total_wall_s']:6.1f} s  (budget {p['budget_cpu_s']:.0f} CPU-s)")
    lines.append(f"zero-shot embedding (batch {t['batch']}, load {t['load_avg_1min_at_start']:.1f}):"
                 f" clip-emoji-0 {t['clip_emoji_images_per_s']:.0f} img/s "
                 f"({t['clip_emoji_images_per_cpu_s']:.0f} per CPU-s) vs EfficientNet-Lite0 "
                 f"{t['efficientnet_lite0_images_per_s']:.0f} img/s "
                 f"({t['efficientnet_lite0_images_per_cpu_s']:.0f} per CPU-s); ratio wall "
                 f"{t['clip_over_backbone_time']:.2f}, CPU {t['clip_over_backbone_cpu']:.2f}")
    lines.append(f"captioner (load {c['load_avg_1min_at_start']:.1f}): "
                 f"{c['captions_per_s_greedy_batch64']:.1f} captions/s greedy "
                 f"({c['captions_per_cpu_s_greedy_batch64']:.1f} per CPU-s); caption_loss "
                 f"fwd+bwd {1000 * c['caption_loss_fwd_bwd_s_per_image_batch8']:.0f} ms/image "
                 f"({1000 * c['caption_loss_fwd_bwd_cpu_s_per_image_batch8']:.0f} CPU-ms)")
    a = result["quality"]["agreement"]
    if a is not None:
        for kind in ("category", "subcategory"):
            acc = ", ".join(f"{n} {v:.3f}" for n, v in a[kind]["accuracy"].items())
            lines.append(f"{kind} on {a['style']} ({a['n_images']} images): accuracy {acc}")
            lines += [f"  agreement {pair}: {v:.3f} (kappa {a[kind]['kappa'][pair]:.3f})"
                      for pair, v in a[kind]["agreement"].items()]
            lines.append(f"  all members agree: {a[kind]['all_agree']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
