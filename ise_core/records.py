"""The records every stage reads and writes, and their JSONL/JSON file I/O.

Every write is atomic (ise_core.atomic: temp file in the same directory, fsync, rename), so a
crash leaves either the old file or the new one, never half of one. Every read that fails
names the file and the line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ise_core.atomic import atomic_write_text
from ise_core.errors import InputError, validation_problems

Complexity = Literal["simple", "medium", "complex"]
COMPLEXITIES: tuple[Complexity, ...] = ("simple", "medium", "complex")


class Record(BaseModel):
    """Base for every record: unknown fields are an error, so typos in files surface."""

    model_config = ConfigDict(extra="forbid")


# --- taxonomy -----------------------------------------------------------------------------


class Persona(Record):
    id: str
    name: str
    role: str
    industry: str
    expertise: list[str] = Field(min_length=1)
    experience_level: str
    communication_style: str
    work_context: str


class Domain(Record):
    id: str
    name: str
    description: str


class Task(Record):
    id: str
    domain: str
    title: str
    description: str
    tools: list[str] = Field(min_length=1)


# --- intents ------------------------------------------------------------------------------


class TaskRef(Record):
    """A task as carried inside an intent, so intent files are self-contained."""

    id: str
    domain: str
    title: str


class IntentSample(Record):
    """One point of the 4D space P x 2^D x T* x C, before the write-out."""

    id: str
    index: int = Field(ge=0)
    persona: Persona
    domains: list[str] = Field(min_length=1)
    tasks: list[TaskRef] = Field(min_length=1)
    complexity: Complexity


class Check(Record):
    """An executable check on the final workspace."""

    kind: Literal["file_exists", "command_succeeds", "file_contains"]
    path: str | None = None
    command: str | None = None
    text: str | None = None

    @field_validator("path", "command", "text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank when given")
        return value

    @model_validator(mode="after")
    def _has_needed_fields(self) -> Check:
        needs = {
            "file_exists": ("path",),
            "command_succeeds": ("command",),
            "file_contains": ("path", "text"),
        }[self.kind]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"check of kind {self.kind!r} needs {', '.join(missing)}")
        return self


class FixtureFile(Record):
    """A file seeded into the workspace before the episode starts (path relative to it)."""

    path: str
    content: str

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        parts = Path(value).parts
        if not value or Path(value).is_absolute() or ".." in parts:
            raise ValueError("must be a relative path inside the workspace")
        return value


class IntentSpec(Record):
    """What the intent writer produces for a sample (validated model output)."""

    request: str = Field(min_length=1)
    goal: str = Field(min_length=1)
    hidden_details: list[str] = Field(default_factory=list)
    success_criteria: list[str] = Field(min_length=1)
    checks: list[Check] = Field(min_length=1)
    fixtures: list[FixtureFile] = Field(default_factory=list)

    @field_validator("request", "goal")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class Intent(IntentSample, IntentSpec):
    """A sampled point with its natural-language write-out: the unit of simulation."""

    writer: str = "scripted"
    # The refresh period that added it (ise_core/refresh). Absent, not null, for an intent of
    # no period, so such records and their hashes are what they were before periods existed.
    period: str | None = Field(None, exclude_if=lambda value: value is None)

    @property
    def normalized_request(self) -> str:
        return normalize_text(self.request)


# --- conversations ------------------------------------------------------------------------


class FunctionCall(Record):
    name: str
    arguments: str  # a JSON string, as the OpenAI format requires


class ToolCall(Record):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Record):
    """One chat message in OpenAI layout, plus ``success`` on tool messages."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    success: bool | None = None
    reasoning_content: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The message as an OpenAI request/export dict, without empty optional fields."""
        return self.model_dump(exclude_none=True)


class CheckResult(Record):
    check: Check
    passed: bool
    detail: str = ""


class StopReason(StrEnum):
    """Why an episode ended (``Trajectory.stop_reason``)."""

    COMPLETED = "completed"  # the user returned completed: true (its closing is not sent)
    EMPTY_QUERY = "empty_query"  # the user returned an empty query without completing
    MAX_TURNS = "max_turns"  # max_turns user messages were sent, still not completed
    TOKEN_BUDGET = "token_budget"  # both roles together used episode_token_budget tokens
    TIME_LIMIT = "time_limit"  # the episode ran episode_time_limit_s (checked between steps)
    USER_ERROR = "user_error"  # the user simulator's output stayed invalid after retries
    ROLE_DRIFT = "role_drift"  # the user simulator kept drifting into the assistant's role
    # a request stayed over the model's context window after compaction and one retry
    CONTEXT_OVERFLOW = "context_overflow"
    LLM_ERROR = "llm_error"  # an LLM request failed for good (status failed)
    WORKSPACE_ERROR = "workspace_error"  # the sandbox failed for good (status failed)
    ERROR = "error"  # anything else failed (status failed)


class Trajectory(Record):
    """One simulated episode, kept or not."""

    intent_id: str
    session_id: str
    status: Literal["kept", "rejected", "failed"]
    stop_reason: str  # a StopReason value
    completed: bool
    is_success: bool | None = None
    kept: bool
    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    final_output: str = ""
    checks: list[CheckResult] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    params_fingerprint: str = ""


class Verdict(Record):
    """A grounding judge's grade of one trajectory (ise_core/evaluation/judge.py), stored in
    the episode's metadata and in eval results."""

    score: int = Field(ge=1, le=5)
    reason: str
    judge: str
    unsupported: list[str] = Field(default_factory=list)


# --- helpers ------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-folded text for exact de-duplication."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WS.sub(" ", _PUNCT.sub(" ", folded)).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON: the form hashed for fingerprints and cache keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- JSON and JSONL files (written atomically, see ise_core.atomic) -------------------------


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


def read_json(path: str | os.PathLike[str]) -> Any:
    source = Path(path)
    try:
        return json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{source}: file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def _dump_line(record: BaseModel | dict[str, Any]) -> str:
    if isinstance(record, BaseModel):
        return record.model_dump_json(exclude_none=False)
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def write_jsonl(path: str | os.PathLike[str], records: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Atomically write one JSON object per line; returns the number of lines."""
    lines = [_dump_line(record) for record in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


RecordT = TypeVar("RecordT", bound=BaseModel)


def _describe(exc: ValidationError) -> str:
    parts = validation_problems(exc, limit=3, form="field {where}: {what}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def iter_jsonl(path: str | os.PathLike[str], model: type[RecordT]) -> Iterator[RecordT]:
    """Yield validated records; a bad line raises InputError naming the file and line."""
    source = Path(path)
    for lineno, data in _json_objects(source, f"{source}: file not found"):
        try:
            yield model.model_validate(data)
        except ValidationError as exc:
            raise InputError(f"{source}:{lineno}: {_describe(exc)}") from None


def _json_objects(source: Path, missing: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line; anything else is InputError naming the line."""
    try:
        handle = source.open("r", encoding="utf-8")
    except FileNotFoundError:
        raise InputError(missing) from None
    with handle:
        lineno = 0
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{source}:{lineno}: invalid JSON at column {exc.colno}: {exc.msg}"
                    ) from None
                if not isinstance(data, dict):
                    raise InputError(
                        f"{source}:{lineno}: expected a JSON object, got {type(data).__name__}"
                    )
                yield lineno, data
        except UnicodeDecodeError as exc:
            raise InputError(f"{source}:{lineno + 1}: not UTF-8 text ({exc.reason})") from None


def read_jsonl(path: str | os.PathLike[str], model: type[RecordT]) -> list[RecordT]:
    return list(iter_jsonl(path, model))


def validate_record(data: Any, model: type[RecordT], where: str) -> RecordT:
    """Validate one object, turning pydantic's error into an InputError naming ``where``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: {_describe(exc)}") from None


def read_raw_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line; unreadable JSON is bad input, not a gate finding."""
    return list(_json_objects(path, f"{path}: file not found (run the stage that writes it first)"))
