"""The multimodal zoo: prepare times, embedding throughput against the bare backbone, captioner
speed, and the quality of every member (from the model cards), with the ensemble's agreement.

Run: ``python benchmarks/multimodal_bench.py [--fresh] [--repeat 3]``. Prints a table and writes
``benchmarks/results/multimodal.json``.

- Prepare time: with ``--fresh`` every model is prepared into an empty temporary cache (the shared
  frozen-tower features first, timed separately); without it, the training seconds recorded in
  each model card are reported and the user's cache is used (preparing what is missing).
- Throughput: ``clip-emoji-0`` zero-shot image embeddings (preprocess + EfficientNet-Lite0 +
  projection, batch 64) against EfficientNet-Lite0 alone on the same pixel values (the floor: the
  projection should cost almost nothing).
- Captioner: greedy captions per second (batch 64, up to 12 new tokens) and ``caption_loss``
  forward + backward time per image (batch 8, gradient w.r.t. float pixels), the inner loop of a
  captioner attack.

The machine is shared: read the ratios, measured side by side in one run, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "multimodal.json"
MEMBERS = ("clip-emoji-0", "clip-emoji-1", "clip-emoji-2")


def _time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prepare_times(fresh: bool, with_captioner: bool) -> dict[str, Any]:
    from fmlab.models import model_info, prepare_model
    from fmlab.models._towers import emoji_features

    out: dict[str, Any] = {"fresh": fresh}
    old = os.environ.get("FMLAB_CACHE")
    tmp = tempfile.mkdtemp(prefix="fmlab-mm-bench-") if fresh else None
    if fresh:
        from fmlab._paths import data_dir
        from fmlab.models._zoo import model_cache_path

        smollm2 = model_cache_path("smollm2-135m-instruct")  # the user's converted copy
        os.environ.setdefault("FMLAB_DATA_DIR", str(data_dir()))  # keep the rendered emoji
        os.environ["FMLAB_CACHE"] = str(tmp)
        if smollm2.is_dir():  # the GGUF conversion is not part of this cost
            link = model_cache_path("smollm2-135m-instruct")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(smollm2)
    try:
        start = time.perf_counter()
        emoji_features()
        out["features_s"] = time.perf_counter() - start
        for name in (*MEMBERS, *(("captioner-emoji",) if with_captioner else ())):
            start = time.perf_counter()
            prepare_model(name)
            wall = time.perf_counter() - start
            card = model_info(name).card or {}
            out[name] = {"prepare_wall_s": wall, "train_s": card.get("train_seconds")}
        out["total_s"] = out["features_s"] + sum(
            v["prepare_wall_s"] for v in out.values() if isinstance(v, dict))
    finally:
        if fresh:
            if old is None:
                os.environ.pop("FMLAB_CACHE", None)
            else:
                os.environ["FMLAB_CACHE"] = old
            shutil.rmtree(str(tmp), ignore_errors=True)
    return out


def throughput(repeat: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from fmlab.data import load_dataset
    from fmlab.models import load_clip

    images = load_dataset("emoji", "openmoji").images[:64]
    clip = load_clip("clip-emoji-0")
    px = clip.preprocess(images)
    with torch.inference_mode():
        clip.encode_images(images)  # warm-up
        t_clip = _time(lambda: clip.encode_images(images, normalize=False), repeat)
        t_back = _time(lambda: clip.vision_model(px), repeat)
        t_pre = _time(lambda: clip.preprocess(images), repeat)
    del np
    return {"batch": 64, "image_size": int(px.shape[-1]),
            "clip_emoji_images_per_s": 64 / t_clip,
            "efficientnet_lite0_images_per_s": 64 / t_back,
            "preprocess_images_per_s": 64 / t_pre,
            "clip_over_backbone_time": t_clip / t_back}


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
    cap.generate(images[:4])
    t_gen = _time(lambda: cap.generate(images, max_new_tokens=12), max(1, repeat - 1))
    x = torch.from_numpy(images[:8]).float().div(255).requires_grad_(True)

    def fwd_bwd() -> None:
        x.grad = None
        cap.caption_loss(x, ["a painting of a woman"]).backward()

    fwd_bwd()
    t_loss = _time(fwd_bwd, repeat)
    return {"trained_mapper": trained, "captions_per_s_greedy_batch64": 64 / t_gen,
            "caption_loss_fwd_bwd_s_per_image_batch8": t_loss / 8}


def quality() -> dict[str, Any]:
    import numpy as np

    from fmlab.models import model_info

    out: dict[str, Any] = {}
    preds = {}
    for name in (*MEMBERS, "captioner-emoji"):
        info = model_info(name)
        if info.card is None:
            continue
        out[name] = info.card["quality"]
        p = Path(str(info.cache_path)) / "predictions.json"
        if p.is_file():
            preds[name] = json.loads(p.read_text())
    agree: dict[str, Any] = {}
    names = sorted(preds)
    for kind in ("category", "subcategory"):
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                pa, pb = np.asarray(preds[a][kind]), np.asarray(preds[b][kind])
                agree[f"{kind}:{a}~{b}"] = float((pa == pb).mean())
    out["pairwise_agreement"] = agree
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fresh", action="store_true",
                        help="prepare everything into an empty temporary cache and time it")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-captioner-prepare", action="store_true",
                        help="do not prepare captioner-emoji (its speed is still measured)")
    args = parser.parse_args(argv)
    import torch

    result: dict[str, Any] = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
        "prepare": prepare_times(args.fresh, not args.skip_captioner_prepare),
        "throughput": throughput(args.repeat),
        "captioner": captioner_speed(args.repeat),
        "quality": quality(),
    }
    result["machine"]["load_avg_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    p, t, c = result["prepare"], result["throughput"], result["captioner"]
    print(f"features (shared, once): {p['features_s']:.1f} s; all prepares from "
          f"{'an empty' if p['fresh'] else 'the user'} cache: {p['total_s']:.1f} s")
    for name in (*MEMBERS, "captioner-emoji"):
        if name not in p:
            continue
        print(f"prepare {name:16s} wall {p[name]['prepare_wall_s']:.1f} s  train "
              f"{p[name]['train_s'] or float('nan'):.1f} s")
    print(f"zero-shot embedding: clip-emoji-0 {t['clip_emoji_images_per_s']:.0f} img/s vs "
          f"EfficientNet-Lite0 {t['efficientnet_lite0_images_per_s']:.0f} img/s "
          f"(time ratio {t['clip_over_backbone_time']:.2f})")
    print(f"captioner: {c['captions_per_s_greedy_batch64']:.1f} captions/s; caption_loss fwd+bwd "
          f"{1000 * c['caption_loss_fwd_bwd_s_per_image_batch8']:.0f} ms/image")
    for k, v in result["quality"]["pairwise_agreement"].items():
        print(f"agreement {k}: {v:.3f}")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
