"""The program that runs as PID 1 inside a local sandbox and executes commands on request.

It is started by bubblewrap (``python3 -I -S <this file> <config>``) with the sandbox
already built, so it needs only the standard library and must run on the sandbox's own
Python. Running as PID 1 means the kernel ignores signals sent to it from inside (a ``kill -9
-1`` by the agent cannot take the sandbox down), every orphan is reparented to it and reaped
here, and when it exits the kernel kills everything left in the PID namespace.

Protocol: requests arrive on stdin as ``marshal`` dicts (version 4) behind a 4-byte big-endian
length, from the trusted host; replies go out as one JSON object per line, because the host
must parse what the sandbox sends with a parser that is safe on hostile input. The JSON is
written by hand so that start-up imports nothing beyond built-in modules (``json`` pulls in
``re``, ``enum`` and friends: tens of milliseconds on every workspace open).

    {"op": "exec", "cmd": str, "cwd": str, "timeout": s, "limit": bytes}
        -> {"exit_code": int|null, "output": str, "truncated": bool, "timed_out": bool,
            "total_bytes": int, "duration_s": float}
    {"op": "spawn", "id": str, "cmd": str, "cwd": str, "log": path}  -> {"pid": int}
    {"op": "kill", "id": str}                                        -> {"killed": bool}
    {"op": "reap"}                                                   -> {"exited": {id: code}}
    {"op": "killall"}                                                -> {}
    {"op": "wipe"}  (kill all, scratch mounts and IPC as at start)   -> {"left": str}
    {"op": "ping"}                                                   -> {}

Every command runs in its own session (so a timeout kills its whole process group), with
stdin from /dev/null and stdout+stderr combined. The resource limits are set once on this
process and inherited by every command.

The workspace quota (``disk_quota_mb``, ``max_files`` over the ``watch`` folders) is measured
here too: after each command, and while a command or a background process runs, at most every
0.2 s (a command) or 1 s (background only), sooner the less room is left (``quota_wait``).
Over it, the command or background process is stopped, the reply says why, and later commands
cannot grow files until enough is deleted.
"""

from __future__ import annotations

import marshal
import os
import resource
import select
import signal
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an import at start-up; annotations only need it for mypy
    from typing import Any

    Signature = tuple[int, int, str | None]  # st_mode, st_rdev, symlink target

AS_HEADROOM = 4  # address-space limit as a multiple of the memory limit
QUOTA_POLL_S = 0.2  # the longest wait between two measures of the disk use while a command runs
IDLE_POLL_S = 1.0  # ... and while only background processes run
MIN_QUOTA_POLL_S = 0.005  # the shortest
# How fast a writer is assumed to fill the disk until a faster one is seen: a page-cache write
# on a quick machine (a shell loop of `head -c 8M /dev/zero > f$i` does ~1 GiB/s).
ASSUMED_WRITE_RATE = 2 << 30  # bytes/s
MAX_ENTRIES = 100_000  # files and folders the watched folders may hold, unless configured
EXIT_GRACE_S = 0.05  # after the command exits, how long to wait for output still in flight
KILL_ROUNDS = 50  # kill(-1) rounds before giving up on processes that keep appearing
DYING_WAIT_S = 2.0  # how long a process list waits for killed processes to finish dying
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)  # in /proc/<pid>/status SigPnd and ShdPnd
PF_EXITING = 0x4  # /proc/<pid>/stat flags: the process has started to exit


class HeadTailBuffer:
    """Keeps the first and last bytes of a stream up to ``limit`` in total, counting the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = max(64, limit)
        self.head_limit = self.limit * 3 // 5
        self.tail_limit = self.limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = bytes(self.head).decode("utf-8", errors="replace")
        tail = bytes(self.tail).decode("utf-8", errors="replace")
        if not self.truncated:
            return head + tail
        omitted = self.total - len(self.head) - len(self.tail)
        return (
            f"{head}\n[... output truncated: {omitted} of {self.total} bytes omitted ...]\n{tail}"
        )


def disk_usage(roots: list[str], max_entries: int) -> tuple[int, int]:
    """(bytes allocated, entries) under ``roots``; stops counting past ``max_entries``.

    Allocated blocks, not apparent sizes: a sparse file costs what it occupies, and a file
    with several hard links is counted once.
    """
    total = entries = 0
    seen: set[int] = set()
    stack = list(roots)
    while stack and entries <= max_entries:
        try:
            listing = os.scandir(stack.pop())
        except OSError:
            continue
        with listing:
            for entry in listing:
                entries += 1
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                    if info.st_ino in seen:
                        continue
                    seen.add(info.st_ino)
                total += info.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total, entries


# Mounts whose contents the agent cannot create files in, or that are not files at all.
NOT_SCRATCH_FSTYPES = frozenset(
    {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "securityfs", "debugfs", "tracefs"}
)
SYSV_IPC = (("shm", 0), ("sem", 1), ("msg", 2))  # /proc/sysvipc file, which *ctl call
IPC_RMID = 0


def scratch_mounts(watched: list[str]) -> list[str]:
    """Writable directory mounts of the sandbox besides the watched folders (the host empties
    those): /tmp, /dev, /dev/shm, /dev/mqueue ..., wherever the backend put them."""
    found: list[str] = []
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[2] in NOT_SCRATCH_FSTYPES:
            continue
        target = fields[1].replace("\\040", " ")
        if "rw" not in fields[3].split(",") or target == "/":
            continue  # the root must be read-only; walking it would take all day
        if any(target == w or target.startswith(w.rstrip("/") + "/") for w in watched):
            continue
        if os.path.isdir(target) and not os.path.islink(target) and target not in found:
            found.append(target)
    return found


def signature(info: os.stat_result, path: str) -> Signature:
    import stat

    target = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
    return (info.st_mode, info.st_rdev, target)


def snapshot(roots: list[str]) -> dict[str, Signature]:
    """Every entry below ``roots`` (not crossing into other mounts) with its signature."""
    found: dict[str, Signature] = {}
    for root in roots:
        try:
            info = os.lstat(root)
        except OSError:
            continue
        found[root] = signature(info, root)
        stack = [(root, info.st_dev)]
        while stack:
            folder, device = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    entry_info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry_info.st_dev != device:
                    continue  # another mount: a scratch root of its own, or not ours
                found[entry.path] = signature(entry_info, entry.path)
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, device))
    return found


def _remove(path: str, is_dir: bool) -> None:
    import shutil  # only on a wipe: start-up stays light

    def retry_writable(_func: object, failed: str, _exc: object) -> None:
        # The agent may have locked a folder (chmod 000); its parent may be one we do not
        # own (docker's /tmp), so each step is tried on its own.
        for step in (os.path.dirname(failed), failed):
            try:
                if not os.path.islink(step):
                    os.chmod(step, 0o700)
            except OSError:
                pass
        try:
            if os.path.isdir(failed) and not os.path.islink(failed):
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)
        except OSError:
            pass

    if is_dir:
        shutil.rmtree(path, onerror=retry_writable)
    else:
        os.unlink(path)


def restore_scratch(baseline: dict[str, Signature], roots: list[str]) -> list[str]:
    """Bring the scratch mounts back to ``baseline``: remove what was added, put modes back;
    returns what could not be restored (a replaced device node, ...)."""
    problems: list[str] = []
    for path in sorted(set(snapshot(roots)) - set(baseline), key=len):
        try:
            _remove(path, os.path.isdir(path) and not os.path.islink(path))
        except FileNotFoundError:
            continue  # inside a folder removed just before
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
    left = set(snapshot(roots)) - set(baseline)
    if left:
        problems.append(f"{len(left)} entries could not be removed, e.g. {min(left)}")
    # Modes last: removing a locked folder opens up its parent's mode on the way.
    for path, (mode, rdev, target) in sorted(baseline.items()):
        try:
            info = os.lstat(path)
        except OSError:
            problems.append(f"{path} is gone")
            continue
        now = signature(info, path)
        if now[1:] != (rdev, target) or (now[0] ^ mode) & 0o170000:
            problems.append(f"{path} was replaced")
        elif now[0] != mode:
            try:
                os.chmod(path, mode & 0o7777)
            except OSError:
                problems.append(f"{path} has mode {oct(now[0])}")
    return problems


def remove_sysv_ipc() -> list[str]:
    """Remove every System V shared memory segment, semaphore set and message queue of the
    sandbox's IPC namespace: they outlive the processes that made them."""
    left = []
    for name, which in SYSV_IPC:
        try:
            with open(f"/proc/sysvipc/{name}", encoding="ascii") as handle:
                ids = [int(line.split()[1]) for line in handle.read().splitlines()[1:]]
        except (OSError, ValueError, IndexError):
            continue
        if not ids:
            continue
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        call = (libc.shmctl, libc.semctl, libc.msgctl)[which]
        for ipc_id in ids:
            if (call(ipc_id, 0, IPC_RMID) if which == 1 else call(ipc_id, IPC_RMID, None)) != 0:
                left.append(f"System V {name} {ipc_id}")
    return left


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ..., flags, ...]; [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def sigkill_pending(pid: int) -> bool:
    """Whether ``pid`` has a SIGKILL waiting for it (``kill -9`` came, it has not run since)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return False
    for line in lines:
        if line.startswith(("SigPnd:", "ShdPnd:")):
            try:
                if int(line.split()[1], 16) & SIGKILL_BIT:
                    return True
            except (IndexError, ValueError):
                continue
    return False


def exiting(pid: int) -> bool:
    """Whether ``pid`` is on its way out: killed (not yet acted on), exiting, or a zombie."""
    fields = _stat_fields(pid)
    if not fields:
        return False
    try:
        flags = int(fields[6])
    except (IndexError, ValueError):
        flags = 0
    return fields[0] in ("Z", "X") or bool(flags & PF_EXITING) or sigkill_pending(pid)


class Supervisor:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.spawned: dict[str, int] = {}  # background id -> pid (== its process group)
        self.spawned_exit: dict[str, int] = {}
        self.stdin_buffer = b""
        # The workspace quota: the host's workspace folder is a plain directory, so the
        # sandbox measures it. Over quota, the running command is stopped and later commands
        # get a file-size limit of 0 (a full disk: files can shrink, not grow) until enough
        # is deleted.
        self.quota = int(config.get("disk_quota_mb") or 0) * 1024 * 1024
        self.watched = [str(p) for p in config.get("watch") or ()]
        self.max_entries = int(config.get("max_files") or MAX_ENTRIES)
        self.disk_full = False
        self.scan_s = 0.0  # how long measuring the disk use took last time
        self.used = 0  # bytes in the watched folders when last measured, and when
        self.measured_at = 0.0
        self.write_rate = 0.0  # bytes/s they grew by between the last two measures
        # What a wipe restores: the writable mounts besides the watched folders, as they are
        # now, before any command ran.
        self.scratch = scratch_mounts(self.watched)
        self.baseline = snapshot(self.scratch)

    # --- child processes ---------------------------------------------------------------------

    def _fork(self, cmd: str, cwd: str, out_fd: int) -> int:
        pid = os.fork()
        if pid == 0:  # child: never returns
            try:
                os.setsid()
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out_fd, 1)
                os.dup2(out_fd, 2)
                os.closerange(3, 65536)
                cpu = int(self.config["cpu_seconds"])  # per command, not for PID 1 itself
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
                if self.disk_full:  # writes fail with "File too large" instead of killing
                    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                try:
                    os.chdir(cwd)
                except OSError as exc:
                    os.write(2, f"cannot enter {cwd}: {exc.strerror}\n".encode())
                    os._exit(1)
                os.execv("/bin/sh", ["sh", "-c", cmd])
            except BaseException:
                pass
            os._exit(127)
        return pid

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for proc_id, proc_pid in self.spawned.items():
                if proc_pid == pid:
                    self.spawned_exit[proc_id] = os.waitstatus_to_exitcode(status)

    def quota_problem(self) -> str | None:
        """Why the watched folders are over quota (and mark the disk full), or None."""
        if not self.quota or not self.watched:
            return None
        scan_started = time.monotonic()
        used, entries = disk_usage(self.watched, self.max_entries)
        now = time.monotonic()
        self.scan_s = now - scan_started
        if self.measured_at:
            self.write_rate = max(0.0, (used - self.used) / max(now - self.measured_at, 1e-6))
        self.used, self.measured_at = used, now
        mb, quota_mb = used // (1024 * 1024), self.quota // (1024 * 1024)
        if entries > self.max_entries:
            problem = f"more than {self.max_entries} files and folders"
        elif used > self.quota:
            problem = f"{mb} MB used of {quota_mb} MB"
        else:
            self.disk_full = False
            return None
        self.disk_full = True
        return f"workspace quota exceeded ({problem}): files cannot grow until some are deleted"

    def quota_wait(self, longest: float) -> float:
        """Seconds until the disk use is measured again: the time a fast writer needs to fill
        half the room left, so that a writer is caught close to the quota whatever the disk's
        speed, between ``MIN_QUOTA_POLL_S`` and ``longest``."""
        rate = max(ASSUMED_WRITE_RATE, self.write_rate)
        wait = min(longest, max(MIN_QUOTA_POLL_S, max(0, self.quota - self.used) / (2 * rate)))
        # Measuring a huge tree takes a while: never spend over ~20% of the time on it.
        return max(wait, 4 * self.scan_s)

    def stop_background_over_quota(self) -> None:
        """Between requests: stop background processes that fill the disk."""
        self.reap()
        running = [i for i in self.spawned if i not in self.spawned_exit]
        if not running or self.quota_problem() is None:
            return
        for proc_id in running:
            self._kill_group(self.spawned[proc_id])
        time.sleep(0.005)
        self.reap()

    @staticmethod
    def _exit_code(status: int) -> int:
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code  # a signal, reported the way a shell does

    def _kill_group(self, pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return

    def op_exec(self, req: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        if self.disk_full:
            self.quota_problem()  # files deleted since (e.g. by the host's file tools)?
        read_fd, write_fd = os.pipe()
        pid = self._fork(str(req["cmd"]), str(req.get("cwd") or "."), write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        pidfd = os.pidfd_open(pid)
        buffer = HeadTailBuffer(int(req.get("limit", 16384)))
        deadline = started + float(req.get("timeout", 30))
        exit_seen_at: float | None = None
        timed_out = False
        eof = False
        quota_note = None
        # A command started on a full disk cannot grow files (see _fork): it is not stopped,
        # so that deleting thousands of files may take its time.
        watch_quota = bool(self.quota) and not self.disk_full
        next_quota_check = started + self.quota_wait(QUOTA_POLL_S)
        try:
            while True:
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    timed_out = True
                    break
                if watch_quota and now >= next_quota_check and exit_seen_at is None:
                    quota_note = self.quota_problem()
                    if quota_note is not None:
                        break
                    next_quota_check = now + self.quota_wait(QUOTA_POLL_S)
                if watch_quota and exit_seen_at is None:
                    remaining = min(remaining, max(0.0, next_quota_check - now))
                if exit_seen_at is not None:
                    grace = exit_seen_at + EXIT_GRACE_S - now
                    if eof or grace <= 0:
                        break  # done, or something in the background holds the output open
                    remaining = min(remaining, grace)
                wait_for = [] if eof else [read_fd]
                if exit_seen_at is None:
                    wait_for.append(pidfd)
                ready, _, _ = select.select(wait_for, [], [], remaining)
                if read_fd in ready:
                    try:
                        data = os.read(read_fd, 1 << 16)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        eof = True
                    elif data:
                        buffer.add(data)
                if pidfd in ready:
                    exit_seen_at = time.monotonic()
        finally:
            if timed_out or quota_note is not None:
                self._kill_group(pid)
            os.close(read_fd)
            os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        stopped = "the command was stopped: " if quota_note is not None else ""
        if quota_note is None and self.quota:
            quota_note = self.quota_problem()
        output = buffer.text()
        if quota_note is not None:
            output += f"\n[{stopped}{quota_note}]\n"
        return {
            "exit_code": None if timed_out else self._exit_code(status),
            "output": output,
            "truncated": buffer.truncated,
            "timed_out": timed_out,
            "total_bytes": buffer.total,
            "duration_s": round(time.monotonic() - started, 6),
        }

    def op_spawn(self, req: dict[str, Any]) -> dict[str, Any]:
        proc_id = str(req["id"])
        if self.disk_full:
            self.quota_problem()
        log_fd = os.open(str(req["log"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            pid = self._fork(str(req["cmd"]), str(req.get("cwd") or "."), log_fd)
        finally:
            os.close(log_fd)
        self.spawned[proc_id] = pid
        self.spawned_exit.pop(proc_id, None)  # ids restart after a reset
        return {"pid": pid}

    def op_kill(self, req: dict[str, Any]) -> dict[str, Any]:
        pid = self.spawned.get(str(req["id"]))
        if pid is None or str(req["id"]) in self.spawned_exit:
            return {"killed": False}
        self._kill_group(pid)
        time.sleep(0.005)
        self.reap()
        return {"killed": True}

    def op_reap(self, _req: dict[str, Any]) -> dict[str, Any]:
        self.reap()
        self.wait_for_dying()
        exited = dict(self.spawned_exit)
        for proc_id, pid in self.spawned.items():
            if proc_id not in exited and sigkill_pending(pid):
                exited[proc_id] = -signal.SIGKILL  # it can never run again, only exit
        return {"exited": exited}

    def wait_for_dying(self) -> None:
        """Wait (at most ``DYING_WAIT_S``) for background processes that are already on their
        way out, then reap them: a SIGKILL is delivered at once but acted on only when the
        process next gets a CPU, which under load (or CPU throttling) takes a while, and a
        process that exits is not a zombie until it has released its memory."""
        dying = [
            pid
            for proc_id, pid in self.spawned.items()
            if proc_id not in self.spawned_exit and exiting(pid)
        ]
        deadline = time.monotonic() + DYING_WAIT_S
        for pid in dying:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # reaped meanwhile
            try:
                select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
            finally:
                os.close(pidfd)
        if dying:
            self.reap()

    def kill_everything(self) -> bool:
        """SIGKILL every process of the namespace except PID 1, again until none is left
        (one that was forking may leave a child the first signal missed); True when none is."""
        for _ in range(KILL_ROUNDS):
            try:
                os.kill(-1, signal.SIGKILL)  # everything we may signal except ourselves
            except ProcessLookupError:
                self.reap()
                return True
            time.sleep(0.002)
            self.reap()
        return False

    def op_killall(self, _req: dict[str, Any]) -> dict[str, Any]:
        self.kill_everything()
        self.spawned.clear()
        self.spawned_exit.clear()
        return {}

    def op_wipe(self, _req: dict[str, Any]) -> dict[str, Any]:
        """Kill every process, then bring the scratch mounts and IPC back to how they were at
        start: what a reused sandbox needs besides the workspace and logs (the host empties
        those). ``left`` says what could not be undone (the host then restarts the sandbox)."""
        left: list[str] = []
        if not self.kill_everything():
            left.append("processes that survive SIGKILL")
        self.spawned.clear()
        self.spawned_exit.clear()
        self.disk_full = False
        left += restore_scratch(self.baseline, self.scratch)
        left += remove_sysv_ipc()
        return {"left": "; ".join(left[:10])}

    def op_ping(self, _req: dict[str, Any]) -> dict[str, Any]:
        return {}

    # --- the request loop ----------------------------------------------------------------------

    def read_exactly(self, size: int) -> bytes | None:
        while len(self.stdin_buffer) < size:
            chunk = os.read(0, max(1 << 16, size - len(self.stdin_buffer)))
            if not chunk:
                return None
            self.stdin_buffer += chunk
        data, self.stdin_buffer = self.stdin_buffer[:size], self.stdin_buffer[size:]
        return data

    def read_request(self) -> dict[str, Any] | None:
        header = self.read_exactly(4)
        if header is None:
            return None
        body = self.read_exactly(int.from_bytes(header, "big"))
        if body is None:
            return None
        request: dict[str, Any] = marshal.loads(body)
        return request

    def serve(self) -> None:
        handlers = {
            "exec": self.op_exec,
            "spawn": self.op_spawn,
            "kill": self.op_kill,
            "reap": self.op_reap,
            "killall": self.op_killall,
            "wipe": self.op_wipe,
            "ping": self.op_ping,
        }
        write({"ready": True, "pid": os.getpid()})
        while True:
            while self.quota and not self.stdin_buffer and self.spawned:
                ready, _, _ = select.select([0], [], [], self.quota_wait(IDLE_POLL_S))
                if ready:
                    break
                self.stop_background_over_quota()
            request = self.read_request()
            if request is None:
                return  # the host closed the pipe: exiting tears the whole sandbox down
            try:
                reply = handlers[request["op"]](request)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.reap()
            write(reply)


_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)}
_ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\t"): "\\t"})


def to_json(value: object) -> str:
    """JSON for the reply values used here: dict, list, str, int, float, bool, None."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return to_json(str(value))


def write(reply: dict[str, Any]) -> None:
    data = (to_json(reply) + "\n").encode("utf-8", errors="replace")
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def apply_limits(config: dict[str, Any]) -> None:
    memory = int(config["memory_mb"]) * 1024 * 1024
    limits = {
        # memory_mb caps the heap and private writable mappings of each process; the address
        # space gets 4x that, since runtimes such as V8 reserve ranges they never touch.
        resource.RLIMIT_DATA: memory,
        resource.RLIMIT_AS: memory * AS_HEADROOM,
        resource.RLIMIT_FSIZE: int(config["max_file_mb"]) * 1024 * 1024,
        resource.RLIMIT_CORE: 0,
    }
    # RLIMIT_NPROC counts every process of the uid on the host; where a cgroup caps the
    # sandbox's own processes (docker's pids limit) it is left unset, so that one sandbox's
    # fork bomb cannot stop the others (same uid) from forking.
    if config.get("max_processes"):
        limits[resource.RLIMIT_NPROC] = int(config["max_processes"])
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))


def _not_dumpable() -> None:
    # Keeps the agent's programs (same uid) out of /proc/1/fd, i.e. off the control pipe.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def main(argv: list[str]) -> None:
    config = marshal.loads(bytes.fromhex(argv[1]))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _not_dumpable()
    apply_limits(config)
    os.chdir(config.get("cwd", "/"))
    Supervisor(config).serve()


if __name__ == "__main__":
    main(sys.argv)
