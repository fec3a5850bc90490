"""build_chat: per-role provider, endpoint, model and sampling; scripted roles stay offline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ise_core import scripted
from ise_core.config import DEFAULT_MAX_TOKENS, LLMSettings, Settings, settings_from_dict
from ise_core.errors import ConfigError
from ise_core.llm.accounting import Accountant
from ise_core.llm.factory import MeteredChat, build_chat
from ise_core.llm.openai_chat import OpenAIChat
from ise_core.records import Message
from tests.fakes import FakeOpenAIServer
from tests.llm.conftest import KEY_ENV
from tests.simulate.helpers import make_intent


def llm_block(**values: object) -> LLMSettings:
    return settings_from_dict({"llm": values}).llm


def test_scripted_role_is_the_scripted_program(tmp_path: Path) -> None:
    brief = scripted.EpisodeBrief.of(make_intent(), Settings())
    chat = build_chat("user", llm_block(), base_dir=tmp_path, seed=5, brief=brief)
    assert isinstance(chat, scripted.ScriptedChat)
    assert chat.seed == 5 and chat.brief is brief


def test_role_overrides_mix_scripted_and_endpoint(tmp_path: Path) -> None:
    llm = llm_block(
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        model="big-model",
        temperature=0.7,
        cache_dir="cache/llm",
        roles={
            "user": {"provider": "scripted"},
            "agent": {"model": "agent-model", "temperature": 0.2, "max_tokens": 99, "seed": 42},
        },
    )
    user = build_chat("user", llm, base_dir=tmp_path, seed=1)
    writer = build_chat("writer", llm, base_dir=tmp_path, seed=1)
    agent = build_chat("agent", llm, base_dir=tmp_path, seed=1, episode="i-9")
    assert isinstance(user, scripted.ScriptedChat)
    assert isinstance(writer, OpenAIChat) and isinstance(agent, OpenAIChat)
    assert writer.model == "big-model"
    # No max_tokens set: the writer gets its role's default, so a reply cannot run on forever.
    default = DEFAULT_MAX_TOKENS["writer"]
    assert writer.sampling == {"temperature": 0.7, "seed": 1, "max_tokens": default}
    assert agent.model == "agent-model"
    assert agent.sampling == {"temperature": 0.2, "max_tokens": 99, "seed": 42}
    assert agent.episode == "i-9"
    assert agent.cache is not None and agent.cache.directory == tmp_path / "cache/llm"
    assert writer.limiter is not agent.limiter  # another model: another limiter


def test_openai_without_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"llm.model \(or llm.roles.agent.model\)"):
        build_chat("agent", llm_block(provider="openai"), base_dir=tmp_path, seed=0)


def test_cost_budget_needs_a_price(tmp_path: Path) -> None:
    llm = llm_block(provider="openai", model="m", budget={"cost": 5.0})
    with pytest.raises(ConfigError, match=r"llm.prices"):
        build_chat("agent", llm, base_dir=tmp_path, seed=0)


def test_scripted_usage_is_metered_with_an_accountant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accountant = Accountant(budget_tokens=1)  # the budget never stops a scripted role
    chat = build_chat("user", llm_block(), base_dir=tmp_path, seed=3, accountant=accountant)
    assert isinstance(chat, MeteredChat) and chat.seed == 3  # attributes read through
    monkeypatch.setitem(
        scripted.PROGRAMS, "user", lambda call: Message(role="assistant", content="fine, thanks")
    )
    for _ in range(2):
        asyncio.run(chat.complete([Message(role="user", content="hello")], episode="e"))
    snapshot = accountant.snapshot()
    assert snapshot["requests"] == 2 and snapshot["by_role"]["user"]["completion_tokens"] > 0
    assert accountant.episode("e")["requests"] == 2


def test_endpoint_chat_from_settings_talks_to_the_server(tmp_path: Path, planted_key: str) -> None:
    with FakeOpenAIServer() as server:
        llm = llm_block(provider="openai", base_url=server.base_url, model="m", api_key_env=KEY_ENV)
        chat = build_chat("writer", llm, base_dir=tmp_path, seed=8)
        result = asyncio.run(chat.complete([Message(role="user", content="hey")]))
        assert result.message.content == "echo: hey"
        assert server.bodies[0]["seed"] == 8 and server.bodies[0]["temperature"] == 0.7
    assert list((tmp_path / ".cache/llm").rglob("*.json"))


def test_missing_key_for_the_hosted_endpoint_fails_at_build_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ISE_UNSET_KEY_VAR", raising=False)
    llm = llm_block(provider="openai", model="m", api_key_env="ISE_UNSET_KEY_VAR")
    with pytest.raises(ConfigError, match="ISE_UNSET_KEY_VAR is not set"):
        build_chat("agent", llm, base_dir=tmp_path, seed=0)
    # A self-hosted endpoint rarely checks keys: a missing variable is allowed there.
    local = llm_block(
        provider="openai",
        model="m",
        api_key_env="ISE_UNSET_KEY_VAR",
        base_url="http://127.0.0.1:9/v1",
    )
    assert isinstance(build_chat("agent", local, base_dir=tmp_path, seed=0), OpenAIChat)
