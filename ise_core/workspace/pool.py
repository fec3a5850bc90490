"""A warm pool of sandboxes: started ahead of time, wiped and reused between episodes.

Starting a sandbox costs a bubblewrap or container start (tens to hundreds of milliseconds);
taking one from the pool costs laying out the template and the intent's fixtures.

    with WorkspacePool(settings.workspace, base_dir=base, size=4) as pool:
        pool.fill()                          # start the sandboxes now (else on first use)
        workspace = pool.acquire()           # a Workspace: open / call / run_check / close
        workspace.open(intent.fixtures, intent.persona)
        ...
        workspace.close()                    # back to the pool: wiped, ready for the next one

``close`` on a pooled workspace returns it for a reset (``wipe``: every process killed, the
workspace, the process logs, /tmp and the other scratch mounts and System V IPC as they were
at start) and keeps it when fewer than ``size`` are idle; ``discard`` returns it for
destruction. A sandbox the wipe cannot bring back, or that is returned after the pool closed,
is destroyed, and the pool starts another on the next ``acquire`` when none is idle, so
nothing from one episode reaches the next. ``close`` on the pool tears down every sandbox it
made, idle or taken.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ise_core.config import WorkspaceSettings
from ise_core.errors import BackendError
from ise_core.records import Check, CheckResult, FixtureFile, Persona
from ise_core.workspace.base import ToolResult
from ise_core.workspace.session import SandboxWorkspace, new_session_id


@dataclass
class PoolStats:
    """What the pool did: sandboxes started, reused, destroyed."""

    started: int = 0
    reused: int = 0  # acquisitions served by a wiped, warm sandbox
    cold: int = 0  # acquisitions that had to start a sandbox
    wiped: int = 0
    destroyed: int = 0


class PooledWorkspace:
    """One sandbox lent by a ``WorkspacePool``: the ``Workspace`` protocol, where ``close``
    gives the sandbox back instead of destroying it."""

    def __init__(self, pool: WorkspacePool, sandbox: SandboxWorkspace) -> None:
        self._pool = pool
        self._sandbox: SandboxWorkspace | None = sandbox
        self.backend = sandbox.backend

    @property
    def sandbox(self) -> SandboxWorkspace:
        if self._sandbox is None:
            raise BackendError("this pooled workspace was returned to its pool")
        return self._sandbox

    def open(self, fixtures: Sequence[FixtureFile] = (), persona: Persona | None = None) -> None:
        self.sandbox.open(fixtures, persona)

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        return self.sandbox.call(name, arguments)

    def run_check(self, check: Check) -> CheckResult:
        return self.sandbox.run_check(check)

    def list_files(self) -> list[str]:
        return self.sandbox.list_files()

    def tool_schemas(self) -> list[dict[str, Any]]:
        return self.sandbox.tool_schemas()

    def close(self) -> None:
        """Give the sandbox back for a reset (idempotent)."""
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            self._pool.release(sandbox)

    def discard(self) -> None:
        """Give the sandbox back for destruction (idempotent)."""
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            self._pool.release(sandbox, reuse=False)

    def __enter__(self) -> PooledWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkspacePool:
    """Keeps up to ``size`` started, empty sandboxes of one backend ready to lend."""

    def __init__(
        self,
        settings: WorkspaceSettings,
        *,
        base_dir: Path,
        backend: str | None = None,
        size: int | None = None,
    ) -> None:
        from ise_core.workspace import choose_backend

        self.settings = settings
        self.base_dir = base_dir
        self.backend = choose_backend(settings, backend)
        self.size = settings.pool_size if size is None else size
        self.stats = PoolStats()
        self._idle: deque[SandboxWorkspace] = deque()
        self._lent: set[SandboxWorkspace] = set()
        self._lock = threading.Lock()
        self._closed = False

    def _new_sandbox(self) -> SandboxWorkspace:
        from ise_core.workspace import open_workspace

        sandbox = open_workspace(
            self.settings,
            base_dir=self.base_dir,
            backend=self.backend,
            session_id=f"pool-{new_session_id()}",
        )
        sandbox.prepare()
        with self._lock:
            self.stats.started += 1
        return sandbox

    def fill(self) -> None:
        """Start sandboxes until ``size`` are idle."""
        while True:
            with self._lock:
                if self._closed or len(self._idle) + len(self._lent) >= self.size:
                    return
            sandbox = self._new_sandbox()
            with self._lock:
                if not self._closed:
                    self._idle.append(sandbox)
                    continue
            sandbox.close()
            return

    def acquire(self) -> PooledWorkspace:
        """A started, empty sandbox: a warm one when one is idle, else a new one."""
        with self._lock:
            if self._closed:
                raise BackendError("the workspace pool is closed")
            sandbox = self._idle.popleft() if self._idle else None
            if sandbox is not None:
                self.stats.reused += 1
                self._lent.add(sandbox)
        if sandbox is None:
            sandbox = self._new_sandbox()
            with self._lock:
                self.stats.cold += 1
                self._lent.add(sandbox)
                closed = self._closed
            if closed:
                self._destroy(sandbox)
                raise BackendError("the workspace pool is closed")
        return PooledWorkspace(self, sandbox)

    def release(self, sandbox: SandboxWorkspace, *, reuse: bool = True) -> None:
        """Take a sandbox back: wiped and kept idle, or destroyed (see the module docstring)."""
        with self._lock:
            self._lent.discard(sandbox)
            keep = reuse and not self._closed and len(self._idle) < self.size
        if keep:
            try:
                sandbox.wipe()
            except BackendError:
                keep = False
        if keep:
            with self._lock:
                self.stats.wiped += 1
                if not self._closed:
                    self._idle.append(sandbox)
                    return
        self._destroy(sandbox)

    def _destroy(self, sandbox: SandboxWorkspace) -> None:
        with self._lock:
            self._lent.discard(sandbox)
            self.stats.destroyed += 1
        sandbox.close()

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self, timeout_s: float = 0.0) -> None:
        """Destroy every sandbox of the pool, idle or lent (idempotent). ``timeout_s``: how
        long to wait for lent sandboxes to come back first."""
        with self._lock:
            self._closed = True
        deadline = time.monotonic() + timeout_s
        while timeout_s and time.monotonic() < deadline:
            with self._lock:
                if not self._lent:
                    break
            time.sleep(0.05)
        with self._lock:
            everything = [*self._idle, *self._lent]
            self._idle.clear()
            self._lent.clear()
        errors = []
        for sandbox in everything:
            try:
                sandbox.close()
            except BackendError as exc:
                errors.append(str(exc))
        if errors:
            raise BackendError("; ".join(errors))

    def __enter__(self) -> WorkspacePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
