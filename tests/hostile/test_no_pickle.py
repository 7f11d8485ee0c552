"""Nothing user-supplied is ever unpickled: a pickle that would create a marker file is planted in
every file argument fmlab accepts (under every suffix the argument takes, and as a torch.save
archive, an object ``.npy`` and an object ``.npz``); each command must fail with a message and
the marker must not appear.

A command that reads a file joins by adding a row to ``FILE_ARGS``; ``test_every_file_argument
_is_planted`` fails until it does (it finds file arguments by their ``InputFile`` type), and
``test_file_like_arguments_declare_their_type_or_are_planted`` catches file arguments typed as
plain strings (by their help text: "file", "folder", ".json", ...).
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fmlab._validation import InputFile
from fmlab.cli import main

sys.path.insert(0, os.path.dirname(__file__))
from hostile_table import leaf_parsers, value_actions  # noqa: E402

MARKER = Path("/tmp/fmlab-pickle-ran-code")


class Evil:
    """Unpickling this creates MARKER (a harmless stand-in for arbitrary code)."""

    def __reduce__(self):
        return (exec, (f"open({str(MARKER)!r}, 'w').write('pwned')",))


def _plant(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"state": Evil()}, protocol=2))
    elif kind == "pickle5":
        path.write_bytes(pickle.dumps([Evil()], protocol=5))
    elif kind == "torch":
        import torch

        torch.save({"config": Evil(), "state_dict": {}}, path)
    elif kind == "npy-object":
        with open(path, "wb") as fh:
            np.save(fh, np.array([Evil(), 1], dtype=object), allow_pickle=True)
    elif kind == "npz-object":
        with open(path, "wb") as fh:
            np.savez(fh, id_probs=np.array([Evil()], dtype=object),
                     id_labels=np.array([Evil()], dtype=object),
                     ood_probs=np.array([Evil()], dtype=object))
    return path


KINDS = ("pickle", "pickle5", "torch", "npy-object", "npz-object")


def _valid_law(tmp: Path) -> str:
    from fmlab.scaling import ChinchillaLaw

    law = ChinchillaLaw().set_fitted_params(
        {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28})
    law.save(tmp / "law.json")
    return str(tmp / "law.json")


def _valid_ood_dir(tmp: Path) -> str:
    from fmlab.ood._files import save_outputs  # noqa: F401  (the writer of the format)

    rng = np.random.default_rng(0)
    d = tmp / "ens"
    d.mkdir(exist_ok=True)
    p = rng.dirichlet(np.ones(3), size=(3, 20)).astype(np.float32)
    np.save(d / "id_probs.npy", p)
    np.save(d / "ood_probs.npy", p)
    np.save(d / "id_labels.npy", rng.integers(0, 3, 20))
    return str(d)


# (command path, argument) -> (argv with {file} for the planted file, suffixes to plant under)
FILE_ARGS: dict[tuple[tuple[str, ...], str], tuple[list[str], tuple[str, ...]]] = {
    (("scaling", "fit"), "file"): (["scaling", "fit", "chinchilla", "{file}"],
                                   (".csv", ".tsv", ".parquet", ".json", ".jsonl")),
    (("scaling", "predict"), "model"): (["scaling", "predict", "{file}", "--set", "n_params=1e9",
                                         "--set", "n_tokens=1e10"], (".json",)),
    (("scaling", "predict"), "file"): (["scaling", "predict", "{law}", "{file}"],
                                       (".csv", ".parquet", ".json")),
    (("scaling", "plan"), "model"): (["scaling", "plan", "compute-optimal", "{file}", "--flops",
                                      "1e21"], (".json",)),
    (("ood", "predict"), "FILE"): (["ood", "predict", "{file}", "{file}", "{file}"],
                                   (".npy", ".npz", ".parquet")),
    (("ood", "predict"), "--from"): (["ood", "predict", "--from", "{file}"], (".npz",)),
    (("ood", "predict"), "--ood-labels"): (["ood", "predict", "--from", "{ood_dir}",
                                            "--ood-labels", "{file}"], (".npy", ".npz")),
    (("embed", "encode"), "file"): (["embed", "encode", "{file}", "--out", "{tmp}/e.npy"],
                                    (".txt",)),
    # not an InputFile (it also takes zoo names), but a file when it names one
    (("quant", "ptq"), "--model"): (["quant", "ptq", "--model", "{file}", "--seq-len", "16",
                                     "--eval-tokens", "64", "--calib-sequences", "2"],
                                    (".pt", ".pth", ".bin", ".ckpt", ".safetensors")),
    # zoo name, hf: id or a model folder: the folder holds only a pickled pytorch_model.bin
    (("embed", "encode"), "--model"): (["embed", "encode", "{text}", "--out", "{tmp}/e.npy",
                                        "--model", "{modeldir}"], ()),
    (("embed", "eval"), "--model"): (["embed", "eval", "--tasks", "stsb", "--limit", "2",
                                      "--model", "{modeldir}"], ()),
    (("report",), "--out"): (["report", "--out", "{dir}"], ()),
    (("attack", "image"), "--image"): (["attack", "image", "--image", "{file}", "--target", "x",
                                        "--steps", "1"], (".png", ".jpg")),
    # a zoo name or a folder; the planted file stands in for both the picture and the model
    (("attack", "image"), "--captioner"): (["attack", "image", "--image", "{file}", "--captioner",
                                            "{file}", "--target", "x", "--steps", "1"], (".png",)),
    (("agent", "tasks"), "--file"): (["agent", "tasks", "--file", "{file}"], (".json",)),
    (("agent", "run"), "--file"): (["agent", "run", "--file", "{file}"], (".json",)),
    # zoo name, hf: id or a folder (the folder holds only a pickled pytorch_model.bin)
    (("attack", "gcg"), "--model"): (["attack", "gcg", "--prompt", "hi", "--target", "x",
                                      "--num-steps", "1", "--model", "{modeldir}"], ()),
    # a built-in task name or a task YAML file
    (("jailbreak", "eval"), "--task"): (["jailbreak", "eval", "--model", "tiny-llama", "--limit",
                                         "1", "--task", "{file}"], (".yaml",)),
    # zoo name, hf: id or a folder (the folder holds only a pickled pytorch_model.bin)
    (("context", "eval"), "--model"): (["context", "eval", "--tasks", "cf_capitals", "--limit",
                                        "1", "--model", "{modeldir}"], ()),
    # a registered task name or a JSONL / JSON task file
    (("context", "eval"), "--tasks"): (["context", "eval", "--model", "tiny-llama", "--limit",
                                        "1", "--tasks", "{file}"], (".jsonl", ".json")),
    (("context", "track"), "checkpoints"): (["context", "track", "{modeldir}", "--heldout", "0",
                                             "--limit", "1"], ()),
    (("sweep", "table"), "--storage"): (["sweep", "table", "--storage", "sqlite:///{file}"],
                                        (".db",)),
    (("sweep", "create"), "--storage"): (["sweep", "create", "--storage", "sqlite:///{file}"],
                                         (".db",)),
    (("sweep", "run"), "--storage"): (["sweep", "run", "--storage", "sqlite:///{file}"],
                                      (".db",)),
    (("sweep", "work"), "--storage"): (["sweep", "work", "--storage", "sqlite:///{file}"],
                                       (".db",)),
    (("autoft", "search"), "--storage"): (["autoft", "search", "--storage", "sqlite:///{file}"],
                                          (".db",)),
    (("autoft", "work"), "--storage"): (["autoft", "work", "--storage", "sqlite:///{file}"],
                                        (".db",)),
    (("autoft", "finetune"), "--params"): (["autoft", "finetune", "--params", "{file}",
                                            "--methods", "autoft", "--steps", "1"], (".json",)),
    (("autoft", "best"), "--storage"): (["autoft", "best", "--storage", "sqlite:///{file}"],
                                        (".db",)),
}


def _file_arguments() -> set[tuple[tuple[str, ...], str]]:
    found = set()
    for path, parser in leaf_parsers():
        for a in value_actions(parser):
            if isinstance(a.type, InputFile):
                name = max(a.option_strings, key=len) if a.option_strings else (
                    a.metavar if isinstance(a.metavar, str) else a.dest)
                found.add((path, name))
    return found


def test_every_file_argument_is_planted() -> None:
    missing = _file_arguments() - set(FILE_ARGS)
    assert not missing, f"add rows to FILE_ARGS for {sorted(missing)}"


# Arguments whose help mentions files or folders but that read none.
NOT_FILE_ARGS = {(("scaling", "fit"), "--col"), (("scaling", "predict"), "--col"),
                 (("agent", "observe"), "path")}  # a URL path on the offline shop site
_FILEISH = re.compile(r"\bfiles?\b|\.json|\.csv|\.npy|\.ya?ml|\.safetensors|\.pt\b|folder|"
                      r"director|\bpath\b", re.I)


def test_file_like_arguments_declare_their_type_or_are_planted() -> None:
    """A flag that reads a file or folder but is typed as a plain string escapes the planting
    above: declare it as ``type=InputFile(...)`` (read) or ``type=OutputFile(...)`` (written), or
    add a row to ``FILE_ARGS`` when it also takes names (``--model NAME_OR_FOLDER``)."""
    from fmlab._validation import OutputFile

    loose = []
    for path, parser in leaf_parsers():
        for a in value_actions(parser):
            if isinstance(a.type, (InputFile, OutputFile)):
                continue
            name = max(a.option_strings, key=len) if a.option_strings else (
                a.metavar if isinstance(a.metavar, str) else a.dest)
            text = " ".join(str(x) for x in (a.dest, a.metavar, a.help) if x)
            if _FILEISH.search(text) and (path, name) not in set(FILE_ARGS) | NOT_FILE_ARGS:
                loose.append(f"{' '.join(path)} {name}")
    assert not loose, (f"{loose}: type these InputFile/OutputFile (fmlab._validation) or add "
                       "them to FILE_ARGS in tests/hostile/test_no_pickle.py")


@pytest.mark.parametrize("key", sorted(FILE_ARGS, key=str), ids=lambda k: " ".join(
    (*k[0], k[1])))
def test_planted_pickle_never_runs(key, tmp_path, capsys) -> None:
    argv, suffixes = FILE_ARGS[key]
    subs = {"tmp": str(tmp_path)}
    if any("{law}" in a for a in argv):
        subs["law"] = _valid_law(tmp_path)
    if any("{ood_dir}" in a for a in argv):
        subs["ood_dir"] = _valid_ood_dir(tmp_path)
    tried = 0
    targets: list[tuple[str, dict[str, str]]] = []
    for suffix in suffixes:
        for kind in KINDS:
            f = _plant(tmp_path / f"{kind}{suffix}", kind)
            targets.append((f"{kind}{suffix}", {"file": str(f)}))
    if "{modeldir}" in " ".join(argv):  # a model folder whose only weights are a pickle
        md = tmp_path / "model"
        _plant(md / "pytorch_model.bin", "torch")
        (md / "config.json").write_text('{"model_type": "llama"}')
        (tmp_path / "t.txt").write_text("hello\n")
        subs["text"] = str(tmp_path / "t.txt")
        targets.append(("model folder", {"modeldir": str(md)}))
    if "{dir}" in " ".join(argv):  # a results folder holding pickles under the names it reads
        d = tmp_path / "results"
        for kind in KINDS:
            _plant(d / f"study-{kind}" / "metrics.json", kind)
        targets.append(("results folder", {"dir": str(d)}))
    for label, extra in targets:
        MARKER.unlink(missing_ok=True)
        args = [a.format(**subs, **extra) if "{" in a else a for a in argv]
        code = main(args)
        err = capsys.readouterr().err
        assert not MARKER.exists(), f"{' '.join(key[0])} {key[1]} ran a pickle ({label})"
        assert code == 1, f"{label}: exit {code} (the file must be read, and refused); {err!r}"
        assert "Traceback" not in err and err.strip(), label
        tried += 1
    assert tried >= 1


def test_quant_ptq_dir_with_pickled_weights_is_refused(tmp_path, capsys) -> None:
    """A model folder holding only pytorch_model.bin (a pickle) is refused by the HF loader."""
    import transformers  # noqa: F401 - fmlab[hf] is required for this path: a missing one fails
    d = tmp_path / "model"
    _plant(d / "pytorch_model.bin", "torch")
    (d / "config.json").write_text('{"model_type": "llama"}')
    MARKER.unlink(missing_ok=True)
    code = main(["quant", "ptq", "--model", str(d), "--eval-tokens", "64", "--seq-len", "16"])
    err = capsys.readouterr().err
    assert not MARKER.exists()
    assert code == 1 and "safetensors" in err
