"""Prompt templates as data, and the piecewise tokenisation that locates the pooled span exactly.

A template is a string with three kinds of markup:

- ``{x}``: the input text. It may appear more than once (the echo template repeats it).
- ``[[ ... ]]``: the pooled span. Tokens produced inside the brackets are pooled; all others are
  context only. Exactly one span per template.
- ``{instruction}``: the task instruction (query side), rendered through the template's
  ``instruction_format`` and dropped when no instruction is given. ``{bos}`` / ``{eos}`` insert the
  tokenizer's BOS / EOS token id (dropped when the tokenizer has none).

Everything else is fixed scaffold text. The template is parsed into *pieces*; each piece is
tokenised **separately** (no special tokens) and the id lists are concatenated with a parallel 0/1
pool mask. Token boundaries are therefore forced at piece edges, so the mask is exact even where a
tokenizer would merge across the boundary in the joined string, and no string search is needed.

The price is that the ids can differ from tokenising the joined string. To keep the common case
natural for byte-level BPE tokenizers (GPT-2 style, SmolLM2), whitespace that ends a scaffold piece
right before ``{x}`` is moved to the front of the text piece: ``"sentence: " + "{x}"`` becomes
``"sentence:"`` and ``" " + x``, which is how such tokenizers split the joined string anyway
(``Ġword``). SentencePiece tokenizers may add a leading ``▁`` to each piece; that is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fmlab._registry import Registry

__all__ = [
    "TEMPLATES",
    "EchoTemplate",
    "Piece",
    "TokenizedInput",
    "get_template",
    "list_templates",
    "tokenize_with_template",
]

PieceKind = Literal["text", "x", "instruction", "bos", "eos"]
PromptType = Literal["query", "document"]


@dataclass(frozen=True)
class Piece:
    """One piece of a parsed template.

    Args:
        kind: ``"text"`` (fixed scaffold), ``"x"`` (the input), ``"instruction"``, ``"bos"``,
            ``"eos"``.
        text: Scaffold text (for ``"text"``) or the whitespace prepended to the input (for ``"x"``).
        pooled: Whether the tokens of this piece belong to the pooled span.
    """

    kind: PieceKind
    text: str = ""
    pooled: bool = False


_TOKEN = re.compile(r"(\[\[|\]\]|\{x\}|\{instruction\}|\{bos\}|\{eos\})")


def parse_template(spec: str) -> tuple[Piece, ...]:
    """Parse a template string into pieces (see the module docstring for the markup).

    Raises:
        ValueError: When the pooled span is missing, repeated, unbalanced, or when ``{x}`` is
            missing.
    """
    if not isinstance(spec, str):
        raise TypeError(f"A template must be a str. Got {type(spec).__name__} instead.")
    pieces: list[Piece] = []
    pooled = False
    n_spans = 0
    for part in _TOKEN.split(spec):
        if part == "":
            continue
        if part == "[[":
            if pooled:
                raise ValueError(f"Nested '[[' in template {spec!r}; mark one pooled span.")
            pooled, n_spans = True, n_spans + 1
        elif part == "]]":
            if not pooled:
                raise ValueError(f"Unbalanced ']]' in template {spec!r}.")
            pooled = False
        elif part == "{x}":
            lead = ""
            # Trailing whitespace of the preceding scaffold moves into the text piece (docstring).
            if pieces and pieces[-1].kind == "text":
                prev = pieces[-1]
                stripped = prev.text.rstrip()
                lead = prev.text[len(stripped):]
                if stripped:
                    pieces[-1] = Piece("text", stripped, prev.pooled)
                else:
                    pieces.pop()
            pieces.append(Piece("x", lead, pooled))
        elif part in ("{instruction}", "{bos}", "{eos}"):
            pieces.append(Piece(part[1:-1], "", pooled))  # type: ignore[arg-type]
        else:
            pieces.append(Piece("text", part, pooled))
    if pooled:
        raise ValueError(f"Unclosed '[[' in template {spec!r}.")
    if n_spans != 1:
        raise ValueError(
            f"A template must mark exactly one pooled span with [[...]]; {spec!r} has {n_spans}."
        )
    if not any(p.kind == "x" for p in pieces):
        raise ValueError(f"A template must contain the input placeholder {{x}}; got {spec!r}.")
    if not any(p.pooled for p in pieces):
        raise ValueError(f"The pooled span [[...]] of {spec!r} is empty.")
    return tuple(pieces)


@dataclass(frozen=True)
class EchoTemplate:
    """A named prompt template with a query side and a document side.

    Args:
        name: Registry name.
        query: Template used for queries and for symmetric tasks (STS encodes both sides as
            queries).
        document: Template for documents/passages; defaults to ``query``.
        instruction_format: How ``{instruction}`` is rendered when an instruction is given
            (``"{instruction}"`` inside it is replaced by the instruction text).
        description: One line for listings.

    Example:
        >>> t = EchoTemplate("mine", "Say it again: {x} | [[{x}]]")
        >>> [p.kind for p in t.pieces("query")]
        ['text', 'x', 'text', 'x']
    """

    name: str
    query: str
    document: str | None = None
    instruction_format: str = "Instruct: {instruction}\n"
    description: str = ""
    _parsed: dict[str, tuple[Piece, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        self._parsed["query"] = parse_template(self.query)
        self._parsed["document"] = parse_template(self.document or self.query)
        if "{instruction}" not in self.instruction_format:
            raise ValueError(
                "instruction_format must contain '{instruction}'; "
                f"got {self.instruction_format!r}."
            )

    def pieces(self, prompt_type: PromptType = "query") -> tuple[Piece, ...]:
        """The parsed pieces of the query or document side."""
        return self._parsed["document" if prompt_type == "document" else "query"]

    @property
    def n_copies(self) -> int:
        """How many times the input appears on the query side (2 for echo, 1 for classical)."""
        return sum(p.kind == "x" for p in self.pieces("query"))


TEMPLATES: Registry[EchoTemplate] = Registry("embedding template")


def _register(t: EchoTemplate) -> None:
    TEMPLATES.register(t.name, t, description=t.description)


# The zero-shot echo and classical prompts of Springer et al. (arXiv 2402.15449, Sec. 3); the paper
# reports low sensitivity to the exact wording, so these are data, not code.
_register(EchoTemplate(
    "echo", "{instruction}Rewrite the sentence: {x}, rewritten sentence: [[{x}]]",
    description="zero-shot echo: input twice, pool the second copy",
))
_register(EchoTemplate(
    "classical", "{instruction}Write a sentence: [[{x}]]",
    description="zero-shot classical baseline: input once, pool it",
))
# The fine-tuned release's format (jakespringer/echo-embeddings): queries carry an E5-style
# instruction; documents have none; the pooled span includes the closing EOS.
_register(EchoTemplate(
    "echo.release",
    "{bos}{instruction}Query:{x}\nQuery again:[[{x}{eos}]]",
    document="{bos}Document:{x}\nDocument again:[[{x}{eos}]]",
    instruction_format="Instruct:{instruction}\n",
    description="fine-tuned release format: Instruct/Query/Query again, pooled with EOS",
))
_register(EchoTemplate(
    "echo.noprompt", "{x}[[{x}]]",
    description="no scaffold: ids + ids, pool the second copy",
))
_register(EchoTemplate(
    "classical.noprompt", "[[{x}]]",
    description="no scaffold: the input alone, pooled",
))


def get_template(name: str | EchoTemplate) -> EchoTemplate:
    """Return a registered template by name (an :class:`EchoTemplate` passes through).

    A string containing ``{x}`` and ``[[...]]`` is parsed as an ad-hoc template.
    """
    if isinstance(name, EchoTemplate):
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"The 'template' parameter must be a template name, a template string or an "
            f"EchoTemplate. Got {type(name).__name__} instead."
        )
    if "{x}" in name and "[[" in name:
        return EchoTemplate("custom", name)
    return TEMPLATES.get(name)


def list_templates(pattern: str | None = None) -> list[str]:
    """Names of the registered templates (optionally filtered by an fnmatch pattern)."""
    return TEMPLATES.names(pattern)


@dataclass(frozen=True)
class TokenizedInput:
    """The ids of one templated input and where its pieces sit.

    Attributes:
        input_ids: Token ids of the whole prompt.
        pool_mask: 1 where the token is pooled, else 0 (same length as ``input_ids``).
        copies: ``(start, stop)`` token ranges of each copy of the input, in order.
        truncated: Whether the input text was cut to fit ``max_length``.
    """

    input_ids: list[int]
    pool_mask: list[int]
    copies: list[tuple[int, int]]
    truncated: bool


def tokenize_with_template(
    text: str,
    pieces: Sequence[Piece],
    encode_piece: Callable[[str], list[int]],
    *,
    max_length: int,
    bos_id: int | None = None,
    eos_id: int | None = None,
    instruction: str | None = None,
    instruction_format: str = "{instruction}",
    truncate: bool = True,
) -> TokenizedInput:
    """Tokenise one input through the template pieces and build its pool mask.

    Every copy of the input is truncated to the same number of tokens, so that the whole prompt
    fits ``max_length``; the scaffold is never cut (the release truncates per piece for the same
    reason: cutting the joined sequence would remove the pooled second copy first).

    Args:
        text: The input text.
        pieces: The template's pieces (:meth:`EchoTemplate.pieces`).
        encode_piece: Tokenises a string *without* special tokens (results may be cached).
        max_length: Maximum number of tokens of the whole prompt.
        bos_id, eos_id: Ids inserted for ``{bos}`` / ``{eos}`` (the piece is dropped when None).
        instruction: Instruction text for ``{instruction}``; dropped when None or empty.
        instruction_format: Format applied to the instruction.
        truncate: When False, an over-long input raises ``ValueError`` instead of being cut.

    Returns:
        A :class:`TokenizedInput`.
    """
    fixed: list[tuple[Piece, list[int]]] = []
    n_fixed = 0
    text_ids: dict[str, list[int]] = {}
    for p in pieces:
        if p.kind == "x":
            if p.text not in text_ids:
                text_ids[p.text] = encode_piece(p.text + text) if text else []
            fixed.append((p, []))
            continue
        if p.kind == "text":
            ids = encode_piece(p.text)
        elif p.kind == "instruction":
            ids = encode_piece(instruction_format.format(instruction=instruction)) if instruction \
                else []
        elif p.kind == "bos":
            ids = [] if bos_id is None else [bos_id]
        else:
            ids = [] if eos_id is None else [eos_id]
        fixed.append((p, ids))
        n_fixed += len(ids)
    n_copies = sum(p.kind == "x" for p in pieces)
    budget = (max_length - n_fixed) // n_copies
    if budget < 1:
        raise ValueError(
            f"max_length={max_length} leaves no room for the input: the template's fixed pieces "
            f"take {n_fixed} tokens and the input appears {n_copies} time(s). Increase max_length."
        )
    longest = max((len(v) for v in text_ids.values()), default=0)
    truncated = longest > budget
    if truncated and not truncate:
        raise ValueError(
            f"The input has {longest} tokens, but with this template ({n_copies} copies, "
            f"{n_fixed} fixed tokens) at most {budget} fit in max_length={max_length}. "
            f"Shorten the text, raise max_length, or pass truncate=True to cut every copy alike."
        )
    ids_out: list[int] = []
    mask: list[int] = []
    copies: list[tuple[int, int]] = []
    for p, ids in fixed:
        if p.kind == "x":
            ids = text_ids[p.text][:budget]
            copies.append((len(ids_out), len(ids_out) + len(ids)))
        ids_out.extend(ids)
        mask.extend([int(p.pooled)] * len(ids))
    return TokenizedInput(ids_out, mask, copies, truncated)


def _describe(pieces: Sequence[Piece]) -> list[dict[str, Any]]:
    return [{"kind": p.kind, "text": p.text, "pooled": p.pooled} for p in pieces]
