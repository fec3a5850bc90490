"""A real model server for the tests in this folder: llama.cpp's llama-server on 127.0.0.1.

The server is built once per machine (scripts/llama_server.sh, cached under .cache/; `make test`
and CI build it before the suite) and started once per test session with the bundled
SmolLM2-135M-Instruct. When it is not built or cannot start, the tests fail with the reason:
they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ise_core.errors import BackendError
from ise_core.llm.local_server import LocalModelServer, llama_server_binary


def start_server(log_dir: Path, **options: int) -> LocalModelServer:
    try:
        # Not built here: a build inside a test would run into the test's timeout. `make test`
        # and .ci/run build it first (make llama-server).
        binary = llama_server_binary(build=False)
    except BackendError as exc:
        pytest.fail(f"{exc}; build it with `make llama-server`", pytrace=False)
    server = LocalModelServer(binary=binary, log_path=log_dir / "llama-server.log", **options)  # type: ignore[arg-type]
    try:
        return server.start()
    except BackendError as exc:
        pytest.fail(f"the local model server could not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelServer]:
    """The session's llama-server: 16k context split over 2 slots, 1 compute thread."""
    server = start_server(tmp_path_factory.mktemp("llama-server"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def small_context_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelServer]:
    """A second server with a 1,024-token context, to meet the server's own overflow error."""
    server = start_server(tmp_path_factory.mktemp("llama-small"), context=1024, slots=1)
    yield server
    server.stop()
