"""Load and cross-check the taxonomy: the personas, domains and tasks the sampler draws from.

The taxonomy is a folder of user-editable files:

    domains.yaml     domains: [{id, name, description}, ...]
    tasks.yaml       tasks:   [{id, domain, title, description, tools: [...]}, ...]
    personas.jsonl   one Persona per line

Every problem is a ``TaxonomyError`` naming the file, the line where one is known, the id and
what was expected: malformed YAML/JSONL, a record with missing or unknown fields, a duplicate
id, a task in an unknown domain, or a domain with too few tasks to sample from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from ise_core.errors import InputError, TaxonomyError, validation_problems
from ise_core.records import Domain, Persona, Task, iter_jsonl

DOMAINS_FILE = "domains.yaml"
TASKS_FILE = "tasks.yaml"
PERSONAS_FILE = "personas.jsonl"

# Tools a task may name: the workspace tool set the agent is given.
KNOWN_TOOLS = frozenset(
    {"exec", "process", "read", "write", "edit", "memory_get", "memory_search", "web_fetch"}
)

_LINE_KEY = "__line__"
ModelT = TypeVar("ModelT", Domain, Task)


@dataclass(frozen=True)
class Taxonomy:
    """The value sets of the P, D and T dimensions, cross-checked."""

    personas: list[Persona]
    domains: list[Domain]
    tasks: list[Task]
    source: Path = Path(".")
    tasks_by_domain: Mapping[str, list[Task]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        grouped: dict[str, list[Task]] = {domain.id: [] for domain in self.domains}
        for task in self.tasks:
            grouped.setdefault(task.domain, []).append(task)
        object.__setattr__(self, "tasks_by_domain", grouped)

    @property
    def domain_ids(self) -> list[str]:
        return [domain.id for domain in self.domains]

    def summary(self) -> dict[str, int]:
        """Sizes of each dimension, as recorded in stats."""
        return {
            "personas": len(self.personas),
            "industries": len({p.industry for p in self.personas}),
            "roles": len({p.role for p in self.personas}),
            "experience_levels": len({p.experience_level for p in self.personas}),
            "communication_styles": len({p.communication_style for p in self.personas}),
            "domains": len(self.domains),
            "tasks": len(self.tasks),
        }


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line each mapping starts on, for error messages."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping[_LINE_KEY] = node.start_mark.line + 1
        return mapping


def _read_yaml_list(path: Path, key: str) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaxonomyError(f"{path}: file not found (the taxonomy folder needs it)") from None
    except UnicodeDecodeError as exc:
        raise TaxonomyError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", exc)
        raise TaxonomyError(f"{path}{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise TaxonomyError(f"{path}: expected a top-level key '{key}' holding a list")
    items = data[key]
    for position, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise TaxonomyError(f"{path}: {key}[{position}]: expected a mapping, got {item!r}")
    return items


def _describe(exc: ValidationError) -> str:
    return "; ".join(validation_problems(exc, limit=3, form="field {where}: {what}"))


def _validate_items(
    path: Path, kind: str, items: list[dict[str, Any]], model: type[ModelT]
) -> tuple[list[ModelT], dict[str, Any]]:
    """Validate each mapping as ``model``; ids must be unique. Returns records and id → line."""
    records: list[ModelT] = []
    first_line: dict[str, Any] = {}
    for item in items:
        line = item.pop(_LINE_KEY, "?")
        label = item.get("id", "(no id)")
        try:
            record = model.model_validate(item)
        except ValidationError as exc:
            raise TaxonomyError(f"{path}:{line}: {kind} {label!r}: {_describe(exc)}") from None
        item_id = record.id
        if item_id in first_line:
            raise TaxonomyError(
                f"{path}:{line}: duplicate {kind} id {item_id!r} (first defined on line "
                f"{first_line[item_id]})"
            )
        first_line[item_id] = line
        records.append(record)
    return records, first_line


def _load_personas(path: Path) -> list[Persona]:
    personas: list[Persona] = []
    first_line: dict[str, int] = {}
    try:
        for persona in iter_jsonl(path, Persona):
            personas.append(persona)
            first_line.setdefault(persona.id, len(personas))
    except InputError as exc:
        raise TaxonomyError(str(exc)) from None
    if len(first_line) != len(personas):
        seen: set[str] = set()
        for position, persona in enumerate(personas, start=1):
            if persona.id in seen:
                raise TaxonomyError(
                    f"{path}: duplicate persona id {persona.id!r} (record {position}; first is "
                    f"record {first_line[persona.id]})"
                )
            seen.add(persona.id)
    if not personas:
        raise TaxonomyError(f"{path}: no personas (expected one JSON object per line)")
    return personas


def _check_tasks(
    path: Path, tasks: list[Task], lines: dict[str, Any], domains: list[Domain]
) -> None:
    known = {domain.id for domain in domains}
    for task in tasks:
        where = f"{path}:{lines.get(task.id, '?')}"
        if task.domain not in known:
            raise TaxonomyError(
                f"{where}: task {task.id!r} names unknown domain {task.domain!r} "
                f"(known domains: {', '.join(sorted(known))})"
            )
        unknown_tools = sorted(set(task.tools) - KNOWN_TOOLS)
        if unknown_tools:
            raise TaxonomyError(
                f"{where}: task {task.id!r} names unknown tools {unknown_tools} "
                f"(known tools: {', '.join(sorted(KNOWN_TOOLS))})"
            )


def check_task_counts(taxonomy: Taxonomy, min_tasks_per_domain: int) -> None:
    """Every domain must offer at least ``min_tasks_per_domain`` tasks to draw from."""
    for domain in taxonomy.domains:
        found = len(taxonomy.tasks_by_domain.get(domain.id, []))
        if found < min_tasks_per_domain:
            raise TaxonomyError(
                f"{taxonomy.source / TASKS_FILE}: domain {domain.id!r} has {found} task(s); "
                f"sampling needs at least {min_tasks_per_domain} per domain"
            )


def load_taxonomy(path: Path, *, min_tasks_per_domain: int = 3) -> Taxonomy:
    """Read the taxonomy folder at ``path`` and check that its files agree with each other."""
    folder = Path(path)
    if not folder.is_dir():
        raise TaxonomyError(f"{folder}: taxonomy folder not found (set intents.taxonomy in params)")
    domains_path, tasks_path = folder / DOMAINS_FILE, folder / TASKS_FILE
    domains, _ = _validate_items(
        domains_path, "domain", _read_yaml_list(domains_path, "domains"), Domain
    )
    if not domains:
        raise TaxonomyError(f"{domains_path}: no domains listed")
    tasks, task_lines = _validate_items(
        tasks_path, "task", _read_yaml_list(tasks_path, "tasks"), Task
    )
    _check_tasks(tasks_path, tasks, task_lines, domains)
    personas = _load_personas(folder / PERSONAS_FILE)
    taxonomy = Taxonomy(personas=personas, domains=domains, tasks=tasks, source=folder)
    check_task_counts(taxonomy, min_tasks_per_domain)
    return taxonomy


__all__ = ["KNOWN_TOOLS", "Taxonomy", "check_task_counts", "load_taxonomy"]
