"""Who is evaluated: the agent under test, resolved from ``eval.agent`` and the command line.

``ise eval --model M [--endpoint URL]``:

- with ``--endpoint``: model ``M`` at that OpenAI-compatible endpoint (vLLM, llama.cpp,
  Ollama, a hosted API); sampling, key variable and limits come from the ``llm`` block and
  ``llm.roles.agent``;
- ``--model scripted`` / ``--model scripted:careless`` without an endpoint: the offline
  scripted agent *program* (ise_core/scripted/agent.py, not a model). ``scripted`` is the
  program as simulation uses it: it knows the recipe for the intent's checks and recovers
  from its own seeded mistakes. ``scripted:careless`` makes a mistake on half the steps it
  can get wrong and never recovers. They are baselines that show what the scores mean;
- any other ``--model`` alone: that model at the endpoint ``eval.agent`` / ``llm.roles.agent``
  / ``llm`` name (with none, the OpenAI API).

Without ``--model``, ``eval.agent`` (overrides over ``llm.roles.agent``) says who is tested.
The user simulator is always the configured ``user`` role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ise_core.config import LLMSettings, RoleSettings, Settings
from ise_core.errors import ConfigError

SCRIPTED = "scripted"
# Shape overrides of the scripted agent program, by profile name.
SCRIPTED_PROFILES: dict[str, dict[str, Any]] = {
    SCRIPTED: {},
    f"{SCRIPTED}:careless": {"mistake_rate": 0.5, "recover": False},
}


@dataclass(frozen=True)
class AgentUnderTest:
    """The agent an eval measures: a label for reports and the llm block it runs with."""

    label: str
    llm: LLMSettings  # ``roles.agent`` is the agent under test
    shape: dict[str, Any] = field(default_factory=dict)  # the scripted program's shape

    @property
    def scripted(self) -> bool:
        return bool(self.llm.role("agent")["provider"] == SCRIPTED)

    def describe(self) -> dict[str, Any]:
        """What identifies the agent in results and fingerprints (never the key itself)."""
        resolved = self.llm.role("agent")
        return {
            "label": self.label,
            "provider": resolved["provider"],
            "model": resolved["model"],
            "base_url": resolved["base_url"],
            "temperature": resolved["temperature"],
            "top_p": resolved["top_p"],
            "max_tokens": resolved["max_tokens"],
            "tool_calling": self.llm.tool_calling_for("agent"),
            "shape": self.shape,
        }


def _overrides(settings: Settings, model: str | None, endpoint: str | None) -> dict[str, Any]:
    base = settings.llm.roles.agent.model_dump(exclude_none=True)
    base.update(settings.eval.agent.model_dump(exclude_none=True))
    if endpoint:
        base.update(provider="openai", base_url=endpoint)
    if model:
        base["model"] = model
        if not endpoint and (model == SCRIPTED or model.startswith(f"{SCRIPTED}:")):
            base["provider"] = SCRIPTED
    return base


def resolve_agent(
    settings: Settings, *, model: str | None = None, endpoint: str | None = None
) -> AgentUnderTest:
    """The agent under test (see the module docstring); a ConfigError says what is missing."""
    try:
        agent_role = RoleSettings.model_validate(_overrides(settings, model, endpoint))
    except ValueError as exc:
        raise ConfigError(f"eval.agent / --model / --endpoint: {exc}") from None
    roles = settings.llm.roles.model_copy(update={"agent": agent_role})
    llm = settings.llm.model_copy(update={"roles": roles})
    resolved = llm.role("agent")
    if resolved["provider"] == SCRIPTED:
        name = str(resolved["model"] or SCRIPTED)
        if model and not name.startswith(SCRIPTED):
            raise ConfigError(
                f"--model {model}: no endpoint to reach it (pass --endpoint URL, or set "
                "eval.agent.provider: openai and eval.agent.base_url)"
            )
        name = name if name.startswith(SCRIPTED) else SCRIPTED
        if name not in SCRIPTED_PROFILES:
            raise ConfigError(
                f"--model {name}: unknown scripted agent profile "
                f"(known: {', '.join(SCRIPTED_PROFILES)}; pass --endpoint URL for a model)"
            )
        shape = {**settings.simulate.scripted.model_dump(mode="json"), **SCRIPTED_PROFILES[name]}
        return AgentUnderTest(name, llm, shape)
    if not resolved["model"]:
        raise ConfigError("ise eval: name the model under test (--model M, or eval.agent.model)")
    return AgentUnderTest(str(resolved["model"]), llm)


__all__ = ["SCRIPTED_PROFILES", "AgentUnderTest", "resolve_agent"]
