"""Benchmarks of fmlab.quant, side by side in one run (python benchmarks/quant_bench.py).

1. Fake quantization of a 4096×4096 fp32 tensor: plain copy (the memory-bandwidth floor),
   ``torch.fake_quantize_per_channel_affine`` (int4, scales given), fmlab int4 per-channel and
   fp8 E4M3 (per-channel and per-tensor; scales computed inside). Goal: within 3× of the copy.
2. QAT step time (forward + backward + AdamW) of the small LM with w4/a8/kv8 fake quantization
   versus the full-precision step. Goal: <= 1.5×. Also training tokens/s.
3. GPTQ on SmolLM2-135M: time and peak RSS for a subset of decoder blocks, extrapolated to all
   30 (stated in the output), with ``--gptq-blocks``.

Runs on CUDA when a GPU is present (``--device``). Timings are medians over interleaved repeats.
Writes ``benchmarks/results/quant.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _bench(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Median wall time (ms) of each function, interleaved so machine noise hits all alike."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            _sync(device)
            t = time.perf_counter()
            f()
            _sync(device)
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_fake_quant(device: str, repeats: int) -> dict:
    from fmlab.quant import fake_quantize

    x = torch.randn(4096, 4096, device=device)
    scale = (x.abs().amax(1) / 7).float()
    zero = torch.zeros(4096, dtype=torch.int32, device=device)
    fns = {
        "copy": lambda: x.clone(),
        "torch.fake_quantize_per_channel_affine int4": lambda: torch.fake_quantize_per_channel_affine(
            x, scale, zero, 0, -8, 7),
        "fmlab int4_channel": lambda: fake_quantize(x, "int4_channel"),
        "fmlab fp8_e4m3_channel": lambda: fake_quantize(x, "fp8_e4m3_channel"),
        "fmlab fp8_e4m3 (tensor)": lambda: fake_quantize(x, "fp8_e4m3"),
        "fmlab int8 (tensor)": lambda: fake_quantize(x, "int8"),
        "fmlab fp4_e2m1_channel (generic ExMy)": lambda: fake_quantize(x, "fp4_e2m1_channel"),
        "fmlab fp6_e2m3_channel": lambda: fake_quantize(x, "fp6_e2m3_channel"),
        "fmlab int4_g32 (groups)": lambda: fake_quantize(x, "int4_g32"),
    }
    ms = _bench(fns, repeats, device)
    base = ms["copy"]
    return {k: {"ms": round(v, 3), "x_copy": round(v / base, 2)} for k, v in ms.items()}


def bench_qat(device: str, repeats: int) -> dict:
    from fmlab.quant import LMConfig, PrecisionConfig, TinyLM, set_precision

    cfg = LMConfig(vocab_size=512, d_model=256, n_layers=4, n_heads=8, max_seq_len=128)
    B, T = 8, 128
    idx = torch.randint(0, 512, (B, T), device=device)
    out = {}
    models = {}
    for name, prec in {"full precision": PrecisionConfig(),
                       "QAT w4/a8/kv8": PrecisionConfig.from_bits(4, 8, 8),
                       "QAT w3/a3/kv3": PrecisionConfig.from_bits(3, 3, 3)}.items():
        torch.manual_seed(0)
        m = set_precision(TinyLM(cfg).to(device), prec)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)

        def step(m=m, opt=opt) -> None:
            _, loss = m(idx, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        models[name] = step
    ms = _bench(models, repeats, device)
    base = ms["full precision"]
    for k, v in ms.items():
        out[k] = {"ms_per_step": round(v, 2), "x_full": round(v / base, 2),
                  "tokens_per_s": round(B * T / (v / 1e3))}
    out["model"] = {"n_params_non_embedding": cfg.n_params(), "batch": [B, T]}
    return out


def bench_gptq(device: str, n_blocks: int, n_calib: int, seq_len: int) -> dict:
    from torch import nn

    from fmlab.quant import quantize_model
    from fmlab.quant._hf import load_hf_lm

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    model = load_hf_lm("smollm2-135m-instruct").to(device)
    load_s = time.perf_counter() - t
    layers = model.model.layers
    total = len(layers)
    model.model.layers = nn.ModuleList(list(layers)[:n_blocks])  # a subset; see the docstring
    calib = torch.randint(0, model.config.vocab_size, (n_calib, seq_len))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    res = quantize_model(model, "int4_channel", method="gptq", calibration=calib,
                         batch_size=4, inplace=True)
    _sync(device)
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"blocks_quantized": n_blocks, "blocks_total": total, "layers": len(res.layers),
           "calibration_tokens": n_calib * seq_len, "seconds": round(secs, 2),
           "seconds_extrapolated_all_blocks": round(secs * total / n_blocks, 1),
           "load_seconds": round(load_s, 1), "peak_rss_mb": round(peak),
           "rss_before_load_mb": round(rss0),
           "note": f"GPTQ timed on {n_blocks} of {total} blocks, extrapolated linearly; "
                   "calibration tokens are random ids (timing only)"}
    if device.startswith("cuda"):
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--gptq-blocks", type=int, default=2, help="0 skips the SmolLM2 benchmark")
    ap.add_argument("--calib", type=int, default=32, help="calibration sequences")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "quant.json"))
    args = ap.parse_args()
    res: dict = {"device": args.device, "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "machine": platform.processor() or
                 platform.machine()}
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    res["fake_quant_4096x4096"] = fq = bench_fake_quant(args.device, args.repeats)
    print("\nfake quantization, 4096x4096 fp32 (median ms; ratio to plain copy)")
    for k, v in fq.items():
        print(f"  {k:<46} {v['ms']:9.2f} ms  {v['x_copy']:6.2f}x")
    res["qat_step"] = qat = bench_qat(args.device, max(3, args.repeats // 3))
    print(f"\nQAT step, TinyLM {qat['model']}")
    for k, v in qat.items():
        if k != "model":
            print(f"  {k:<20} {v['ms_per_step']:9.1f} ms/step  {v['x_full']:5.2f}x  "
                  f"{v['tokens_per_s']:8,} tokens/s")
    if args.gptq_blocks > 0:
        try:
            res["gptq_smollm2"] = g = bench_gptq(args.device, args.gptq_blocks, args.calib,
                                                 args.seq_len)
            print(f"\nGPTQ int4 per-channel on SmolLM2-135M: {g['seconds']} s for "
                  f"{g['blocks_quantized']}/{g['blocks_total']} blocks -> ~"
                  f"{g['seconds_extrapolated_all_blocks']} s for all; peak RSS "
                  f"{g['peak_rss_mb']} MB")
        except Exception as exc:  # the zoo model may be missing on a user's machine
            res["gptq_smollm2"] = {"skipped": f"{type(exc).__name__}: {exc}"}
            print(f"\nGPTQ on SmolLM2 skipped: {exc}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
