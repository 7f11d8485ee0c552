"""GCG speed and quality against nanoGCG 0.3.0, and DPO step time with LoRA.

1. **GCG seconds per step**, side by side on SmolLM2-135M-Instruct at identical settings (prompt,
   target, initial suffix of 20 ``x`` tokens, ``search_width``, ``topk``, ``n_replace=1``, prefix
   cache on, ASCII only, round-trip filter on, no early stop), alternating the two tools
   ``--repeats`` times, each run in its own process with the same thread count:
   - ``fmlab``: :class:`fmlab.attacks.GCG` in this environment;
   - ``nanogcg``: PyPI ``nanogcg==0.3.0`` in its OWN virtual environment, created here on first
     use (it pins ``transformers<=4.47.1``; torch 2.13.0 is installed into it first from the local
     wheel so that nothing pulls a CUDA build). nanoGCG is never a dependency of fmlab.
   Both optimise the same tokens from the same candidates: the same seed drives the same
   sampling calls (``torch.rand`` then ``torch.randint``), the peer's excluded-token list is set
   to fmlab's rule (non-printable-ASCII, empty and special tokens), and the peer's tokenizer copy
   declares no BOS token (nanoGCG deletes every occurrence of the BOS text from the rendered chat,
   and SmolLM2's BOS ``<|im_start|>`` opens every turn). Their loss traces then agree step by step
   up to float rounding, so "equal loss after the same steps" is checked exactly, and the speed
   ratio is the implementation's alone.
   Reported: wall and CPU seconds per step (whole run including the one-off set-up of the
   objective, model load and the tool's import excluded for both, divided by steps; at
   one thread CPU seconds are the figure that survives a loaded machine), the loss after the
   same number of steps, the steps on which both traces agree, peak resident memory.
2. **DPO step time with LoRA** (r=4, alpha=32, q_proj/v_proj; batch 4 purple preference pairs)
   through :func:`fmlab.jailbreak.train_dpo`, on every layer (the paper's recipe) and on the
   last 4 layers (the quick study's recipe).

Writes ``benchmarks/results/jailbreak.json``. Run: ``python benchmarks/jailbreak_bench.py`` (a few
minutes on 2 cores, plus the one-off venv build); ``--quick`` for a smoke run. On a shared, loaded
machine absolute times are noisy; the ratio of interleaved runs is the figure to read.
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

RESULTS = Path(__file__).with_name("results") / "jailbreak.json"
PROMPT = "What is the colour of a ripe plum?"
TARGET = "Purple"
INIT = " ".join(["x"] * 20)

WORKER = r'''
import json, resource, sys, time
cfg = json.loads(sys.argv[1])
import torch
torch.set_num_threads(cfg["threads"])
torch.manual_seed(cfg["seed"])
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(cfg["model_dir"], torch_dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(cfg["model_dir"])
model.eval()
with torch.no_grad():  # the same weights in both processes: compare a probe of the logits
    probe = model(torch.tensor([[1, 504, 3459, 314, 260, 7148]])).logits[0, -1, :4].tolist()
messages = [{"role": "user", "content": cfg["prompt"] + "{optim_str}"}]
def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
if cfg["tool"] == "nanogcg":
    import nanogcg
    import nanogcg.gcg
    def excluded(tokenizer, device="cpu"):  # fmlab's allowed-token rule, so both draw the same top-k
        n = model.get_input_embeddings().weight.shape[0]
        texts = tokenizer.batch_decode([[i] for i in range(min(len(tokenizer), n))])
        bad = [i for i, t in enumerate(texts) if not (t and t.isascii() and t.isprintable())]
        bad += [i for i in tokenizer.all_special_ids if i is not None and i < n]
        bad += list(range(len(tokenizer), n))
        return torch.tensor(sorted(set(bad)), device=device)
    nanogcg.gcg.get_nonascii_toks = excluded
else:  # each tool imported before the clock starts (fmlab.attacks pulls in scikit-learn)
    from fmlab.attacks import GCG, TargetObjective
t0, c0 = time.perf_counter(), cpu_s()
if cfg["tool"] == "nanogcg":
    conf = nanogcg.GCGConfig(num_steps=cfg["steps"], optim_str_init=cfg["init"],
        search_width=cfg["search_width"], topk=cfg["topk"], n_replace=1, seed=cfg["seed"],
        use_prefix_cache=True, allow_non_ascii=False, filter_ids=True, early_stop=False,
        verbosity="WARNING")
    res = nanogcg.run(model, tok, messages, cfg["target"], conf)
    losses, best = list(res.losses), float(res.best_loss)
else:
    obj = TargetObjective(model, tok, messages, cfg["target"])
    res = GCG(num_steps=cfg["steps"], optim_str_init=cfg["init"], search_width=cfg["search_width"],
              topk=cfg["topk"], n_replace=1, random_state=cfg["seed"])(obj, progress=False)
    losses, best = list(res.losses), float(res.best_loss)
wall, cpu = time.perf_counter() - t0, cpu_s() - c0
print("RESULT " + json.dumps({"wall_s": wall, "s_per_step": wall / cfg["steps"],
      "cpu_s_per_step": cpu / cfg["steps"], "losses": losses,
      "best_loss": best, "probe": probe, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def nanogcg_python(root: Path) -> Path:
    """Create (once) a venv with torch 2.13.0 (local wheel) and nanogcg 0.3.0; return its python."""
    venv = root / "nanogcg-0.3.0"
    py = venv / "bin" / "python"
    if (venv / ".ready").is_file():
        return py
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # the machine-wide pip constraints pin fmlab's transformers; this venv needs nanogcg's pin
    env = {**os.environ, "PIP_CONSTRAINT": ""}
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, env=env)
    subprocess.run([*pip, "nanogcg==0.3.0", "torch==2.13.0"], check=True, env=env)
    (venv / ".ready").write_text("ok\n")
    return py


def peer_model_dir(model_dir: Path, root: Path) -> Path:
    """A copy of the cached model folder that transformers 4.47 reads: the weights and
    tokenizer.json linked, the tokenizer class, chat template and RoPE base written the old way
    (transformers 5 saves ``TokenizersBackend``, ``chat_template.jinja``, ``rope_parameters``)."""
    out = root / "smollm2-135m-instruct-tf4"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        link = out / name
        if not link.exists():
            link.symlink_to(model_dir / name)
    config = json.loads((model_dir / "config.json").read_text())
    config["rope_theta"] = config.get("rope_parameters", {}).get("rope_theta", 10000.0)
    config["torch_dtype"] = config.get("dtype", "float32")
    (out / "config.json").write_text(json.dumps(config, indent=1))
    tok = json.loads((model_dir / "tokenizer_config.json").read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    # nanoGCG deletes every occurrence of the tokenizer's bos_token from the rendered chat;
    # SmolLM2 declares <|im_start|> (which opens every turn) as its BOS but never adds one, so
    # the peer's copy declares none and both tools optimise the same token sequence
    tok["bos_token"] = None
    tok["chat_template"] = (model_dir / "chat_template.jinja").read_text()
    (out / "tokenizer_config.json").write_text(json.dumps(tok, indent=1))
    return out


def run_worker(python: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"])}
    if cfg["tool"] == "nanogcg":
        env.pop("PYTHONPATH", None)  # nothing of fmlab in the peer's process
    out = subprocess.run([str(python), "-c", WORKER, json.dumps(cfg)], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{cfg['tool']} worker failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def dpo_step_time(steps: int) -> dict[str, Any]:
    """Seconds (wall and CPU) per DPO step of 4 pairs: the paper's recipe (LoRA on every layer's
    q/v) and the quick study's (the last 4 layers, frozen layers run once per sequence)."""
    import copy
    import resource

    from fmlab.jailbreak import train_dpo
    from fmlab.models import load_causal_lm

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    model, tok = load_causal_lm("smollm2-135m-instruct")
    out: dict[str, Any] = {"steps": steps, "batch_size": 4,
                           "lora": {"r": 4, "alpha": 32, "modules": ["q_proj", "v_proj"]}}
    for label, last in (("every_layer", None), ("last_4_layers", 4)):
        t, c = time.perf_counter(), cpu_s()
        _, info = train_dpo(copy.deepcopy(model), tok, split="train", max_steps=steps,
                            batch_size=4, last_layers=last, progress=False)
        out[label] = {"s_per_step": (time.perf_counter() - t) / steps,
                      "cpu_s_per_step": (cpu_s() - c) / steps, "final_loss": info["losses"][-1]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--search-width", type=int, default=64)
    ap.add_argument("--topk", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dpo-steps", type=int, default=3)
    ap.add_argument("--venv-root", type=Path,
                    default=Path.home() / ".cache" / "fmlab" / "bench-venvs")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-dpo", action="store_true",
                    help="no DPO timing (with --append, the previous DPO figures are kept)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="run these seeds (default: 0 .. repeats-1)")
    ap.add_argument("--append", action="store_true",
                    help="add these seeds' runs to the ones already in the results file (same "
                         "settings), so a long benchmark can run as several short commands")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.search_width, args.topk, args.repeats, args.dpo_steps = 2, 16, 16, 1, 2
    seeds = args.seeds if args.seeds is not None else list(range(args.repeats))

    from fmlab.models import prepare_model

    load_start = os.getloadavg()[0]

    model_dir = prepare_model("smollm2-135m-instruct")
    peer = nanogcg_python(args.venv_root)
    dirs = {"fmlab": str(model_dir), "nanogcg": str(peer_model_dir(model_dir, args.venv_root))}
    settings = {"model": "smollm2-135m-instruct", "prompt": PROMPT, "target": TARGET,
                "suffix_tokens": 20, "steps": args.steps, "search_width": args.search_width,
                "topk": args.topk, "threads": args.threads}
    runs: dict[str, list[dict[str, Any]]] = {"fmlab": [], "nanogcg": []}
    previous: dict[str, Any] = {}
    if args.append and RESULTS.is_file():
        previous = json.loads(RESULTS.read_text())
        same = {k: v for k, v in previous.get("settings", {}).items() if k != "repeats"}
        if same != settings:
            raise SystemExit(f"--append: {RESULTS} holds other settings ({same}); rerun "
                             "without --append.")
        runs = previous["runs"]
    for rep in seeds:
        for tool, python in (("fmlab", Path(sys.executable)), ("nanogcg", peer)):
            cfg = {"tool": tool, "model_dir": dirs[tool], "prompt": PROMPT, "target": TARGET,
                   "init": INIT, "steps": args.steps, "search_width": args.search_width,
                   "topk": args.topk, "seed": rep, "threads": args.threads}
            r = run_worker(python, cfg)
            r["seed"], r["load"] = rep, os.getloadavg()[0]
            runs[tool].append(r)
            print(f"{tool:8s} seed {rep}: {r['s_per_step']:.2f} s/step wall, "
                  f"{r['cpu_s_per_step']:.2f} CPU-s/step, best loss {r['best_loss']:.4f}, peak "
                  f"RSS {r['peak_rss_mb']:.0f} MB (load {os.getloadavg()[0]:.1f})", flush=True)

    def summary(tool: str) -> dict[str, float]:
        rs = runs[tool]
        return {"s_per_step_median": statistics.median(r["s_per_step"] for r in rs),
                "cpu_s_per_step_median": statistics.median(r["cpu_s_per_step"] for r in rs),
                "cpu_s_per_step_min": min(r["cpu_s_per_step"] for r in rs),
                "cpu_s_per_step_max": max(r["cpu_s_per_step"] for r in rs),
                "best_loss_mean": statistics.fmean(r["best_loss"] for r in rs),
                "final_loss_mean": statistics.fmean(r["losses"][-1] for r in rs),
                "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs)}

    a, b = runs["fmlab"][0]["probe"], runs["nanogcg"][0]["probe"]
    if max(abs(x - y) for x, y in zip(a, b, strict=True)) > 1e-3:
        raise RuntimeError(f"The two processes load different models (logit probe {a} vs {b}).")
    gcg: dict[str, Any] = {t: summary(t) for t in runs}
    gcg["steps_per_second_ratio_fmlab_over_nanogcg"] = (
        gcg["nanogcg"]["s_per_step_median"] / gcg["fmlab"]["s_per_step_median"])
    # both run at one thread, so CPU seconds are the contention-robust measure of work per step
    gcg["steps_per_cpu_second_ratio_fmlab_over_nanogcg"] = (
        gcg["nanogcg"]["cpu_s_per_step_median"] / gcg["fmlab"]["cpu_s_per_step_median"])
    # the spread: the ratio of each interleaved pair (same seed, run back to back)
    gcg["steps_per_cpu_second_ratio_per_pair"] = [
        n["cpu_s_per_step"] / f["cpu_s_per_step"]
        for f, n in zip(runs["fmlab"], runs["nanogcg"], strict=True)]
    # same seed, same allowed tokens, same prompt tokens: the two tools sample the same
    # candidates, so their loss traces agree step by step up to float rounding (a tie broken
    # differently in the top-k or the argmin makes them part)
    pairs = list(zip(runs["fmlab"], runs["nanogcg"], strict=True))
    gcg["same_trajectory_steps"] = [
        sum(abs(x - y) < 1e-3 for x, y in zip(f["losses"], n["losses"], strict=False))
        for f, n in pairs]
    gcg["best_loss_fmlab_minus_nanogcg"] = [f["best_loss"] - n["best_loss"] for f, n in pairs]
    machine = (f"{os.cpu_count()} CPUs (shared), load average {load_start:.1f} at the start, "
               f"{os.getloadavg()[0]:.1f} at the end")
    out: dict[str, Any] = {
        "machine": machine if not previous else f"{previous['machine']}; then {machine}",
        "settings": {**settings, "repeats": len(runs["fmlab"])},
        "gcg": gcg, "runs": runs,
    }
    if not args.skip_dpo:
        out["dpo_lora"] = dpo_step_time(args.dpo_steps)
    elif "dpo_lora" in previous:
        out["dpo_lora"] = previous["dpo_lora"]
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from fmlab._io import write_json

    write_json(RESULTS, out)


if __name__ == "__main__":
    main()
