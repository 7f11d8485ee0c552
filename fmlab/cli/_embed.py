"""``fmlab embed``: encode a text file, evaluate encoders on STS / word similarity / a probe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fmlab._validation import InputFile, Int, OutputFile
from fmlab.cli._base import Command, UsageError, emit

_SENTENCE_ENCODERS = ("all-minilm-l6-v2",)


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _build_encoder(model: str, template: str, pooling: str, dtype: str, batch_size: int,
                   max_length: int | None) -> Any:
    if model in _SENTENCE_ENCODERS:
        from fmlab.models import load_sentence_encoder

        return load_sentence_encoder(model)
    from fmlab.embeddings import EchoEncoder

    return EchoEncoder.from_pretrained(model, template=template, pooling=pooling, dtype=dtype,
                                       batch_size=batch_size, max_length=max_length)


def _check_models(names: list[str]) -> None:
    """Unknown zoo names fail before any model loads (``hf:`` ids and folders pass through)."""
    from fmlab.models import list_models

    for name in names:
        if name.startswith("hf:") or Path(name).expanduser().exists():
            continue
        if name not in list_models():
            raise UsageError(f"argument --model: unknown model {name!r}; use a zoo name "
                             f"({', '.join(list_models())}), 'hf:org/name' or a folder.")


def _check_templates(names: list[str]) -> None:
    from fmlab.embeddings import TEMPLATES

    for name in names:
        if name not in TEMPLATES.names():
            raise UsageError(f"argument --template: unknown template {name!r}; choose from "
                             f"{', '.join(TEMPLATES.names())} (see 'fmlab embed templates').")


class EmbedCommand(Command):
    name = "embed"
    help = "Sentence embeddings from causal LMs (echo embeddings): encode files, evaluate."
    epilog = (
        "Examples:\n"
        "  fmlab embed encode sentences.txt --model smollm2-135m-instruct --template echo "
        "--out emb.npy\n"
        "  fmlab embed eval --tasks stsb,sickr --model smollm2-135m-instruct "
        "--template echo,classical --limit 300\n"
        "  fmlab embed eval --tasks stsb --model all-minilm-l6-v2 --json\n"
        "  fmlab embed templates\n"
        "FILE holds one text per line (an empty line encodes to the zero vector)."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")

        def common(p: argparse.ArgumentParser) -> None:
            p.add_argument("--model", default="smollm2-135m-instruct",
                           help="causal LM zoo name, 'hf:org/name' or a directory "
                                "(eval also takes all-minilm-l6-v2; comma-separate several)")
            p.add_argument("--template", default="echo",
                           help="template name(s): echo, classical, echo.release, ... "
                                "(comma-separated for eval)")
            p.add_argument("--pooling", default="mean", choices=("mean", "last"))
            p.add_argument("--dtype", default="auto",
                           choices=("auto", "float32", "bfloat16", "float16"),
                           help="auto = bf16 on CPUs/GPUs with native bf16, else fp32")
            p.add_argument("--batch-size", type=Int(1), default=32)
            p.add_argument("--max-length", type=Int(1), default=None,
                           help="prompt length cap in tokens (copies are cut alike)")
            p.add_argument("--json", action="store_true", help="print JSON")

        enc = sub.add_parser("encode", help="embed the lines of a text file into a .npy file",
                             description="Embed each line of FILE; writes an (n, d) float32 .npy "
                                         "atomically, resuming an interrupted run.")
        enc.add_argument("file", type=InputFile(), help="text file (UTF-8), one text per line")
        enc.add_argument("--out", type=OutputFile(".npy"), required=True,
                         help="output .npy file")
        enc.add_argument("--normalize", action="store_true", help="unit-norm embeddings")
        enc.add_argument("--prompt-type", choices=("query", "document"), default="query")
        common(enc)

        ev = sub.add_parser("eval", help="score encoders on STS, word similarity, a probe",
                            description="Spearman x100 for stsb/sickr/wordsim353/simlex999, "
                                        "probe accuracy x100 for rotten-tomatoes.")
        ev.add_argument("--tasks", default="stsb,sickr",
                        help="comma-separated: stsb, sickr, wordsim353, simlex999, "
                             "rotten-tomatoes")
        ev.add_argument("--limit", type=Int(1), default=None,
                        help="score a seeded random subset of this many pairs/examples")
        ev.add_argument("--seed", type=Int(0), default=0)
        common(ev)

        sub.add_parser("templates", help="list the prompt templates")

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "action", None)
        if action == "templates":
            return self._templates()
        if action == "encode":
            return self._encode(args)
        if action == "eval":
            return self._eval(args)
        return super().run(args)

    def _templates(self) -> int:
        from fmlab.embeddings import TEMPLATES

        for entry in TEMPLATES.entries():
            t = entry.target
            print(f"{entry.name:20s} {entry.description}")
            print(f"{'':20s} query:    {t.query!r}")  # type: ignore[union-attr]
            if t.document:  # type: ignore[union-attr]
                print(f"{'':20s} document: {t.document!r}")  # type: ignore[union-attr]
        return 0

    def _encode(self, args: argparse.Namespace) -> int:
        path = Path(args.file)
        if args.model in _SENTENCE_ENCODERS:
            raise UsageError("embed encode takes a causal LM; for all-minilm-l6-v2 use "
                             "sentence-transformers directly.")
        _check_models([args.model])  # before the model loads (seconds)
        _check_templates([args.template])
        try:
            texts = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                             "convert it, e.g. iconv -f latin1 -t utf-8.") from None
        encoder = _build_encoder(args.model, args.template, args.pooling, args.dtype,
                                 args.batch_size, args.max_length)
        out = encoder.encode_corpus(texts, args.out, normalize_embeddings=args.normalize,
                                    prompt_type=args.prompt_type, batch_size=args.batch_size)
        info = {"out": str(out), "n": len(texts), "dim": encoder.get_sentence_embedding_dimension(),
                "model": args.model, "template": encoder.template.name,
                "pooling": args.pooling, "dtype": str(encoder.dtype).replace("torch.", ""),
                "truncated": encoder.n_truncated_}
        emit(info, as_json=args.json,
             text=f"wrote {info['n']} x {info['dim']} embeddings to {out}")
        return 0

    def _eval(self, args: argparse.Namespace) -> int:
        from fmlab.embeddings import evaluate

        models = _split_list(args.model)
        templates = _split_list(args.template)
        if not models or not templates:
            raise UsageError("--model and --template need at least one name each.")
        _check_models(models)
        _check_templates(templates)
        from fmlab.embeddings._evaluate import TASKS

        tasks = _split_list(args.tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if not tasks or unknown:
            raise UsageError(f"argument --tasks: unknown task(s) {unknown or [args.tasks]}; "
                             f"choose from {', '.join(TASKS)}.")
        rows: list[dict[str, Any]] = []
        for model in models:
            for template in ([""] if model in _SENTENCE_ENCODERS else templates):
                encoder = _build_encoder(model, template or "echo", args.pooling, args.dtype,
                                         args.batch_size, args.max_length)
                for r in evaluate(encoder, args.tasks, n=args.limit, seed=args.seed,
                                  batch_size=args.batch_size):
                    rows.append({"model": model, "template": template or "-",
                                 "pooling": args.pooling if template else "-", **r.to_dict()})
        lines = [f"{'model':24s} {'template':12s} {'task':16s} {'metric':9s} {'score':>6s} "
                 f"{'n':>6s} {'sec':>6s}"]
        for r in rows:
            lines.append(f"{r['model']:24s} {r['template']:12s} {r['task']:16s} "
                         f"{r['metric']:9s} {r['score']:6.1f} {r['n']:6d} {r['seconds']:6.1f}")
        emit(rows, as_json=args.json, text="\n".join(lines))
        return 0
