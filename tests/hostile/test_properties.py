"""Property-based tests (Hypothesis) over the parsers every user file and flag goes through: the
table reader, the array reader, the ``--option`` parser and the numeric constraints.

The property is the same everywhere: whatever the input, the parser either returns a value that
satisfies its contract or raises ``ValueError`` (``UsageError`` for flags) whose message names the
file or the flag — never another exception from deep inside numpy, pandas or yaml, and never a
silently wrong value (NaN, inf, a renamed column).
"""

from __future__ import annotations

import io
import math
import string

import numpy as np
from hypothesis import HealthCheck, given, settings  # dev extra: missing -> the suite fails
from hypothesis import strategies as st

from fmlab._io import read_npy, read_table
from fmlab._validation import Int, Real
from fmlab.cli._base import UsageError, parse_options

FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

_cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.integers(-10**6, 10**6).map(str),
                  st.text(string.ascii_letters + string.digits + " _-.\"'", max_size=6))
_names = st.lists(st.text(string.ascii_letters + "_", min_size=0, max_size=5), min_size=0,
                  max_size=5)


@FAST
@given(header=_names, rows=st.lists(st.lists(_cell, max_size=6), max_size=6),
       sep=st.sampled_from([",", ";", "\t"]))
def test_csv_reader_returns_a_clean_table_or_names_the_file(tmp_path, header, rows, sep) -> None:
    f = tmp_path / "runs.csv"
    f.write_text("\n".join([sep.join(header), *(sep.join(r) for r in rows)]))
    try:
        frame = read_table(f, what="runs")
    except ValueError as exc:
        assert str(f) in str(exc)
        return
    cols = [str(c) for c in frame.columns]
    assert len(frame) >= 1 and cols and len(set(cols)) == len(cols)
    assert not any(c.endswith(".1") and c[:-2] in cols for c in cols)  # no silent renames


@FAST
@given(blob=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".json", ".jsonl",
                                                             ".parquet", ".tsv"]))
def test_table_reader_on_arbitrary_bytes(tmp_path, blob, suffix) -> None:
    f = tmp_path / f"runs{suffix}"
    f.write_bytes(blob)
    try:
        frame = read_table(f)
    except ValueError as exc:
        assert str(f) in str(exc)
        return
    assert len(frame) >= 1


_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(), st.text(
        max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12)


@FAST
@given(obj=_json_value)
def test_json_table_reader_accepts_only_records_or_columns(tmp_path, obj) -> None:
    import json

    f = tmp_path / "runs.json"
    f.write_text(json.dumps(obj))
    try:
        frame = read_table(f)
    except ValueError as exc:
        assert str(f) in str(exc)
        return
    records = isinstance(obj, list) and all(isinstance(r, dict) for r in obj)
    columns = isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values())
    if isinstance(obj, dict) and "runs" in obj:
        return
    assert records or columns
    assert len(frame) >= 1


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@FAST
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
       dtype=st.sampled_from(["<f4", "<f8", "<i8", "|u1", "<c8", "|b1"]),
       cut=st.integers(0, 40), flip=st.integers(0, 200), byte=st.integers(0, 255))
def test_npy_reader_never_allocates_from_a_forged_header(tmp_path, shape, dtype, cut, flip,
                                                         byte) -> None:
    raw = bytearray(_npy_bytes(np.zeros(shape, dtype=dtype)))
    if flip < len(raw):
        raw[flip] = byte  # corrupt one byte anywhere (magic, header dict, data)
    if cut:
        raw = raw[:-cut] if cut < len(raw) else raw[:1]
    f = tmp_path / "a.npy"
    f.write_bytes(bytes(raw))
    try:
        arr = read_npy(f, what="id_probs")
    except ValueError as exc:
        assert str(f) in str(exc)
        return
    assert arr.dtype != object
    assert arr.nbytes <= len(raw)


@FAST
@given(shape=st.lists(st.integers(0, 10**9), min_size=1, max_size=3))
def test_npy_reader_refuses_headers_that_do_not_match_the_data(tmp_path, shape) -> None:
    raw = _npy_bytes(np.zeros((2, 2), np.float32))
    forged = raw.replace(b"(2, 2)", str(tuple(shape)).encode().ljust(6)[:len(str(tuple(shape)))])
    f = tmp_path / "a.npy"
    f.write_bytes(forged)
    try:
        arr = read_npy(f)
    except ValueError as exc:
        assert str(f) in str(exc)
        return
    assert arr.size == 4


@FAST
@given(pairs=st.lists(st.text(string.printable, max_size=12), max_size=4))
def test_option_parser_returns_names_or_a_usage_error(pairs) -> None:
    try:
        options = parse_options(pairs)
    except UsageError as exc:
        assert "--option" in str(exc)
        return
    for key, value in options.items():
        assert key.isidentifier()
        assert not (isinstance(value, float) and math.isnan(value))


@FAST
@given(text=st.one_of(st.text(max_size=8), st.floats(allow_nan=True).map(repr)),
       low=st.one_of(st.none(), st.floats(-10, 10)),
       closed=st.sampled_from(["neither", "left", "right", "both"]))
def test_real_constraint_returns_a_finite_value_in_range_or_refuses(text, low, closed) -> None:
    c = Real(low, None if low is None else low + 5, closed=closed)
    try:
        x = c.parse(text)
    except ValueError as exc:
        assert "must be a float" in str(exc)
        return
    assert math.isfinite(x)
    if low is not None:
        assert low <= x <= low + 5


@FAST
@given(text=st.text(max_size=8), low=st.integers(-3, 3))
def test_int_constraint_returns_an_int_in_range_or_refuses(text, low) -> None:
    try:
        x = Int(low).parse(text)
    except ValueError as exc:
        assert "must be an int" in str(exc)
        return
    assert isinstance(x, int) and x >= low
