"""fmlab's exception and warning classes.

Every error fmlab raises on bad input is a builtin exception type (``TypeError`` for a wrong type,
``ValueError`` for a wrong value) or one of the classes below, which mix in the matching builtin so
that ``except ValueError`` keeps working for callers.
"""

from __future__ import annotations

__all__ = [
    "ConvergenceWarning",
    "DataUnavailableError",
    "FmlabError",
    "FmlabWarning",
    "MissingDependencyError",
    "ModelUnavailableError",
    "NotFittedError",
    "ReliabilityWarning",
    "UnknownNameError",
    "UsageError",
]


class FmlabError(Exception):
    """Base class of every exception defined by fmlab."""


class NotFittedError(FmlabError, ValueError, AttributeError):
    """An estimator was used before ``fit`` was called (as in scikit-learn)."""


class UnknownNameError(FmlabError, ValueError, KeyError):
    """A registry lookup missed. The message lists close matches and what is available."""

    def __str__(self) -> str:  # KeyError would repr() the message and escape its newlines
        return str(self.args[0]) if self.args else ""


class UsageError(FmlabError, ValueError):
    """The caller asked for something that does not exist, such as an option a study does not
    declare. The command line reports it as a usage error (exit code 2)."""


class MissingDependencyError(FmlabError, ImportError):
    """An optional dependency is not installed. The message names the install command."""


class DataUnavailableError(FmlabError, FileNotFoundError):
    """A dataset file is missing or corrupt. The message says how to get it."""


class ModelUnavailableError(FmlabError, OSError):
    """Model weights cannot be found offline (or a hub id was given without network)."""


class FmlabWarning(UserWarning):
    """Base class of fmlab's warnings."""


class ConvergenceWarning(FmlabWarning):
    """An optimiser stopped at its iteration limit before converging."""


class ReliabilityWarning(FmlabWarning):
    """An estimate's assumptions do not hold well enough for it to be trusted."""
