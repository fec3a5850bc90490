"""The ``local`` backend: a bubblewrap sandbox per workspace, for machines without Docker.

One ``bwrap`` process per workspace, started at ``open`` and kept until ``close``, runs the
supervisor (``supervisor.py``) as PID 1 of fresh user, PID, network, IPC, UTS and cgroup
namespaces. Inside: the host's /usr (and the /bin, /lib links into it) read-only, a few /etc
files, a private /proc, /dev and size-capped /tmp, the workspace at /workspace and the
background-process logs at /run/ise/procs; uid 1000, no capabilities, no further user
namespaces, a read-only root, an empty environment but PATH, HOME, LANG and USER. Not visible:
/root, /home, the project, the host's other mounts and its network (only a private loopback).

Each ``exec`` is one request to the supervisor, which forks ``/bin/sh -c`` in a new session,
enforces the wall-clock timeout by killing the process group, and returns the output cut to
the limit. A per-command CPU limit and the per-process limits on memory (data segment and,
4x larger, address space), processes and file size are rlimits. Where a writable cgroup pids
controller exists the sandbox also gets its own cgroup capping its processes and total memory;
when the pipeline runs as root that cgroup is required, because root is exempt from
RLIMIT_NPROC (see ``cgroups.py``).

Because commands share one PID and network namespace, a server started with the ``process``
tool is reachable from later commands, as on a real machine. Closing the control pipe ends
the supervisor, and the kernel kills whatever is left in the namespace.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import select
import shutil
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ise_core.errors import BackendError
from ise_core.workspace import cgroups
from ise_core.workspace.session import SANDBOX_PROCS, SANDBOX_ROOT, SandboxDied
from ise_core.workspace.supervised import (
    SUPERVISOR_IN_SANDBOX,
    SUPERVISOR_SOURCE,
    SupervisedWorkspace,
)

T = TypeVar("T")
JOIN_CGROUP = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_HOSTNAME = "workspace"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
# Host paths the sandbox needs to run sh, python3, node and git (read-only, where present).
ETC_PIECES = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mime.types",
    "/etc/gitconfig",
    "/etc/os-release",
)
TOP_LEVEL_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"agent:x:{SANDBOX_UID}:{SANDBOX_GID}:agent:{SANDBOX_ROOT}:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = f"root:x:0:\nagent:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"
HOSTS = f"127.0.0.1\tlocalhost {SANDBOX_HOSTNAME}\n::1\tlocalhost ip6-localhost\n"
ETC_FILES = (
    ("passwd", PASSWD),
    ("group", GROUP),
    ("hosts", HOSTS),
    ("hostname", SANDBOX_HOSTNAME + "\n"),
)


def _python_in_sandbox() -> str:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise BackendError(
        "local workspace backend: no python3 under /usr on this machine (the sandbox runs the "
        "host's /usr); install it with: apt-get install -y python3"
    )


def _filesystem_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in TOP_LEVEL_LINKS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for piece in ETC_PIECES:
        if os.path.lexists(piece):
            args += ["--ro-bind-try", piece, piece]
    return args


@functools.lru_cache(maxsize=1)
def bwrap_features() -> tuple[str, bool]:
    """(bwrap path, whether it supports --disable-userns); probed once per process.

    Raises ``BackendError`` when bubblewrap is missing or cannot build the namespaces.
    """
    path = shutil.which("bwrap")
    if path is None:
        raise BackendError(
            "local workspace backend: bubblewrap is not installed "
            "(Debian/Ubuntu: apt-get install -y bubblewrap)"
        )
    help_text = subprocess.run([path, "--help"], capture_output=True, text=True).stdout
    disable_userns = "--disable-userns" in help_text
    probe = [path, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    probe += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--cap-drop", "ALL"]
    probe += [*_filesystem_args(), "--proc", "/proc", "--dev", "/dev", "--clearenv"]
    probe += ["--setenv", "PATH", SANDBOX_PATH, "sh", "-c", "id -u"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise BackendError("local workspace backend: bubblewrap did not start in 20 s") from None
    if result.returncode != 0 or result.stdout.strip() != str(SANDBOX_UID):
        detail = (result.stderr or result.stdout).strip()[-400:]
        raise BackendError(
            "local workspace backend: bubblewrap cannot create the sandbox's namespaces here "
            f"({detail or 'exit ' + str(result.returncode)}). Unprivileged user namespaces "
            "must be allowed (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu also "
            "kernel.apparmor_restrict_unprivileged_userns=0), or run on a Docker engine."
        )
    return path, disable_userns


_keeper_jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
_keeper_lock = threading.Lock()
_keeper: threading.Thread | None = None


def _keeper_loop() -> None:
    while True:
        job, future = _keeper_jobs.get()
        try:
            future.set_result(job())
        except BaseException as exc:
            future.set_exception(exc)


def on_keeper_thread(job: Callable[[], T]) -> T:
    """Run ``job`` (starting bwrap) on one thread that lives as long as the process.

    ``--die-with-parent`` is PR_SET_PDEATHSIG, which fires when the *thread* that forked bwrap
    ends, not the process: a workspace opened from a short-lived worker thread would lose its
    sandbox when that thread finished. Forking from a thread that never ends ties the sandbox
    to the process alone.
    """
    global _keeper
    with _keeper_lock:
        if _keeper is None or not _keeper.is_alive():
            _keeper = threading.Thread(target=_keeper_loop, name="ise-sandbox-keeper", daemon=True)
            _keeper.start()
    if threading.current_thread() is _keeper:
        return job()
    future: Future[T] = Future()
    _keeper_jobs.put((job, future))
    return future.result()


def _process_cap_problem() -> str | None:
    """Why the sandbox's process count could not be capped here, or None when it can."""
    if os.geteuid() != 0 or cgroups.available():
        return None
    return (
        "local workspace backend: running as root, and root is exempt from RLIMIT_NPROC, so "
        "only a cgroup can cap the sandbox's processes (a fork bomb would take the machine "
        "down), but no writable cgroup pids controller was found under /sys/fs/cgroup. Run "
        "as a regular user, give this process a writable pids cgroup, or use a Docker engine."
    )


def local_available() -> tuple[bool, str]:
    """Whether the local backend can run here, and why not."""
    try:
        bwrap_features()
        _python_in_sandbox()
    except BackendError as exc:
        return False, str(exc)
    problem = _process_cap_problem()
    if problem is not None:
        return False, problem
    return True, "bubblewrap works"


class LocalWorkspace(SupervisedWorkspace):
    """A workspace isolated by bubblewrap on this machine."""

    backend = "local"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proc: subprocess.Popen[bytes] | None = None
        self._cgroup: cgroups.SandboxCgroup | None = None

    def bwrap_argv(self, data_args: list[str]) -> list[str]:
        """The bwrap command line; ``data_args`` bind the synthetic /etc files."""
        bwrap, disable_userns = bwrap_features()
        settings = self.settings
        args = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
        args.append("--as-pid-1")
        args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
        args += ["--hostname", SANDBOX_HOSTNAME, "--cap-drop", "ALL"]
        if disable_userns:
            args.append("--disable-userns")
        args += ["--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", SANDBOX_ROOT]
        args += ["--setenv", "LANG", "C.UTF-8", "--setenv", "USER", "agent"]
        args += _filesystem_args()
        args += data_args
        args += ["--proc", "/proc", "--dev", "/dev", "--size", str(settings.tmp_mb << 20)]
        args += ["--tmpfs", "/tmp", "--bind", str(self.workspace_dir), SANDBOX_ROOT]
        args += ["--bind", str(self.procs_dir), SANDBOX_PROCS]
        args += ["--ro-bind", str(SUPERVISOR_SOURCE), SUPERVISOR_IN_SANDBOX, "--remount-ro", "/"]
        args += ["--chdir", SANDBOX_ROOT]
        args += ["--", *self.supervisor_argv(_python_in_sandbox())]
        return args

    # --- backend primitives ------------------------------------------------------------------

    def _join_cgroup(self, argv: list[str]) -> list[str]:
        """Wrap ``argv`` so it starts inside a fresh cgroup of this sandbox (when there is one)."""
        problem = _process_cap_problem()
        if problem is not None:
            raise BackendError(problem)
        if not cgroups.available():
            return argv
        try:
            self._cgroup = cgroups.SandboxCgroup.create(
                self.session_id,
                max_processes=self.settings.max_processes,
                memory_bytes=self.settings.memory_mb << 20,
            )
        except OSError as exc:
            raise BackendError(f"local workspace backend: cannot create a cgroup: {exc}") from None
        # The shell moves itself into the cgroup, then becomes bwrap: nothing forks before.
        return ["/bin/sh", "-c", JOIN_CGROUP, "sh", *self._cgroup.procs_files, "--", *argv]

    def _start(self) -> None:
        # The synthetic /etc files travel through pipes (--ro-bind-data): nothing on disk.
        pipes: list[int] = []
        data_args: list[str] = []
        try:
            for name, text in ETC_FILES:
                read_end, write_end = os.pipe()
                os.write(write_end, text.encode("ascii"))  # far below a pipe's buffer
                os.close(write_end)
                pipes.append(read_end)
                data_args += ["--ro-bind-data", str(read_end), f"/etc/{name}"]
            argv = self._join_cgroup(self.bwrap_argv(data_args))
            self._proc = on_keeper_thread(
                lambda: subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,  # read only if the start fails; PID 1 never writes
                    pass_fds=pipes,
                    start_new_session=True,
                    env={"PATH": SANDBOX_PATH},
                )
            )
        finally:
            for fd in pipes:
                os.close(fd)
        try:
            hello = self._await_greeting()
        except SandboxDied as exc:
            proc = self._proc
            self._kill_sandbox_keep_stderr()
            detail = b""
            if proc is not None and proc.stderr is not None:
                detail = proc.stderr.read()[-500:]
                proc.stderr.close()
            raise BackendError(
                f"local workspace backend: the sandbox did not start ({exc}): "
                f"{detail.decode(errors='replace').strip()}"
            ) from None
        if not hello.get("ready"):
            self._stop()
            raise BackendError(f"local workspace backend: unexpected greeting {hello!r}")

    def _kill_sandbox_keep_stderr(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._remove_cgroup()

    def _stop(self) -> None:
        try:
            self._stop_process()
        finally:
            self._remove_cgroup()

    def _remove_cgroup(self) -> None:
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None:
            cgroup.remove()

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # the supervisor exits; the kernel empties the namespace
        except OSError:
            pass
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    # --- the transport: bwrap's stdin and stdout --------------------------------------------

    def _send(self, data: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise SandboxDied("not running")
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SandboxDied(f"control pipe closed: {exc}") from None

    def _receive(self, timeout_s: float) -> bytes:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise SandboxDied("not running")
        fd = proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            return b""
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise SandboxDied("the sandbox exited")
        return chunk

    def _abort_transport(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._remove_cgroup()

    @property
    def host_pid(self) -> int | None:
        """The outer bwrap process (for tests and the reaper)."""
        return None if self._proc is None else self._proc.pid
