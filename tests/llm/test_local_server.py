"""LocalModelServer's pieces that need no running server, and params.local.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from ise_core.config import load_settings
from ise_core.errors import BackendError
from ise_core.llm.local_server import (
    MODEL_NAME,
    LocalModelServer,
    bundled_model,
    llama_server_binary,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_bundled_model_ships_in_its_package() -> None:
    model = bundled_model()
    assert model.suffix == ".gguf" and model.stat().st_size > 50_000_000
    assert model.read_bytes()[:4] == b"GGUF"


def test_the_command_binds_loopback_and_splits_the_context() -> None:
    server = LocalModelServer(Path("m.gguf"), binary=Path("/bin/llama-server"), port=4321,
                              context=4096, slots=2)  # fmt: skip
    command = server.command()
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("-c") + 1] == "4096" and command[command.index("-np") + 1] == "2"
    assert "--jinja" in command and server.base_url == "http://127.0.0.1:4321/v1"


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISE_LLAMA_SERVER", "/nonexistent/llama-server")
    with pytest.raises(BackendError, match="ISE_LLAMA_SERVER"):
        llama_server_binary()


def test_a_server_that_dies_at_start_fails_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\necho 'error: cannot load model' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = LocalModelServer(tmp_path / "m.gguf", binary=fake, log_path=tmp_path / "log")
    with pytest.raises(BackendError, match=r"exited with code 3(.|\n)*cannot load model"):
        server.start(timeout_s=10)


def test_params_local_is_the_local_server_default() -> None:
    settings = load_settings(REPO / "params.local.yaml")
    llm = settings.llm
    assert llm.provider == "openai" and llm.model == MODEL_NAME
    assert llm.base_url == "http://127.0.0.1:8081/v1"
    assert llm.tool_calling_for("agent") == "prompted" and llm.constrained_for("user")
    assert llm.role("writer")["provider"] == "scripted"
