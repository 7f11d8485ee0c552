"""``fmlab quant`` (formats, fake quantization, post-training quantization) and ``fmlab sweep``
(precision sweeps on Optuna whose table feeds ``fmlab scaling fit``)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from fmlab._validation import Constraint, Int, OutputFile, Real
from fmlab.cli._base import Command, UsageError, emit

_QUANT_EPILOG = """Examples:
  fmlab quant formats 'fp*'
  fmlab quant train --d-model 64 --tokens 200000 --bits 4:8:8 --save lm.safetensors
  fmlab quant ptq --model lm.safetensors --bits 4 --method gptq
  fmlab quant ptq --model smollm2-135m-instruct --bits 4 --method rtn --eval-tokens 4096"""

_SWEEP_EPILOG = """Examples:
  fmlab sweep run --storage sqlite:///sweep.db --workers 2 --d-model 32,64 --tokens 5e4,2e5 \\
      --train-bits 16,8,4 --post-bits 3,4
  # many machines: create once, then start workers anywhere that reaches the database
  fmlab sweep create --storage postgresql+psycopg://user@db:5432/fmlab --d-model 64 \\
      --tokens 1e5,1e6 --train-bits 16,4 --post-bits 4
  fmlab sweep work --storage postgresql+psycopg://user@db:5432/fmlab
  fmlab sweep table --storage sqlite:///sweep.db --out runs.csv --rows trained
  fmlab scaling fit precision runs.csv"""


class _Bits(Constraint):
    """A training precision: ``K`` for all three components or ``W:A:KV``, each read by the one
    bit-width parser (:func:`fmlab._precision.parse_bits`: 16 and up, ``fp``, ``none`` or ``inf``
    mean full precision, ``inf``)."""

    __name__ = "bits"

    def describe(self) -> str:
        return "a bit width K (2-15; 16 and up or fp = full precision) or W:A:KV"

    def _one(self, item: str, text: str) -> float:
        from fmlab._precision import parse_bits

        try:
            return parse_bits(item)
        except ValueError:
            raise ValueError(f"must be {self.describe()}; got {text!r}") from None

    def parse(self, text: str) -> Any:
        item = text.strip()
        if ":" in item:
            parts = item.split(":")
            if len(parts) != 3:
                raise ValueError(f"W:A:KV needs three bit widths (weights:activations:KV "
                                 f"cache, e.g. 4:8:8); got {text!r}")
            return tuple(self._one(p.strip(), text) for p in parts)
        return self._one(item, text)

    def invalid_values(self) -> list[str]:
        return ["abc", "", "4:4", "1", "0", "-3", "nan", "4:8:x", "4.5"]


class _QuantSpec(Constraint):
    """A post-training format: an integer bit width 2-16 or a registered format name."""

    __name__ = "format"

    def describe(self) -> str:
        return "a bit width 2-16 or a format name (see 'fmlab quant formats')"

    def parse(self, text: str) -> Any:
        from fmlab.quant import FORMATS

        item = text.strip()
        if item.isdigit():
            return Int(2, 16).parse(item)
        if item not in FORMATS.names():
            raise ValueError(f"must be {self.describe()}; got {text!r}")
        return item

    def invalid_values(self) -> list[str]:
        return ["abc", "", "1", "17", "int17", "nan"]


_bits_list = _Bits().list(unique=True)


class QuantCommand(Command):
    name = "quant"
    help = "Number formats, fake quantization, QAT of a small LM, RTN/GPTQ post-training quant."
    epilog = _QUANT_EPILOG

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        f = sub.add_parser("formats", help="list the registered number formats")
        f.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'int*'")
        f.add_argument("--json", action="store_true")
        t = sub.add_parser("train", help="train the small LM (optionally quantization-aware)")
        t.add_argument("--d-model", type=Int(8), default=64)
        t.add_argument("--n-layers", type=Int(1), default=2)
        t.add_argument("--n-heads", type=Int(1), default=4)
        t.add_argument("--tokens", type=Int(1), default=100_000)
        t.add_argument("--bits", type=_Bits(), default=None,
                       help="training bits: K or W:A:KV (16 = full)")
        t.add_argument("--lr", type=Real(0), default=3e-3)
        t.add_argument("--seed", type=Int(0), default=0)
        t.add_argument("--save", type=OutputFile(".safetensors"), default=None,
                       help="write the trained model (.safetensors, no pickle)")
        t.add_argument("--json", action="store_true")
        p = sub.add_parser("ptq", help="quantize a model's weights after training; report loss")
        p.add_argument("--model", required=True,
                       help="a .safetensors file from 'quant train --save', or a zoo/HF causal "
                            "LM name or folder")
        p.add_argument("--bits", type=_QuantSpec(), default=4,
                       help="bit width (per-channel int) or format name")
        p.add_argument("--method", default="gptq", choices=("rtn", "gptq"))
        p.add_argument("--act-order", action="store_true")
        p.add_argument("--true-sequential", action=argparse.BooleanOptionalAction, default=True,
                       help="GPTQ: quantize each block's layers stage by stage (default) or from "
                            "one pass over the unquantized block")
        p.add_argument("--damp", type=Real(0, closed="left"), default=0.01)
        p.add_argument("--calib-sequences", type=Int(1), default=32)
        p.add_argument("--seq-len", type=Int(2), default=64)
        p.add_argument("--eval-tokens", type=Int(1), default=16384,
                       help="validation tokens to score (at least --seq-len)")
        p.add_argument("--json", action="store_true")

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "action", None)
        if action == "formats":
            return self._formats(args)
        if action == "train":
            return self._train(args)
        if action == "ptq":
            return self._ptq(args)
        return super().run(args)

    def _formats(self, args: argparse.Namespace) -> int:
        from fmlab.quant import FORMATS, get_format

        rows = []
        for name in FORMATS.names(args.pattern):
            fmt = get_format(name)
            rows.append({"name": name, "kind": fmt.kind, "bits": fmt.bits,
                         "granularity": fmt.granularity, "max": fmt.max_value,
                         "description": FORMATS.entry(name).description})
        text = "\n".join(f"{r['name']:<22} {r['description']}" for r in rows)
        emit(rows, as_json=args.json, text=text or "(no format matches)")
        return 0

    def _train(self, args: argparse.Namespace) -> int:

        from fmlab.quant import LMConfig, PrecisionConfig, TrainConfig, save_lm, train_lm

        bits = args.bits
        w, a, kv = bits if isinstance(bits, tuple) else (bits, bits, bits)
        res = train_lm(args.tokens, model_config=LMConfig(d_model=args.d_model,
                                                          n_layers=args.n_layers,
                                                          n_heads=args.n_heads),
                       precision=PrecisionConfig.from_bits(w, a, kv),
                       train_config=TrainConfig(lr=args.lr), seed=args.seed)
        if args.save:
            save_lm(res.model, args.save)
        out = {"val_loss": res.val_loss, "n_params": res.n_params, "n_tokens": res.n_tokens,
               "diverged": res.diverged, "tokens_per_second": res.tokens_per_second,
               "precision": res.model.precision.describe()}
        emit(out, as_json=args.json,
             text=f"val loss {res.val_loss:.4f} nats/token, N={res.n_params:,}, "
                  f"D={res.n_tokens:,}, {res.tokens_per_second:,.0f} tokens/s"
                  + (" (diverged)" if res.diverged else ""))
        return 0 if not res.diverged else 1

    def _ptq(self, args: argparse.Namespace) -> int:
        from pathlib import Path

        if args.eval_tokens < args.seq_len:
            raise UsageError(f"--eval-tokens {args.eval_tokens} is below --seq-len "
                             f"{args.seq_len}: no validation window would be scored. Give at "
                             f"least {args.seq_len}.")
        path = Path(args.model)
        local_file = path.is_file() or path.suffix in (".safetensors", ".pt", ".pth", ".bin",
                                                        ".ckpt", ".pkl")
        if local_file and not path.is_file():
            raise UsageError(f"--model {args.model!r}: the file does not exist.")
        import torch

        from fmlab.quant import evaluate_loss, load_lm, load_token_data, quantize_model

        bits = args.bits
        if local_file:
            model = load_lm(path)  # safetensors + JSON header; pickles are refused, never loaded
            data = load_token_data(vocab_size=model.config.vocab_size)
        else:
            from fmlab.quant._hf import hf_token_data, load_hf_lm

            model = load_hf_lm(args.model)
            data = hf_token_data(args.model)
        T = args.seq_len
        calib = torch.from_numpy(data.calibration(args.calib_sequences, T))
        before = evaluate_loss(model, data, seq_len=T, batch_size=8, max_tokens=args.eval_tokens)
        res = quantize_model(model, bits, method=args.method, calibration=calib,
                             act_order=args.act_order, damp=args.damp,
                             true_sequential=args.true_sequential, inplace=True)
        after = evaluate_loss(res.model, data, seq_len=T, batch_size=8,
                              max_tokens=args.eval_tokens)
        out = {"format": res.format.name, "method": res.method, "loss_before": before,
               "loss_after": after, "ppl_before": math.exp(before), "ppl_after": math.exp(after),
               "layers": len(res.layers), "seconds": res.seconds}
        emit(out, as_json=args.json,
             text=f"{res.method} {res.format.name}: perplexity {math.exp(before):.2f} -> "
                  f"{math.exp(after):.2f} ({len(res.layers)} layers, {res.seconds:.1f} s)")
        return 0


class SweepCommand(Command):
    name = "sweep"
    help = "Precision sweeps (grid over N, D, training bits, P_post) on Optuna; table of runs."
    epilog = _SWEEP_EPILOG

    @staticmethod
    def _grid_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", required=True,
                       help="sqlite:///file.db or postgresql+psycopg://user@host:port/db")
        p.add_argument("--name", default="precision-sweep", help="study name")
        p.add_argument("--d-model", type=Int(8).list(unique=True), default=[64],
                       help="widths (N axis)")
        p.add_argument("--n-layers", type=Int(1), default=2)
        p.add_argument("--n-heads", type=Int(1), default=4)
        p.add_argument("--tokens", type=Int(1).list(unique=True), default=[100_000],
                       help="training tokens (D)")
        p.add_argument("--train-bits", type=_bits_list, default=[None],
                       help="training precisions: K (all three) or W:A:KV; 16/fp = full")
        p.add_argument("--post-bits", type=Int(2, 15).list(unique=True), default=[4],
                       help="P_post bit widths")
        p.add_argument("--seeds", type=Int(0).list(unique=True), default=[0])
        p.add_argument("--ptq-method", default="gptq", choices=("gptq", "rtn"))

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        c = sub.add_parser("create", help="create the sweep study (once)")
        self._grid_args(c)
        r = sub.add_parser("run", help="create the sweep and work on it from this machine")
        self._grid_args(r)
        r.add_argument("--workers", type=Int(1, 256), default=1,
                       help="worker processes on this machine (e.g. one per core)")
        w = sub.add_parser("work", help="work on an existing sweep until it is done")
        w.add_argument("--storage", required=True)
        w.add_argument("--name", default="precision-sweep")
        w.add_argument("--heartbeat", type=Real(0), default=10.0)
        t = sub.add_parser("table", help="export the runs table (CSV or Parquet)")
        t.add_argument("--storage", required=True)
        t.add_argument("--name", default="precision-sweep")
        t.add_argument("--out", type=OutputFile(".csv", ".parquet"), default=None,
                       help="runs.csv or runs.parquet (default: print)")
        t.add_argument("--rows", default="all", choices=("all", "trained", "ptq"),
                       help="all rows; only post_bits=inf (for 'precision'); only PTQ rows")
        t.add_argument("--include-failed", action="store_true",
                       help="keep diverged runs (NaN loss); off so that the table fits as is")
        for p in (c, r, w, t):
            p.add_argument("--json", action="store_true")

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "action", None)
        if action is None:
            return super().run(args)
        from fmlab.quant import create_sweep, run_sweep_worker, sweep_table

        if action == "create":
            spec = self._spec(args)
            create_sweep(spec, args.storage, args.name)
            emit({"study": args.name, "n_grid": spec.n_grid}, as_json=args.json,
                 text=f"created sweep {args.name!r} with {spec.n_grid} runs")
            return 0
        if action == "run":
            from fmlab.quant import run_sweep

            run_sweep(self._spec(args), args.storage, args.name, workers=args.workers)
        if action == "work":
            n = run_sweep_worker(args.storage, args.name, heartbeat=args.heartbeat)
            emit({"runs": n}, as_json=args.json, text=f"this worker ran {n} run(s)")
            return 0
        frame = sweep_table(args.storage, args.name,
                            include_failed=getattr(args, "include_failed", False))
        rows = getattr(args, "rows", "all")
        if len(frame) and rows != "all":
            trained = frame["post_bits"].map(math.isinf)
            frame = frame[trained] if rows == "trained" else frame[~trained]
        out = getattr(args, "out", None)
        if out:
            from fmlab.quant import write_table

            write_table(frame, out)
        cols = [c for c in ("n_params", "n_tokens", "w_bits", "a_bits", "kv_bits", "post_bits",
                            "loss", "status") if c in frame]
        emit(frame.to_dict("records"), as_json=args.json,
             text=(frame[cols].to_string(index=False) if len(frame) else "(no runs)")
             + (f"\nwrote {out}" if out else ""))
        return 0

    @staticmethod
    def _spec(args: argparse.Namespace) -> Any:
        from fmlab.quant import SweepSpec

        models = [{"d_model": d, "n_layers": args.n_layers, "n_heads": args.n_heads}
                  for d in args.d_model]
        return SweepSpec(models=models, n_tokens=args.tokens, train_bits=args.train_bits,
                         post_bits=args.post_bits, seeds=args.seeds,
                         ptq_method=args.ptq_method)
