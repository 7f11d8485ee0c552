"""One registry class for every kind of named thing in fmlab.

Models, datasets, number formats, studies, laws, attacks, defenses, judges and templates all live
in a :class:`Registry`. Entries are either objects or lazy ``"module:attr"`` strings, so that
registering something that needs torch does not import torch.

Plugins: a package adds entries to a registry through the entry-point group ``fmlab.<group>``,
where ``<group>`` is the registry's kind in snake case and plural (``"scaling law"`` ->
``fmlab.scaling_laws``, ``"OOD estimator"`` -> ``fmlab.ood_estimators``, ``"study"`` ->
``fmlab.studies``); :attr:`Registry.group` holds it. One rule, no per-registry spelling.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fmlab.exceptions import UnknownNameError

T = TypeVar("T")

__all__ = ["Entry", "Registry", "check_param_names", "plugin_group"]


def plugin_group(kind: str) -> str:
    """The entry-point group suffix for a registry of ``kind``: snake case, plural.

    Example:
        >>> plugin_group("OOD estimator"), plugin_group("study"), plugin_group("model")
        ('ood_estimators', 'studies', 'models')
    """
    snake = "_".join(kind.lower().split())
    if snake.endswith("y") and not snake.endswith(("ay", "ey", "oy", "uy")):
        return snake[:-1] + "ies"
    if snake.endswith(("s", "x", "ch", "sh")):
        return snake + "es"
    return snake + "s"


def check_param_names(target: Callable[..., Any], params: Mapping[str, Any], *, owner: str) -> None:
    """Raise ``ValueError`` when ``params`` holds a keyword ``target`` does not take.

    ``target`` is a class or function; a ``**kwargs`` in its signature accepts everything.
    """
    import inspect

    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    ps = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in ps):
        return
    valid = [p.name for p in ps if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"Invalid parameter(s) {unknown} for {owner}. Valid parameters are: {tuple(valid)}."
        )


@dataclass
class Entry(Generic[T]):
    """One registered name: its target (object or lazy ``"module:attr"``) and metadata."""

    name: str
    target: T | str
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_lazy(self) -> bool:
        return isinstance(self.target, str) and ":" in self.target

    def resolve(self) -> T:
        """Return the target, importing it first when it is a lazy ``"module:attr"`` string."""
        if self.is_lazy:
            module, _, attr = str(self.target).partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.target = obj
        return self.target  # type: ignore[return-value]


class Registry(Generic[T]):
    """A named collection with suggestions for typos, fnmatch listing and lazy entries.

    Args:
        kind: What the entries are, in words (``"model"``, ``"quantization format"``); used in
            error messages.

        group: Optional, and only as a check: it must equal ``plugin_group(kind)``.

    Plugins are read from the entry-point group ``fmlab.<group>``; :func:`plugin_group` derives
    ``group`` from ``kind`` (snake case, plural), so every registry follows the same rule.

    Example:
        >>> formats = Registry("number format")
        >>> _ = formats.register("int4", {"bits": 4})
        >>> formats.get("int4")
        {'bits': 4}
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = plugin_group(kind)
        if group is not None and group != self.group:
            raise ValueError(
                f"Plugin groups follow one rule, fmlab.<kind in snake case, plural>: a registry of "
                f"{kind!r} reads 'fmlab.{self.group}', not 'fmlab.{group}'. Drop group= (it is "
                f"derived), or name the kind so that its plural is the group you want, e.g. "
                f"Registry({group.rstrip('s').replace('_', ' ')!r}).")
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = False

    # -- registration -----------------------------------------------------------------------
    def register(
        self,
        name: str,
        target: T | str | None = None,
        *,
        description: str = "",
        override: bool = False,
        **meta: Any,
    ) -> Any:
        """Register ``target`` under ``name``; without a target, return a decorator.

        Raises:
            ValueError: if ``name`` is taken and ``override`` is false.
        """
        if target is None:

            def decorator(obj: Any) -> Any:
                self.register(name, obj, description=description, override=override, **meta)
                return obj

            return decorator
        if not isinstance(name, str) or not name:
            raise TypeError(f"A {self.kind} name must be a non-empty str. Got {name!r} instead.")
        if name in self._entries and not override:
            raise ValueError(
                f"The {self.kind} name {name!r} is already registered "
                f"(to {self._entries[name].target!r}). Pick another name or pass override=True."
            )
        if not description and not isinstance(target, str):
            doc = getattr(target, "__doc__", None) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        self._entries[name] = Entry(name, target, description, dict(meta))
        return target

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=f"fmlab.{self.group}"):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value, f"plugin from {ep.value}")

    # -- lookup -----------------------------------------------------------------------------
    def entry(self, name: str) -> Entry[T]:
        """Return the :class:`Entry` for ``name`` or raise :class:`UnknownNameError`."""
        self._load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def get(self, name: str) -> T:
        """Return the object registered under ``name`` (importing a lazy entry)."""
        return self.entry(name).resolve()

    def create(self, name: str, /, **params: Any) -> Any:
        """Build the entry ``name`` with ``params``, validated before anything runs.

        Checks the keyword names against the target's signature and then, for estimators
        (:class:`fmlab.base.BaseEstimator`), their values with ``_check_params()``, so a bad value
        fails here and not at the first ``fit``. Every ``create_*`` factory is this method.

        Raises:
            UnknownNameError: ``name`` is not registered (with close matches).
            TypeError: the entry is a data object, not something to build.
            ValueError: a keyword the target does not take, or a value it rejects.
        """
        target: Any = self.get(name)
        if not callable(target):
            raise TypeError(f"The {self.kind} {name!r} is a {type(target).__name__} object, not "
                            f"something to build; use get({name!r}) instead.")
        owner = f"{self.kind} {name!r} ({getattr(target, '__name__', type(target).__name__)})"
        check_param_names(target, params, owner=owner)
        obj = target(**params)
        check = getattr(obj, "_check_params", None)
        if callable(check):
            check()
        return obj

    def unknown_message(self, name: object) -> str:
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint}\nAvailable: {', '.join(names) or '(none)'}"

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by an fnmatch ``pattern`` such as ``"int*"``."""
        self._load_plugins()
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names

    def entries(self, pattern: str | None = None) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names(pattern)]

    def filter(self, predicate: Callable[[Entry[T]], bool]) -> list[Entry[T]]:
        return [e for e in self.entries() if predicate(e)]

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
