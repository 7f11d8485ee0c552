"""The agent's action language and its strict parser.

An agent answers with exactly one action, in the set-of-marks form web agents use (VisualWebArena):

==========================  ===========================================================
``click [N]``               click the element labelled ``N`` on the page
``type [N] [TEXT]``         type ``TEXT`` into element ``N`` and press Enter (submits)
``stop [ANSWER]``           stop; ``ANSWER`` may be empty
==========================  ===========================================================

Parsing is strict: the whole reply (surrounding whitespace aside) must be one action. Anything
else is not guessed at; :func:`parse_action` raises :class:`ActionParseError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from fmlab.exceptions import FmlabError

__all__ = ["Action", "ActionParseError", "parse_action"]

ActionKind = Literal["click", "type", "stop"]

_CLICK = re.compile(r"click \[(\d{1,4})\]")
_TYPE = re.compile(r"type \[(\d{1,4})\] \[([^\]\n]*)\]")
_STOP = re.compile(r"stop \[([^\]\n]*)\]")


class ActionParseError(FmlabError, ValueError):
    """An agent's reply is not exactly one action of the action language."""


@dataclass(frozen=True)
class Action:
    """One parsed action.

    Args:
        kind: ``"click"``, ``"type"`` or ``"stop"``.
        target: The set-of-marks label of the element (``None`` for ``stop``).
        text: What is typed (``type``) or answered (``stop``); ``""`` for ``click``.
    """

    kind: ActionKind
    target: int | None = None
    text: str = ""

    def __str__(self) -> str:
        if self.kind == "click":
            return f"click [{self.target}]"
        if self.kind == "type":
            return f"type [{self.target}] [{self.text}]"
        return f"stop [{self.text}]"


def parse_action(reply: str) -> Action:
    """Parse one action from an agent's reply; strict (see the module docstring).

    Example:
        >>> parse_action("click [7]")
        Action(kind='click', target=7, text='')
        >>> str(parse_action("  type [3] [hot dog] "))
        'type [3] [hot dog]'
    """
    if not isinstance(reply, str):
        raise TypeError(f"An agent's reply must be a str. Got {type(reply).__name__} instead.")
    text = reply.strip()
    if m := _CLICK.fullmatch(text):
        return Action("click", int(m.group(1)))
    if m := _TYPE.fullmatch(text):
        return Action("type", int(m.group(1)), m.group(2))
    if m := _STOP.fullmatch(text):
        return Action("stop", None, m.group(1))
    shown = text if len(text) <= 80 else text[:77] + "..."
    raise ActionParseError(
        f"Not an action: {shown!r}. Expected exactly one of 'click [N]', 'type [N] [TEXT]', "
        f"'stop [ANSWER]'."
    )
