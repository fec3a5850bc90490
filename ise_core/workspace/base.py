"""The ``Workspace`` protocol: a live, isolated OS workspace in which agent tool calls run.

Lifecycle: ``open`` (template + fixtures) → ``call`` tool after tool → ``run_check`` /
``list_files`` for the final state → ``close`` (idempotent; also on ``__exit__``).
A tool failure is a ``ToolResult`` with ``ok=False``, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from ise_core.records import Check, CheckResult, FixtureFile, Persona


class ToolResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    content: str
    exit_code: int | None = None
    duration_s: float = 0.0
    truncated: bool = False


@dataclass
class ExecOutcome:
    """What a backend reports for one foreground command."""

    exit_code: int | None  # None when the command was killed for running too long
    output: str  # stdout and stderr combined, already cut to the output limit
    truncated: bool
    timed_out: bool
    duration_s: float


@dataclass
class ProcessInfo:
    """A background process started with the ``process`` tool."""

    id: str
    command: str
    started: float = field(default_factory=time.time)
    exit_code: int | None = None
    killed: bool = False
    cursor: int = 0  # how far ``process poll`` has shown the output

    @property
    def running(self) -> bool:
        return self.exit_code is None and not self.killed


@runtime_checkable
class Workspace(Protocol):
    backend: str

    def open(
        self, fixtures: Sequence[FixtureFile] = (), persona: Persona | None = None
    ) -> None: ...

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult: ...

    def run_check(self, check: Check) -> CheckResult: ...

    def list_files(self) -> list[str]: ...

    def tool_schemas(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Workspace: ...

    def __exit__(self, *exc: object) -> None: ...
