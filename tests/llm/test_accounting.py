"""Token accounting per role, episode and run; cost estimate; the budget stops new requests."""

from __future__ import annotations

import asyncio
import json

import pytest

from ise_core.config import BudgetSettings, LLMSettings, PriceSettings
from ise_core.errors import BudgetExceeded
from ise_core.llm.accounting import Accountant
from ise_core.llm.base import Usage
from ise_core.records import Message
from tests.fakes import FakeOpenAIServer, completion
from tests.llm.conftest import ChatMaker


def fixed_usage(request: dict) -> dict:  # type: ignore[type-arg]
    return completion(request, content="ok", prompt_tokens=100, completion_tokens=20)


def ask(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def test_breakdown_by_role_episode_and_run() -> None:
    accountant = Accountant({"m": PriceSettings(prompt=2.0, completion=8.0)})
    accountant.record(
        role="agent",
        model="m",
        usage=Usage(prompt_tokens=1000, completion_tokens=100),
        episode="e1",
        retries=2,
    )
    accountant.record(
        role="user", model="m", usage=Usage(prompt_tokens=500, completion_tokens=50), episode="e1"
    )
    accountant.record(
        role="agent",
        model="m",
        usage=Usage(prompt_tokens=1000, completion_tokens=100),
        episode="e2",
        cached=True,
    )
    accountant.record(
        role="writer", model="other", usage=Usage(prompt_tokens=10, completion_tokens=10)
    )
    accountant.record_failure(role="agent", model="m", retries=6, episode="e2")
    snap = accountant.snapshot()
    assert snap["prompt_tokens"] == 1510 and snap["completion_tokens"] == 160
    assert snap["cached_prompt_tokens"] == 1000 and snap["cache_hits"] == 1
    assert snap["requests"] == 3 and snap["failures"] == 1 and snap["retries"] == 8
    assert snap["by_role"]["agent"]["prompt_tokens"] == 1000
    assert snap["by_role"]["user"]["completion_tokens"] == 50
    # cost = (1500 * 2 + 150 * 8) / 1e6; the cached request saved (1000*2 + 100*8) / 1e6
    assert snap["cost"] == pytest.approx(0.0042)
    assert snap["cost_saved_by_cache"] == pytest.approx(0.0028)
    assert snap["unpriced_models"] == ["other"]
    assert accountant.episode("e1")["total_tokens"] == 1650
    assert accountant.pop_episode("e2")["failures"] == 1
    assert accountant.episode("e2")["failures"] == 0  # forgotten after pop
    json.dumps(snap)  # stats-ready


def test_chat_records_per_role_and_episode(make_chat: ChatMaker) -> None:
    accountant = Accountant()
    with FakeOpenAIServer(fixed_usage) as server:
        agent = make_chat(server, role="agent", accountant=accountant, cache_mode="read_write")
        user = make_chat(server, role="user", accountant=accountant, cache_mode="read_write")
        asyncio.run(agent.complete(ask("a"), episode="intent-1"))
        asyncio.run(user.complete(ask("b"), episode="intent-1"))
        asyncio.run(agent.complete(ask("a"), episode="intent-2"))  # a cache hit
        server.script("rate_limit", "ok")
        asyncio.run(agent.complete(ask("c"), episode="intent-2"))
    snap = accountant.snapshot()
    assert snap["requests"] == 3 and snap["cache_hits"] == 1 and snap["retries"] == 1
    assert snap["by_role"]["agent"]["prompt_tokens"] == 200
    assert snap["by_role"]["user"]["prompt_tokens"] == 100
    assert accountant.episode("intent-1")["total_tokens"] == 240
    assert accountant.episode("intent-2")["cached_prompt_tokens"] == 100
    assert accountant.episode("intent-2")["retries"] == 1


def test_token_budget_stops_new_requests_before_sending(make_chat: ChatMaker) -> None:
    accountant = Accountant(budget_tokens=300)  # each request spends 120
    with FakeOpenAIServer(fixed_usage) as server:
        chat = make_chat(server, accountant=accountant, cache_mode="read_write")
        asyncio.run(chat.complete(ask("1")))
        asyncio.run(chat.complete(ask("2")))
        assert not accountant.exhausted
        asyncio.run(chat.complete(ask("3")))
        assert accountant.exhausted
        with pytest.raises(BudgetExceeded, match="360 tokens sent of a budget of 300"):
            asyncio.run(chat.complete(ask("4")))
        assert server.requests == 3  # nothing was sent for the fourth request
        # A cache hit costs nothing, so it is still served after the budget is reached.
        assert asyncio.run(chat.complete(ask("1"))).cached is True
        assert server.requests == 3
    assert accountant.snapshot()["budget"] == {"tokens": 300, "cost": None, "exhausted": True}


def test_cost_budget_uses_the_price_table(make_chat: ChatMaker) -> None:
    llm = LLMSettings(
        prices={"fake-model": PriceSettings(prompt=1000.0, completion=1000.0)},
        budget=BudgetSettings(cost=0.2),
    )
    accountant = Accountant.from_settings(llm)  # 120 tokens at 1000/M = 0.12 per request
    with FakeOpenAIServer(fixed_usage) as server:
        chat = make_chat(server, accountant=accountant)
        asyncio.run(chat.complete(ask("1")))
        asyncio.run(chat.complete(ask("2")))
        with pytest.raises(BudgetExceeded, match=r"estimated cost 0\.2400"):
            asyncio.run(chat.complete(ask("3")))
        assert server.requests == 2
