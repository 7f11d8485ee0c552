"""Number formats and fake quantization: exactness against torch casts and exhaustive tables."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fmlab.exceptions import UnknownNameError
from fmlab.quant import QuantFormat, fake_quantize, get_format, list_formats, make_format
from fmlab.quant._fake import quantize_values

# Exhaustive tables of non-negative representable values (OCP MX v1.0 spec, Tables 1-2).
FP4_E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
FP6_E2M3 = [k / 8 for k in range(8)] + [2.0**e * (1 + k / 8) for e in range(0, 3) for k in range(8)]
FP6_E3M2 = [k / 16 for k in range(4)] + [2.0**e * (1 + k / 4) for e in range(-2, 5) for k in range(4)]


def _all_bit_patterns(e: int, m: int) -> list[float]:
    """Decode every bit pattern of a no-specials ExMy format independently of the library."""
    bias = 2 ** (e - 1) - 1
    vals = set()
    for code in range(2 ** (e + m)):
        ef, mf = code >> m, code & (2**m - 1)
        v = (mf / 2**m) * 2.0 ** (1 - bias) if ef == 0 else (1 + mf / 2**m) * 2.0 ** (ef - bias)
        vals.add(v)
    return sorted(vals)


@pytest.mark.parametrize(("name", "table"), [("fp4_e2m1", FP4_E2M1), ("fp6_e2m3", FP6_E2M3),
                                             ("fp6_e3m2", FP6_E3M2)])
def test_small_float_tables(name: str, table: list[float]) -> None:
    fmt = get_format(name)
    assert fmt.representable_values() == sorted(table)
    e, m = fmt.exp_bits, fmt.man_bits
    assert sorted(table) == _all_bit_patterns(e, m)
    assert fmt.max_value == max(table)
    # Every raw value maps onto the table, and each value maps onto its nearest entry (RNE ties).
    raw = get_format(f"{name}_raw")
    x = torch.linspace(-1.5 * fmt.max_value, 1.5 * fmt.max_value, 200_001)
    out = fake_quantize(x, raw)
    grid = torch.tensor(sorted({-v for v in table} | set(table)))
    assert torch.isin(out, grid).all()
    dist = (x[:, None] - grid[None, :]).abs()
    best = dist.min(1).values
    assert torch.allclose((out - x).abs(), best, atol=0, rtol=0)
    # Ties go to the even significand: midpoints between neighbours.
    pos = torch.tensor(table)
    mids = (pos[1:] + pos[:-1]) / 2
    q = fake_quantize(mids, raw)
    assert set(q.tolist()) <= set(table)
    # Saturation: beyond max clamps to ±max.
    assert fake_quantize(torch.tensor([1e9, -1e9]), raw).tolist() == [fmt.max_value, -fmt.max_value]


# bf16's subnormals lie below fp32's normal range, so bf16 is checked on the native path only.
@pytest.mark.parametrize(("name", "dtype", "native"), [
    (name, dtype, native)
    for name, dtype in [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2),
                        ("fp16", torch.float16), ("bf16", torch.bfloat16)]
    for native in (True, False) if not (name == "bf16" and not native)
])
def test_matches_torch_casts_bitwise(monkeypatch, name: str, dtype: torch.dtype,
                                     native: bool) -> None:
    import fmlab.quant._fake as fake

    monkeypatch.setattr(fake, "_SLOW_CPU_CASTS", ())  # native=True really takes torch's cast
    fmt = get_format(name if name in ("fp16", "bf16") else f"{name}_raw")
    gen = torch.Generator().manual_seed(0)
    # A dense sweep over the full range incl. 20% beyond max (saturation), plus log-spaced
    # magnitudes down into the subnormals, plus every fp8 value and every midpoint between them.
    top = fmt.max_value
    span = min(1.2 * top, 3.0e38)
    x = torch.cat([
        torch.linspace(-span, span, 1_000_001, dtype=torch.float64).float(),  # fp32 steps overflow
        torch.randn(500_000, generator=gen) * torch.logspace(-30, 5, 500_000),
    ])
    if dtype.itemsize == 1:
        codes = torch.arange(256, dtype=torch.uint8).view(dtype).float()
        codes = codes[torch.isfinite(codes)].unique()
        x = torch.cat([x, codes, (codes[1:] + codes[:-1]) / 2])
    ref = x.clamp(-top, top).to(dtype).float()
    out = quantize_values(x, fmt, native=native)
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32))


def test_fp8_scaled_is_cast_of_scaled() -> None:
    x = torch.randn(64, 128)
    fmt = get_format("fp8_e4m3_channel")
    s = x.abs().amax(1, keepdim=True) / 448
    ref = (x / s).to(torch.float8_e4m3fn).float() * s
    assert torch.equal(fake_quantize(x, fmt), ref)


def test_torch_saturation_policy_documented() -> None:
    # Checks the behaviour the QuantFormat docstring states about torch's own casts on CPU.
    big = torch.tensor([1e6])
    assert big.to(torch.float8_e4m3fn).float().item() == 448.0  # saturates
    assert torch.isinf(big.to(torch.float8_e5m2).float()).all()  # overflows to inf
    assert fake_quantize(big, "fp8_e5m2_raw").item() == 57344.0  # fmlab saturates


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_int_levels_and_error(bits: int) -> None:
    x = torch.randn(256, 512, generator=torch.Generator().manual_seed(1))
    out = fake_quantize(x, f"int{bits}_channel")
    s = x.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
    q = out / s
    assert torch.allclose(q, q.round(), atol=1e-4)
    assert (q.round().abs() <= 2 ** (bits - 1) - 1).all()
    assert len(q.round().unique()) == 2**bits - 1  # restricted symmetric range hits all levels
    assert ((out - x).abs() <= s / 2 + 1e-6).all()
    asym = fake_quantize(x, f"int{bits}_asym")
    assert len(asym.unique()) <= 2**bits


def test_int16_and_fp16_near_identity() -> None:
    x = torch.randn(1000)
    assert torch.allclose(fake_quantize(x, "int16"), x, atol=x.abs().max().item() / 32767)
    assert torch.allclose(fake_quantize(x, "fp16"), x, rtol=1e-3)


def test_group_granularity_and_clipping() -> None:
    x = torch.randn(8, 256)
    x[0, 0] = 100.0
    g = fake_quantize(x, "int4_g32")
    # only the first group of row 0 sees the outlier
    assert (g[0, 32:] - x[0, 32:]).abs().max() < 0.3
    clipped = fake_quantize(x, make_format("int", 4, clip_ratio=0.5))
    assert clipped.max() <= 50.0 + 1e-4


def test_ste_gradients() -> None:
    x = torch.randn(16, 32, requires_grad=True)
    y = fake_quantize(x, "int3_channel")
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    x2 = (torch.randn(100) * 3).requires_grad_()
    y2 = fake_quantize(x2, make_format("int", 4, clip_ratio=0.5), ste="clipped")
    y2.sum().backward()
    assert 0 < x2.grad.sum() < 100 and set(x2.grad.unique().tolist()) <= {0.0, 1.0}


def test_pure_and_dtype_preserved() -> None:
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    before = x.clone()
    y = fake_quantize(x, "int4")
    assert y.dtype == torch.bfloat16 and torch.equal(x, before)
    assert fake_quantize(x, None) is x


def test_registry_and_naming() -> None:
    assert get_format("fp8_e4m3") == QuantFormat("float", 8, 4, 3, name="fp8_e4m3")
    assert get_format("fp5_e2m2").max_value == 7.0
    assert "int4" in list_formats("int*") and not list_formats("zz*")
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        get_format("fp8_e4m3").bits = 4  # frozen


ERRORS = [
    (lambda: get_format("int17"), ValueError, r"2\.\.16"),
    (lambda: get_format("int1"), ValueError, r"2\.\.16"),
    (lambda: get_format("fp8_e4m4"), ValueError, r"bits == 1 \+ exp_bits \+ man_bits"),
    (lambda: get_format("fp8_e4"), UnknownNameError, r"Did you mean"),
    (lambda: get_format("in4"), UnknownNameError, r"Unknown quantization format 'in4'"),
    (lambda: QuantFormat("int", 1), ValueError, r"'bits' parameter .* range \[2, 16\]. Got 1"),
    (lambda: QuantFormat("float", 8, 4, 2), ValueError, r"bits == 1 \+ exp_bits \+ man_bits"),
    (lambda: QuantFormat("int", 4, granularity="group"), ValueError, r"needs a group_size"),
    (lambda: QuantFormat("int", 4, granularity="row"), ValueError, r"Invalid granularity 'row'"),
    (lambda: QuantFormat("int", 4, clip_ratio=0.0), ValueError, r"clip_ratio"),
    (lambda: fake_quantize(torch.randn(4, 100), "int4_g32"), ValueError,
     r"group_size=32 must divide the last dimension.*100"),
    (lambda: fake_quantize(torch.arange(4), "int4"), TypeError, r"floating-point"),
    (lambda: fake_quantize(torch.randn(3), "int4", ste="soft"), ValueError, r"Invalid ste"),
]


@pytest.mark.parametrize(("call", "error", "match"), ERRORS)
def test_errors(call, error, match) -> None:  # noqa: ANN001
    with pytest.raises(error, match=match):
        call()


def test_import_is_cheap() -> None:
    code = ("import sys, fmlab.quant as q; q.get_format('int4'); q.list_formats(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["int4_channel", "int4_asym", "int8", "int3_token", "int4_g32",
                                  "fp8_e4m3_channel", "fp8_e5m2", "fp4_e2m1_channel",
                                  "fp6_e3m2_raw", "mxfp4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocked_processing_matches_one_block(monkeypatch, name: str, dtype) -> None:
    """The CPU path processes cache-sized blocks of rows; the block size must not change a bit."""
    import fmlab.quant._fake as fake

    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 40, 64, generator=gen) * torch.logspace(-3, 3, 64)).to(dtype)
    monkeypatch.setattr(fake, "_BLOCK", 1 << 30)
    whole, lo, hi = quantize_values(x, name, return_bounds=True)
    for block in (1, 37, 64 * 7):
        monkeypatch.setattr(fake, "_BLOCK", block)
        out, lo2, hi2 = quantize_values(x, name, return_bounds=True)
        assert out.dtype == dtype and out.shape == x.shape
        assert torch.equal(out.float().view(torch.int32), whole.float().view(torch.int32)), block
        assert torch.equal(lo2, lo) and torch.equal(hi2, hi)
    # ... and agrees with the unblocked arithmetic written out for the per-channel formats.
    if name == "fp8_e4m3_channel":
        xf = x.float()
        s = xf.abs().amax((1, 2), keepdim=True) / 448
        ref = ((xf / s).to(torch.float8_e4m3fn).float() * s).to(dtype)
        assert torch.equal(whole, ref)


def test_empty_and_scalar_tensors() -> None:
    assert quantize_values(torch.empty(0, 8), "int4_channel").shape == (0, 8)
    assert fake_quantize(torch.tensor(0.3), "int8").shape == ()


def test_native_cast_table() -> None:
    from fmlab.quant._fake import _float_cast, _native_cast

    assert _native_cast(get_format("fp8_e4m3")) == (torch.float8_e4m3fn, 0)
    assert _native_cast(get_format("bf16")) == (torch.bfloat16, 0)
    assert _native_cast(get_format("fp6_e2m3")) == (torch.float8_e4m3fn, -6)
    assert _native_cast(get_format("fp6_e3m2")) == (torch.float8_e5m2, -12)
    assert _native_cast(get_format("fp4_e2m1")) is None  # no 1-bit-mantissa dtype
    assert _native_cast(make_format("float", 8, exp_bits=3, man_bits=4)) is None
    assert _native_cast(get_format("int4")) is None
    # On CPU the slow E4M3 decode is replaced by the (bit-identical) generic arithmetic.
    assert _float_cast(get_format("fp8_e4m3"), True, "cpu") is None
    assert _float_cast(get_format("fp8_e4m3"), True, "cuda") == (torch.float8_e4m3fn, 0)
    assert _float_cast(get_format("fp8_e5m2"), True, "cpu") == (torch.float8_e5m2, 0)
    assert _float_cast(get_format("fp8_e5m2"), False, "cpu") is None


@pytest.mark.parametrize("name", ["fp6_e2m3_raw", "fp6_e3m2_raw", "fp6_e2m3_channel",
                                  "fp6_e3m2_channel", "fp4_e2m1_raw"])
def test_shifted_native_cast_matches_generic_rounding(monkeypatch, name: str) -> None:
    """fp6 through a shifted fp8 cast is bit-identical to the generic ExMy rounding, over a dense
    sweep, every representable value and every midpoint (the ties)."""
    import fmlab.quant._fake as fake

    monkeypatch.setattr(fake, "_SLOW_CPU_CASTS", ())  # force the cast on CPU too
    fmt = get_format(name)
    raw = get_format(name.replace("_channel", "_raw"))
    table = torch.tensor(raw.representable_values())
    grid = torch.cat([table, -table])
    mids = torch.cat([(table[1:] + table[:-1]) / 2, -(table[1:] + table[:-1]) / 2])
    top = raw.max_value
    x = torch.cat([torch.linspace(-1.3 * top, 1.3 * top, 400_003), grid, mids,
                   torch.nextafter(mids, torch.tensor(0.0)), torch.nextafter(mids, mids * 2),
                   torch.randn(100_000) * torch.logspace(-12, 1, 100_000)])
    x = x[: len(x) // 64 * 64].reshape(-1, 64)
    a = quantize_values(x, fmt, native=True)
    b = quantize_values(x, fmt, native=False)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    if fmt.granularity == "none":
        assert torch.isin(a, grid).all()
