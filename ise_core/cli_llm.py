"""``ise llm check``: one small request to a role's configured endpoint.

Prints the endpoint, the model, the latency and whether tool calling works (the model called
the offered ``echo`` tool with JSON arguments). The request bypasses the response cache, so it
always reaches the endpoint, and it is retried at most once, so a dead endpoint fails fast.

Exit codes: 0 the endpoint answered (and, for the agent role, tool calling works); 1 the check
failed (unreachable, an error status, or an agent model that cannot call tools), with a message
naming the endpoint, the model and the status; 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ise_core.config import DEFAULT_PARAMS, ROLES, load_settings
from ise_core.errors import ISEError, LLMError
from ise_core.llm.replies import MalformedResponse
from ise_core.records import Message

CHECK_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "echo",
        "description": "Echo the given text back.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "the text to echo"}},
            "required": ["text"],
        },
    },
}
CHECK_MESSAGES = [
    Message(role="system", content="You are a connectivity check. Use the tools you are given."),
    Message(role="user", content="Call the echo tool with the text 'ping'."),
]


def register(subparsers: Any) -> None:
    """Add ``llm check`` to the ``ise`` command's subparsers."""
    llm = subparsers.add_parser("llm", help="the LLM endpoint: check it answers and calls tools")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True, metavar="LLM_COMMAND")
    check = llm_sub.add_parser(
        "check", help="one small request: model, latency, whether tool calling works"
    )
    check.add_argument(
        "--params", default=str(DEFAULT_PARAMS), help="params file (default: ./params.yaml)"
    )
    check.add_argument(
        "--role", choices=ROLES, default="agent", help="role to check"
    )
    check.set_defaults(handler=cmd_llm_check)


async def _check(chat: Any) -> tuple[Any, str | None]:
    """(result or None, problem with tool calling or None)."""
    try:
        result = await chat.complete(CHECK_MESSAGES, [CHECK_TOOL], tool_choice="auto")
    except MalformedResponse as bad:
        return bad.result, f"{bad.kind}: {bad.detail}"
    finally:
        await chat.aclose()
    calls = result.message.tool_calls or []
    if not any(call.function.name == "echo" for call in calls):
        return result, "the model answered in text instead of calling the offered tool"
    return result, None


def cmd_llm_check(args: argparse.Namespace) -> int:
    from ise_core.llm.limits import EndpointLimiter, LimitSettings
    from ise_core.llm.openai_chat import OpenAIChat

    settings = load_settings(Path(args.params))
    llm = settings.llm
    role = args.role
    resolved = llm.role(role)
    if resolved["provider"] == "scripted":
        print(
            f"llm check: role {role} uses the scripted backend, an offline deterministic "
            "program (not a model); there is no endpoint to contact. Set llm.provider (or "
            f"llm.roles.{role}.provider) to openai to use one."
        )
        return 0
    chat = OpenAIChat.from_settings(role, llm, base_dir=settings.base_dir, seed=settings.seed)
    import openai  # noqa: F401  (imported before timing, so latency is the endpoint's)
    chat.cache = None  # always reach the endpoint
    # A limiter of its own: one retry at most, so a dead endpoint fails in seconds.
    chat.limiter = EndpointLimiter(
        chat.base_url,
        chat.model,
        LimitSettings(
            max_in_flight=1,
            max_retries=min(1, llm.max_retries),
            backoff_base_s=min(llm.backoff_base_s, 1.0),
            backoff_max_s=min(llm.backoff_max_s, 2.0),
        ),
    )
    print(f"endpoint: {chat.base_url}")
    print(f"model: {chat.model} (role {role})")
    try:
        result, problem = asyncio.run(_check(chat))
    except LLMError as exc:
        print(f"llm check failed: {exc}", file=sys.stderr)
        return 1
    if result is not None:
        if result.model and result.model != chat.model:
            print(f"model reported by the endpoint: {result.model}")
        print(f"latency: {result.latency_s:.3f} s")
        print(
            f"tokens: {result.usage.prompt_tokens} prompt, {result.usage.completion_tokens} "
            "completion"
        )
    if problem is None:
        call = next(c for c in result.message.tool_calls or [] if c.function.name == "echo")
        print(f"tool calling: yes (called echo with {call.function.arguments})")
        return 0
    print(f"tool calling: no ({problem})")
    if role == "agent":
        print(
            f"llm check failed: the agent role needs tool calling; endpoint {chat.base_url}, "
            f"model {chat.model}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ise_core.cli_llm llm check ...`` (the same command outside ``ise``)."""
    parser = argparse.ArgumentParser(prog="ise")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ISEError as exc:
        print(f"ise: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
