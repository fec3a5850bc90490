"""The reaper removes what dead runs left behind and nothing that belongs to a live one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ise_core.workspace import cgroups, reap
from ise_core.workspace.local import bwrap_features
from ise_core.workspace.session import process_start_time
from tests.workspace.fixtures import PROJECT, make_settings, require_backend


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _session(root: Path, name: str, owner: dict[str, object] | None) -> Path:
    directory = root / f"ise-sbx-{name}"
    (directory / "workspace").mkdir(parents=True)
    (directory / "workspace" / "file.txt").write_text("left behind")
    if owner is not None:
        (directory / "owner.json").write_text(json.dumps(owner))
    return directory


def test_reap_judges_each_directory_by_its_owner(tmp_path: Path) -> None:
    root = tmp_path / "sandboxes"
    me = os.getpid()
    host = socket.gethostname()
    live = _session(root, "live", {"pid": me, "start_time": process_start_time(me), "host": host})
    dead = _session(root, "dead", {"pid": _dead_pid(), "start_time": 1, "host": host})
    reused = _session(root, "reused", {"pid": me, "start_time": 12345, "host": host})
    remote = _session(root, "remote", {"pid": _dead_pid(), "host": "another-machine"})
    young_unowned = _session(root, "young", None)
    old_unowned = _session(root, "old", None)
    os.utime(old_unowned, (time.time() - 3600, time.time() - 3600))
    not_ours = root / "somebody-else"
    not_ours.mkdir()

    report = reap(make_settings(root), PROJECT, include_docker=False)

    assert sorted(report.directories) == sorted(str(d) for d in (dead, reused, old_unowned))
    assert report.kept == 3 and report.errors == []
    for kept in (live, remote, young_unowned, not_ours):
        assert kept.exists()
    assert not dead.exists() and not reused.exists() and not old_unowned.exists()
    assert reap(make_settings(root), PROJECT, include_docker=False).directories == []


def test_reap_without_a_root_is_a_no_op(tmp_path: Path) -> None:
    report = reap(make_settings(tmp_path / "never-made"), PROJECT, include_docker=False)
    assert report.directories == [] and report.processes == [] and report.kept == 0


CRASHER = """
import os, sys
from pathlib import Path
from ise_core.config import WorkspaceSettings
from ise_core.workspace import open_workspace
settings = WorkspaceSettings(root=sys.argv[1])
ws = open_workspace(settings, base_dir=Path(sys.argv[2]), backend="local")
ws.open()
ws.call("process", {"action": "start", "command": sys.argv[3]})
print(ws.session_dir, ws.host_pid, flush=True)
os.kill(os.getpid(), 9)
"""


def _processes_running(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _alive(int(entry)):
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline and b"python" not in cmdline:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_crashed_run_leaves_no_process_and_reap_removes_its_directory(tmp_path: Path) -> None:
    require_backend("local")
    root = tmp_path / "sandboxes"
    # A duration no other test uses: other tests' sandboxes may still be dying beside this one.
    sleeper = f"sleep 600.{os.getpid()}"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHER, str(root), str(PROJECT), sleeper],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    session_dir, bwrap_pid = crashed.stdout.split()
    deadline = time.monotonic() + 5
    while _alive(int(bwrap_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(int(bwrap_pid)), "bwrap outlived its parent"
    assert _processes_running(sleeper) == []
    assert Path(session_dir).exists()
    report = reap(make_settings(root), PROJECT, include_docker=False)
    assert report.directories == [session_dir]
    assert not Path(session_dir).exists()
    leftover_cgroups = [d for d in cgroups.stale_directories() if d.name == Path(session_dir).name]
    assert leftover_cgroups == []


def test_reap_kills_stray_bwrap_processes_of_dead_sessions(tmp_path: Path) -> None:
    require_backend("local")
    root = tmp_path / "sandboxes"
    directory = _session(root, "stray", {"pid": _dead_pid(), "host": socket.gethostname()})
    bwrap, _ = bwrap_features()
    stray = subprocess.Popen(
        [
            bwrap,
            "--unshare-all",
            "--unshare-user",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--bind",
            str(directory / "workspace"),
            "/workspace",
            "sleep",
            "600",
        ],
        start_new_session=True,
    )
    try:
        time.sleep(0.2)
        report = reap(make_settings(root), PROJECT, include_docker=False)
        assert stray.pid in report.processes
        assert stray.wait(timeout=5) == -signal.SIGKILL
        assert report.directories == [str(directory)]
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


def test_reap_report_mentions_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    report = reap(make_settings(tmp_path / "sandboxes"), PROJECT)
    assert "no Docker engine socket" in report.docker and report.containers == []


def test_root_without_a_pids_cgroup_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from ise_core.workspace import local

    require_backend("local")
    monkeypatch.setattr(local.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cgroups, "available", lambda: False)
    ok, why = local.local_available()
    assert not ok and "exempt from RLIMIT_NPROC" in why
