"""Templates as data and the piecewise tokenisation (no torch needed)."""

from __future__ import annotations

import re

import pytest

from fmlab.embeddings import EchoTemplate, get_template, list_templates
from fmlab.embeddings._templates import parse_template, tokenize_with_template
from fmlab.exceptions import UnknownNameError


def char_ids(s: str) -> list[int]:
    """A real (if simple) tokenizer: one id per character."""
    return [ord(c) for c in s]


def test_registered_templates():
    names = list_templates()
    for name in ("echo", "classical", "echo.release", "echo.noprompt", "classical.noprompt"):
        assert name in names
    assert get_template("echo").n_copies == 2
    assert get_template("classical").n_copies == 1
    assert list_templates("echo*") == sorted(n for n in names if n.startswith("echo"))


def test_echo_pieces_pool_second_copy_only():
    pieces = get_template("echo").pieces("query")
    xs = [p for p in pieces if p.kind == "x"]
    assert [p.pooled for p in xs] == [False, True]
    # whitespace before {x} moves into the text piece (natural byte-level BPE splits)
    assert all(p.text == " " for p in xs)
    assert not any(p.pooled for p in pieces if p.kind == "text")


def test_release_template_document_side_and_eos():
    t = get_template("echo.release")
    q, d = t.pieces("query"), t.pieces("document")
    assert any(p.kind == "instruction" for p in q)
    assert not any(p.kind == "instruction" for p in d)
    assert [p.kind for p in q if p.pooled] == ["x", "eos"]


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("no placeholder [[here]]", ValueError, r"\{x\}"),
        ("{x} no span", ValueError, "exactly one pooled span"),
        ("[[{x}]] and [[{x}]]", ValueError, "has 2"),
        ("[[{x}", ValueError, "Unclosed"),
        ("{x}]]", ValueError, "Unbalanced"),
        ("[[ [[{x}]] ]]", ValueError, "Nested"),
        (42, TypeError, "must be a str"),
    ],
)
def test_bad_templates(spec, error, match):
    with pytest.raises(error, match=match):
        parse_template(spec)


def test_unknown_template_name_suggests():
    with pytest.raises(UnknownNameError, match="echo"):
        get_template("ecko")


def test_custom_template_string():
    t = get_template("Repeat: {x} -> [[{x}]]")
    assert t.name == "custom" and t.n_copies == 2


def test_instruction_format_must_have_placeholder():
    with pytest.raises(ValueError, match="instruction_format"):
        EchoTemplate("x", "[[{x}]]", instruction_format="Instruct: ")


def test_span_is_exact_by_construction():
    t = get_template("echo")
    text = "A cat sat."
    out = tokenize_with_template(text, t.pieces(), char_ids, max_length=200)
    pooled = [i for i, m in zip(out.input_ids, out.pool_mask, strict=True) if m]
    assert pooled == char_ids(" " + text)
    (a0, a1), (b0, b1) = out.copies
    assert out.input_ids[a0:a1] == out.input_ids[b0:b1]
    assert all(out.pool_mask[b0:b1]) and not any(out.pool_mask[:b0])
    assert not out.truncated


def test_truncation_cuts_both_copies_alike_and_keeps_scaffold():
    t = get_template("echo.release")
    text = "x" * 500
    out = tokenize_with_template(text, t.pieces(), char_ids, max_length=100, bos_id=1, eos_id=2)
    assert len(out.input_ids) <= 100 and out.truncated
    (a0, a1), (b0, b1) = out.copies
    assert out.input_ids[a0:a1] == out.input_ids[b0:b1]
    assert out.input_ids[0] == 1 and out.input_ids[-1] == 2  # BOS and closing EOS survive
    assert out.pool_mask[-1] == 1


def test_truncate_false_raises_with_numbers():
    t = get_template("echo")
    with pytest.raises(ValueError, match=re.escape("max_length=50")):
        tokenize_with_template("y" * 100, t.pieces(), char_ids, max_length=50, truncate=False)


def test_max_length_too_small_for_scaffold():
    with pytest.raises(ValueError, match="leaves no room"):
        tokenize_with_template("hi", get_template("echo").pieces(), char_ids, max_length=10)


def test_empty_text_has_empty_pooled_span():
    out = tokenize_with_template("", get_template("classical").pieces(), char_ids, max_length=64)
    assert sum(out.pool_mask) == 0


def test_instruction_only_when_given():
    t = get_template("echo")
    plain = tokenize_with_template("hi", t.pieces(), char_ids, max_length=200)
    inst = tokenize_with_template("hi", t.pieces(), char_ids, max_length=200,
                                  instruction="Find duplicates",
                                  instruction_format=t.instruction_format)
    assert len(inst.input_ids) - len(plain.input_ids) == len("Instruct: Find duplicates\n")
    assert sum(inst.pool_mask) == sum(plain.pool_mask)
