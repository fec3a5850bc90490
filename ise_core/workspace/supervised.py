"""Backends whose sandbox runs the supervisor (``supervisor.py``) as its PID 1.

Both backends run the same program inside the sandbox and speak the same protocol to it; they
differ only in how the bytes travel: the ``local`` backend through bwrap's stdin and stdout
pipes, the ``docker`` backend through the container's attached stdin and stdout. A backend
subclasses ``SupervisedWorkspace`` and provides the transport (``_send``, ``_receive``,
``_abort_transport``) besides starting and stopping the sandbox; every tool primitive
(``exec``, background processes, kill, the wipe a reset or the pool needs) is defined here
once, so the security behaviour cannot drift between backends.

Because the supervisor is PID 1 of the sandbox's PID namespace, nothing the agent runs can
kill it, it reaps every orphan and records each background process's exit code itself, output
reaches the host through a pipe (never a file the agent could delete or that a file-size limit
could cut), and it measures the workspace quota.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from ise_core.workspace.base import ExecOutcome
from ise_core.workspace.session import SANDBOX_PROCS, SANDBOX_ROOT, SandboxDied, SandboxWorkspace

SUPERVISOR_SOURCE = Path(__file__).with_name("supervisor.py")
SUPERVISOR_IN_SANDBOX = "/run/ise/supervisor.py"
MARSHAL_VERSION = 4  # readable by every Python 3 the sandbox may have
REPLY_GRACE_S = 5.0  # how much longer than a command's timeout the host waits for the reply
START_TIMEOUT_S = 30.0


class SupervisedWorkspace(SandboxWorkspace):
    """The tool primitives over the supervisor protocol; subclasses move the bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer = b""
        self._lock = threading.Lock()

    # --- what a backend provides ---------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        """Write ``data`` to the supervisor's stdin; ``SandboxDied`` when the channel is gone."""
        raise NotImplementedError

    def _receive(self, timeout_s: float) -> bytes:
        """Bytes from the supervisor's stdout (``b""`` when none came in time);
        ``SandboxDied`` when the channel closed."""
        raise NotImplementedError

    def _abort_transport(self) -> None:
        """Tear the sandbox down hard after a protocol failure (restarted on the next call)."""
        raise NotImplementedError

    def supervisor_config(self) -> dict[str, Any]:
        """What the supervisor is started with (``supervisor.main``'s argument)."""
        settings = self.settings
        return {
            "cwd": SANDBOX_ROOT,
            "cpu_seconds": settings.cpu_seconds,
            "memory_mb": settings.memory_mb,
            "max_processes": settings.max_processes,
            "max_file_mb": settings.max_file_mb,
            "disk_quota_mb": settings.disk_quota_mb,
            "max_files": settings.max_files,
            "watch": [SANDBOX_ROOT, SANDBOX_PROCS],
        }

    def supervisor_argv(self, python: str) -> list[str]:
        import marshal

        encoded = marshal.dumps(self.supervisor_config(), MARSHAL_VERSION).hex()
        return [python, "-I", "-S", SUPERVISOR_IN_SANDBOX, encoded]

    # --- the protocol ---------------------------------------------------------------------------

    def _await_greeting(self) -> dict[str, Any]:
        self._buffer = b""
        return self._read_reply(time.monotonic() + START_TIMEOUT_S, 4096)

    def _request(self, payload: dict[str, Any], *, timeout_s: float, max_bytes: int) -> Any:
        import marshal

        with self._lock:
            body = marshal.dumps(payload, MARSHAL_VERSION)
            try:
                self._send(len(body).to_bytes(4, "big") + body)
                reply = self._read_reply(time.monotonic() + timeout_s, max_bytes)
            except SandboxDied:
                self._abort_transport()
                raise
        if "error" in reply:
            raise SandboxDied(str(reply["error"]))
        return reply

    def _read_reply(self, deadline: float, max_bytes: int) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxDied("no reply in time")
            self._buffer += self._receive(remaining)
            if len(self._buffer) > max_bytes:
                raise SandboxDied("reply larger than allowed")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            raise SandboxDied("unreadable reply") from None
        if not isinstance(reply, dict):
            raise SandboxDied("unreadable reply")
        return reply

    def _max_reply(self) -> int:
        # JSON escaping can grow text up to 6x (\u00XX); plus room for the other fields.
        return self.settings.output_limit * 6 + 65536

    # --- tool primitives ------------------------------------------------------------------------

    def _exec(self, command: str, *, timeout_s: float, cwd: str) -> ExecOutcome:
        reply = self._request(
            {
                "op": "exec",
                "cmd": command,
                "cwd": cwd,
                "timeout": timeout_s,
                "limit": self.settings.output_limit,
            },
            timeout_s=timeout_s + REPLY_GRACE_S,
            max_bytes=self._max_reply(),
        )
        return ExecOutcome(
            exit_code=reply.get("exit_code"),
            output=str(reply.get("output", "")),
            truncated=bool(reply.get("truncated")),
            timed_out=bool(reply.get("timed_out")),
            duration_s=float(reply.get("duration_s", 0.0)),
        )

    def _spawn(self, proc_id: str, command: str, cwd: str) -> None:
        log = f"{SANDBOX_PROCS}/{proc_id}.log"
        self._request(
            {"op": "spawn", "id": proc_id, "cmd": command, "cwd": cwd, "log": log},
            timeout_s=REPLY_GRACE_S,
            max_bytes=65536,
        )

    def _exited(self) -> dict[str, int]:
        reply = self._request({"op": "reap"}, timeout_s=REPLY_GRACE_S, max_bytes=1 << 20)
        exited = reply.get("exited", {})
        return {str(k): int(v) for k, v in exited.items()} if isinstance(exited, dict) else {}

    def _kill(self, proc_id: str) -> None:
        self._request({"op": "kill", "id": proc_id}, timeout_s=REPLY_GRACE_S, max_bytes=65536)

    def _kill_all(self) -> None:
        self._request({"op": "killall"}, timeout_s=REPLY_GRACE_S, max_bytes=65536)

    def _wipe_sandbox(self) -> None:
        reply = self._request(
            {"op": "wipe"},
            timeout_s=REPLY_GRACE_S + 10.0,
            max_bytes=65536,
        )
        left = reply.get("left")
        if left:
            raise SandboxDied(f"the wipe left processes or files behind: {left}")
