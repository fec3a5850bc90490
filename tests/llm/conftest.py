"""Fixtures for the LLM layer: a loopback server, a planted key and chats wired to both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ise_core.llm.accounting import Accountant
from ise_core.llm.cache import ResponseCache
from ise_core.llm.limits import LimitSettings, reset_limiters
from ise_core.llm.openai_chat import OpenAIChat
from tests.fakes import FakeOpenAIServer

PLANTED_KEY = "sk-test-PLANTED-123"
KEY_ENV = "ISE_TEST_LLM_KEY"

ECHO_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "echo",
        "description": "Echo text.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
}

# Tiny backoff keeps the fault tests fast; the policy is the same at any scale.
FAST_LIMITS = LimitSettings(
    max_in_flight=8, max_retries=6, backoff_base_s=0.005, backoff_max_s=0.05
)


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_limiters()
    yield
    reset_limiters()


@pytest.fixture
def planted_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    return PLANTED_KEY


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


ChatMaker = Callable[..., OpenAIChat]


@pytest.fixture
def make_chat(planted_key: str, tmp_path: Path) -> ChatMaker:
    """``make_chat(server, **overrides)``: an OpenAIChat on the server with fast retries."""

    def build(
        target: FakeOpenAIServer,
        *,
        role: str = "agent",
        limits: LimitSettings = FAST_LIMITS,
        cache_mode: str | None = None,
        cache_dir: Path | None = None,
        accountant: Accountant | None = None,
        timeout_s: float = 5.0,
        sampling: dict[str, Any] | None = None,
    ) -> OpenAIChat:
        cache = (
            ResponseCache(cache_dir or tmp_path / "llm-cache", cache_mode)  # type: ignore[arg-type]
            if cache_mode
            else None
        )
        return OpenAIChat(
            role,
            model="fake-model",
            base_url=target.base_url,
            api_key_env=KEY_ENV,
            sampling=sampling if sampling is not None else {"temperature": 0.0, "seed": 7},
            limits=limits,
            timeout_s=timeout_s,
            cache=cache,
            accountant=accountant,
        )

    return build
