"""The docker backend against a real engine (a private dockerd when none runs; skipped with
the reason when neither can be had)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ise_core.workspace import SandboxWorkspace, reap
from ise_core.workspace.docker_backend import DockerWorkspace, docker_client
from tests.workspace.fixtures import PROJECT, WorkspaceFactory, make_settings


@pytest.fixture
def docker_ws(workspace_factory: WorkspaceFactory) -> SandboxWorkspace:
    return workspace_factory("docker")


def _inspect(ws: SandboxWorkspace) -> dict[str, Any]:
    assert isinstance(ws, DockerWorkspace) and ws.container_id
    client = docker_client()
    try:
        attrs: dict[str, Any] = client.api.inspect_container(ws.container_id)
        return attrs
    finally:
        client.close()


def test_container_is_locked_down(docker_ws: SandboxWorkspace) -> None:
    attrs = _inspect(docker_ws)
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == docker_ws.settings.max_processes
    assert host["Memory"] == docker_ws.settings.memory_mb * 2**20
    assert host["NanoCpus"] == int(docker_ws.settings.cpus * 1e9)
    assert host["Privileged"] is False
    assert "/tmp" in host["Tmpfs"]
    assert attrs["Config"]["User"] not in ("", "0", "root", "0:0")
    assert attrs["Config"]["Labels"]["ise.sandbox"] == "1"
    mounts = [m["Source"] for m in attrs["Mounts"]]
    assert all("docker.sock" not in source for source in mounts)
    writable = sorted(m["Destination"] for m in attrs["Mounts"] if m["RW"])
    assert writable == ["/run/ise/procs", "/workspace"]
    read_only = [m["Destination"] for m in attrs["Mounts"] if not m["RW"]]
    assert read_only == ["/run/ise/supervisor.py"]
    # What the sandbox prints never reaches the engine's disk.
    assert host["LogConfig"]["Type"] == "none"
    # PID 1 is the supervisor, which the agent's processes cannot signal.
    assert attrs["Path"] == "/usr/bin/python3" and "/run/ise/supervisor.py" in attrs["Args"]
    pid1 = docker_ws.call("exec", {"command": "kill -9 1; kill -TERM 1; echo tried"})
    assert pid1.content.endswith("tried\n")
    assert docker_ws.call("exec", {"command": "echo alive"}).content == "alive\n"


def test_tools_work_in_the_container(docker_ws: SandboxWorkspace) -> None:
    result = docker_ws.call(
        "exec",
        {
            "command": "id -un; python3 -c 'print(1+1)'; node -e "
            "'console.log(3)'; git --version | cut -c1-11"
        },
    )
    assert result.ok and result.content == "agent\n2\n3\ngit version\n"
    assert docker_ws.call("write", {"path": "src/app.py", "content": "print('v1')\n"}).ok
    assert docker_ws.call("exec", {"command": "python3 src/app.py"}).content == "v1\n"
    assert docker_ws.call("exec", {"command": "echo appended >> src/app.py"}).ok
    edited = docker_ws.call("edit", {"path": "src/app.py", "old_string": "v1", "new_string": "v2"})
    assert edited.ok
    assert docker_ws.call("read", {"path": "src/app.py"}).content == "print('v2')\nappended\n"
    failed = docker_ws.call("exec", {"command": "exit 9"})
    assert not failed.ok and failed.exit_code == 9
    slow = docker_ws.call("exec", {"command": "sleep 20", "timeout": 1})
    assert not slow.ok and slow.exit_code is None and "timed out" in slow.content
    lingering = docker_ws.call("exec", {"command": "sleep 30 & echo started"})
    assert lingering.ok and lingering.duration_s < 2


def test_background_processes_in_the_container(docker_ws: SandboxWorkspace) -> None:
    started = docker_ws.call("process", {"action": "start", "command": "echo up; sleep 60"})
    assert started.ok
    deadline = time.monotonic() + 10
    polled = ""
    while "up" not in polled and time.monotonic() < deadline:
        polled = docker_ws.call("process", {"action": "poll", "id": "p1"}).content
        time.sleep(0.1)
    assert "running" in polled and "up" in polled
    assert docker_ws.call("process", {"action": "kill", "id": "p1"}).ok
    assert (
        docker_ws.call("exec", {"command": "ps -eo args | grep -c '[s]leep 60' || true"}).content
        == "0\n"
    )
    docker_ws.call("process", {"action": "start", "command": "exit 6"})
    deadline = time.monotonic() + 10
    status = ""
    while "exited" not in status and time.monotonic() < deadline:
        status = docker_ws.call("process", {"action": "list"}).content
        time.sleep(0.1)
    assert "p2\texited with code 6" in status


def test_reset_and_close_remove_everything(workspace_factory: WorkspaceFactory) -> None:
    ws = workspace_factory("docker")
    ws.call("write", {"path": "junk.txt", "content": "x"})
    ws.call("process", {"action": "start", "command": "sleep 300"})
    ws.open()
    assert ws.list_files() == ["AGENTS.md", "MEMORY.md", "TOOLS.md", "USER.md"]
    assert (
        ws.call("exec", {"command": "ps -eo args | grep -c '[s]leep 300' || true"}).content == "0\n"
    )
    assert isinstance(ws, DockerWorkspace)
    container = ws.container_id
    ws.close()
    client = docker_client()
    try:
        assert [c for c in client.containers.list(all=True) if c.id == container] == []
    finally:
        client.close()


def test_reaper_removes_containers_of_dead_owners(
    workspace_factory: WorkspaceFactory, tmp_path: Path
) -> None:
    ws = workspace_factory("docker")
    assert isinstance(ws, DockerWorkspace)
    client = docker_client()
    try:
        orphan = client.containers.run(
            ws.settings.docker_image,
            command=["sleep", "600"],
            detach=True,
            network_mode="none",
            labels={
                "ise.sandbox": "1",
                "ise.owner_pid": "999999999",
                "ise.owner_host": socket.gethostname(),
            },
        )
        report = reap(make_settings(tmp_path / "sandboxes"), PROJECT)
        assert orphan.name in report.containers
        remaining = {c.id for c in client.containers.list(all=True)}
        assert orphan.id not in remaining and ws.container_id in remaining
    finally:
        client.close()


def test_a_dead_owner_takes_its_container_down(
    workspace_factory: WorkspaceFactory, tmp_path: Path
) -> None:
    ws = workspace_factory("docker", open_now=False)  # the engine and image, set up
    child = subprocess.Popen(
        [sys.executable, "-c", OWNER_PROGRAM, str(tmp_path / "owned"), ws.settings.docker_image],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    try:
        assert child.stdout is not None
        container = child.stdout.readline().strip()
        assert container, "the owner did not start its workspace"
    finally:
        child.kill()
        child.wait()
    client = docker_client()
    try:
        deadline = time.monotonic() + 15
        state = ""
        while state != "exited" and time.monotonic() < deadline:
            state = client.api.inspect_container(container)["State"]["Status"]
            time.sleep(0.2)
        # Its stdin closed with the owner's connection, so the supervisor ended.
        assert state == "exited"
        report = reap(make_settings(tmp_path / "owned"), PROJECT)
        assert [c for c in client.containers.list(all=True) if c.id == container] == []
        assert len(report.containers) == 1
        assert list((tmp_path / "owned").glob("ise-sbx-*")) == []
    finally:
        client.close()


OWNER_PROGRAM = """
import sys, time
from pathlib import Path
from ise_core.workspace import open_workspace
from tests.workspace.fixtures import PROJECT, make_settings

settings = make_settings(Path(sys.argv[1]), docker_image=sys.argv[2])
ws = open_workspace(settings, base_dir=PROJECT, backend="docker")
ws.open()
print(ws.container_id, flush=True)
time.sleep(600)
"""
