"""The ``docker`` backend: one container per workspace, one ``docker exec`` per command.

The container runs the image built from ``docker/workspace.Dockerfile`` with no network, a
read-only root filesystem, a size-capped tmpfs /tmp, the session's workspace directory bound
at /workspace and its process-log directory at /run/ise/procs, a non-root user, no
capabilities, ``no-new-privileges``, and pids, memory, CPU and rlimit caps. It is labelled
``ise.sandbox=1`` with its owner's pid and host, so the reaper can find it after a crash, and
it is removed in ``close``. The host's Docker socket is never mounted into it.

PID 1 is a tiny loop that ignores signals and reaps orphans, so the agent cannot stop the
container from inside. Each command runs under coreutils ``timeout``, which kills the whole
process group when the time is up; its output goes to a file in the session's process-log
directory, of which the host keeps the head and the tail up to the limit.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import socket
import time
from typing import Any

from ise_core.errors import BackendError, FileAccessError
from ise_core.workspace.base import ExecOutcome
from ise_core.workspace.session import (
    SANDBOX_PROCS,
    SANDBOX_ROOT,
    SESSION_PREFIX,
    SandboxDied,
    SandboxWorkspace,
    process_start_time,
)
from ise_core.workspace.supervisor import HeadTailBuffer

LABEL = "ise.sandbox"
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": SANDBOX_ROOT,
    "LANG": "C.UTF-8",
    "USER": "agent",
}
HOST_GRACE_S = 5.0  # beyond the in-container timeout, before the host gives up on a command
ENGINE_TIMEOUT_S = 3.0
# PID 1: ignore signals and reap orphans (commands run via exec are reparented to it) the
# moment they exit, so zombies never hold on to the pids limit.
INIT_PROGRAM = (
    "import os, signal\n"
    "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
    "    signal.signal(s, signal.SIG_IGN)\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])\n"
    "while True:\n"
    "    signal.sigtimedwait([signal.SIGCHLD], 1.0)\n"
    "    try:\n"
    "        while os.waitpid(-1, os.WNOHANG)[0]:\n"
    "            pass\n"
    "    except ChildProcessError:\n"
    "        pass\n"
)
# Runs one command under coreutils timeout (which SIGKILLs its whole process group) with its
# output in a file: docker holds an exec open for seconds while any process still has its
# stdout, so nothing left running in the background may inherit the exec's own stream.
EXEC_PROGRAM = 'exec timeout -s KILL "$1" sh -c "$2" > "$3" 2>&1 < /dev/null'
# Starts a background process in its own session; records its pid and, later, its exit code.
SPAWN_PROGRAM = (
    'exec > /dev/null 2>&1 < /dev/null; id="$1"; d="$2"; cmd="$3"; '
    'setsid sh -c "$cmd" > "$d/$id.log" 2>&1 < /dev/null & '
    'echo $! > "$d/$id.pid"; wait $!; echo $? > "$d/$id.rc"'
)


def _default_socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return None  # tcp/ssh: only a real request can tell


def docker_client(timeout_s: float = ENGINE_TIMEOUT_S) -> Any:
    """A docker SDK client for the engine that answers now, or ``BackendError`` saying why not."""
    socket_path = _default_socket_path()
    if socket_path is not None and not os.path.exists(socket_path):
        raise BackendError(f"docker workspace backend: no Docker engine socket at {socket_path}")
    try:
        # importlib: the project's own docker/ folder would shadow the SDK for mypy.
        docker = importlib.import_module("docker")
    except ImportError:
        raise BackendError(
            "docker workspace backend: the 'docker' Python package is not installed"
        ) from None
    try:
        client = docker.from_env(timeout=int(max(1, timeout_s)))
        client.ping()
    except Exception as exc:
        raise BackendError(f"docker workspace backend: the engine does not answer: {exc}") from None
    return client


def docker_available(image: str) -> tuple[bool, str]:
    """Whether an engine answers and has ``image``; the reason when not."""
    try:
        client = docker_client()
    except BackendError as exc:
        return False, str(exc)
    try:
        client.images.get(image)
    except Exception:
        return False, (
            f"docker workspace backend: image {image!r} is not built "
            "(see docker/workspace.Dockerfile, or ise_core.workspace.image.build_workspace_image)"
        )
    finally:
        client.close()
    return True, "Docker engine answers and the image is present"


def _close_hijacked(sock: Any) -> None:
    """Really close an upgraded exec connection: closing only the SocketIO leaves the socket
    open, and the HTTP pool may hand the dead connection to the next request (a timeout)."""
    raw = getattr(sock, "_sock", None)
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)
        raw.close()
    sock.close()


def _wait_for_eof(sock: Any, deadline: float) -> None:
    """Drain an exec's (empty) stream until it closes, or until the deadline."""
    fd = sock.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready and not sock.read(1 << 16):
            return


def _container_user() -> tuple[str, tuple[int, int] | None]:
    """The user the container runs as, and the owner host-side files must get."""
    if os.geteuid() == 0:
        return "1000:1000", (1000, 1000)
    return f"{os.getuid()}:{os.getgid()}", None  # files the host writes are already ours


class DockerWorkspace(SandboxWorkspace):
    """A workspace in a locked-down container of the workspace image."""

    backend = "docker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._user = _container_user()[0]
        super().__init__(*args, **kwargs)
        self._client: Any = None
        self._container: Any = None
        self._exec_counter = 0

    def _file_owner(self) -> tuple[int, int] | None:
        return _container_user()[1]

    @property
    def container_id(self) -> str | None:
        return None if self._container is None else str(self._container.id)

    def labels(self) -> dict[str, str]:
        pid = os.getpid()
        record = self.owner_record()
        return {
            LABEL: "1",
            "ise.session": self.session_id,
            "ise.owner_pid": str(pid),
            "ise.owner_start": str(process_start_time(pid)),
            "ise.owner_host": str(record["host"]),
        }

    # --- backend primitives ------------------------------------------------------------------

    def _start(self) -> None:
        from docker.types import Ulimit

        settings = self.settings
        self._client = docker_client()
        file_bytes = settings.max_file_mb * 1024 * 1024
        try:
            self._container = self._client.containers.run(
                settings.docker_image,
                command=["python3", "-I", "-S", "-c", INIT_PROGRAM],
                name=f"{SESSION_PREFIX}{self.session_id}",
                hostname="workspace",
                detach=True,
                user=self._user,
                working_dir=SANDBOX_ROOT,
                environment=SANDBOX_ENV,
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={settings.tmp_mb}m,mode=1777"},
                volumes={
                    str(self.workspace_dir): {"bind": SANDBOX_ROOT, "mode": "rw"},
                    str(self.procs_dir): {"bind": SANDBOX_PROCS, "mode": "rw"},
                },
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=settings.max_processes,
                mem_limit=f"{settings.memory_mb}m",
                memswap_limit=f"{settings.memory_mb}m",
                nano_cpus=int(settings.cpus * 1e9),
                ulimits=[
                    Ulimit(name="cpu", soft=settings.cpu_seconds, hard=settings.cpu_seconds),
                    Ulimit(name="fsize", soft=file_bytes, hard=file_bytes),
                    Ulimit(name="core", soft=0, hard=0),
                ],
                labels=self.labels(),
            )
        except Exception as exc:
            self._stop()
            raise BackendError(
                f"docker workspace backend: cannot start the container: {exc}"
            ) from None

    def _stop(self) -> None:
        container, self._container = self._container, None
        client, self._client = self._client, None
        try:
            if container is not None:
                try:
                    container.remove(force=True)
                except Exception as exc:
                    if "No such container" not in str(exc) and "404" not in str(exc):
                        raise BackendError(
                            f"docker workspace backend: cannot remove container {container.id}: "
                            f"{exc} (run `ise workspace reap`)"
                        ) from None
        finally:
            if client is not None:
                client.close()

    def _run_quiet(self, argv: list[str]) -> None:
        """A short helper command inside the container (kill, ...), output ignored."""
        if self._container is None:
            raise SandboxDied("the container is not running")
        try:
            self._container.exec_run(argv, user=self._user, environment=SANDBOX_ENV)
        except Exception as exc:
            raise SandboxDied(f"docker exec failed: {exc}") from None

    def _exec(self, command: str, *, timeout_s: float, cwd: str) -> ExecOutcome:
        if self._container is None or self._client is None:
            raise SandboxDied("the container is not running")
        api = self._client.api
        started = time.monotonic()
        self._exec_counter += 1
        out_name = f"exec-{self._exec_counter}.out"
        argv = ["sh", "-c", EXEC_PROGRAM, "exec", f"{timeout_s:.3f}", command]
        argv.append(f"{SANDBOX_PROCS}/{out_name}")
        try:
            exec_id = api.exec_create(
                self._container.id, argv, user=self._user, workdir=cwd, environment=SANDBOX_ENV
            )["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except Exception as exc:
            raise SandboxDied(f"docker exec failed: {exc}") from None
        try:
            _wait_for_eof(sock, started + timeout_s + HOST_GRACE_S)
        finally:
            _close_hijacked(sock)
        info = api.exec_inspect(exec_id)
        if info.get("Running") and info.get("Pid"):
            self._kill_host_process_group(int(info["Pid"]))
        elapsed = time.monotonic() - started
        code = info.get("ExitCode")
        timed_out = bool(info.get("Running")) or (
            code in (124, 137) and elapsed >= timeout_s * 0.98
        )
        text, truncated = self._collect_output(out_name)
        return ExecOutcome(
            exit_code=None if timed_out else code,
            output=text,
            truncated=truncated,
            timed_out=timed_out,
            duration_s=elapsed,
        )

    def _collect_output(self, name: str) -> tuple[str, bool]:
        """The head and tail of a command's output file, which is then removed."""
        limit = self.settings.output_limit
        buffer = HeadTailBuffer(limit)
        try:
            head, size = self.procs.read_tail(name, 0, buffer.head_limit)
            buffer.add(head)
            if size > len(head):
                start = max(len(head), size - buffer.tail_limit)
                tail, _ = self.procs.read_tail(name, start, size - start)
                buffer.add(tail)
                buffer.total = size
        except FileAccessError as exc:
            return f"(output unavailable: {exc})", False
        finally:
            self.procs.unlink(name)
        return buffer.text(), buffer.truncated

    @staticmethod
    def _kill_host_process_group(pid: int) -> None:
        """Last resort when even ``timeout`` did not end a command (needs host privileges)."""
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)

    def _spawn(self, proc_id: str, command: str, cwd: str) -> None:
        if self._container is None or self._client is None:
            raise SandboxDied("the container is not running")
        try:
            self._client.api.exec_start(
                self._client.api.exec_create(
                    self._container.id,
                    ["sh", "-c", SPAWN_PROGRAM, "spawn", proc_id, SANDBOX_PROCS, command],
                    user=self._user,
                    workdir=cwd,
                    environment=SANDBOX_ENV,
                )["Id"],
                detach=True,
            )
        except Exception as exc:
            raise SandboxDied(f"docker exec failed: {exc}") from None

    def _exited(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        for info in self.processes.values():
            if not info.running:
                continue
            try:
                text = self.procs.read_bytes(f"{info.id}.rc", 64).decode("ascii", "replace")
            except Exception:
                continue
            if text.strip().lstrip("-").isdigit():
                codes[info.id] = int(text.strip())
        return codes

    def _kill(self, proc_id: str) -> None:
        try:
            text = self.procs.read_bytes(f"{proc_id}.pid", 64).decode("ascii", "replace").strip()
        except Exception:
            return
        if text.isdigit() and int(text) > 1:
            self._run_quiet(["kill", "-KILL", "--", f"-{int(text)}"])

    def _kill_all(self) -> None:
        # kill(-1) reaches every process of the sandbox user except PID 1 and the caller.
        self._run_quiet(["sh", "-c", "kill -KILL -1"])
