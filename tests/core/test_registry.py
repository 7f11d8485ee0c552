from __future__ import annotations

import importlib

import pytest

from fmlab._registry import Registry, plugin_group
from fmlab.exceptions import UnknownNameError


def test_register_get_and_list_with_pattern() -> None:
    reg: Registry[dict] = Registry("number format")
    reg.register("int4", {"bits": 4})
    reg.register("int8", {"bits": 8})
    reg.register("fp8_e4m3", {"bits": 8})
    assert reg.get("int8") == {"bits": 8}
    assert reg.names("int*") == ["int4", "int8"]
    assert "fp8_e4m3" in reg and len(reg) == 3


def test_unknown_name_suggests_close_matches_and_lists_available() -> None:
    reg: Registry[int] = Registry("number format")
    reg.register("int4", 4)
    reg.register("int8", 8)
    with pytest.raises(UnknownNameError) as info:
        reg.get("int3")
    msg = str(info.value)
    assert msg.startswith("Unknown number format 'int3'. Did you mean: ")
    assert set(msg.split("Did you mean: ")[1].split("?")[0].split(", ")) == {"int4", "int8"}
    assert "\nAvailable: int4, int8" in msg
    # it is both a KeyError and a ValueError, and its message is not escaped like a KeyError's
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_lazy_entry_is_imported_only_on_get() -> None:
    reg: Registry[object] = Registry("thing")
    reg.register("dumps", "json:dumps")
    entry = reg.entry("dumps")
    assert entry.is_lazy
    import json

    assert reg.get("dumps") is json.dumps
    assert not entry.is_lazy


def test_collision_is_an_error_unless_override() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered.*override=True"):
        reg.register("a", 2)
    reg.register("a", 2, override=True)
    assert reg.get("a") == 2


def test_decorator_registration_and_description_from_docstring() -> None:
    reg: Registry[type] = Registry("law")

    @reg.register("mine")
    class MyLaw:
        """A law of mine.

        More text."""

    assert reg.get("mine") is MyLaw
    assert reg.entry("mine").description == "A law of mine."


# -- one validating factory and one plugin-group rule -------------------------------------------


@pytest.mark.parametrize(
    ("create", "name", "params", "pattern"),
    [
        ("fmlab.scaling:create_law", "chinchilla", {"n_start": 8},
         r"Invalid parameter\(s\) \['n_start'\] for scaling law 'chinchilla' \(ChinchillaLaw\)"),
        ("fmlab.scaling:create_law", "chinchilla", {"n_starts": 0}, r"'n_starts' parameter"),
        ("fmlab.scaling:create_law", "ptq", {"loss": "l1"}, r"loss"),
        ("fmlab.ood:create_estimator", "atc", {"score": "entropy"}, r"score"),
        ("fmlab.ood:create_estimator", "aline-d", {"epsilon": 0.1}, r"Valid parameters are"),
    ],
)
def test_factories_validate_names_and_values(create, name, params, pattern):
    module, _, attr = create.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    with pytest.raises(ValueError, match=pattern):
        factory(name, **params)


def test_create_builds_and_refuses_data_entries():
    reg = Registry("widget")
    reg.register("dict", {"a": 1})
    reg.register("pair", lambda *, a=1: ("pair", a))
    assert reg.create("pair", a=2) == ("pair", 2)
    with pytest.raises(TypeError, match="use get"):
        reg.create("dict")
    with pytest.raises(ValueError, match=r"Invalid parameter\(s\) \['b'\]"):
        reg.create("pair", b=1)


@pytest.mark.parametrize(("kind", "group"), [
    ("scaling law", "scaling_laws"), ("OOD estimator", "ood_estimators"), ("study", "studies"),
    ("model", "models"), ("quantization format", "quantization_formats"), ("attack", "attacks"),
])
def test_plugin_group_is_one_rule(kind, group):
    assert Registry(kind).group == plugin_group(kind) == group


def test_explicit_group_must_follow_the_rule():
    assert Registry("autoft loss term", group="autoft_loss_terms").group == "autoft_loss_terms"
    with pytest.raises(ValueError, match=r"one rule.*Registry\('autoft loss term'\)"):
        Registry("loss term", group="autoft_loss_terms")
