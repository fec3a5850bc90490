"""Realistic stage outputs for export and gate tests: intents, episodes, kept trajectories.

Shapes follow the contracts: ``records.Intent`` lines with stats.json beside them; episodes as
``records.Trajectory`` JSON (system first, assistant tool calls with JSON-string arguments,
each answered by exactly one tool message with ``tool_call_id``, ``name``, ``content``,
``success``), a failed call recovered later, and metadata as the simulator records it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ise_core.catalog import intent_hash
from ise_core.config import Settings, settings_from_dict
from ise_core.records import (
    Check,
    FunctionCall,
    Intent,
    Message,
    Persona,
    TaskRef,
    ToolCall,
    Trajectory,
    write_json,
    write_jsonl,
)
from ise_core.stages import stage

DOMAINS = ("file-io", "code-runtime", "automation-flow", "web-extraction")
TASKS = {
    "file-io": ["organize-downloads", "merge-csv-reports", "rename-photo-batch"],
    "code-runtime": ["debug-failing-tests", "profile-slow-script", "pin-dependencies"],
    "automation-flow": ["nightly-backup-job", "cron-report-mailer", "watch-folder-trigger"],
    "web-extraction": ["scrape-price-table", "search-competitor-info", "archive-changelog"],
}
COMPLEXITY_CYCLE = (
    "complex",
    "medium",
    "complex",
    "medium",
    "simple",
    "complex",
    "medium",
    "complex",
    "medium",
    "complex",
)
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {key: {"type": "string"} for key in keys},
                "required": list(keys),
            },
        },
    }
    for name, description, keys in (
        ("exec", "Run a shell command in the workspace.", ("command",)),
        ("write", "Write a file in the workspace.", ("path", "content")),
        ("read", "Read a file from the workspace.", ("path",)),
    )
]


def make_persona(index: int) -> Persona:
    return Persona(
        id=f"p{index:04d}",
        name=f"Alex Example {index}",
        role=["data analyst", "site reliability engineer", "product manager"][index % 3],
        industry=["logistics", "healthcare", "retail"][index % 3],
        expertise=["spreadsheets", "python"],
        experience_level=["junior", "senior", "lead"][index % 3],
        communication_style=["terse", "friendly", "formal"][index % 3],
        work_context="a small team with a shared drive and a CI server",
    )


def make_intent(index: int) -> Intent:
    domains = [DOMAINS[index % 4], DOMAINS[(index + 1) % 4]]
    tasks = [
        TaskRef(id=f"{d}.{slug}", domain=d, title=slug.replace("-", " "))
        for d in domains
        for slug in TASKS[d][: 2 if d == domains[0] else 1]
    ]
    topic = [
        "quarterly invoices",
        "the nightly build",
        "supplier price lists",
        "patient intake forms",
        "the release notes",
    ][index % 5]
    return Intent(
        id=f"intent-{index:05d}",
        index=index,
        persona=make_persona(index),
        domains=domains,
        tasks=tasks,
        complexity=COMPLEXITY_CYCLE[index % len(COMPLEXITY_CYCLE)],
        request=f"Request #{index}: help me tidy up {topic} and leave a summary in "
        f"report_{index}.md when you are done.",
        goal=f"A tidy workspace for {topic} with report_{index}.md summarising it.",
        hidden_details=["the team wants markdown, not PDF"],
        success_criteria=[f"report_{index}.md exists and lists what changed"],
        checks=[Check(kind="file_exists", path=f"report_{index}.md")],
    )


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name=name, arguments=json.dumps(arguments)))


def make_trajectory(intent: Intent, user_turns: int = 4, kept: bool = True) -> Trajectory:
    """An episode: each user turn gets a tool-calling assistant step and a reply; the first
    turn's ``exec`` fails and a later ``exec`` succeeds (a recovered error)."""
    report = f"report_{intent.index}.md"
    messages = [
        Message(role="system", content="You are a capable assistant working in a Linux shell."),
        Message(role="user", content=intent.request),
    ]
    for turn in range(user_turns):
        if turn:
            messages.append(
                Message(role="user", content=f"Thanks. Step {turn + 1}: now double-check {report}.")
            )
        exec_id, write_id = f"call_{turn}_exec", f"call_{turn}_write"
        command = "cat missing.txt" if turn == 0 else f"wc -l {report}"
        messages.append(
            Message(
                role="assistant",
                content=None,
                tool_calls=[
                    _call(exec_id, "exec", {"command": command}),
                    _call(write_id, "write", {"path": report, "content": f"# Step {turn}\n"}),
                ],
            )
        )
        failed = turn == 0
        messages += [
            Message(
                role="tool",
                tool_call_id=exec_id,
                name="exec",
                content="cat: missing.txt: No such file or directory" if failed else f"1 {report}",
                success=not failed,
            ),
            Message(
                role="tool",
                tool_call_id=write_id,
                name="write",
                content=f"wrote {report}",
                success=True,
            ),
            Message(role="assistant", content=f"Done with step {turn + 1}; {report} is updated."),
        ]
    tool_messages = [m for m in messages if m.role == "tool"]
    metadata: dict[str, Any] = {
        "persona": intent.persona.model_dump(mode="json"),
        "domains": list(intent.domains),
        "tasks": [t.model_dump(mode="json") for t in intent.tasks],
        "complexity": intent.complexity,
        "user_turns": user_turns,
        "dialogue_turns": sum(1 for m in messages if m.role != "system"),
        "tool_calls": len(tool_messages),
        "distinct_tools": 2,
        "tool_errors": 1,
        "recovered_errors": 1 if user_turns > 1 else 0,
        "token_usage": {
            "user": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            "agent": {"prompt_tokens": 400, "completion_tokens": 80, "total_tokens": 480},
            "total_tokens": 600,
        },
        "llm": {"user": "scripted:user", "agent": "scripted:agent"},
        "backend": "local",
        "intent_hash": intent_hash(intent),
    }
    return Trajectory(
        intent_id=intent.id,
        session_id=f"session-{intent.id}",
        status="kept" if kept else "rejected",
        stop_reason="completed" if kept else "max_turns",
        completed=kept,
        is_success=True if kept else None,
        kept=kept,
        messages=messages,
        tools=TOOLS,
        final_output=f"{report} now lists every change.",
        metadata=metadata,
    )


def settings_for(root: Path, **blocks: Any) -> Settings:
    """Settings with every stage folder under ``root``."""
    data: dict[str, Any] = {
        "intents": {"out_dir": "data/intents"},
        "simulate": {"out_dir": "data/trajectories"},
        "export": {"out_dir": "data/sft"},
        "workspace": {"root": ".cache/sandboxes"},
    }
    for name, block in blocks.items():
        data[name] = {**data.get(name, {}), **block}
    return settings_from_dict(data, "test params", base_dir=root)


def write_intents(settings: Settings, intents: list[Intent], **stats: Any) -> Path:
    out = settings.path(settings.intents.out_dir)
    write_jsonl(out / "intents.jsonl", intents)
    n = len(intents)
    values: dict[str, Any] = {
        "n_sampled": n,
        "n_rejected": 0,
        "n_exact_duplicates": 0,
        "n_near_duplicates": 0,
        "n_unique": n,
        "unique_share": 1.0,
        # A Vendi score is at most n; a varied set of requests scores a large share of it.
        "vendi_score": round(0.8 * n, 4),
        "vendi_curve": [
            {"n": max(1, n // 2), "vendi_score": round(0.45 * n, 4)},
            {"n": n, "vendi_score": round(0.8 * n, 4)},
        ],
        "embedding_model": "all-mpnet-base-v2",
        "dedup_threshold": 0.9,
        "params_fingerprint": "0123456789abcdef",
    }
    values.update(stats)
    write_json(out / "stats.json", values)
    return out


def write_trajectories(settings: Settings, trajectories: list[Trajectory]) -> Path:
    """Episode files, the kept ones as trajectories.jsonl, and stats.json, stamped with the
    simulate params fingerprint as the simulator stamps them."""
    out = settings.path(settings.simulate.out_dir)
    fp = stage("simulate").fingerprint(settings)
    trajectories = [t.model_copy(update={"params_fingerprint": fp}) for t in trajectories]
    for trajectory in trajectories:
        write_json(
            out / "episodes" / f"{trajectory.intent_id}.json", trajectory.model_dump(mode="json")
        )
    write_jsonl(out / "trajectories.jsonl", [t for t in trajectories if t.kept])
    write_json(
        out / "stats.json",
        {
            "n_episodes": len(trajectories),
            "role_drift_rate": 0.0,
            "params_fingerprint": fp,
        },
    )
    return out


def build_pipeline_outputs(root: Path, n: int = 12, rejected: int = 2, **blocks: Any) -> Settings:
    """Intents plus episodes (``rejected`` of them not kept), all under ``root``."""
    settings = settings_for(root, **blocks)
    intents = [make_intent(i) for i in range(n)]
    write_intents(settings, intents)
    trajectories = [
        make_trajectory(intent, user_turns=3 + i % 4, kept=i >= rejected)
        for i, intent in enumerate(intents)
    ]
    write_trajectories(settings, trajectories)
    return settings
