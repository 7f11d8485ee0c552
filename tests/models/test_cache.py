"""The verified conversion cache: built once, atomic, corrupt or half-written copies rebuilt."""

from __future__ import annotations

import json
import os

import pytest

from fmlab._cache import MANIFEST, CacheRebuildWarning, cached_build, check_cache


@pytest.fixture(scope="module")
def tiny_files():
    """Files of a real saved model (tiny Llama, safetensors + tokenizer), built once."""
    from fmlab.models import tiny_causal_lm

    model, tokenizer = tiny_causal_lm(seed=0)
    return model, tokenizer


@pytest.fixture
def builder(tiny_files):
    """A build function that saves the tiny model and counts how often it ran."""
    model, tokenizer = tiny_files
    calls = []

    def build(folder):
        calls.append(folder)
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    build.calls = calls
    return build


KEY = {"model": "tiny", "source_size": 123}


def test_builds_once_then_reuses(tmp_path, builder):
    path = tmp_path / "models" / "tiny"
    assert cached_build(path, builder, key=KEY) == path
    assert cached_build(path, builder, key=KEY) == path
    assert len(builder.calls) == 1
    manifest = json.loads((path / MANIFEST).read_text())
    assert "model.safetensors" in manifest["files"]
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert check_cache(path, KEY) is None


def test_loads_back_with_load_causal_lm(tmp_path, builder, tiny_files):
    import torch

    from fmlab.models import load_causal_lm

    path = cached_build(tmp_path / "tiny", builder, key=KEY)
    model, tokenizer = load_causal_lm(str(path))
    ids = tokenizer(["the cache"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, tiny_files[0](ids).logits)


@pytest.mark.parametrize("victim", ["model.safetensors", "tokenizer.json", "config.json"])
def test_corrupt_file_triggers_rebuild(tmp_path, builder, victim):
    path = cached_build(tmp_path / "tiny", builder, key=KEY)
    target = path / victim
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only the hash can tell
    target.write_bytes(bytes(data))
    assert "SHA-256" in check_cache(path, KEY)
    with pytest.warns(CacheRebuildWarning, match=f"{victim} fails its SHA-256 check"):
        cached_build(path, builder, key=KEY)
    assert len(builder.calls) == 2
    assert check_cache(path, KEY) is None


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: (p / MANIFEST).unlink(), "fmlab-manifest.json is missing"),
        (lambda p: (p / MANIFEST).write_text("{not json"), "unreadable"),
        (lambda p: (p / "tokenizer.json").unlink(), "files differ from the manifest"),
        (lambda p: (p / "stray.bin").write_bytes(b"x"), "unexpected \\['stray.bin'\\]"),
        (lambda p: open(p / "model.safetensors", "ab").write(b"\0"), "bytes, expected"),
    ],
)
def test_incomplete_or_altered_copy_is_rebuilt(tmp_path, builder, damage, reason):
    path = cached_build(tmp_path / "tiny", builder, key=KEY)
    damage(path)
    assert check_cache(path, KEY) is not None
    with pytest.warns(CacheRebuildWarning, match=reason):
        cached_build(path, builder, key=KEY)
    assert len(builder.calls) == 2
    assert check_cache(path, KEY) is None


def test_stale_key_is_rebuilt(tmp_path, builder):
    path = cached_build(tmp_path / "tiny", builder, key=KEY)
    with pytest.warns(CacheRebuildWarning, match="different source"):
        cached_build(path, builder, key={**KEY, "source_size": 124})
    assert len(builder.calls) == 2


def test_half_written_tmp_dir_is_ignored_and_removed(tmp_path, builder):
    # what a build killed mid-way leaves: a temporary sibling with partial files, no manifest
    half = tmp_path / ".tiny.abc123.tmp"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    path = tmp_path / "tiny"
    assert check_cache(path, KEY) == "not built yet"
    cached_build(path, builder, key=KEY)
    assert not half.exists()
    assert "partial" not in {p.name for p in path.iterdir()}
    assert check_cache(path, KEY) is None


def test_failed_build_leaves_nothing(tmp_path):
    def broken(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cached_build(tmp_path / "tiny", broken, key=KEY)
    assert os.listdir(tmp_path) == [".tiny.lock"]


def test_verified_once_per_process_unless_changed(tmp_path, builder):
    path = cached_build(tmp_path / "tiny", builder, key=KEY)
    assert check_cache(path, KEY) is None
    # a rewrite with new content changes size or mtime, so it is hashed again
    target = path / "config.json"
    text = target.read_text()
    target.write_text(text.replace("{", "{ ", 1))
    assert check_cache(path, KEY) is not None
