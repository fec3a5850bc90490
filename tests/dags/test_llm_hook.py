"""The ``ise_llm`` connection hook: settings from the connection, the key kept out of them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import load_settings
from ise_core.errors import ConfigError
from ise_core.records import Message
from tests.dags.airflow_env import REPO, tiny_params
from tests.fakes import FakeOpenAIServer

sys.path.insert(0, str(REPO / "plugins"))

from ise_llm_hook import ISELLMHook

KEY = "sk-test-connection-key-4f1c9b"
CONN_ENV = "AIRFLOW_CONN_ISE_LLM"


def _connection(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    body = {"conn_type": "generic", **fields}
    monkeypatch.setenv(CONN_ENV, json.dumps(body))


@pytest.fixture(autouse=True)
def _no_ambient_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONN_ENV, raising=False)
    monkeypatch.delenv(ISELLMHook.KEY_ENV, raising=False)


def test_without_the_connection_params_apply(tmp_path: Path) -> None:
    hook = ISELLMHook()
    assert not hook.configured
    assert hook.settings_overrides() == {}
    settings = load_settings(tiny_params(tmp_path))
    assert hook.apply(settings) is settings
    with hook.exported_key():
        assert ISELLMHook.KEY_ENV not in os.environ


def test_connection_becomes_llm_overrides_without_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _connection(
        monkeypatch,
        host="http://127.0.0.1:9999/v1",
        password=KEY,
        extra={"model": "served-model", "max_concurrency": 3, "requests_per_minute": 60},
    )
    hook = ISELLMHook()
    overrides = hook.settings_overrides()
    assert overrides == {
        "llm": {
            "provider": "openai",
            "model": "served-model",
            "max_concurrency": 3,
            "requests_per_minute": 60,
            "base_url": "http://127.0.0.1:9999/v1",
            "api_key_env": ISELLMHook.KEY_ENV,
        }
    }
    assert KEY not in json.dumps(overrides)
    settings = hook.apply(load_settings(tiny_params(tmp_path)))
    assert settings.llm.provider == "openai"
    assert settings.llm.model == "served-model"
    assert KEY not in settings.model_dump_json()


def test_host_without_scheme_is_assembled(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, host="llm.internal", port=8000, schema="v1", password=KEY)
    assert ISELLMHook().base_url() == "https://llm.internal:8000/v1"


def test_extra_may_not_carry_the_key_or_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, host="http://h/v1", extra={"api_key": "x", "cache_dir": "/tmp"})
    with pytest.raises(ConfigError, match="may not set api_key, cache_dir"):
        ISELLMHook().settings_overrides()


def test_bad_limit_in_extra_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _connection(monkeypatch, host="http://h/v1", extra={"max_concurrency": 0})
    with pytest.raises(ConfigError, match=r"llm\.max_concurrency"):
        ISELLMHook().apply(load_settings(tiny_params(tmp_path)))


def test_key_is_exported_only_inside_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, host="http://h/v1", password=KEY)
    hook = ISELLMHook()
    monkeypatch.setenv(ISELLMHook.KEY_ENV, "previous")
    with hook.exported_key():
        assert os.environ[ISELLMHook.KEY_ENV] == KEY
    assert os.environ[ISELLMHook.KEY_ENV] == "previous"
    monkeypatch.delenv(ISELLMHook.KEY_ENV)
    with pytest.raises(RuntimeError), hook.exported_key():
        raise RuntimeError("task failed")
    assert ISELLMHook.KEY_ENV not in os.environ


def test_chat_from_the_connection_sends_its_key_to_its_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load_settings(tiny_params(tmp_path, llm={"cache": "off"}))
    with FakeOpenAIServer() as server:
        _connection(monkeypatch, host=server.base_url, password=KEY, extra={"model": "conn-model"})
        hook = ISELLMHook()
        with hook.exported_key():
            chat = hook.build_chat("agent", settings)
            result = asyncio.run(chat.complete([Message(role="user", content="hello")]))
        assert result.message.role == "assistant"
        [headers] = server.headers
        auth = {k.lower(): v for k, v in headers.items()}["authorization"]
        assert auth == f"Bearer {KEY}"
        [body] = server.bodies
        assert body["model"] == "conn-model"
        assert KEY not in json.dumps(body)
    assert ISELLMHook.KEY_ENV not in os.environ
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
