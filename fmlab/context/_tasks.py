"""Counterfactual QA tasks as data (lm-evaluation-harness shape).

A task is a list of items plus the prompt templates that wrap them. Every item is a dict with

============== =====================================================================
field          meaning
============== =====================================================================
context        the passage (for a conflict item it contradicts a well-known fact)
question       the question about it
answer         the answer the context supports: a string or a list of aliases
memory_answer  the real-world (memorised, parametric) answer: a string or aliases
id             optional; defaults to the item's position
category       optional breakdown key (``capital``, ``bio``, ``quote``, ...)
relation       optional ``conflict`` (context contradicts memory) or ``agree``;
               defaults to ``agree`` when the answer sets overlap, else ``conflict``
============== =====================================================================

Prompts are ``template.format(context=..., question=...)``; ``template_no_context`` drops the
context (context-aware decoding, perplexity without context). A JSONL file of such items is a task:
:func:`load_task` reads it and names the item and field of any mistake.

References:
    Goyal, Baek, Kolter, Raghunathan 2025, arXiv 2410.10796 (CF_World_Facts, CF_Capitals, CF_Bio);
    Liu and Liu 2023, MemoTrap (CF_Quotes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmlab._registry import Registry

__all__ = ["CFTask", "TASKS", "get_task", "list_tasks", "load_task"]

DEFAULT_TEMPLATE = ("Answer the question using the background.\nBackground: {context}\n"
                    "Question: {question}\nAnswer:")
DEFAULT_TEMPLATE_NO_CONTEXT = "Answer the question.\nQuestion: {question}\nAnswer:"
RELATIONS = ("conflict", "agree")
_REQUIRED = ("context", "question", "answer", "memory_answer")


def _aliases(value: Any, where: str, field_name: str) -> tuple[str, ...]:
    vals = [value] if isinstance(value, str) else value
    if not isinstance(vals, (list, tuple)) or not all(isinstance(v, str) for v in vals):
        raise TypeError(f"{where} field {field_name!r} must be a string or a list of strings. "
                        f"Got {value!r} instead.")
    out = tuple(v for v in vals if v.strip())
    if not out:
        raise ValueError(f"{where} has an empty answer set in field {field_name!r} (got "
                         f"{value!r}); give at least one non-empty answer string.")
    return out


def _norm_key(text: str) -> str:
    from fmlab.context._scoring import normalize

    return normalize(text)


def check_item(raw: Any, index: int, source: str, *, default_category: str) -> dict[str, Any]:
    """Validate one raw item and return it normalised (aliases as tuples, defaults filled)."""
    where = f"Item {index} of {source}"
    if not isinstance(raw, Mapping):
        raise TypeError(f"{where} must be a JSON object with fields {', '.join(_REQUIRED)}. "
                        f"Got {type(raw).__name__} instead.")
    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        ident = f" (id {raw['id']!r})" if "id" in raw else ""
        raise ValueError(f"{where}{ident} is missing field(s) {', '.join(map(repr, missing))}. "
                         f"Every item needs: {', '.join(_REQUIRED)}.")
    where = f"{where} (id {raw.get('id', index)!r})"
    for f in ("context", "question"):
        if not isinstance(raw[f], str):
            raise TypeError(f"{where} field {f!r} must be a string. Got {raw[f]!r} instead.")
    answer = _aliases(raw["answer"], where, "answer")
    memory = _aliases(raw["memory_answer"], where, "memory_answer")
    overlap = {_norm_key(a) for a in answer} & {_norm_key(m) for m in memory}
    relation = raw.get("relation", "agree" if overlap else "conflict")
    if relation not in RELATIONS:
        raise ValueError(f"{where} field 'relation' must be one of {RELATIONS}. "
                         f"Got {relation!r} instead.")
    item = dict(raw)
    item.update(id=str(raw.get("id", index)), answer=answer, memory_answer=memory,
                category=str(raw.get("category", default_category)), relation=relation)
    return item


@dataclass(frozen=True)
class CFTask:
    """A counterfactual QA task: items plus prompt templates.

    Attributes:
        name: Task name (``cf_world_facts``...).
        items: Validated items (see the module docstring for the fields).
        template: Prompt with ``{context}`` and ``{question}``.
        template_no_context: Prompt with ``{question}`` only.
        description: One line.
    """

    name: str
    items: tuple[dict[str, Any], ...]
    template: str = DEFAULT_TEMPLATE
    template_no_context: str = DEFAULT_TEMPLATE_NO_CONTEXT
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, tpl, keys in (("template", self.template, ("context", "question")),
                                ("template_no_context", self.template_no_context, ("question",))):
            missing = [k for k in keys if "{" + k + "}" not in tpl]
            if missing:
                raise ValueError(f"The {name!r} of task {self.name!r} must contain "
                                 f"{', '.join('{' + k + '}' for k in missing)}. Got {tpl!r}.")
        if not self.items:
            raise ValueError(f"Task {self.name!r} has no items.")
        ids = [it["id"] for it in self.items]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"Task {self.name!r} has duplicate item id {dup!r}; ids must be "
                             f"unique so results can be resumed.")

    @classmethod
    def from_items(cls, name: str, items: Iterable[Any], *, source: str | None = None,
                   **kwargs: Any) -> CFTask:
        src = source or f"task {name!r}"
        checked = tuple(check_item(it, i, src, default_category=name)
                        for i, it in enumerate(items))
        return cls(name=name, items=checked, **kwargs)

    def __len__(self) -> int:
        return len(self.items)

    def prompt(self, item: Mapping[str, Any], *, context: bool = True) -> str:
        """The prompt for ``item`` with (default) or without its context."""
        if context:
            return self.template.format(context=item["context"], question=item["question"])
        return self.template_no_context.format(question=item["question"])

    def subset(self, limit: int | None, seed: int = 0) -> CFTask:
        """At most ``limit`` items, drawn by a seeded permutation (all when ``None``)."""
        if limit is None or limit >= len(self.items):
            return self
        order = np.random.default_rng(seed).permutation(len(self.items))[:limit]
        return CFTask(self.name, tuple(self.items[i] for i in sorted(order)), self.template,
                      self.template_no_context, self.description, self.meta)

    def conflicts(self) -> list[dict[str, Any]]:
        return [it for it in self.items if it["relation"] == "conflict"]


# -- the shared sets --------------------------------------------------------------------------
def _frame_items(frame: Any, category: Any) -> list[dict[str, Any]]:
    rows = frame.to_dict("records")
    for i, r in enumerate(rows):
        r["id"] = str(i)
        r["category"] = category(r) if callable(category) else category
    return rows


def _cf_world_facts() -> CFTask:
    from fmlab.data import load_dataset

    caps = {r["context"] for r in load_dataset("cf-capitals").frame.to_dict("records")}
    frame = load_dataset("cf-world-facts").frame
    items = _frame_items(frame, lambda r: "capital" if r["context"] in caps else "world_fact")
    return CFTask.from_items("cf_world_facts", items,
                             description="CF_World_Facts: 313 counterfactual passages")


def _cf_capitals() -> CFTask:
    from fmlab.data import load_dataset

    items = _frame_items(load_dataset("cf-capitals").frame, "capital")
    return CFTask.from_items("cf_capitals", items,
                             description="CF_Capitals: the 196 capital-city passages")


def _cf_bio() -> CFTask:
    from fmlab.data import load_dataset

    items = _frame_items(load_dataset("cf-bio").frame, "bio")
    return CFTask.from_items("cf_bio", items,
                             description="CF_Bio: 555 biographies with substituted names")


def _cf_quotes() -> CFTask:
    from fmlab.data import load_dataset

    frame = load_dataset("memo-trap").frame
    items = []
    for i, r in enumerate(frame.to_dict("records")):
        # 'Write a quote that ends in the word "heavy": Absence makes the heart grow'
        instruction, _, start = r["prompt"].partition(": ")
        items.append({"id": str(i), "context": instruction + ":", "question": start,
                      "answer": r["answer"].strip(), "memory_answer": r["memory_answer"].strip(),
                      "category": "quote"})
    return CFTask.from_items("cf_quotes", items, template="{context} {question}",
                             template_no_context="{question}",
                             description="CF_Quotes: MemoTrap proverb endings (860)")


TASKS: Registry[Any] = Registry("context task")
TASKS.register("cf_world_facts", "fmlab.context._tasks:_cf_world_facts",
               description="CF_World_Facts (313 passages; shared data)")
TASKS.register("cf_capitals", "fmlab.context._tasks:_cf_capitals",
               description="CF_Capitals (196 passages; shared data)")
TASKS.register("cf_bio", "fmlab.context._tasks:_cf_bio",
               description="CF_Bio (555 biographies; shared data)")
TASKS.register("cf_quotes", "fmlab.context._tasks:_cf_quotes",
               description="CF_Quotes = MemoTrap proverb endings (860; shared data)")
for _rel in ("capital", "language", "currency", "nationality", "occupation"):
    TASKS.register(f"gen_{_rel}", f"fmlab.context._generate:_task_{_rel}",
                   description=f"generated {_rel} conflicts and agreements (offline fact tables)")

_CACHE: dict[str, CFTask] = {}


def list_tasks(pattern: str | None = None) -> list[str]:
    """Registered task names, optionally filtered by an fnmatch pattern (``"cf_*"``)."""
    return TASKS.names(pattern)


def get_task(name: str) -> CFTask:
    """The registered task ``name`` (built once per process)."""
    if name not in _CACHE:
        _CACHE[name] = TASKS.get(name)()
    return _CACHE[name]


def _read_items(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        obj = json.loads(text)
        if isinstance(obj, Mapping) and "items" in obj:
            return list(obj["items"])
        if not isinstance(obj, list):
            raise ValueError(f"Task file {path} must hold a JSON list of items or an object with "
                             f"an 'items' list. Got {type(obj).__name__}.")
        return obj
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"Line {n} of task file {path} is not valid JSON ({exc.msg}). "
                             f"Each line must be one JSON object.") from None
    return items


def load_task(task: str | os.PathLike[str] | CFTask, **kwargs: Any) -> CFTask:
    """A task from a registered name, a ``.jsonl``/``.json`` file of items, or a :class:`CFTask`.

    Args:
        task: Name (see :func:`list_tasks`), path, or task object (returned as is).
        **kwargs: For files: ``template``, ``template_no_context``, ``description``, ``name``.

    Raises:
        UnknownNameError: an unknown name that is not a file either.
        ValueError: a file item with a missing field or an empty answer set (item and field named).
    """
    if isinstance(task, CFTask):
        return task
    text = os.fspath(task)
    path = Path(text).expanduser()
    if text.endswith((".jsonl", ".json")) or (path.suffix and path.exists()):
        if not path.is_file():
            raise FileNotFoundError(f"Task file {text!r} does not exist.")
        name = kwargs.pop("name", path.stem)
        return CFTask.from_items(name, _read_items(path), source=f"task file {text!r}", **kwargs)
    return get_task(text)


def load_tasks(tasks: str | os.PathLike[str] | CFTask | Sequence[Any]) -> list[CFTask]:
    if isinstance(tasks, (str, os.PathLike, CFTask)):
        tasks = [tasks]
    out = [load_task(t) for t in tasks]
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique within one evaluation. Got {names}.")
    if not out:
        raise ValueError("'tasks' must name at least one task.")
    return out
