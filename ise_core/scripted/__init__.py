"""The ``scripted`` backend: a seeded, deterministic *program* that plays the LLM roles offline.

It is not a model and never claims to be one. It sits beside the LLM layer and meets the rest
of ISE only through the ``Chat`` protocol (ise_core.llm.base): each role (``writer``,
``user``, ``agent``) is a plain function over the same chat messages a model would see, so
the whole pipeline runs with no key and no network, and the same inputs always give the same
outputs.

What a model would read *for meaning* a program cannot, so the user and the agent are handed
one declared, typed ``EpisodeBrief`` when their ``ScriptedChat`` is built: the intent they
play, the shape parameters (``simulate.scripted``), the seed, the agent's step limit and
whether the agent recovers from its mistakes. The
writer needs nothing beyond its messages (the sample is the JSON block a model is shown too).
Per call, the programs also read the ``Chat`` protocol's ``attempt`` option: how many times
the caller already asked again for this turn (so the user knows a correction precedes it).

Programs register themselves in ``PROGRAMS`` by role name.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ise_core.config import ScriptedShapeSettings, Settings
from ise_core.errors import BackendError
from ise_core.llm.base import ChatResult, Usage
from ise_core.records import Intent, Message, canonical_json


@dataclass(frozen=True)
class EpisodeBrief:
    """What the scripted user and agent are told about their episode beyond the messages."""

    intent: Intent
    shape: ScriptedShapeSettings
    seed: int
    max_steps_per_turn: int
    # False: the careless agent ``ise eval`` measures as a baseline, which never recovers
    # from its mistakes (not a params key: simulation always recovers).
    recover: bool = True

    @classmethod
    def of(cls, intent: Intent, settings: Settings) -> EpisodeBrief:
        return cls(
            intent=intent,
            shape=settings.simulate.scripted,
            seed=settings.seed,
            max_steps_per_turn=settings.simulate.max_steps_per_turn,
        )


@dataclass
class ScriptedCall:
    """Everything a scripted program may look at for one turn."""

    messages: Sequence[Message]
    tools: Sequence[dict[str, Any]] | None
    rng: random.Random
    attempt: int  # the caller's retry index for this turn (0: first try)
    brief: EpisodeBrief | None

    def need_brief(self, role: str) -> EpisodeBrief:
        if self.brief is None:
            raise BackendError(f"the scripted {role} needs an EpisodeBrief (the intent it plays)")
        return self.brief


ScriptedProgram = Callable[[ScriptedCall], Message]

PROGRAMS: dict[str, ScriptedProgram] = {}


def register(role: str) -> Callable[[ScriptedProgram], ScriptedProgram]:
    def decorate(program: ScriptedProgram) -> ScriptedProgram:
        PROGRAMS[role] = program
        return program

    return decorate


def _load_programs() -> None:
    # Imported for their registration side effect; kept lazy so importing the package is cheap.
    import importlib

    for module in ("writer", "user", "agent"):
        try:
            importlib.import_module(f"ise_core.scripted.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ise_core.scripted.{module}":
                raise


def estimate_tokens(text: str) -> int:
    """A rough 4-characters-per-token estimate, so scripted runs still report usage."""
    return max(1, (len(text) + 3) // 4)


class ScriptedChat:
    """A ``Chat`` whose replies come from the registered program for ``role``."""

    def __init__(self, role: str, seed: int = 0, brief: EpisodeBrief | None = None) -> None:
        _load_programs()
        if role not in PROGRAMS:
            known = ", ".join(sorted(PROGRAMS)) or "none"
            raise BackendError(
                f"scripted backend has no program for role {role!r} (known: {known})"
            )
        self.role = role
        self.seed = seed
        self.brief = brief
        self.name = f"scripted:{role}"
        # The user program's first turn is the request (ise_core.llm.base.opens_with_request).
        self.opens_with_request = role == "user"

    def _rng_for(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None
    ) -> random.Random:
        payload = canonical_json(
            {
                "seed": self.seed,
                "role": self.role,
                "messages": [m.to_openai() for m in messages],
                "tools": [t.get("function", {}).get("name") for t in tools or []],
            }
        )
        digest = hashlib.sha256(payload.encode("utf-8")).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> ChatResult:
        started = time.perf_counter()
        attempt = int(options.get("attempt") or 0)
        call = ScriptedCall(messages, tools, self._rng_for(messages, tools), attempt, self.brief)
        reply = PROGRAMS[self.role](call)
        prompt_text = "".join(m.content or "" for m in messages)
        reply_text = (reply.content or "") + "".join(
            tc.function.arguments for tc in reply.tool_calls or []
        )
        usage = Usage(
            prompt_tokens=estimate_tokens(prompt_text),
            completion_tokens=estimate_tokens(reply_text),
        )
        return ChatResult(
            message=reply,
            usage=usage,
            cached=False,
            latency_s=time.perf_counter() - started,
            model=self.name,
        )


__all__ = [
    "PROGRAMS",
    "EpisodeBrief",
    "ScriptedCall",
    "ScriptedChat",
    "ScriptedProgram",
    "estimate_tokens",
    "register",
]
