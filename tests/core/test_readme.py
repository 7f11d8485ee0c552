"""The README renders: its code fences pair up and every ``python`` block is valid Python."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(text: str) -> list[tuple[int, str, str]]:
    """(line, language, body) of each fenced block; fails on a fence left open."""
    blocks, lang, start, body = [], None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), i, []
            else:
                assert not line[3:].strip(), f"README line {i}: a fence opens inside the block of line {start}"
                blocks.append((start, lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            assert not re.match(r"#{2,} \S", line), (
                f"README line {i}: a markdown heading inside the code block opened on line {start} "
                "(a closing ``` is missing)")
            body.append(line)
    assert lang is None, f"README: the code block opened on line {start} is never closed"
    return blocks


def test_fences_pair_up_and_python_blocks_parse() -> None:
    blocks = _blocks(README.read_text())
    assert len(blocks) > 10
    for line, lang, body in blocks:
        if lang == "python":
            try:
                ast.parse(body)
            except SyntaxError as e:
                raise AssertionError(f"README python block at line {line}: {e}") from None


def test_an_unclosed_block_is_caught() -> None:
    with pytest.raises(AssertionError, match="heading inside the code block"):
        _blocks("```python\nx = 1\n### Next section\n")
    with pytest.raises(AssertionError, match="never closed"):
        _blocks("```bash\nls\n")
