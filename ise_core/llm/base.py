"""The one ``Chat`` protocol every LLM role (intent writer, user simulator, agent) goes through.

Backends: ``scripted`` (an offline deterministic program, ise_core.scripted) and
``openai`` (any OpenAI-compatible endpoint, ise_core.llm.openai_chat). Tests inject their own
``Chat``; ``ise_core.llm.factory.build_chat`` picks the backend for a role from the settings.

Options every backend accepts in ``complete(..., **options)`` (unknown ones are ignored by the
scripted backend and sent as request fields by the openai backend):

- ``temperature``, ``top_p``, ``max_tokens``, ``seed``: override the role's sampling settings.
- ``episode``: a tag (e.g. the intent id) the token accounting is broken down by; never sent.
- ``attempt``: a caller-level retry index; part of the cache key, never sent, so a retry after
  a malformed reply asks the endpoint again instead of replaying the cached reply.

Failures: ``LLMError`` (endpoint failed for good), ``MalformedResponse`` (a subclass: the reply
is unusable; carries ``kind``, ``detail`` and the best-effort ``result``), ``BudgetExceeded``
(raised before sending). ``MalformedResponse`` lives in ise_core.llm.replies (the
malformed-reply contract), the others in ise_core.errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from ise_core.records import Message

if TYPE_CHECKING:
    from ise_core.llm.adaptive import Attempt
    from ise_core.llm.limits import LimitSettings


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ChatResult(BaseModel):
    """One completion: the assistant message, what it cost, and where it came from."""

    model_config = ConfigDict(extra="forbid")

    message: Message
    usage: Usage = Usage()
    cached: bool = False
    latency_s: float = 0.0
    model: str = ""
    retries: int = 0
    # "stop", "tool_calls", "length", ... as the endpoint reported it (None when unknown).
    finish_reason: str | None = None
    # Tool calls read from the reply text rather than the API's tool_calls (ise_core.llm.dialect).
    text_tool_calls: int = 0
    # Positions (in the messages passed to ``complete``) of the older tool outputs cut to fit
    # the context window for this request (ise_core.llm.context.compact); the caller's
    # messages are unchanged, only the request was shortened.
    compacted: list[int] = []

    @property
    def compactions(self) -> int:
        """How many tool outputs this request had cut."""
        return len(self.compacted)


def opens_with_request(chat: Chat) -> bool:
    """Whether ``chat`` is a program that opens the conversation with the intent's request by
    itself (the scripted user, ise_core.scripted.user). Under ``simulate.first_turn: request``
    such a seat still speaks its own opening; any other seat is not asked for one."""
    return bool(getattr(chat, "opens_with_request", False))


@runtime_checkable
class Chat(Protocol):
    """An LLM seat. ``complete`` returns the assistant's next message for ``messages``."""

    name: str

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> ChatResult: ...


class Limiter(Protocol):
    """An endpoint's limits as the client uses them: one in-flight ``slot`` per attempt (it
    yields the ``Attempt``, on which the client records whether it was answered or met an
    overload), a shared ``pause`` after a 429, token settlement, counters. Kept in the process
    (``limits.EndpointLimiter``) or shared in Redis (``redis_limits.RedisEndpointLimiter``)."""

    @property
    def limits(self) -> LimitSettings: ...

    def slot(self, estimated_tokens: int = 0) -> AbstractAsyncContextManager[Attempt]: ...

    def pause(self, seconds: float) -> None: ...

    def settle_tokens(self, estimated: int, actual: int) -> None: ...

    def stats(self) -> dict[str, Any]: ...
