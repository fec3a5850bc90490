"""Build the ``Chat`` for one role from the ``llm`` settings.

Each role (``writer``, ``user``, ``agent``) resolves its own provider, endpoint, model and
sampling (``llm.roles.<role>`` over the ``llm`` block), so e.g. the scripted writer can feed a
real agent. ``openai`` roles get an ``OpenAIChat`` wired to the process-wide limiter of their
endpoint, the response cache under ``llm.cache_dir`` and the run's ``Accountant``.
``scripted`` roles get a ``ScriptedChat`` (ise_core.scripted: seeded, deterministic, never
cached, see ise_core.llm.cache), handed the episode's ``EpisodeBrief``; with an accountant it
is wrapped in ``MeteredChat`` so its estimated
usage still appears in the run's token statistics (the budget caps only requests sent to an
endpoint, so it never stops a scripted role).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ise_core.config import ROLES, LLMSettings, Role
from ise_core.errors import ConfigError
from ise_core.llm.accounting import Accountant
from ise_core.llm.base import Chat, ChatResult
from ise_core.llm.openai_chat import OpenAIChat
from ise_core.records import Message

if TYPE_CHECKING:
    from ise_core.scripted import EpisodeBrief



class MeteredChat:
    """Wraps any ``Chat`` and records its usage into an ``Accountant`` (no budget, no price).

    Attributes not defined here (``role``, ``seed``, ``brief`` of a ``ScriptedChat``) are
    read through to the wrapped chat; ``inner`` is the chat itself.
    """

    def __init__(self, inner: Chat, accountant: Accountant, role: str) -> None:
        self.inner = inner
        self.accountant = accountant
        self.metered_role = role
        self.name = inner.name

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def __repr__(self) -> str:
        return f"MeteredChat({self.inner!r})"

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> ChatResult:
        result = await self.inner.complete(messages, tools, **options)
        self.accountant.record(
            role=self.metered_role,
            model=result.model or self.name,
            usage=result.usage,
            cached=result.cached,
            retries=result.retries,
            episode=options.get("episode"),
            billable=False,
        )
        return result


def build_accountant(llm: LLMSettings) -> Accountant:
    """The run's accountant; under a Redis limiter its budget is the whole run's."""
    if llm.limiter != "process":
        from ise_core.llm.redis_limits import SharedAccountant

        return SharedAccountant.from_llm(llm)
    return Accountant.from_settings(llm)


def build_chat(
    role: Role,
    settings: LLMSettings,
    *,
    base_dir: Path,
    seed: int,
    accountant: Accountant | None = None,
    episode: str | None = None,
    brief: EpisodeBrief | None = None,
) -> Chat:
    """The ``Chat`` for ``role``.

    ``seed`` is the run's seed for this role (the role's own ``seed`` setting wins when set);
    it seeds the scripted programs and is sent as the sampling seed to an endpoint.
    ``episode`` is the default accounting tag of an endpoint's requests (the intent id).
    ``brief`` is what a scripted user or agent is told about its episode; an endpoint's model
    reads the conversation instead and is never handed it.
    """
    if role not in ROLES:
        raise ConfigError(f"llm.roles: unknown role {role!r} (expected one of {', '.join(ROLES)})")
    resolved = settings.role(role)
    role_seed = resolved["seed"] if resolved["seed"] is not None else seed
    if resolved["provider"] == "scripted":
        from ise_core.scripted import ScriptedChat

        chat: Chat = ScriptedChat(role, seed=role_seed, brief=brief)
        return MeteredChat(chat, accountant, role) if accountant is not None else chat
    return OpenAIChat.from_settings(
        role, settings, base_dir=base_dir, seed=role_seed, accountant=accountant, episode=episode
    )
