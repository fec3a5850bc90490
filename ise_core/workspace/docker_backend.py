"""The ``docker`` backend: one locked-down container per workspace, run by the supervisor.

The container runs the image built from ``docker/workspace.Dockerfile`` with no network, a
read-only root filesystem, a size-capped tmpfs /tmp, the session's workspace directory bound
at /workspace and its process-log directory at /run/ise/procs, a non-root user, no
capabilities, ``no-new-privileges``, pids, memory and CPU caps, and no log driver (what the
sandbox prints never lands on the engine's disk). It is labelled ``ise.sandbox=1`` with its
owner's pid and host, so the reaper can find it after a crash, and it is removed in
``close``. The host's Docker socket is never mounted into it.

PID 1 is the same supervisor the local backend runs (``supervisor.py``, bound read-only into
the container); the host talks to it over the container's attached stdin and stdout, so no
command costs a ``docker exec``, every command's output comes back through a pipe, background
processes are reaped and their exit codes recorded by a process the agent cannot kill, and the
workspace quota and file-count cap are measured exactly as on the local backend. The
container's stdin closes when the host's connection does (``stdin_once``): a host that dies
takes its sandboxes' supervisors with it, and the reaper removes the stopped containers.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import socket
from typing import Any

from ise_core.errors import BackendError
from ise_core.workspace.session import (
    SANDBOX_PROCS,
    SANDBOX_ROOT,
    SESSION_PREFIX,
    SandboxDied,
    process_start_time,
)
from ise_core.workspace.supervised import (
    SUPERVISOR_IN_SANDBOX,
    SUPERVISOR_SOURCE,
    SupervisedWorkspace,
)

LABEL = "ise.sandbox"
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": SANDBOX_ROOT,
    "LANG": "C.UTF-8",
    "USER": "agent",
}
ENGINE_TIMEOUT_S = 3.0
SANDBOX_PYTHON = "/usr/bin/python3"
# Frames of an attached stream without a TTY: 1 byte stream (1 stdout, 2 stderr), 3 zero
# bytes, 4 bytes big-endian length, then the payload.
FRAME_HEADER = 8
MAX_STDERR_KEPT = 4096


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


def _container_user() -> tuple[str, tuple[int, int] | None]:
    """The user the container runs as, and the owner host-side files must get."""
    if os.geteuid() == 0:
        return "1000:1000", (1000, 1000)
    return f"{os.getuid()}:{os.getgid()}", None  # files the host writes are already ours


class DockerWorkspace(SupervisedWorkspace):
    """A workspace in a locked-down container of the workspace image."""

    backend = "docker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._user = _container_user()[0]
        super().__init__(*args, **kwargs)
        self._client: Any = None
        self._container_id: str | None = None
        self._attached: Any = None  # the attach connection (the SDK's socket wrapper)
        self._stream: socket.socket | None = None  # ... and the socket underneath
        self._frames = b""  # attached-stream bytes not yet decoded into frames
        self._stderr = b""  # what the supervisor wrote to stderr (shown when it fails)

    def _file_owner(self) -> tuple[int, int] | None:
        return _container_user()[1]

    @property
    def container_id(self) -> str | None:
        return self._container_id

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

    def supervisor_config(self) -> dict[str, Any]:
        config = super().supervisor_config()
        config["max_processes"] = None  # the container's pids limit caps them, per sandbox
        return config

    # --- backend primitives ------------------------------------------------------------------

    def _create_container(self, api: Any) -> str:
        """Create (not start) the container; its id."""
        from docker.types import LogConfig, Ulimit

        settings = self.settings
        file_bytes = settings.max_file_mb * 1024 * 1024
        host_config = api.create_host_config(
            binds={
                str(self.workspace_dir): {"bind": SANDBOX_ROOT, "mode": "rw"},
                str(self.procs_dir): {"bind": SANDBOX_PROCS, "mode": "rw"},
                str(SUPERVISOR_SOURCE): {"bind": SUPERVISOR_IN_SANDBOX, "mode": "ro"},
            },
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={settings.tmp_mb}m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=settings.max_processes,
            mem_limit=f"{settings.memory_mb}m",
            memswap_limit=f"{settings.memory_mb}m",
            nano_cpus=int(settings.cpus * 1e9),
            # No CPU-time ulimit: it would count against the long-lived supervisor; each
            # command gets its own CPU limit from the supervisor instead.
            ulimits=[
                Ulimit(name="fsize", soft=file_bytes, hard=file_bytes),
                Ulimit(name="core", soft=0, hard=0),
            ],
            log_config=LogConfig(type="none"),
        )
        created = api.create_container(
            settings.docker_image,
            command=self.supervisor_argv(SANDBOX_PYTHON),
            name=f"{SESSION_PREFIX}{self.session_id}",
            hostname="workspace",
            user=self._user,
            working_dir=SANDBOX_ROOT,
            environment=SANDBOX_ENV,
            # Not detached with stdin open: the SDK's way of asking for StdinOnce.
            detach=False,
            stdin_open=True,
            labels=self.labels(),
            host_config=host_config,
        )
        return str(created["Id"])

    def _start(self) -> None:
        self._client = docker_client()
        self._frames = self._stderr = b""
        api = self._client.api
        try:
            self._container_id = self._create_container(api)
            # Attached before the start, so not a byte of the greeting is missed.
            self._attached = api.attach_socket(
                self._container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            self._stream = getattr(self._attached, "_sock", self._attached)
            self._stream.settimeout(None)
            api.start(self._container_id)
        except Exception as exc:
            self._stop()
            raise BackendError(
                f"docker workspace backend: cannot start the container: {exc}"
            ) from None
        try:
            hello = self._await_greeting()
        except SandboxDied as exc:
            detail = self._stderr.decode(errors="replace").strip()[-500:]
            self._stop()
            raise BackendError(
                f"docker workspace backend: the sandbox did not start ({exc}): {detail}"
            ) from None
        if not hello.get("ready"):
            self._stop()
            raise BackendError(f"docker workspace backend: unexpected greeting {hello!r}")

    def _stop(self) -> None:
        self._close_stream()
        container, self._container_id = self._container_id, None
        client, self._client = self._client, None
        try:
            if container is not None and client is not None:
                try:
                    client.api.remove_container(container, force=True)
                except Exception as exc:
                    if "No such container" not in str(exc) and "404" not in str(exc):
                        raise BackendError(
                            f"docker workspace backend: cannot remove container {container}: "
                            f"{exc} (run `ise workspace reap`)"
                        ) from None
        finally:
            if client is not None:
                client.close()

    def _close_stream(self) -> None:
        attached, self._attached, self._stream = self._attached, None, None
        if attached is not None:
            _close_hijacked(attached)

    # --- the transport: the container's attached stdin and stdout ---------------------------

    def _send(self, data: bytes) -> None:
        if self._stream is None:
            raise SandboxDied("the container is not running")
        try:
            self._stream.sendall(data)
        except OSError as exc:
            raise SandboxDied(f"the container's stdin is closed: {exc}") from None

    def _receive(self, timeout_s: float) -> bytes:
        stream = self._stream
        if stream is None:
            raise SandboxDied("the container is not running")
        ready, _, _ = select.select([stream], [], [], timeout_s)
        if not ready:
            return b""
        try:
            chunk = stream.recv(1 << 16)
        except OSError as exc:
            raise SandboxDied(f"the container's stream failed: {exc}") from None
        if not chunk:
            raise SandboxDied("the container exited")
        self._frames += chunk
        return self._decode_frames()

    def _decode_frames(self) -> bytes:
        """The stdout payload of every complete frame received; stderr is kept aside."""
        out = bytearray()
        while len(self._frames) >= FRAME_HEADER:
            kind = self._frames[0]
            size = int.from_bytes(self._frames[4:FRAME_HEADER], "big")
            if len(self._frames) < FRAME_HEADER + size:
                break
            payload = self._frames[FRAME_HEADER : FRAME_HEADER + size]
            self._frames = self._frames[FRAME_HEADER + size :]
            if kind == 1:
                out += payload
            else:
                self._stderr = (self._stderr + payload)[-MAX_STDERR_KEPT:]
        return bytes(out)

    def _abort_transport(self) -> None:
        with contextlib.suppress(BackendError):
            self._stop()
