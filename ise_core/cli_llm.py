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

from ise_core.cli_args import add_params
from ise_core.config import ROLES, load_settings
from ise_core.errors import ISEError, LLMError
from ise_core.llm.probe import CHECK_MESSAGES, CHECK_TOOL, ProbeOutcome, probe_tool_calling

__all__ = ["CHECK_MESSAGES", "CHECK_TOOL", "cmd_llm_check", "main", "register"]


def register(subparsers: Any) -> None:
    """Add ``llm check`` to the ``ise`` command's subparsers."""
    llm = subparsers.add_parser("llm", help="the LLM endpoint: check it answers and calls tools")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True, metavar="LLM_COMMAND")
    check = llm_sub.add_parser(
        "check", help="one small request: model, latency, whether tool calling works"
    )
    add_params(check)
    check.add_argument(
        "--role", choices=ROLES, default="agent", help="role to check"
    )
    check.set_defaults(handler=cmd_llm_check)


async def _check(chat: Any) -> ProbeOutcome:
    """The tool-calling probe (native, then prompted), the same one ``auto`` runs."""
    try:
        return await probe_tool_calling(chat)
    finally:
        await chat.aclose()


def _print_context(chat: Any) -> None:
    from ise_core.llm.context import discover_context_window
    from ise_core.llm.openai_chat import PLACEHOLDER_KEY

    key = chat._api_key()
    window = chat.context_window or discover_context_window(
        chat.base_url, chat.model, None if key == PLACEHOLDER_KEY else key
    )
    source = "llm.context_window" if chat.context_window else "reported by the server"
    if window:
        print(f"context window: {window} tokens ({source})")
    else:
        print("context window: unknown (set llm.context_window to enable compaction)")
    print(f"max_tokens: {chat.sampling.get('max_tokens')}")
    print(f"constrained output: {'on' if chat.constrained else 'off'}")


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
        outcome = asyncio.run(_check(chat))
    except LLMError as exc:
        print(f"llm check failed: {exc}", file=sys.stderr)
        return 1
    result = outcome.result
    if result is not None:
        if result.model and result.model != chat.model:
            print(f"model reported by the endpoint: {result.model}")
        print(f"latency: {result.latency_s:.3f} s")
        print(
            f"tokens: {result.usage.prompt_tokens} prompt, {result.usage.completion_tokens} "
            "completion"
        )
    _print_context(chat)
    configured = llm.tool_calling_for(role)
    if outcome.mode is not None:
        print(
            f"tool calling: {outcome.mode} (called echo with {outcome.call_arguments()}; "
            f"{outcome.detail})"
        )
        print(f"llm.tool_calling: {configured}")
        if configured not in (outcome.mode, "auto"):
            print(
                f"  advice: set llm.tool_calling (or llm.roles.{role}.tool_calling) to "
                f"{outcome.mode} or auto for this endpoint"
            )
        return 0
    print(f"tool calling: no ({outcome.detail})")
    if not chat.constrained:
        print(
            "  advice: small models often hold no format on their own; with a server that "
            "supports response_format json_schema (llama.cpp, vLLM, SGLang) try "
            "llm.constrained_output: true with llm.tool_calling: prompted"
        )
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
