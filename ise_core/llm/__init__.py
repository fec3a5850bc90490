"""LLM layer: the Chat protocol and its backends.

- base: the ``Chat`` protocol, ``ChatResult``, ``Usage``
- openai_chat: ``OpenAIChat`` for any OpenAI-compatible endpoint
- scripted: ``ScriptedChat``, the offline deterministic program
- limits: per-endpoint concurrency, rate limits and the retry policy
- cache: the content-addressed on-disk response cache
- accounting: tokens, cost and the budget of a run
- replies: the wire format and the malformed-reply contract
- factory: ``build_chat(role, settings, ...)``

Importing this package does not import the ``openai`` SDK; the client does on first use.
"""

from ise_core.llm.accounting import Accountant
from ise_core.llm.base import Chat, ChatResult, Usage
from ise_core.llm.cache import ResponseCache
from ise_core.llm.factory import MeteredChat, build_chat
from ise_core.llm.limits import EndpointLimiter, LimitSettings, shared_limiter
from ise_core.llm.openai_chat import OpenAIChat

__all__ = [
    "Accountant",
    "Chat",
    "ChatResult",
    "EndpointLimiter",
    "LimitSettings",
    "MeteredChat",
    "OpenAIChat",
    "ResponseCache",
    "Usage",
    "build_chat",
    "shared_limiter",
]
