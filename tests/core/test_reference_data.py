"""The package stands on its own: the shipped reference tables load without a shared/ folder, and
a file the licences keep out says how to get it."""

from __future__ import annotations

import pytest

import fmlab._paths as paths
from fmlab.exceptions import DataUnavailableError


@pytest.fixture()
def no_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a clone or an install without the project's shared/ folder beside it."""
    monkeypatch.delenv("FMLAB_SHARED", raising=False)
    monkeypatch.setattr(paths, "_checkout_shared", lambda: None)


def test_shipped_tables_load_without_shared(no_shared: None) -> None:
    from fmlab.data import load_dataset
    from fmlab.scaling import chinchilla_runs, openclip_curves, tmars_preset

    assert len(chinchilla_runs("epoch")) == 240
    assert len(chinchilla_runs("kyo", drop_highest=0)) == 234
    assert set(openclip_curves().model) >= {"B-32", "L-14"}
    assert tmars_preset("utility").pools_[0] == "tmars_top0to10p"
    assert len(load_dataset("stsb", split="test")) == 1379  # SHA-256 checked on load
    assert len(load_dataset("purple-questions", split="test")) == 285
    assert len(load_dataset("memo-trap")) == 860
    for folder in ("scaling-law-fitting", "data-filtering-scaling", "sts", "purple-problem",
                   "autoft", "mteb/instructions"):
        assert paths.shared_dir(*folder.split("/"), "PROVENANCE.md") is not None, folder
    for licence in ("purple-problem/LICENSE", "context-parametric-inversion/memo-trap/LICENSE",
                    "mteb/instructions/LICENSE-llm2vec"):
        assert paths.shared_dir(*licence.split("/")) is not None, licence


def test_files_the_licences_keep_out_say_how_to_get_them(no_shared: None) -> None:
    from fmlab.data import dataset_info, load_dataset

    assert paths.shared_dir("sts", "sickr.tsv") is None
    with pytest.raises(DataUnavailableError, match=r"sickr\.tsv is missing.*FMLAB_SHARED.*SICK-R"):
        load_dataset("sickr")
    info = dataset_info("cf-world-facts")
    assert not info.available and "FMLAB_SHARED" in info.install
    readme = (paths._BUNDLED / "README.md").read_text()
    assert "sickr.tsv" in readme and "non-commercial" in readme
