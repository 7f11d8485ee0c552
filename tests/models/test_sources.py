"""The one name resolver of the model loaders (fmlab.models._zoo.resolve_source)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmlab.exceptions import ModelUnavailableError, UnknownNameError
from fmlab.models import load_captioner, load_causal_lm, load_clip, load_sentence_encoder
from fmlab.models._zoo import ModelSource, resolve_source

LOADERS = [load_causal_lm, load_sentence_encoder, load_clip, load_captioner]


def _resolve(arg, **kw):
    kw = {"owner": "f", "zoo": ["tiny-llama"], "what": "a tiny LM", "plural": "tiny LMs",
          "missing": "nothing at {text}", **kw}
    return resolve_source(arg, **kw)


def test_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _resolve("tiny-llama") == ModelSource("zoo", "tiny-llama")
    hub = _resolve("hf:org/name")
    assert hub == ModelSource("hub", "org/name") and hub.local_only  # switched offline
    assert _resolve(tmp_path) == ModelSource("dir", str(tmp_path))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert _resolve(str(gguf), gguf=True).kind == "gguf"
    with pytest.raises(ModelUnavailableError, match=r"nothing at '.*m\.gguf'"):
        _resolve(str(gguf))  # not a loader of .gguf files
    # a PathLike is never a zoo name: a relative folder named like a zoo model is a folder
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-llama").mkdir()
    assert _resolve(Path("tiny-llama")) == ModelSource("dir", "tiny-llama")


@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "arg, error, message",
    [
        ("org/name", ValueError, r"looks like a Hugging Face repo id\. Use 'hf:org/name'"),
        ("hf:not a repo", ValueError, r"Invalid Hugging Face repo id 'not a repo'"),
        ("efficientnet-lite0", ValueError, r"'efficientnet-lite0' is a image-classifier, not a"),
        ("no-such-model", UnknownNameError, r"Unknown model 'no-such-model'"),
        ("/no/such/folder", ModelUnavailableError, r"'/no/such/folder'"),
        (3.5, TypeError, r"'name_or_path' parameter of load_"),
    ],
)
def test_every_loader_resolves_names_alike(loader, arg, error, message) -> None:
    with pytest.raises(error, match=message):
        loader(arg)
