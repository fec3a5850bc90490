"""Workspace fixtures shared by tests/workspace and tests/security (imported by both conftests).

``backend`` is parametrised over local and docker; a backend that cannot run here is skipped
with the reason (for docker: why no engine or image could be had, see ``docker_engine``),
except that with ``ISE_DOCKER_TESTS=1`` (CI) a docker test fails with that reason instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import WorkspaceSettings
from ise_core.workspace import SandboxWorkspace, open_workspace
from ise_core.workspace.local import local_available
from tests.workspace import docker_engine

PROJECT = Path(__file__).resolve().parents[2]
WorkspaceFactory = Callable[..., SandboxWorkspace]


# A disk filler: 8 MB files from /dev/zero, one after another, as fast as the disk takes them;
# and how far past the workspace quota it may get before the sandbox stops it (the quota is
# polled, sooner the less room is left; the bound leaves room for a loaded machine).
DISK_FILLER = "i=0; while :; do i=$((i+1)); head -c 8000000 /dev/zero > f$i; done"
QUOTA_OVERSHOOT_MB = 48


def allocated_mb(folder: Path) -> float:
    """MB of blocks the files under ``folder`` occupy, counted here, apart from the sandbox."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total / 2**20


def make_settings(root: Path, **overrides: Any) -> WorkspaceSettings:
    values: dict[str, Any] = {
        "root": str(root),
        "call_timeout_s": 10.0,
        "output_limit": 4096,
        "cpu_seconds": 20,
        "memory_mb": 512,
        "max_processes": 128,
        "max_file_mb": 16,
    }
    values.update(overrides)
    return WorkspaceSettings(**values)


def require_backend(name: str, monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, Any]:
    """Skip unless ``name`` can run; the extra settings it needs (the docker image)."""
    if name == "local":
        ok, why = local_available()
        if not ok:
            pytest.skip(f"local backend unavailable: {why}")
        return {}
    engine = docker_engine.engine()
    if isinstance(engine, str):
        if docker_engine.required():
            pytest.fail(f"docker backend required (ISE_DOCKER_TESTS=1) but unavailable: {engine}")
        print(f"\ndocker backend tests skipped: {engine}")
        pytest.skip(f"docker backend unavailable: {engine}")
    if monkeypatch is not None:
        monkeypatch.setenv("DOCKER_HOST", engine.docker_host)
    return {"docker_image": engine.image}


@pytest.fixture(params=["local", "docker"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def workspace_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkspaceFactory]:
    """Opens workspaces on a backend with test settings; closes every one afterwards."""
    made: list[SandboxWorkspace] = []

    def factory(
        backend_name: str = "local", open_now: bool = True, **overrides: Any
    ) -> SandboxWorkspace:
        extra = require_backend(backend_name, monkeypatch)
        settings = make_settings(tmp_path / "sandboxes", **{**extra, **overrides})
        workspace = open_workspace(settings, base_dir=PROJECT, backend=backend_name)
        made.append(workspace)
        if open_now:
            workspace.open()
        return workspace

    yield factory
    for workspace in made:
        workspace.close()


@pytest.fixture
def local_ws(workspace_factory: WorkspaceFactory) -> SandboxWorkspace:
    return workspace_factory("local")


@pytest.fixture
def any_ws(workspace_factory: WorkspaceFactory, backend: str) -> SandboxWorkspace:
    return workspace_factory(backend)


@pytest.fixture(scope="session", autouse=True)
def _stop_private_engine() -> Iterator[None]:
    yield
    docker_engine.stop()
