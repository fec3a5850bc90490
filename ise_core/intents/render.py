"""Write-out: turn each sampled intent into a natural-language intent through a ``Chat``.

The writer is asked (prompt template ``ise_core/prompts/intent_writer.md``) for one JSON object
with the opening request in the persona's voice, the goal, hidden details, success criteria,
executable checks and optional fixture files. Output that is not valid JSON or does not match
``IntentSpec`` is sent back with the reason and retried up to ``max_attempts``; a sample that
stays invalid is recorded as a ``Rejection`` and the run goes on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ise_core.errors import InputError, ISEError, validation_problems
from ise_core.llm.base import Chat, Usage
from ise_core.records import Intent, IntentSample, IntentSpec, Message

PROMPT_PATH = Path(__file__).resolve().parent.parent / "prompts" / "intent_writer.md"
# The template holds the system prompt, this marker, then the user message around the sample.
USER_MARKER = "<!-- user -->"
SAMPLE_SLOT = "{sample_json}"
RETRY_MESSAGE = (
    "That reply could not be used: {reason}. Reply again with only the JSON object, "
    "with keys request, goal, hidden_details, success_criteria, checks and fixtures."
)
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL)


class Rejection(BaseModel):
    """A sample whose write-out stayed invalid (or whose calls failed) after its attempts."""

    model_config = ConfigDict(extra="forbid")

    id: str
    index: int
    attempts: int
    reason: str


@dataclass(repr=False)
class RenderOutcome:
    """Written-out intents in sample order, the rejected samples, and what it cost."""

    intents: list[Intent]
    rejected: list[Rejection]
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0  # completions requested in total, retries included

    def __repr__(self) -> str:
        # Short on purpose: asyncio.run (3.11) reprs the main task's result when it restores
        # the SIGINT handler, and a full repr of 50,000 intents costs tens of seconds.
        return (
            f"RenderOutcome(intents={len(self.intents)}, rejected={len(self.rejected)}, "
            f"attempts={self.attempts}, usage={self.usage!r})"
        )


@functools.cache
def writer_prompt() -> tuple[str, str]:
    """(system prompt, user template) from the template file, read once per process."""
    path = PROMPT_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: writer prompt template not found") from None
    system, marker, user = text.partition(USER_MARKER)
    if not marker or SAMPLE_SLOT not in user:
        raise InputError(
            f"{path}: expected the system prompt, a line '{USER_MARKER}', then the user "
            f"message containing {SAMPLE_SLOT}"
        )
    return system.strip(), user.strip()


def build_writer_messages(sample: IntentSample) -> list[Message]:
    """The system prompt and a user message holding the sample as a fenced JSON block."""
    system, user = writer_prompt()
    # Compact JSON: readable enough for a model, and far cheaper to build at 50,000 samples.
    sample_json = json.dumps(sample.model_dump(mode="json"), ensure_ascii=False)
    return [
        Message(role="system", content=system),
        Message(role="user", content=user.replace(SAMPLE_SLOT, sample_json)),
    ]


def _schema_reason(exc: ValidationError) -> str:
    parts = validation_problems(exc, limit=4, root="(object)")
    return "does not match the schema (" + "; ".join(parts) + ")"


def _decode(text: str) -> Any:
    body = text.strip()
    fenced = _FENCE.search(body)
    if fenced is not None:
        body = fenced.group(1).strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        # Tolerate a sentence before or after a bare object; anything else is invalid.
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end and (start, end) != (0, len(body) - 1):
            try:
                return json.loads(body[start : end + 1])
            except json.JSONDecodeError:
                pass
        raise ValueError(
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None


def parse_writer_output(text: str) -> IntentSpec:
    """Validate the writer's reply as an ``IntentSpec``; ``ValueError`` says what is wrong."""
    if not text or not text.strip():
        raise ValueError("empty reply")
    data = _decode(text)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    try:
        spec = IntentSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_schema_reason(exc)) from None
    for number, check in enumerate(spec.checks, start=1):
        path = check.path
        if path is not None and (path.startswith(("/", "~")) or ".." in path.split("/")):
            raise ValueError(f"checks[{number}].path {path!r} must be relative to the workspace")
    return spec


async def _render_one(
    sample: IntentSample, chat: Chat, max_attempts: int
) -> tuple[Intent | Rejection, Usage, int]:
    messages = build_writer_messages(sample)
    usage = Usage()
    reason = "no attempt made"
    for attempt in range(1, max_attempts + 1):
        try:
            result = await chat.complete(messages)
        except ISEError:
            raise  # the backend cannot run at all (configuration, budget): stop the stage
        except Exception as exc:  # one failed call fails this sample only, never the run
            reason = f"writer call failed: {type(exc).__name__}: {exc}"
            rejection = Rejection(id=sample.id, index=sample.index, attempts=attempt, reason=reason)
            return rejection, usage, attempt
        usage = usage + result.usage
        text = result.message.content or ""
        try:
            spec = parse_writer_output(text)
        except ValueError as exc:
            reason = str(exc)
            messages = [
                *messages,
                Message(role="assistant", content=text),
                Message(role="user", content=RETRY_MESSAGE.format(reason=reason)),
            ]
            continue
        fields: dict[str, Any] = {name: getattr(sample, name) for name in IntentSample.model_fields}
        fields.update({name: getattr(spec, name) for name in IntentSpec.model_fields})
        fields["writer"] = chat.name
        return Intent.model_validate(fields), usage, attempt
    rejection = Rejection(id=sample.id, index=sample.index, attempts=max_attempts, reason=reason)
    return rejection, usage, max_attempts


async def render_intents(
    samples: Sequence[IntentSample],
    chat: Chat,
    *,
    max_attempts: int,
    concurrency: int = 16,
    progress: Callable[[int], None] | None = None,
) -> RenderOutcome:
    """Write out every sample with at most ``concurrency`` calls in flight.

    ``progress`` is called with 1 each time a sample finishes (the shape of tqdm's ``update``).
    An exception from the chat rejects that sample, except ``ISEError``, which means the
    backend cannot run at all and is raised.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    results: list[Intent | Rejection | None] = [None] * len(samples)
    totals = {"attempts": 0}
    usage_parts: list[Usage] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(samples):
            index = next_index
            next_index += 1  # single-threaded event loop: no lock needed between awaits
            outcome, usage, attempts = await _render_one(samples[index], chat, max_attempts)
            results[index] = outcome
            usage_parts.append(usage)
            totals["attempts"] += attempts
            if progress is not None:
                progress(1)

    workers = max(1, min(concurrency, len(samples)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    intents = [r for r in results if isinstance(r, Intent)]
    rejected = [r for r in results if isinstance(r, Rejection)]
    return RenderOutcome(
        intents=intents,
        rejected=rejected,
        usage=sum(usage_parts, Usage()),
        attempts=totals["attempts"],
    )


__all__ = [
    "PROMPT_PATH",
    "Rejection",
    "RenderOutcome",
    "build_writer_messages",
    "parse_writer_output",
    "render_intents",
    "writer_prompt",
]
