"""One process of a run under ``llm.limiter: <redis URL>``, for the shared-limit tests.

    python -m tests.llm.redis_driver --base-url URL --redis URL --mode load --requests 40
    python -m tests.llm.redis_driver ... --mode budget --budget-tokens 4000 --budget-key run-1
    python -m tests.llm.redis_driver ... --mode hold --lease 1.0

It builds its chat exactly as a simulate stage does (``OpenAIChat.from_settings`` and
``build_accountant`` on an ``llm`` block), prints ``READY``, waits for a line on stdin
(so every process starts sending at once), then:

- ``load``: sends ``--requests`` requests, ``--max-concurrency`` at a time from this process;
- ``budget``: sends one request at a time until the shared budget stops it;
- ``hold``: takes every slot it may and holds them (to be killed while holding them).

and prints one JSON line: ``{"sent", "started_at", "ended_at", "stopped", "limiter"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from ise_core.config import LLMSettings
from ise_core.errors import BudgetExceeded
from ise_core.llm.factory import build_accountant
from ise_core.llm.openai_chat import OpenAIChat
from ise_core.llm.redis_limits import RedisEndpointLimiter
from ise_core.records import Message

SAFETY_CAP = 500  # a budget that never stops the process fails the test, it does not hang it


def _settings(args: argparse.Namespace) -> LLMSettings:
    block: dict[str, Any] = {
        "provider": "openai",
        "base_url": args.base_url,
        "model": "fake-model",
        "max_concurrency": args.max_concurrency,
        "cache": "off",
        "max_retries": 0,
        "limiter": args.redis,
    }
    if args.budget_tokens:
        block["budget"] = {"tokens": args.budget_tokens}
        block["budget_key"] = args.budget_key
    return LLMSettings.model_validate(block)


def _warm_up(chat: OpenAIChat) -> None:
    """Make the HTTP and Redis clients of this loop now (TLS context, pools), not in the
    measured window: a real worker makes them once and sends for hours."""
    chat._sdk_client()
    if isinstance(chat.limiter, RedisEndpointLimiter):
        chat.limiter._client()


async def _load(chat: OpenAIChat, args: argparse.Namespace) -> dict[str, Any]:
    message = [Message(role="user", content="hello")]
    _warm_up(chat)
    started = time.time()
    await asyncio.gather(*(chat.complete(message) for _ in range(args.requests)))
    return {"sent": args.requests, "started_at": started, "ended_at": time.time()}


async def _budget(chat: OpenAIChat) -> dict[str, Any]:
    message = [Message(role="user", content="hello")]
    _warm_up(chat)
    started = time.time()
    sent, stopped = 0, None
    while sent < SAFETY_CAP:
        try:
            await chat.complete(message)
        except BudgetExceeded as exc:
            stopped = str(exc)
            break
        sent += 1
    return {"sent": sent, "started_at": started, "ended_at": time.time(), "stopped": stopped}


async def _hold(limiter: RedisEndpointLimiter, slots: int) -> None:
    async def one() -> None:
        async with limiter.slot():
            await asyncio.sleep(3600)

    tasks = [asyncio.create_task(one()) for _ in range(slots)]
    while limiter.in_flight < slots:
        await asyncio.sleep(0.01)
    print("HOLDING", flush=True)
    await asyncio.gather(*tasks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--mode", choices=("load", "budget", "hold"), required=True)
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--budget-tokens", type=int, default=0)
    parser.add_argument("--budget-key", default="")
    parser.add_argument("--lease", type=float, default=1.0)
    args = parser.parse_args(argv)
    llm = _settings(args)
    if args.mode == "hold":
        limiter = RedisEndpointLimiter(
            args.redis, args.base_url, "fake-model", _limits(llm), lease_s=args.lease
        )
        asyncio.run(_hold(limiter, args.max_concurrency))
        return 0
    accountant = build_accountant(llm)
    chat = OpenAIChat.from_settings(
        "agent", llm, base_dir=Path.cwd(), seed=1, accountant=accountant
    )
    import openai  # noqa: F401  (imported now: the first request must not pay for it)
    import redis.asyncio  # noqa: F401

    print("READY", flush=True)
    sys.stdin.readline()
    run = _load(chat, args) if args.mode == "load" else _budget(chat)
    result = asyncio.run(run)
    result["limiter"] = chat.limiter.stats()
    print(json.dumps(result), flush=True)
    return 0


def _limits(llm: LLMSettings) -> Any:
    from ise_core.llm.limits import LimitSettings

    return LimitSettings.from_llm(llm)


if __name__ == "__main__":
    sys.exit(main())
