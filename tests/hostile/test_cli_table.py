"""Every flag of every command, fed every invalid value its declared constraint generates: the
command exits 2 (usage) with ONE line on stderr that names the flag, before doing any work.

Runs in-process through ``fmlab.cli.main`` (no subprocess per case), so the whole table costs
about a second. See ``hostile_table.py`` for how a new command joins.
"""

from __future__ import annotations

import collections
import json
import os
import sys

import pytest

from fmlab.cli import COMMANDS, main

sys.path.insert(0, os.path.dirname(__file__))
from hostile_table import cases, leaf_parsers, unconstrained_numeric_flags  # noqa: E402


def _all_cases():
    import tempfile

    return cases(tempfile.mkdtemp(prefix="fmlab-hostile-"))  # valid files for earlier positionals


CASES = _all_cases()


@pytest.fixture
def shared_parser(monkeypatch):
    """One parser for the whole table (building it costs ~30 ms; parsing leaves it unchanged)."""
    import fmlab.cli

    global _PARSER
    if _PARSER is None:
        _PARSER = fmlab.cli.build_parser()
    monkeypatch.setattr(fmlab.cli, "build_parser", lambda: _PARSER)


_PARSER = None


def test_every_numeric_flag_declares_a_constraint() -> None:
    assert unconstrained_numeric_flags() == [], (
        "declare these with fmlab._validation.Real/Int (type=Real(0), type=Int(1)) so that "
        "NaN, inf and out-of-range values are refused at parse time")


def test_every_command_is_in_the_table() -> None:
    covered = {c.path[0] for c in CASES}
    # commands with no value-taking flag of their own (report, models, data) are exempt
    takes_values = {p[0] for p, _ in leaf_parsers()}
    assert set(COMMANDS) >= takes_values
    assert covered >= {"sam", "quant", "sweep", "scaling", "ood", "embed", "reproduce"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_value_exits_2_with_one_line_naming_the_flag(case, capsys, shared_parser) -> None:
    code = main(list(case.argv))
    err = capsys.readouterr().err
    assert code == 2, f"{case.id}: exit {code}, stderr {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{case.id}: expected one line, got {err!r}"
    name = case.flag if case.flag.startswith("-") else f"argument {case.flag}"
    assert name in lines[0] or case.flag in lines[0], f"{case.id}: flag not named in {err!r}"
    assert "Traceback" not in err


def test_count_per_command(capsys) -> None:
    """The number of invalid values tried per command (reported in the closing note)."""
    counts = collections.Counter(" ".join(c.path) for c in CASES)
    print(json.dumps(dict(sorted(counts.items())), indent=1))
    assert sum(counts.values()) >= 200
