"""``fmlab models`` and ``fmlab data``: what the offline zoo holds and what is missing."""

from __future__ import annotations

import argparse

from fmlab.cli._base import Command, add_action, emit


class ModelsCommand(Command):
    name = "models"
    help = "The offline model zoo: list models, show one, convert one into the cache."
    epilog = (
        "Examples:\n  fmlab models list                     # installed or missing, cached or not\n"
        "  fmlab models list 'tiny-*' --json\n"
        "  fmlab models info smollm2-135m-instruct\n"
        "  fmlab models prepare smollm2-135m-instruct   # one-off GGUF -> safetensors conversion\n"
        "  fmlab models prepare clip-emoji-0            # train fmlab's own model once (cached)\n"
        "  fmlab models info clip-emoji-0               # its model card once prepared"
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        p = add_action(sub, "list", "list the zoo (default action)")
        p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'tiny-*'")
        p = add_action(sub, "info", "describe one model")
        p.add_argument("name", help="zoo name")
        p = add_action(sub, "prepare", "convert a GGUF model, or train a model fmlab trains "
                       "itself (clip-emoji-*, captioner-emoji), into the verified cache")
        p.add_argument("name", help="zoo name of a causal LM or a trainable model")
        parser.set_defaults(action="list", pattern=None, json=False)

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.models import list_models, model_info

        if args.action == "prepare":
            from fmlab.models import prepare_model

            path = prepare_model(args.name)
            emit({"name": args.name, "cache_path": str(path)}, as_json=args.json,
                 text=f"{args.name}: ready in {path}")
            return 0
        if args.action == "info":
            minfo = model_info(args.name)
            info = minfo.to_dict()
            text = "\n".join(
                f"{k:12s} {v if v not in ((), None) else '-'}" for k, v in info.items()
                if k != "card"
            )
            if minfo.trainable:
                from pathlib import Path

                card = Path(str(minfo.cache_path)) / "MODEL_CARD.md"
                text += ("\n\n" + card.read_text() if minfo.cached and card.is_file() else
                         f"\n\nNot prepared yet; train it once with: fmlab models prepare "
                         f"{args.name}")
                if minfo.kind == "dual-encoder" and minfo.cached:
                    from fmlab.models._recipes import agreement_markdown, member_agreement

                    agreement = member_agreement()
                    if agreement is not None:
                        info["agreement"] = agreement
                        text += "\n" + agreement_markdown(agreement)
            emit(info, as_json=args.json, text=text)
            return 0
        infos = [model_info(n) for n in list_models(args.pattern)]
        lines = [f"{'NAME':23s} {'KIND':17s} {'CACHED':7s} STATUS"]
        for i in infos:
            status = "available" if i.available else f"missing; install: {i.install}"
            if i.trainable and i.available:
                status = "prepared" if i.cached else "trainable offline, not prepared"
            cached = ("yes" if i.cached else "no") if i.cache_path else "-"
            lines.append(f"{i.name:23s} {i.kind:17s} {cached:7s} {status}")
        emit([i.to_dict() for i in infos], as_json=args.json, text="\n".join(lines))
        return 0


class DataCommand(Command):
    name = "data"
    help = "The offline data zoo: list datasets, show one, verify checksums."
    epilog = (
        "Examples:\n  fmlab data list                     # available or missing + how to get it\n"
        "  fmlab data list 'cf-*' --json\n"
        "  fmlab data info stsb\n"
        "  fmlab data verify mnist fashion-mnist   # load and check SHA-256 / MD5"
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        p = add_action(sub, "list", "list the zoo (default action)")
        p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'cf-*'")
        p = add_action(sub, "info", "describe one dataset: schema, source, files, install")
        p.add_argument("name", help="zoo name")
        p = add_action(sub, "verify", "load datasets, verifying every file's checksum")
        p.add_argument("names", nargs="*", metavar="NAME", help="names or patterns (default: all)")
        parser.set_defaults(action="list", pattern=None, json=False)

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.data import dataset_info, list_datasets

        if args.action == "info":
            info = dataset_info(args.name).to_dict()
            text = "\n".join(f"{k:12s} {v if v not in ((), '', None) else '-'}"
                             for k, v in info.items())
            emit(info, as_json=args.json, text=text)
            return 0
        if args.action == "verify":
            from fmlab.data import load_dataset
            from fmlab.exceptions import DataUnavailableError

            names = sorted({n for p in (args.names or ["*"]) for n in list_datasets(p)})
            if not names:
                raise ValueError(f"No dataset matches {args.names}. See 'fmlab data list'.")
            rows = []
            for name in names:
                for split in dataset_info(name).splits:
                    try:
                        rows.append({"name": name, "split": split, "ok": True,
                                     "n": len(load_dataset(name, split)), "error": ""})
                    except DataUnavailableError as exc:
                        rows.append({"name": name, "split": split, "ok": False, "n": 0,
                                     "error": str(exc)})
            lines = [f"{r['name']:18s} {r['split']:10s} "
                     + (f"ok ({r['n']:,})" if r["ok"] else f"FAILED: {r['error']}") for r in rows]
            emit(rows, as_json=args.json, text="\n".join(lines))
            return 0 if all(r["ok"] for r in rows) else 1
        infos = [dataset_info(n) for n in list_datasets(args.pattern)]
        lines = [f"{'NAME':18s} {'KIND':6s} {'STATUS':10s} SIZE"]
        for i in infos:
            status = "available" if i.available else "MISSING"
            lines.append(f"{i.name:18s} {i.kind:6s} {status:10s} {i.size}")
            if not i.available:
                lines.append(f"{'':18s} get it: {i.install}")
        emit([i.to_dict() for i in infos], as_json=args.json, text="\n".join(lines))
        return 0
