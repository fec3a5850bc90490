"""What untrusted model output must not be able to do, checked on every backend that runs.

Each test runs against ``local`` and ``docker``; a backend that cannot run here is skipped
with the reason.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ise_core.workspace import SandboxWorkspace, cgroups
from ise_core.workspace.docker_backend import docker_client
from tests.workspace.fixtures import WorkspaceFactory


@pytest.fixture
def host_server() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on the host's 127.0.0.1 that records every connection it accepts."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                continue
            accepted.append(str(peer))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=2)
    listener.close()


class LagMonitor:
    """Measures how late a 10 ms sleep wakes up on the host: a proxy for responsiveness."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            time.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - started - 0.01)

    def __enter__(self) -> LagMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_no_connection_to_the_host_loopback(
    any_ws: SandboxWorkspace, host_server: tuple[int, list[str]]
) -> None:
    port, accepted = host_server
    probe = (
        'python3 -c "import socket\n'
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')\n"
        "except OSError as e: print('refused', e)\""
    )
    result = any_ws.call("exec", {"command": probe})
    assert "CONNECTED" not in result.content and "refused" in result.content
    outside = any_ws.call(
        "exec",
        {"command": "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), 2)\""},
    )
    assert not outside.ok
    assert accepted == []


def test_writing_outside_the_workspace_fails(any_ws: SandboxWorkspace, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("untouched")
    before = sorted(p.name for p in tmp_path.iterdir())
    targets = [
        "/etc/evil",
        "/usr/evil",
        "/evil",
        "/root/evil",
        "/var/evil",
        str(sentinel),
        str(tmp_path / "new-file"),
        "/workspace/../evil",
    ]
    for target in targets:
        result = any_ws.call("exec", {"command": f"echo pwned > {target} && echo WROTE"})
        assert "WROTE" not in result.content, target
    assert sentinel.read_text() == "untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/evil").exists() and not Path("/usr/evil").exists()
    assert any_ws.call("exec", {"command": "echo fine > /tmp/scratch && cat /tmp/scratch"}).ok


def test_host_secrets_and_environment_are_invisible(
    workspace_factory: WorkspaceFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-secret-123")
    ws = workspace_factory(backend)
    env = ws.call("exec", {"command": "env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'"})
    assert "sk-planted-secret-123" not in env.content and "OPENAI_API_KEY" not in env.content
    listing = ws.call("exec", {"command": "ls -A /root 2>&1; ls /work /home 2>&1; id -u"})
    assert str(Path(__file__).resolve().parents[2]) not in listing.content
    assert "pyenv" not in listing.content and ".bashrc" not in listing.content
    assert listing.content.strip().splitlines()[-1] != "0", "runs as root inside"
    caps = ws.call("exec", {"command": "grep CapEff /proc/self/status"})
    assert caps.content.split()[-1] == "0000000000000000"


def test_fork_bomb_is_contained(workspace_factory: WorkspaceFactory, backend: str) -> None:
    ws = workspace_factory(backend, max_processes=64)
    with LagMonitor() as lag:
        started = time.monotonic()
        result = ws.call(
            "exec", {"command": "bomb() { bomb | bomb & }; bomb; sleep 30", "timeout": 3}
        )
        elapsed = time.monotonic() - started
    assert not result.ok
    assert elapsed < 15, elapsed
    assert lag.worst < 1.5, f"host stalled for {lag.worst:.2f}s"
    after = ws.call("exec", {"command": "echo recovered", "timeout": 10})
    assert after.ok and after.content == "recovered\n"


def test_memory_hog_is_stopped(workspace_factory: WorkspaceFactory, backend: str) -> None:
    ws = workspace_factory(backend, memory_mb=256)
    with LagMonitor() as lag:
        started = time.monotonic()
        result = ws.call(
            "exec",
            {
                "command": 'python3 -c "chunks = []\n'
                'while True: chunks.append(bytearray(32 * 2**20))"'
            },
        )
        elapsed = time.monotonic() - started
    assert not result.ok and not result.content.startswith("Error: command timed out")
    assert "MemoryError" in result.content or result.exit_code == 137
    assert elapsed < 10
    assert lag.worst < 1.5


def test_infinite_loops_are_stopped(workspace_factory: WorkspaceFactory, backend: str) -> None:
    ws = workspace_factory(backend, cpu_seconds=1, call_timeout_s=20)
    started = time.monotonic()
    burner = ws.call("exec", {"command": "python3 -c 'while True: pass'"})
    assert not burner.ok and burner.exit_code in (137, 152)  # SIGKILL / SIGXCPU at the CPU limit
    assert time.monotonic() - started < 10
    started = time.monotonic()
    sleeper = ws.call("exec", {"command": "while :; do sleep 0.1; done", "timeout": 1})
    assert not sleeper.ok and sleeper.content.startswith("Error: command timed out after 1s")
    assert time.monotonic() - started < 6


def test_file_tools_reject_escapes(any_ws: SandboxWorkspace, tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    sentinel = host_dir / "host.txt"
    sentinel.write_text("host data")
    made = any_ws.call(
        "exec",
        {
            "command": f"ln -s {sentinel} abs; ln -s ../../../../../../../../etc/passwd rel; "
            f"ln -s / rootdir; ln -s {host_dir} hostdir"
        },
    )
    assert made.ok, made.content
    attempts = [
        ("read", {"path": "../../etc/passwd"}),
        ("read", {"path": "abs"}),
        ("read", {"path": "rel"}),
        ("read", {"path": "rootdir/etc/passwd"}),
        ("read", {"path": "/etc/passwd"}),
        ("write", {"path": "abs", "content": "overwritten"}),
        ("write", {"path": "hostdir/host.txt", "content": "overwritten"}),
        ("write", {"path": "../escape.txt", "content": "x"}),
        ("edit", {"path": "abs", "old_string": "host", "new_string": "pwned"}),
        ("edit", {"path": "hostdir/host.txt", "old_string": "host", "new_string": "pwned"}),
        ("memory_get", {"path": "memory/../../etc/passwd"}),
    ]
    for name, arguments in attempts:
        result = any_ws.call(name, arguments)
        assert not result.ok, (name, arguments, result.content)
        assert "root:" not in result.content
    assert sentinel.read_text() == "host data"
    assert sorted(p.name for p in host_dir.iterdir()) == ["host.txt"]


def test_ten_megabytes_of_output_are_truncated(any_ws: SandboxWorkspace) -> None:
    result = any_ws.call("exec", {"command": "head -c 10485760 /dev/zero | tr '\\0' a"})
    assert result.ok and result.truncated
    assert (
        "[... output truncated:" in result.content and "of 10485760 bytes omitted" in result.content
    )
    assert len(result.content) < any_ws.settings.output_limit + 200


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry))
    return found


def test_nothing_remains_after_close(workspace_factory: WorkspaceFactory, backend: str) -> None:
    ws = workspace_factory(backend)
    marker = f"sleep 7{os.getpid() % 1000:03d}"
    ws.call("process", {"action": "start", "command": marker})
    ws.call("exec", {"command": f"({marker} &) ; nohup {marker} > /dev/null 2>&1 &"})
    time.sleep(0.2)
    assert _processes_mentioning(marker), "the test's processes should be visible first"
    session_dir = ws.session_dir
    container = getattr(ws, "container_id", None)
    ws.close()
    deadline = time.monotonic() + 5
    while _processes_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(marker) == []
    assert _processes_mentioning(str(session_dir)) == []
    assert not session_dir.exists()
    assert str(session_dir) not in Path("/proc/self/mountinfo").read_text()
    assert [d for d in cgroups.stale_directories() if d.name == session_dir.name] == []
    if container is not None:
        client = docker_client()
        assert [c.id for c in client.containers.list(all=True) if c.id == container] == []
        client.close()
