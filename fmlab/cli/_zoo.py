"""``fmlab models`` and ``fmlab data``: what the offline zoo holds and what is missing."""

from __future__ import annotations

import argparse

from fmlab.cli._base import Command


class ModelsCommand(Command):
    name = "models"
    help = "List the model zoo (filled in by fmlab.models)."


class DataCommand(Command):
    name = "data"
    help = "List the data zoo (filled in by fmlab.data)."

    def configure(self, parser: argparse.ArgumentParser) -> None:
        pass
