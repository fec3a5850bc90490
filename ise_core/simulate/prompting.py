"""Prompt templates for the simulation roles, read from the data files in ``ise_core/prompts``.

Templates use ``{{name}}`` placeholders. Rendering fails loudly on a placeholder without a
value (a typo in a template must not silently reach a model), and JSON braces in the text
are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ise_core.errors import ConfigError
from ise_core.records import Intent

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


@lru_cache(maxsize=32)
def load_prompt(name: str) -> str:
    """The text of ``ise_core/prompts/<name>.md``."""
    path = PROMPTS_DIR / f"{name}.md"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: prompt template not found") from None


def render(template: str, values: Mapping[str, Any], *, source: str = "template") -> str:
    """Fill ``{{name}}`` placeholders; a placeholder with no value is a ConfigError."""
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise ConfigError(f"{source}: no value for placeholder(s) {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def render_prompt(template_name: str, /, **values: Any) -> str:
    """Render ``ise_core/prompts/<template_name>.md`` with ``values``."""
    return render(load_prompt(template_name), values, source=f"{PROMPTS_DIR / template_name}.md")


def observed_reply(observation: str) -> str:
    """The agent's reply inside a rendered ``user_observation`` message: its lines without the
    template's opening line and its closing instruction (the inverse of the rendering, read
    from the same template, so a reworded template keeps working)."""
    opening, closing = _observation_frame()
    lines = observation.splitlines()
    if lines and lines[0] == opening:
        lines = lines[1:]
    return "\n".join(line for line in lines if not closing.fullmatch(line)).strip()


@lru_cache(maxsize=1)
def _observation_frame() -> tuple[str, re.Pattern[str]]:
    template = load_prompt("user_observation")
    lines = [line for line in template.splitlines() if line.strip()]
    literal = [re.escape(part) for part in _PLACEHOLDER.split(lines[-1])[::2]]
    return lines[0], re.compile("(?:.*)".join(literal))


def _bullets(items: Sequence[str], *, numbered: bool = False, empty: str = "(none)") -> str:
    if not items:
        return empty
    if numbered:
        return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
    return "\n".join(f"- {item}" for item in items)


# How the prompt speaks of the opening request: to be written, or already sent as written.
OPENING_TO_WRITE = "send it first, in your own words or as written"
OPENING_SENT = "already sent as your first message; do not repeat it"


def user_system_prompt(
    intent: Intent, *, show_workspace_files: bool = False, opening_sent: bool = False
) -> str:
    """The role-locked user simulator's system prompt for ``intent`` and its persona.
    ``opening_sent``: the request went out as the first message (simulate.first_turn)."""
    persona = intent.persona
    note = (
        "After each reply you also see a short listing of the files in the workspace, as you "
        "would see them in a file browser."
        if show_workspace_files
        else ""
    )
    return render_prompt(
        "user_simulator",
        name=persona.name,
        role=persona.role,
        industry=persona.industry,
        experience_level=persona.experience_level,
        expertise=", ".join(persona.expertise),
        work_context=persona.work_context,
        communication_style=persona.communication_style,
        request=intent.request.strip(),
        opening_note=OPENING_SENT if opening_sent else OPENING_TO_WRITE,
        goal=intent.goal.strip(),
        hidden_details=_bullets(intent.hidden_details, numbered=True),
        success_criteria=_bullets(intent.success_criteria),
        workspace_note=note,
    )


def agent_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """The agent's system prompt, listing the workspace tools by name and description."""
    lines = []
    for tool in tools:
        function = tool.get("function", {})
        description = str(function.get("description", "")).strip().splitlines()
        summary = description[0] if description else ""
        lines.append(f"- `{function.get('name', '?')}`: {summary}".rstrip(": "))
    return render_prompt("agent_system", tool_list="\n".join(lines) or "(no tools)")


__all__ = [
    "PROMPTS_DIR",
    "agent_system_prompt",
    "load_prompt",
    "observed_reply",
    "render",
    "render_prompt",
    "user_system_prompt",
]
