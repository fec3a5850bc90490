"""``ise llm check`` against the loopback server: exit 0 ok, 1 check failed, 2 bad config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ise_core.cli_llm import main
from tests.fakes import FakeOpenAIServer, Faults, completion
from tests.llm.conftest import KEY_ENV, PLANTED_KEY

REPO = Path(__file__).resolve().parents[2]


def write_params(path: Path, **llm: Any) -> Path:
    params = path / "params.yaml"
    params.write_text(yaml.safe_dump({"llm": llm}), encoding="utf-8")
    return params


def endpoint_params(tmp_path: Path, server: FakeOpenAIServer, **extra: Any) -> Path:
    values = {
        "provider": "openai",
        "base_url": server.base_url,
        "model": "fake-model",
        "api_key_env": KEY_ENV,
        "backoff_base_s": 0.01,
        **extra,
    }
    return write_params(tmp_path, **values)


def test_check_reports_model_latency_and_tool_calling(
    tmp_path: Path, planted_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAIServer() as server:
        code = main(["llm", "check", "--params", str(endpoint_params(tmp_path, server))])
        assert server.requests == 1
        body = server.bodies[0]
    out = capsys.readouterr()
    assert code == 0
    assert "model: fake-model" in out.out and "latency: " in out.out
    assert 'tool calling: native (called echo with {"text": "ping"}' in out.out
    assert body["tools"][0]["function"]["name"] == "echo"
    assert PLANTED_KEY not in out.out + out.err
    assert not (tmp_path / ".cache").exists()  # the check bypasses the cache


def test_check_says_plainly_when_the_role_is_scripted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["llm", "check", "--params", str(write_params(tmp_path, provider="scripted"))])
    assert code == 0
    assert "scripted backend" in capsys.readouterr().out


def test_unreachable_endpoint_fails_naming_endpoint_and_model(
    tmp_path: Path, planted_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakeOpenAIServer().start()
    server.stop()
    code = main(["llm", "check", "--params", str(endpoint_params(tmp_path, server))])
    err = capsys.readouterr().err
    assert code == 1
    assert server.base_url in err and "fake-model" in err and "status connection" in err


def test_error_status_fails_naming_it(
    tmp_path: Path, planted_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAIServer(faults=Faults(server_error=1.0)) as server:
        code = main(["llm", "check", "--params", str(endpoint_params(tmp_path, server))])
        assert server.requests == 2  # one retry at most
    assert code == 1
    assert "500 Internal Server Error" in capsys.readouterr().err


def text_only(request: dict[str, Any]) -> dict[str, Any]:
    return completion(request, content="I cannot call tools.")


@pytest.mark.parametrize(("role", "expected"), [("agent", 1), ("writer", 0)])
def test_a_model_without_tool_calling(
    tmp_path: Path, planted_key: str, capsys: pytest.CaptureFixture[str], role: str, expected: int
) -> None:
    with FakeOpenAIServer(text_only) as server:
        params = endpoint_params(tmp_path, server)
        code = main(["llm", "check", "--params", str(params), "--role", role])
    assert code == expected
    assert "tool calling: no" in capsys.readouterr().out


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = write_params(tmp_path, provider="openai", model=None)
    assert main(["llm", "check", "--params", str(params)]) == 2
    assert "llm.model" in capsys.readouterr().err
    params = write_params(tmp_path, provider="openai", modle="typo")
    assert main(["llm", "check", "--params", str(params)]) == 2
    assert main(["llm", "check", "--params", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.skipif(not (REPO / "ise_core" / "cli.py").exists(), reason="no ise command yet")
def test_ise_llm_check_through_the_main_command(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        params = endpoint_params(tmp_path, server)
        env = {**os.environ, KEY_ENV: PLANTED_KEY}
        done = subprocess.run(
            [sys.executable, "-m", "ise_core.cli", "llm", "check", "--params", str(params)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert "tool calling: native" in done.stdout
    assert PLANTED_KEY not in done.stdout + done.stderr
