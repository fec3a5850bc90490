"""Capture real replies from llama-server as test fixtures for the reply parsers.

    python -m tests.realmodel.capture_replies [--out tests/llm/captured]

Starts the bundled model on 127.0.0.1 (and a second server with a 1,024-token context for the
overflow error), sends each request below exactly as ``OpenAIChat`` would build it (native or
prompted), and writes one JSON file per case: the request's shape, the HTTP status and the
stored reply (``stored_reply`` of the body), or the error body. tests/llm/test_captured_replies.py
checks the parsers against these files with expectations written by hand after reading them;
re-capturing (another model, another llama.cpp) means re-reading them.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ise_core.llm.local_server import LocalModelServer
from ise_core.llm.openai_chat import OpenAIChat
from ise_core.llm.probe import CHECK_MESSAGES, CHECK_TOOL
from ise_core.llm.replies import stored_reply
from ise_core.records import Message
from ise_core.simulate.prompting import agent_system_prompt

OUT = Path(__file__).resolve().parents[1] / "llm" / "captured"

EXEC = {
    "type": "function",
    "function": {
        "name": "exec",
        "description": "Run a shell command in the workspace and return its output.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "the command"}},
            "required": ["command"],
        },
    },
}
WRITE = {
    "type": "function",
    "function": {
        "name": "write",
        "description": "Write a file in the workspace.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
}
READ = {
    "type": "function",
    "function": {
        "name": "read",
        "description": "Read a file in the workspace.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    },
}
AGENT_TOOLS = [EXEC, WRITE, READ]


def agent(text: str) -> list[Message]:
    return [
        Message(role="system", content=agent_system_prompt(AGENT_TOOLS)),
        Message(role="user", content=text),
    ]


# name → (mode, messages, tools, options); a mode ending in "+schema" adds constrained output
# (response_format with the schema of one tool call or a final answer).
CASES: dict[str, tuple[str, list[Message], list[dict[str, Any]], dict[str, Any]]] = {
    "probe_native_auto": ("native", CHECK_MESSAGES, [CHECK_TOOL], {"tool_choice": "auto"}),
    "probe_native_required": ("native", CHECK_MESSAGES, [CHECK_TOOL], {"tool_choice": "required"}),
    "probe_prompted": ("prompted", CHECK_MESSAGES, [CHECK_TOOL], {}),
    "agent_write_native": (
        "native", agent("Create a file hello.txt that contains the word hi."), AGENT_TOOLS, {},
    ),
    "agent_write_prompted": (
        "prompted", agent("Create a file hello.txt that contains the word hi."), AGENT_TOOLS, {},
    ),
    "agent_two_steps_prompted": (
        "prompted",
        agent("First list the files with ls, then read the file notes.md. Do both now."),
        AGENT_TOOLS,
        {},
    ),
    "agent_list_native": (
        "native", agent("Which files are in the workspace? Use ls."), AGENT_TOOLS, {},
    ),
    "probe_prompted_schema": ("prompted+schema", CHECK_MESSAGES, [CHECK_TOOL], {}),
    "agent_write_prompted_schema": (
        "prompted+schema",
        agent("Create a file hello.txt that contains the word hi."),
        AGENT_TOOLS,
        {},
    ),
    "agent_answer_prompted_schema": (
        "prompted+schema",
        agent("Thanks, that is all. Just say goodbye, no tools needed."),
        AGENT_TOOLS,
        {},
    ),
    "think_block": (
        "native",
        [
            Message(
                role="system",
                content="Before answering, think inside <think></think> tags, then answer.",
            ),
            Message(role="user", content="What is 12 times 3?"),
        ],
        [],
        {},
    ),
    "cut_at_max_tokens": (
        "native",
        [Message(role="user", content="Write a long story about a lighthouse keeper.")],
        [],
        {"max_tokens": 24},
    ),
    "user_turn_json": (
        "native",
        [
            Message(
                role="system",
                content=(
                    "You are Dana, a data analyst, asking an assistant for help. Answer with "
                    'ONE JSON object: {"completed": false, "query": "your message", '
                    '"reason": "why", "is_success": null}'
                ),
            ),
            Message(role="user", content="The assistant replied: I created report.csv."),
        ],
        [],
        {},
    ),
}  # fmt: skip


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def capture(server: LocalModelServer, name: str, out: Path) -> None:
    mode, messages, tools, options = CASES[name]
    chat = OpenAIChat("agent", model=server.model_name, base_url=server.base_url,
                      tool_calling=mode.removesuffix("+schema"),
                      constrained=mode.endswith("+schema"),
                      sampling={"temperature": 0.0, "seed": 7, "max_tokens": 512})  # fmt: skip
    body = chat.request_body(messages, tools or None, options)
    status, reply = post(f"{server.base_url}/chat/completions", body)
    record = {
        "case": name,
        "mode": mode,
        "tools": [t["function"]["name"] for t in tools],
        "options": {**options, "max_tokens": body.get("max_tokens")},
        "status": status,
        "reply": stored_reply(reply) if status == 200 else reply,
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"{name}: {status}")


def capture_overflow(out: Path) -> None:
    with LocalModelServer(context=1024, slots=1) as small:
        words = " ".join(f"word{i}" for i in range(3000))
        body = {
            "model": small.model_name,
            "messages": [{"role": "user", "content": f"Summarise: {words}"}],
            "max_tokens": 16,
        }
        status, reply = post(f"{small.base_url}/chat/completions", body)
    record = {"case": "context_overflow", "status": status, "reply": reply}
    (out / "context_overflow.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"context_overflow: {status}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with LocalModelServer() as server:
        for name in args.only or CASES:
            if name in CASES:
                capture(server, name, args.out)
    if not args.only or "context_overflow" in args.only:
        capture_overflow(args.out)


if __name__ == "__main__":
    main()
