"""Data zoo benchmark: load times (cold and warm) and corruption throughput vs per-image loops.

1. **Load times.** *Cold*: a fresh Python process imports ``fmlab.data`` and loads the dataset,
   which includes verifying every file's checksum and any lazy import (pandas, gensim); reported
   as the median of ``--repeats`` processes (the OS file cache is warm, as it is after the first
   run on a machine). *Warm*: the same dataset loaded again in one process (checksums are
   remembered per process; MNIST/Fashion-MNIST arrays are cached and copied out).
2. **Corruption throughput** on ``--n`` Fashion-MNIST test images, severity 3, side by side:
   - ``fmlab``: :func:`fmlab.data.corrupt` on the whole stack (vectorised numpy);
   - ``loop``: the peer, a plain Python loop calling the same corruption once per image;
   - ``library``: where ImageNet-C's reference code uses a per-image library call, that call in a
     loop: scipy ``gaussian_filter`` (blur), PIL JPEG encode/decode (jpeg), PIL BOX resize
     (pixelate), scipy ``map_coordinates`` (elastic).
   Ratios are images/s of fmlab over the peer (higher = fmlab faster).

Writes ``benchmarks/results/data.json``. Run: ``python benchmarks/data_bench.py`` (about a minute
on 2 cores); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fmlab.data import CORRUPTIONS, corrupt, dataset_info, load_dataset

RESULTS = Path(__file__).with_name("results") / "data.json"
LOADS = [("mnist", "train"), ("fashion-mnist", "train"), ("digits", "all"),
         ("rotten-tomatoes", "train"), ("stsb", "all"), ("wordnet-glosses", "all"),
         ("wikipedia-sample", "all"), ("countryinfo", "all"), ("chinchilla", "all"),
         ("purple-questions", "train")]


def cold_load(name: str, split: str, repeats: int) -> float:
    code = ("import time; t = time.perf_counter(); import fmlab.data as d; "
            f"d.load_dataset({name!r}, {split!r}); print(time.perf_counter() - t)")
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def warm_load(name: str, split: str, repeats: int) -> float:
    load_dataset(name, split)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        load_dataset(name, split)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _library_peer(name: str, img: np.ndarray, severity: int) -> np.ndarray:
    """One image through the per-image library call ImageNet-C-style code would use."""
    param = CORRUPTIONS[name][0][severity - 1]
    if name == "gaussian_blur":
        from scipy.ndimage import gaussian_filter

        return np.clip(gaussian_filter(img / 255.0, sigma=param, mode="mirror") * 255, 0, 255
                       ).astype(np.uint8)
    if name == "jpeg":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(param))
        return np.asarray(Image.open(buf))
    if name == "pixelate":
        from PIL import Image

        h, w = img.shape
        small = Image.fromarray(img).resize((w // param or 1, h // param or 1), Image.BOX)
        return np.asarray(small.resize((w, h), Image.NEAREST))
    if name == "elastic":
        from scipy.ndimage import gaussian_filter, map_coordinates

        rng = np.random.default_rng(0)
        dx = gaussian_filter(rng.uniform(-1, 1, img.shape), 4.0) * param
        dy = gaussian_filter(rng.uniform(-1, 1, img.shape), 4.0) * param
        yy, xx = np.meshgrid(np.arange(img.shape[0]), np.arange(img.shape[1]), indexing="ij")
        return map_coordinates(img / 255.0, [yy + dy, xx + dx], order=1, mode="nearest")
    raise KeyError(name)


def throughput(fn: Any, n: int, min_time: float = 0.3) -> float:
    """Images per second of ``fn()`` (which processes ``n`` images), best of a few runs."""
    best = float("inf")
    spent = 0.0
    runs = 0
    while spent < min_time or runs < 2:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, runs = min(best, dt), spent + dt, runs + 1
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--n", type=int, default=1000, help="images for the corruption timing")
    parser.add_argument("--repeats", type=int, default=3, help="processes per cold load")
    args = parser.parse_args()
    n = 100 if args.quick else args.n
    repeats = 1 if args.quick else args.repeats

    results: dict[str, Any] = {"loads": [], "corruptions": [], "n_images": n}
    print(f"{'dataset':18s} {'split':6s} {'n':>8s} {'cold s':>8s} {'warm s':>8s}")
    for name, split in LOADS:
        if not dataset_info(name).available:
            print(f"{name:18s} {split:6s} missing; skipped")
            continue
        size = len(load_dataset(name, split))
        cold = cold_load(name, split, repeats)
        warm = warm_load(name, split, repeats)
        results["loads"].append({"dataset": name, "split": split, "n": size, "cold_s": cold,
                                 "warm_s": warm})
        print(f"{name:18s} {split:6s} {size:8d} {cold:8.3f} {warm:8.3f}")

    x = load_dataset("fashion-mnist", "test").images[:n]
    print(f"\ncorruption throughput, {n} Fashion-MNIST images, severity 3 (images/s)")
    print(f"{'corruption':15s} {'fmlab':>10s} {'loop':>10s} {'ratio':>7s} {'library':>10s} "
          f"{'ratio':>7s}")
    for name in CORRUPTIONS:
        fm = throughput(lambda name=name: corrupt(x, name, 3), n)
        loop = throughput(lambda name=name: [corrupt(img, name, 3) for img in x], n)
        row = {"corruption": name, "fmlab_ips": fm, "loop_ips": loop, "ratio_loop": fm / loop}
        lib_txt = f"{'-':>10s} {'-':>7s}"
        if name in ("gaussian_blur", "jpeg", "pixelate", "elastic"):
            lib = throughput(lambda name=name: [_library_peer(name, img, 3) for img in x], n)
            row |= {"library_ips": lib, "ratio_library": fm / lib}
            lib_txt = f"{lib:10.0f} {fm / lib:7.1f}"
        results["corruptions"].append(row)
        print(f"{name:15s} {fm:10.0f} {loop:10.0f} {fm / loop:7.1f} {lib_txt}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
