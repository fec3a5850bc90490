"""Per-sandbox cgroups for the local backend: a process cap that also holds for root.

The kernel exempts processes whose real uid is host root from RLIMIT_NPROC, and a bubblewrap
sandbox started by root maps its user to host root, so when the pipeline runs as root (CI,
containers) only a cgroup can stop a fork bomb. Where a pids controller is writable — cgroup
v1 hierarchies, or v2 when the controllers are already delegated to our cgroup — each sandbox
gets ``ise-sbx-<session>`` below this process's own cgroup with ``pids.max`` and a memory
limit for the whole sandbox (its /tmp included), and bwrap is started inside it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "ise-sbx-"


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path in that hierarchy."""
    paths: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def parent_dirs() -> dict[str, Path]:
    """Where sandbox cgroups can be made: {"pids": dir, "memory": dir} (memory optional)."""
    own = _own_paths()
    found: dict[str, Path] = {}
    for controller in ("pids", "memory"):
        if controller in own:  # cgroup v1
            base = CGROUP_ROOT / controller / own[controller].lstrip("/")
            if _writable_dir(base) and (base / "cgroup.procs").exists():
                found[controller] = base
    if "pids" not in found and "" in own:  # cgroup v2, controllers already delegated to us
        base = CGROUP_ROOT / own[""].lstrip("/")
        for candidate in (CGROUP_ROOT / "unified" / own[""].lstrip("/"), base):
            try:
                enabled = (candidate / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "pids" in enabled and _writable_dir(candidate):
                found["pids"] = candidate
                if "memory" in enabled:
                    found["memory"] = candidate
                break
    return found


def available() -> bool:
    return "pids" in parent_dirs()


@dataclass
class SandboxCgroup:
    """The cgroup directories of one sandbox; ``procs_files`` are where its pid is written."""

    directories: list[Path] = field(default_factory=list)

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.directories]

    @classmethod
    def create(cls, session_id: str, *, max_processes: int, memory_bytes: int) -> SandboxCgroup:
        group = cls()
        parents = parent_dirs()
        made: dict[Path, Path] = {}
        try:
            for controller, parent in parents.items():
                directory = made.get(parent) or parent / f"{PREFIX}{session_id}"
                if parent not in made:
                    directory.mkdir(exist_ok=True)
                    made[parent] = directory
                    group.directories.append(directory)
                if controller == "pids":
                    (directory / "pids.max").write_text(str(max_processes))
                elif (directory / "memory.max").exists():  # v2
                    (directory / "memory.max").write_text(str(memory_bytes))
                    if (directory / "memory.swap.max").exists():
                        (directory / "memory.swap.max").write_text("0")
                else:  # v1
                    (directory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        except OSError:
            group.remove()
            raise
        return group

    def remove(self, timeout_s: float = 2.0) -> None:
        """rmdir every directory (the kernel refuses while a process is still in it)."""
        deadline = time.monotonic() + timeout_s
        for directory in self.directories:
            pause = 0.0005  # the last tasks of a sandbox leave its cgroup within a millisecond
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
        self.directories = [d for d in self.directories if d.exists()]


def stale_directories() -> list[Path]:
    """Sandbox cgroups below this process's cgroups (the reaper removes the empty ones)."""
    found: list[Path] = []
    for parent in set(parent_dirs().values()):
        found.extend(sorted(parent.glob(f"{PREFIX}*")))
    return found
