"""What every backend shares: the session directory, template and fixtures, tool dispatch,
background-process bookkeeping, checks and the idempotent close.

A session lives in ``<settings.root>/ise-sbx-<session_id>/``::

    owner.json    who created it (pid, process start time, host): the reaper's evidence
    workspace/    the agent's files; the sandbox sees it as /workspace
    procs/        logs of background processes; the sandbox sees it as /run/ise/procs

A backend subclasses ``SandboxWorkspace`` and provides ``_start``, ``_stop``, ``_exec``,
``_spawn``, ``_exited``, ``_kill`` and ``_kill_all``. Everything the sandbox can write is read
back through ``ConfinedDir``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ise_core.config import WorkspaceSettings
from ise_core.errors import BackendError, ConfigError, FileAccessError, SandboxDied, ToolError
from ise_core.records import Check, CheckResult, FixtureFile, Persona
from ise_core.workspace import tools as _tools  # noqa: F401  (registers the tool set)
from ise_core.workspace.base import ExecOutcome, ProcessInfo, ToolResult
from ise_core.workspace.confined import ConfinedDir
from ise_core.workspace.toolkit import TOOLS, invoke

SESSION_PREFIX = "ise-sbx-"
OWNER_FILE = "owner.json"
SANDBOX_ROOT = "/workspace"
SANDBOX_PROCS = "/run/ise/procs"
PACKAGE_TEMPLATE = Path(__file__).parent / "template"
DEFAULT_TEMPLATE_SETTING = "ise_core/workspace/template"
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{\{\s*persona\.(\w+)\s*\}\}")


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def write_owner_file(path: Path, record: dict[str, Any]) -> None:
    """Atomic (the reaper never reads half of it) but not fsynced: it only matters while
    this process lives, and an fsync on every workspace open costs milliseconds."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def resolve_setting_path(value: str, base_dir: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def template_dir(settings: WorkspaceSettings, base_dir: Path) -> Path:
    candidate = resolve_setting_path(settings.template, base_dir)
    if candidate.is_dir():
        return candidate
    if settings.template == DEFAULT_TEMPLATE_SETTING and PACKAGE_TEMPLATE.is_dir():
        return PACKAGE_TEMPLATE  # running outside the project folder: use the packaged copy
    raise ConfigError(
        f"params: key 'workspace.template': template directory {candidate} does not exist"
    )


_TEMPLATE_CACHE: dict[str, tuple[tuple[Any, ...], list[tuple[str, str]]]] = {}


def load_template(directory: Path) -> list[tuple[str, str]]:
    """(relative path, text) of every template file; cached until a file changes."""
    entries = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            info = path.stat()
            entries.append((path.relative_to(directory).as_posix(), info.st_mtime_ns, info.st_size))
    signature = tuple(entries)
    cached = _TEMPLATE_CACHE.get(str(directory))
    if cached is not None and cached[0] == signature:
        return cached[1]
    files = [(rel, (directory / rel).read_text(encoding="utf-8")) for rel, _, _ in entries]
    _TEMPLATE_CACHE[str(directory)] = (signature, files)
    return files


def render_template(text: str, persona: Persona | None) -> str:
    """Fill ``{{persona.<field>}}`` placeholders (lists joined with commas)."""

    def fill(match: re.Match[str]) -> str:
        if persona is None:
            return "(not given)"
        value = getattr(persona, match.group(1), None)
        if value is None:
            return match.group(0)
        return ", ".join(value) if isinstance(value, list) else str(value)

    return _PLACEHOLDER.sub(fill, text)


_OPEN: weakref.WeakSet[SandboxWorkspace] = weakref.WeakSet()


def close_all() -> int:
    """Close every sandbox this process still has open (on shutdown); how many there were."""
    open_now = list(_OPEN)
    for workspace in open_now:
        try:
            workspace.close()
        except BackendError:
            continue  # the reaper removes what could not be closed now
    return len(open_now)


atexit.register(close_all)


class SandboxWorkspace:
    """The ``Workspace`` protocol over a backend's primitives (see the module docstring)."""

    backend = ""
    sandbox_root = SANDBOX_ROOT

    def __init__(
        self, settings: WorkspaceSettings, *, base_dir: Path, session_id: str | None = None
    ) -> None:
        self.settings = settings
        self.base_dir = base_dir
        self.session_id = session_id or new_session_id()
        if not _SESSION_ID.match(self.session_id):
            raise ConfigError(
                f"session id {self.session_id!r}: expected 1-64 letters, digits, '_', '.', '-'"
            )
        self.template_dir = template_dir(settings, base_dir)
        self.root_dir = resolve_setting_path(settings.root, base_dir).absolute()
        self.session_dir = self.root_dir / f"{SESSION_PREFIX}{self.session_id}"
        self.workspace_dir = self.session_dir / "workspace"
        self.procs_dir = self.session_dir / "procs"
        owner = self._file_owner()
        self.files = ConfinedDir(self.workspace_dir, sandbox_root=SANDBOX_ROOT, owner=owner)
        self.procs = ConfinedDir(self.procs_dir, sandbox_root=SANDBOX_PROCS, owner=owner)
        self.processes: dict[str, ProcessInfo] = {}
        self._process_counter = 0
        self._opened = False
        self._closed = False
        self._needs_restart = False
        self._wiped = False  # started and empty: ``open`` only lays out the files

    # --- backend primitives ------------------------------------------------------------------

    def _file_owner(self) -> tuple[int, int] | None:
        return None

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def _exec(self, command: str, *, timeout_s: float, cwd: str) -> ExecOutcome:
        raise NotImplementedError

    def _spawn(self, proc_id: str, command: str, cwd: str) -> None:
        raise NotImplementedError

    def _exited(self) -> dict[str, int]:
        raise NotImplementedError

    def _kill(self, proc_id: str) -> None:
        raise NotImplementedError

    def _kill_all(self) -> None:
        raise NotImplementedError

    def _wipe_sandbox(self) -> None:
        """Kill every process and empty the sandbox's scratch folders (/tmp ...); raise
        ``SandboxDied`` when that cannot be done (the sandbox is then restarted)."""
        raise NotImplementedError

    # --- lifecycle -----------------------------------------------------------------------------

    def owner_record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "pid": pid,
            "start_time": process_start_time(pid),
            "host": socket.gethostname(),
            "backend": self.backend,
            "session_id": self.session_id,
            "created": time.time(),
        }

    def open(self, fixtures: Sequence[FixtureFile] = (), persona: Persona | None = None) -> None:
        """Start the sandbox (first time) or reset it, then lay out template and fixtures.

        On a sandbox that ``prepare`` started or ``wipe`` emptied, this only lays out the
        files: that is what makes taking one from a warm pool cheap.
        """
        if self._closed:
            raise BackendError(f"workspace {self.session_id} is closed; open a new one")
        if not self._opened:
            self._start_sandbox(fixtures, persona)
        elif self._wiped:
            self._populate(fixtures, persona)
        else:
            self.reset(fixtures, persona)
        self._wiped = False

    def prepare(self) -> None:
        """Start the sandbox with an empty workspace (what a warm pool keeps ready)."""
        if self._closed:
            raise BackendError(f"workspace {self.session_id} is closed; open a new one")
        if not self._opened:
            self._start_sandbox(None, None)
            self._wiped = True

    def _start_sandbox(
        self, fixtures: Sequence[FixtureFile] | None, persona: Persona | None
    ) -> None:
        try:
            self._create_session_dir()
        except FileExistsError:
            raise BackendError(
                f"{self.session_dir} already exists: session id {self.session_id!r} is in use"
            ) from None
        except OSError as exc:
            raise BackendError(
                f"cannot create the workspace under {self.root_dir} "
                f"(params key 'workspace.root'): {exc}"
            ) from None
        _OPEN.add(self)
        self._opened = True
        try:
            if fixtures is not None:
                self._populate(fixtures, persona)
            self._start()
        except BaseException:
            self.close()
            raise

    def _transit_dir(self) -> Path:
        """The hidden name the session directory has while it is made or removed; it carries
        this process's pid, so the reaper can tell a crashed maker or remover from a live one."""
        return self.root_dir / f".{SESSION_PREFIX}{self.session_id}.{os.getpid()}"

    def _create_session_dir(self) -> None:
        """Make the session directory with its owner file already inside (built under the
        transit name, then renamed): a crash never leaves an ownerless session directory."""
        if self.session_dir.exists():
            raise FileExistsError(self.session_dir)
        transit = self._transit_dir()
        transit.mkdir(parents=True)
        try:
            owner = self._file_owner()
            for name in (self.workspace_dir.name, self.procs_dir.name):
                (transit / name).mkdir()
                if owner is not None:
                    os.chown(transit / name, *owner)
            write_owner_file(transit / OWNER_FILE, self.owner_record())
            os.rename(transit, self.session_dir)
        except BaseException:
            shutil.rmtree(transit, ignore_errors=True)
            raise

    def reset(self, fixtures: Sequence[FixtureFile] = (), persona: Persona | None = None) -> None:
        """Back to template + fixtures: ``wipe``, then lay the files out again."""
        self.wipe()
        self._populate(fixtures, persona)
        self._wiped = False

    def wipe(self) -> None:
        """Leave nothing of what ran: every process killed, the workspace, the process logs
        and the sandbox's /tmp emptied. A sandbox that cannot be wiped is restarted (its
        memory-backed /tmp goes with it)."""
        self._require_open()
        if not self._needs_restart:
            try:
                self._wipe_sandbox()
            except SandboxDied:
                self._needs_restart = True
        self.processes.clear()
        self._process_counter = 0  # a reset episode numbers its processes from p1 again
        self.files.clear()
        self.procs.clear()
        if self._needs_restart:
            self._restart()
        self._wiped = True

    def _populate(self, fixtures: Sequence[FixtureFile], persona: Persona | None) -> None:
        for rel, text in load_template(self.template_dir):
            self.files.write_bytes(rel, render_template(text, persona).encode("utf-8"))
        for fixture in fixtures:
            try:
                self.files.write_bytes(fixture.path, fixture.content.encode("utf-8"))
            except FileAccessError as exc:
                raise BackendError(f"fixture {fixture.path!r}: {exc}") from None

    def _restart(self) -> None:
        try:
            self._stop()
        finally:
            self._needs_restart = False
        for info in self.processes.values():
            if info.running:
                info.killed = True
        self._start()

    def close(self) -> None:
        """Stop every process and remove the session directory; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        try:
            if self._opened:
                self._stop()
        finally:
            # Out of sight first (one rename), then deleted: a crash halfway leaves the transit
            # name, which the reaper removes, never a half-deleted session without its owner.
            transit = self._transit_dir()
            try:
                os.rename(self.session_dir, transit)
            except OSError:
                transit = self.session_dir
            shutil.rmtree(transit, ignore_errors=True)

    def __enter__(self) -> SandboxWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_open(self) -> None:
        if self._closed:
            raise BackendError(f"workspace {self.session_id} is closed")
        if not self._opened:
            raise BackendError(f"workspace {self.session_id} is not open; call open() first")

    # --- what tools use ------------------------------------------------------------------------

    def sandbox_path(self, workdir: str | None) -> str:
        """The in-sandbox absolute directory for an agent-given workdir (inside the workspace)."""
        if workdir is None or workdir.strip() in ("", ".", SANDBOX_ROOT):
            return SANDBOX_ROOT
        parts = self.files.parts(workdir)
        return "/".join([SANDBOX_ROOT, *parts])

    def run_command(
        self, command: str, *, timeout_s: float, workdir: str | None = None
    ) -> ExecOutcome:
        return self._exec(command, timeout_s=timeout_s, cwd=self.sandbox_path(workdir))

    def start_process(self, command: str, workdir: str | None = None) -> ProcessInfo:
        cwd = self.sandbox_path(workdir)
        running = sum(1 for info in self.refresh_processes() if info.running)
        if running >= 16:
            raise ToolError(f"{running} background processes are already running; kill some first")
        self._process_counter += 1
        proc_id = f"p{self._process_counter}"
        self._spawn(proc_id, command, cwd)
        info = ProcessInfo(id=proc_id, command=command)
        self.processes[proc_id] = info
        return info

    def refresh_processes(self) -> list[ProcessInfo]:
        if any(info.running for info in self.processes.values()):
            for proc_id, code in self._exited().items():
                info = self.processes.get(proc_id)
                if info is not None and info.exit_code is None and not info.killed:
                    info.exit_code = code
        return list(self.processes.values())

    def kill_process(self, proc_id: str) -> ProcessInfo | None:
        info = self.processes.get(proc_id)
        if info is None:
            return None
        self.refresh_processes()
        if info.running:
            self._kill(proc_id)
            info.killed = True
        return info

    # --- the Workspace protocol ----------------------------------------------------------------

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Run one tool call; every failure is an ``ok=False`` observation."""
        self._require_open()
        spec = TOOLS.get(name)
        if spec is None:
            known = ", ".join(sorted(TOOLS))
            return ToolResult(ok=False, content=f"Error: unknown tool {name!r} (tools: {known})")
        started = time.perf_counter()
        try:
            self._ensure_running()
            return invoke(spec, self, arguments)
        except FileAccessError as exc:
            message = f"Error: {exc}"
        except SandboxDied as exc:
            self._needs_restart = True
            message = (
                f"Error: the sandbox stopped ({exc}); it is restarted with the files kept, "
                "background processes are gone"
            )
        return ToolResult(ok=False, content=message, duration_s=time.perf_counter() - started)

    def _ensure_running(self) -> None:
        """Restart a sandbox that died (its files survive in the session directory)."""
        if self._needs_restart:
            try:
                self._restart()
            except BackendError as exc:
                raise SandboxDied(f"restart failed: {exc}") from None

    def run_check(self, check: Check) -> CheckResult:
        self._require_open()
        if check.kind == "command_succeeds":
            assert check.command is not None
            try:
                self._ensure_running()
                outcome = self.run_command(check.command, timeout_s=self.settings.call_timeout_s)
            except SandboxDied as exc:
                self._needs_restart = True
                return CheckResult(check=check, passed=False, detail=f"sandbox stopped: {exc}")
            passed = outcome.exit_code == 0
            detail = (
                "exit 0"
                if passed
                else ("timed out" if outcome.timed_out else f"exit {outcome.exit_code}")
            )
            tail = outcome.output.strip()[-300:]
            return CheckResult(check=check, passed=passed, detail=f"{detail}: {tail}".strip(": "))
        assert check.path is not None
        if check.kind == "file_exists":
            kind = self.files.kind(check.path)
            return CheckResult(
                check=check, passed=kind is not None, detail=kind or "no such file or directory"
            )
        assert check.text is not None
        try:
            data = self.files.read_bytes(check.path, self.settings.max_file_mb * 1024 * 1024)
        except FileAccessError as exc:
            return CheckResult(check=check, passed=False, detail=str(exc))
        found = check.text in data.decode("utf-8", errors="replace")
        return CheckResult(
            check=check, passed=found, detail="text found" if found else "text not found"
        )

    def list_files(self) -> list[str]:
        self._require_open()
        return self.files.list_files()

    def tool_schemas(self) -> list[dict[str, Any]]:
        return [spec.schema() for spec in TOOLS.values() if spec.offered(self.settings)]
