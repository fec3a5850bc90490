"""The live OS workspace in which every agent tool call really runs.

    ws = open_workspace(settings.workspace, base_dir=settings.base_dir)
    with ws:
        ws.open(fixtures=intent.fixtures, persona=intent.persona)
        result = ws.call("exec", {"command": "python3 --version"})   # -> ToolResult
        checks = [ws.run_check(c) for c in intent.checks]

``open_workspace`` picks a backend and builds the workspace (it does not start it: ``open``
does, and ``open`` again resets it to template + fixtures). Backends:

- ``docker``: a locked-down container per workspace (needs an engine and the image).
- ``local``: a bubblewrap sandbox on this machine (needs ``bwrap`` and user namespaces).
- ``auto``: ``docker`` when an engine answers quickly and has the image, else ``local``.

``WorkspacePool`` keeps sandboxes started and reuses them, wiped, between episodes.
``reap`` removes sandboxes, processes and containers left behind by crashed runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ise_core.config import WorkspaceSettings
from ise_core.errors import BackendError, ToolError
from ise_core.workspace.base import ExecOutcome, ProcessInfo, ToolResult, Workspace
from ise_core.workspace.pool import PooledWorkspace, PoolStats, WorkspacePool
from ise_core.workspace.reaper import ReapReport, reap
from ise_core.workspace.session import SandboxWorkspace, close_all
from ise_core.workspace.toolkit import TOOLS, ToolSpec, tool

BACKENDS = ("local", "docker")

__all__ = [
    "BACKENDS",
    "TOOLS",
    "ExecOutcome",
    "PoolStats",
    "PooledWorkspace",
    "ProcessInfo",
    "ReapReport",
    "SandboxWorkspace",
    "ToolError",
    "ToolResult",
    "ToolSpec",
    "Workspace",
    "WorkspacePool",
    "available_backends",
    "backend_status",
    "choose_backend",
    "close_all",
    "open_workspace",
    "reap",
    "tool",
    "tool_schemas",
]


def backend_status(settings: WorkspaceSettings | None = None) -> dict[str, str | None]:
    """For each backend: ``None`` when it can run here, else the reason it cannot."""
    from ise_core.workspace.docker_backend import docker_available
    from ise_core.workspace.local import local_available

    settings = settings or WorkspaceSettings()
    status: dict[str, str | None] = {}
    ok, why = local_available()
    status["local"] = None if ok else why
    ok, why = docker_available(settings.docker_image)
    status["docker"] = None if ok else why
    return status


def available_backends(settings: WorkspaceSettings | None = None) -> list[str]:
    """The backends that can run here, in the order ``auto`` prefers them."""
    status = backend_status(settings)
    return [name for name in ("docker", "local") if status[name] is None]


def choose_backend(settings: WorkspaceSettings, backend: str | None = None) -> str:
    """Resolve ``auto`` (or the given override) to a backend that can run, or raise."""
    from ise_core.workspace.docker_backend import docker_available
    from ise_core.workspace.local import local_available

    wanted = backend or settings.backend
    if wanted not in (*BACKENDS, "auto"):
        raise BackendError(f"unknown workspace backend {wanted!r} (expected auto, local, docker)")
    if wanted == "auto":
        docker_ok, docker_why = docker_available(settings.docker_image)
        if docker_ok:
            return "docker"
        local_ok, local_why = local_available()
        if local_ok:
            return "local"
        raise BackendError(
            f"no workspace backend can run here:\n- docker: {docker_why}\n- local: {local_why}"
        )
    ok, why = local_available() if wanted == "local" else docker_available(settings.docker_image)
    if not ok:
        raise BackendError(why)
    return wanted


def open_workspace(
    settings: WorkspaceSettings,
    *,
    base_dir: Path,
    backend: str | None = None,
    session_id: str | None = None,
) -> SandboxWorkspace:
    """A new workspace on the chosen backend; call ``open(fixtures, persona)`` to start it."""
    name = choose_backend(settings, backend)
    if name == "docker":
        from ise_core.workspace.docker_backend import DockerWorkspace

        return DockerWorkspace(settings, base_dir=base_dir, session_id=session_id)
    from ise_core.workspace.local import LocalWorkspace

    return LocalWorkspace(settings, base_dir=base_dir, session_id=session_id)


def tool_schemas(settings: WorkspaceSettings | None = None) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` list a workspace with ``settings`` offers (no workspace needed)."""
    settings = settings or WorkspaceSettings()
    return [spec.schema() for spec in TOOLS.values() if spec.offered(settings)]
