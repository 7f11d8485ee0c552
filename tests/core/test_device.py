"""The one device/dtype module and ``eval_mode``."""

from __future__ import annotations

import pytest
import torch

from fmlab._device import eval_mode, resolve_device, resolve_dtype


@pytest.mark.parametrize(("dtype", "expected"), [
    (None, torch.float32), ("float16", torch.float16), ("torch.bfloat16", torch.bfloat16),
    (torch.float64, torch.float64),
])
def test_resolve_dtype(dtype, expected):
    assert resolve_dtype(dtype) is expected


def test_auto_dtype_is_a_floating_type_for_the_device():
    assert resolve_dtype("auto", "cpu") in (torch.float32, torch.bfloat16)
    assert resolve_dtype(None, "cpu", default="auto") is resolve_dtype("auto", "cpu")


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: resolve_dtype("fp8", owner="f"), r"'dtype' parameter of f must be None"),
    (lambda: resolve_dtype(torch.int64, owner="f"), r"'dtype' parameter of f"),
    (lambda: resolve_device("gpu0", owner="g"), r"'device' parameter of g must be a torch device"),
])
def test_errors_name_the_parameter_and_owner(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_resolve_device_defaults():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")


def test_eval_mode_restores_each_module_and_grad_mode_even_on_error():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    net[0].eval()  # a mixed model: the linear layer frozen in eval mode
    with eval_mode(net):
        assert not net.training and not net[1].training
        assert not torch.is_grad_enabled()
    assert net.training and not net[0].training and net[1].training
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("boom")
    assert net.training and torch.is_grad_enabled()
    with eval_mode(net, grad=True):
        assert torch.is_grad_enabled() and not net.training

