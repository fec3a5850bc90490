"""The records every stage reads and writes, and their JSONL/JSON file I/O.

Every write is atomic (temp file in the same directory, fsync, rename), so a crash leaves
either the old file or the new one, never half of one. Every read that fails names the file
and the line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ise_core.errors import InputError

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


class Trajectory(Record):
    """One simulated episode, kept or not."""

    intent_id: str
    session_id: str
    status: Literal["kept", "rejected", "failed"]
    stop_reason: str
    completed: bool
    is_success: bool | None = None
    kept: bool
    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    final_output: str = ""
    checks: list[CheckResult] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    params_fingerprint: str = ""


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


# --- atomic file I/O ----------------------------------------------------------------------


_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMP_NAME = re.compile(r"^\..+\.([0-9a-f]{6})\.(\d+)-[^.]+\.tmp$")
STALE_TEMP_AGE_S = 3600.0


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` via a temp file and rename: readers never see half a file.

    ``durable=False`` skips the fsync: readers still see the whole file or none, but after a
    power loss the file may be empty. Only for files whose loss costs nothing but a redo
    (response-cache entries, which read as a miss when damaged).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The writer's host and pid in the name let a later run tell a dead writer's leftover
    # from a live one's file (remove_stale_temp_files).
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{_HOST_TAG}.{os.getpid()}-", suffix=".tmp", dir=target.parent
    )
    try:
        # mkstemp creates 0600; datasets and cards are meant to be shared like any output.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> int:
    """Remove the temp files that killed writers left in ``folder``; returns how many.

    A SIGKILL between an atomic write's temp file and its rename leaves
    ``.<name>.<host>.<pid>-*.tmp`` behind, inside an output folder that DVC tracks. One whose
    writer ran on this host and is gone is removed; so is any temp file older than an hour
    (no write takes that long). Another host's live writer is never touched.
    """
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        match = _TEMP_NAME.match(entry.name)
        try:
            stale = (
                match is not None
                and match.group(1) == _HOST_TAG
                and not _process_exists(int(match.group(2)))
            ) or (now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE_S)
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def atomic_write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Atomically write UTF-8 text (``\n`` line endings, as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


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
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "(record)"
        parts.append(f"field {where}: {error['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def iter_jsonl(path: str | os.PathLike[str], model: type[RecordT]) -> Iterator[RecordT]:
    """Yield validated records; a bad line raises InputError naming the file and line."""
    source = Path(path)
    try:
        handle = source.open("r", encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{source}: file not found") from None
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
                try:
                    yield model.model_validate(data)
                except ValidationError as exc:
                    raise InputError(f"{source}:{lineno}: {_describe(exc)}") from None
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
