"""Small builders and fakes shared by the simulation tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ise_core.config import Settings, settings_from_dict
from ise_core.llm.base import Chat, ChatResult, Usage
from ise_core.records import (
    Check,
    FixtureFile,
    FunctionCall,
    Intent,
    Message,
    Persona,
    TaskRef,
    ToolCall,
    write_jsonl,
)
from ise_core.simulate.episode import EpisodeResult, run_episode
from ise_core.workspace import open_workspace

REPO = Path(__file__).resolve().parents[2]


def make_persona(style: str = "terse, lowercase, no greetings") -> Persona:
    return Persona(
        id="p-0001",
        name="Ana Ruiz",
        role="data analyst",
        industry="Retail",
        expertise=["spreadsheets"],
        experience_level="senior",
        communication_style=style,
        work_context="Works in a small team.",
    )


def make_intent(
    intent_id: str = "it-000001",
    *,
    checks: Sequence[Check] | None = None,
    details: Sequence[str] | None = None,
    fixtures: Sequence[FixtureFile] = (),
    style: str = "terse, lowercase, no greetings",
    complexity: str = "medium",
) -> Intent:
    return Intent(
        id=intent_id,
        index=0,
        persona=make_persona(style),
        domains=["code-runtime", "file-io"],
        tasks=[
            TaskRef(
                id="code-runtime.write-cli-tool", domain="code-runtime", title="write a CLI tool"
            ),
            TaskRef(id="file-io.convert-csv", domain="file-io", title="convert a CSV to JSON"),
        ],
        complexity=complexity,  # type: ignore[arg-type]
        request="I need a small report script for the monthly sales numbers.",
        goal="A script that runs and a report file.",
        hidden_details=list(
            details
            if details is not None
            else [
                "The script goes in scripts/report.py and `python3 scripts/report.py` must exit 0.",
                'Put the summary in reports/summary.md; it must mention "Total sales".',
                "Keep settings in config/report.json; "
                "`python3 -m json.tool config/report.json` must pass.",
                "Use only the standard library.",
            ]
        ),
        success_criteria=["the script runs", "the summary exists"],
        checks=list(
            checks
            or [
                Check(kind="command_succeeds", command="python3 scripts/report.py"),
                Check(kind="file_contains", path="reports/summary.md", text="Total sales"),
                Check(kind="command_succeeds", command="python3 -m json.tool config/report.json"),
            ]
        ),
        fixtures=list(fixtures),
    )


def make_settings(tmp_path: Path, **simulate: Any) -> Settings:
    """Settings rooted in ``tmp_path`` with the local sandbox and the packaged template."""
    data = {
        "seed": 7,
        "intents": {"out_dir": "data/intents"},
        "workspace": {
            "backend": "local",
            "template": str(REPO / "ise_core" / "workspace" / "template"),
            "root": str(tmp_path / "sandboxes"),
            "call_timeout_s": 20,
        },
        # The fake users below script every turn, their opening included.
        "simulate": {"concurrency": 2, "first_turn": "generated", **simulate},
    }
    return settings_from_dict(data, "test params", base_dir=tmp_path)


def write_intents(settings: Settings, intents: Sequence[Intent]) -> Path:
    path = settings.path(settings.intents.out_dir) / "intents.jsonl"
    write_jsonl(path, intents)
    return path


def call(name: str, arguments: Any, call_id: str) -> ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(id=call_id, function=FunctionCall(name=name, arguments=text))


def turn_json(query: str, completed: bool = False, success: bool | None = None) -> str:
    return json.dumps(
        {"completed": completed, "query": query, "reason": "test", "is_success": success}
    )


class FakeChat:
    """A ``Chat`` answering from a list of messages (or a function of the request)."""

    def __init__(
        self,
        replies: Sequence[Message | str] | Callable[[Sequence[Message]], Message | str],
        name: str = "fake",
    ) -> None:
        self.replies = replies
        self.name = name
        self.requests: list[list[Message]] = []

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> ChatResult:
        self.requests.append(list(messages))
        if callable(self.replies):
            reply = self.replies(messages)
        else:
            index = len(self.requests) - 1
            reply = self.replies[min(index, len(self.replies) - 1)]
        if isinstance(reply, str):
            reply = Message(role="assistant", content=reply)
        return ChatResult(message=reply, usage=Usage(prompt_tokens=10, completion_tokens=5))


def local_sandbox_reason() -> str | None:
    from ise_core.workspace.local import local_available

    ok, reason = local_available()
    return None if ok else reason


def run_in_workspace(
    tmp_path: Path, intent: Intent, user: Chat, agent: Chat, settings: Settings, **episode: Any
) -> EpisodeResult:
    """One episode of ``intent`` in a fresh local workspace under ``tmp_path``, closed after;
    ``episode``: run_episode's other keywords (session_id, judge, ...)."""
    workspace = open_workspace(settings.workspace, base_dir=tmp_path)
    try:
        return asyncio.run(
            run_episode(
                intent,
                user=user,
                agent=agent,
                workspace=workspace,
                settings=settings.simulate,
                **episode,
            )
        )
    finally:
        workspace.close()


def writer_agent(content: str, claim: str) -> FakeChat:
    """An agent that answers a user message by writing ``content`` to out/result.txt for real,
    and the tool's result by saying ``claim``."""

    def reply(messages: Sequence[Message]) -> Message:
        if messages[-1].role == "user":
            args = {"path": "out/result.txt", "content": content}
            return Message(role="assistant", tool_calls=[call("write", args, "w1")])
        return Message(role="assistant", content=claim)

    return FakeChat(reply, name="agent")
