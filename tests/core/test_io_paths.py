from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmlab._io import atomic_dir, atomic_write, file_sha256, write_json
from fmlab._paths import cache_dir, data_dir, shared_dir


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write('{"x": 2')  # half-written
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_atomic_dir_replaces_whole_folder_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "study"
    with atomic_dir(target) as d:
        (d / "metrics.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as d:
        (d / "partial.png").write_bytes(b"x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["metrics.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["study"]


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    f = tmp_path / "f.bin"
    f.write_bytes(b"fmlab" * 1000)
    assert file_sha256(f) == hashlib.sha256(b"fmlab" * 1000).hexdigest()


def test_cache_and_data_dirs_follow_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("FMLAB_DATA_DIR", raising=False)
    assert cache_dir("models") == tmp_path / "c" / "models"
    assert data_dir("mnist") == tmp_path / "c" / "data" / "mnist"
    monkeypatch.delenv("FMLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(create=False) == tmp_path / "xdg" / "fmlab"


def test_shared_dir_is_configurable(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sts").mkdir()
    monkeypatch.setenv("FMLAB_SHARED", str(tmp_path))
    assert shared_dir("sts") == tmp_path / "sts"  # the configured root is searched first
    assert shared_dir() == tmp_path
    # a file the configured root lacks comes from the package's own reference files
    shipped = shared_dir("scaling-law-fitting", "epoch_chinchilla_svg_extracted_data.csv")
    assert shipped is not None and "_reference" in shipped.parts
    monkeypatch.setenv("FMLAB_SHARED", str(tmp_path / "missing"))
    assert shared_dir() is None and shared_dir("no-such-folder") is None


def test_atomic_results_follow_the_umask_not_mkstemp_modes(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {})
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
