"""Remove what crashed runs left behind: sandbox directories, bwrap processes, containers.

Only things that are provably ours and orphaned are touched: a session directory under
``workspace.root`` named ``ise-sbx-*`` whose ``owner.json`` names a process on this host that
no longer exists (the pid is checked together with its start time, so a reused pid does not
count as alive); a ``bwrap`` process whose command line binds such a directory; a container
labelled ``ise.sandbox=1`` whose owner is gone. Live sessions of other runs are left alone,
so reaping at the start of every simulate run is safe while another run is going.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from pydantic import BaseModel, Field

from ise_core.config import WorkspaceSettings
from ise_core.workspace.session import (
    OWNER_FILE,
    SESSION_PREFIX,
    process_start_time,
    resolve_setting_path,
)

HALF_CREATED_AGE_S = 300  # a directory without an owner file younger than this is being made


class ReapReport(BaseModel):
    directories: list[str] = Field(default_factory=list)
    processes: list[int] = Field(default_factory=list)
    containers: list[str] = Field(default_factory=list)
    kept: int = 0  # live sessions of running processes, left alone
    docker: str = ""  # why containers were not looked at, when they were not
    errors: list[str] = Field(default_factory=list)


def owner_alive(pid: int | None, start_time: int | None, host: str | None) -> bool:
    """True unless the owner is known to be gone (another host's owner counts as alive)."""
    if host is not None and host != socket.gethostname():
        return True
    if pid is None or pid <= 0:
        return False
    current = process_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


def _read_owner(directory: Path) -> dict[str, object] | None:
    try:
        data = json.loads((directory / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _as_int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _session_is_orphaned(directory: Path) -> bool:
    owner = _read_owner(directory)
    if owner is None:
        try:
            age = time.time() - directory.stat().st_mtime
        except OSError:
            return False
        return age > HALF_CREATED_AGE_S
    host = owner.get("host")
    return not owner_alive(
        _as_int(owner.get("pid")),
        _as_int(owner.get("start_time")),
        str(host) if host is not None else None,
    )


def _bwrap_processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every bwrap process on this machine."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        argv = raw.split(b"\0")
        if argv and os.path.basename(argv[0]) == b"bwrap":
            found.append((int(entry), ppid, raw.replace(b"\0", b" ").decode(errors="replace")))
    return found


def reap(settings: WorkspaceSettings, base_dir: Path, *, include_docker: bool = True) -> ReapReport:
    """Remove orphaned sandboxes under ``settings.root`` (and containers, when an engine runs)."""
    report = ReapReport()
    root = resolve_setting_path(settings.root, base_dir).absolute()
    orphaned: list[Path] = []
    if root.is_dir():
        for directory in sorted(root.glob(f"{SESSION_PREFIX}*")):
            if not directory.is_dir() or directory.is_symlink():
                continue
            if _session_is_orphaned(directory):
                orphaned.append(directory)
            else:
                report.kept += 1
        _reap_transit_dirs(root, report)
    marker = f"{root}/{SESSION_PREFIX}"
    for pid, ppid, cmdline in _bwrap_processes():
        if marker not in cmdline:
            continue
        session = cmdline.split(marker, 1)[1].split("/", 1)[0].split(" ", 1)[0]
        directory = root / f"{SESSION_PREFIX}{session}"
        if directory in orphaned or not directory.exists() or ppid == 1:
            try:
                os.killpg(pid, signal.SIGKILL)  # bwrap leads its own process group
            except ProcessLookupError:
                continue
            except PermissionError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError as exc:
                    report.errors.append(f"cannot kill bwrap {pid}: {exc}")
                    continue
            report.processes.append(pid)
    _reap_cgroups(root, orphaned, report)
    for directory in orphaned:
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            report.errors.append(f"cannot remove {directory}")
        else:
            report.directories.append(str(directory))
    if include_docker:
        _reap_containers(report)
    return report


def _reap_transit_dirs(root: Path, report: ReapReport) -> None:
    """Remove ``.ise-sbx-<session>.<pid>`` directories (a session being made or removed)
    whose process is gone: what a crash in open() or close() leaves."""
    for directory in sorted(root.glob(f".{SESSION_PREFIX}*")):
        pid = directory.name.rsplit(".", 1)[-1]
        if not pid.isdigit() or process_start_time(int(pid)) is not None:
            continue  # not ours, or its maker still runs
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            report.errors.append(f"cannot remove {directory}")
        else:
            report.directories.append(str(directory))


def _reap_cgroups(root: Path, orphaned: list[Path], report: ReapReport) -> None:
    """Empty and remove the cgroups of orphaned (or vanished) local sandboxes."""
    from ise_core.workspace import cgroups

    orphaned_names = {d.name for d in orphaned}
    for group_dir in cgroups.stale_directories():
        session_dir = root / group_dir.name
        if group_dir.name not in orphaned_names and session_dir.exists():
            continue  # a live session (or one of another root): leave it
        try:
            age_s = time.time() - group_dir.stat().st_mtime
        except FileNotFoundError:
            continue  # removed meanwhile by its own session or another reaper
        if not session_dir.exists() and age_s < 60:
            continue  # possibly a session of another run with a different root, just starting
        try:
            pids = [int(p) for p in (group_dir / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            pids = []
        if pids and group_dir.name not in orphaned_names:
            # Not a session of this root whose owner is known dead: it may belong to another
            # run on this machine (another project or sandbox root). Its processes die with
            # their owner (--die-with-parent), so a live process means a live owner: keep it.
            report.kept += 1
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                report.processes.append(pid)
            except OSError:
                continue
        group = cgroups.SandboxCgroup([group_dir])
        group.remove()
        if group.directories:
            report.errors.append(f"cannot remove cgroup {group_dir}")


def _reap_containers(report: ReapReport) -> None:
    from ise_core.errors import BackendError
    from ise_core.workspace.docker_backend import LABEL, docker_client

    try:
        client = docker_client()
    except BackendError as exc:
        report.docker = str(exc)
        return
    try:
        for container in client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
            labels = container.labels or {}
            alive = owner_alive(
                _as_int(labels.get("ise.owner_pid")),
                _as_int(labels.get("ise.owner_start")),
                labels.get("ise.owner_host"),
            )
            if alive:
                report.kept += 1
                continue
            try:
                container.remove(force=True)
                report.containers.append(str(container.name or container.id))
            except Exception as exc:
                report.errors.append(f"cannot remove container {container.id}: {exc}")
    except Exception as exc:
        report.errors.append(f"cannot list containers: {exc}")
    finally:
        client.close()
