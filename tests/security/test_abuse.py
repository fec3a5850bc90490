"""More of what untrusted model output may try: fill the disk, wipe or kill everything, flood
the output with bytes that are not text. Each is contained and the workspace stays usable.

Every check runs on every backend that runs here: both run the same supervisor as the
sandbox's PID 1, which also measures the workspace quota (the workspace is a plain host
directory on both).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ise_core.workspace import SandboxWorkspace
from tests.workspace.fixtures import (
    DISK_FILLER,
    QUOTA_OVERSHOOT_MB,
    WorkspaceFactory,
    allocated_mb,
)


def test_one_file_cannot_outgrow_the_file_size_limit(any_ws: SandboxWorkspace) -> None:
    limit_mb = any_ws.settings.max_file_mb
    result = any_ws.call("exec", {"command": f"head -c {(limit_mb + 8) << 20} /dev/zero > big"})
    # The writer is stopped by the file-size limit (EFBIG, or SIGXFSZ where not ignored).
    assert not result.ok, result.content
    assert "File too large" in result.content or "File size limit exceeded" in result.content
    size = any_ws.files.root.joinpath("big").stat().st_size
    assert size <= limit_mb << 20
    assert any_ws.call("exec", {"command": "rm big && echo gone"}).content == "gone\n"


def test_the_workspace_quota_stops_a_disk_filler(
    workspace_factory: WorkspaceFactory, backend: str
) -> None:
    ws = workspace_factory(backend, disk_quota_mb=64, max_file_mb=16, call_timeout_s=20)
    started = time.monotonic()
    filler = ws.call("exec", {"command": DISK_FILLER})
    assert time.monotonic() - started < 10  # stopped, not timed out
    assert not filler.ok and "workspace quota exceeded" in filler.content
    assert "the command was stopped" in filler.content
    # A writer at page-cache speed (~1 GiB/s here) is caught within a few MB of the quota.
    assert allocated_mb(ws.workspace_dir) < 64 + QUOTA_OVERSHOOT_MB

    # Full: files cannot grow, but the agent can look around and delete.
    grow = ws.call("exec", {"command": "echo more >> f1"})
    assert not grow.ok and "workspace quota exceeded" in grow.content
    cleanup = ws.call("exec", {"command": "rm -f f* && du -sk . | cut -f1"})
    assert cleanup.ok, cleanup.content
    assert ws.call("exec", {"command": "echo fine > ok.txt && cat ok.txt"}).content == "fine\n"

    # Many small steps, each under the poll interval, still meet the quota.
    for step in range(12):
        last = ws.call("exec", {"command": f"head -c 9000000 /dev/zero > g{step}"})
    assert "workspace quota exceeded" in last.content
    assert allocated_mb(ws.workspace_dir) < 64 + 16
    ws.call("exec", {"command": "rm -f g*"})

    # A background filler is stopped between requests too.
    ws.call(
        "process",
        {
            "action": "start",
            "command": "i=0; while :; do i=$((i+1)); head -c 4000000 "
            "/dev/zero > /workspace/b$i; sleep 0.02; done",
        },
    )
    time.sleep(3)
    listing = ws.call("process", {"action": "list"})
    assert "running" not in listing.content, listing.content
    assert allocated_mb(ws.workspace_dir) < 64 + 128


def test_too_many_files_count_against_the_quota(
    workspace_factory: WorkspaceFactory, backend: str
) -> None:
    # A long timeout: creating 5,000 files takes seconds on a busy disk, and the cap, not
    # the clock, must be what stops the command.
    ws = workspace_factory(backend, max_files=5000, call_timeout_s=60)
    result = ws.call(
        "exec",
        {
            "command": 'python3 -c "import time\nfor i in range(10**6):\n'
            "    open(f'n{i}', 'w').close()\n    i % 1000 or time.sleep(0.01)\""
        },
    )
    assert not result.ok and "more than 5000 files and folders" in result.content
    assert len(os.listdir(ws.workspace_dir)) < 200_000
    assert ws.call("exec", {"command": "find . -name 'n*' -delete; echo ok"}).content == "ok\n"


def test_rm_rf_root_only_touches_the_workspace(any_ws: SandboxWorkspace, tmp_path: Path) -> None:
    sentinel = tmp_path / "host-file.txt"
    sentinel.write_text("still here")
    wipe = any_ws.call(
        "exec", {"command": "rm -rf --no-preserve-root / 2>/dev/null; echo exit=$?", "timeout": 20}
    )
    # It walks the read-only system folders to the end, or runs out of time there.
    assert "exit=" in wipe.content or wipe.content.startswith("Error: command timed out")
    assert sentinel.read_text() == "still here"
    assert Path("/usr/bin/env").exists() and Path("/etc/passwd").exists()
    # The sandbox still works: its system files were read-only, its own files are gone.
    after = any_ws.call("exec", {"command": "echo alive && ls -A /workspace | wc -l"})
    assert after.ok and after.content.startswith("alive\n"), after.content
    assert any_ws.call("write", {"path": "again.txt", "content": "x"}).ok


def test_kill_everything_kills_only_the_sandbox(any_ws: SandboxWorkspace) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        any_ws.call("process", {"action": "start", "command": "sleep 300"})
        killer = any_ws.call("exec", {"command": "kill -9 -1; echo survived=$?"})
        assert bystander.poll() is None, "a host process was killed from inside the sandbox"
        assert os.getpid() and Path(f"/proc/{os.getpid()}").exists()
        # The sandbox itself survives (the caller's own shell may be among the killed).
        after = any_ws.call("exec", {"command": "echo alive"})
        assert after.ok and after.content == "alive\n", (killer.content, after.content)
        assert "running" not in any_ws.call("process", {"action": "list"}).content
    finally:
        bystander.kill()
        bystander.wait()


CPU_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


def _host_pids(marker: str) -> list[int]:
    """Host pids of the processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@contextlib.contextmanager
def _starved(pids: list[int]) -> Iterator[None]:
    """Move ``pids`` into a CPU cgroup allowed 1 ms per second: once a busy loop among them has
    used that up, none of them runs (not even to act on a SIGKILL) until the next second.
    What a loaded machine does now and then, made certain."""
    if os.geteuid() != 0 or not (CPU_CGROUP_V1 / "cpu.cfs_quota_us").exists():
        pytest.skip("needs root and a cgroup v1 cpu controller to starve a process")
    group = CPU_CGROUP_V1 / f"ise-test-starved-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("1000000")
        (group / "cpu.cfs_quota_us").write_text("1000")
        for pid in pids:
            (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (CPU_CGROUP_V1 / "cgroup.procs").write_text(pid)
        deadline = time.monotonic() + 10
        while True:
            try:
                group.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def test_a_killed_process_that_has_not_died_yet_is_not_listed_running(
    any_ws: SandboxWorkspace,
) -> None:
    """After ``kill -9 -1`` a background process can wait a long time for a CPU to die on; the
    list must not call it running meanwhile (it can never run again)."""
    marker = f"{os.getpid()}{time.monotonic_ns() % 10**6}"  # in sleep's own argv: sh may exec it
    victim = any_ws.call("process", {"action": "start", "command": f"sleep 300.{marker}"})
    busy = any_ws.call("process", {"action": "start", "command": f"while :; do :; done # {marker}"})
    assert victim.ok and busy.ok, (victim.content, busy.content)
    deadline = time.monotonic() + 10
    while len(pids := _host_pids(marker)) < 2:
        assert time.monotonic() < deadline, "the background processes did not show up"
        time.sleep(0.01)
    with _starved(pids):
        time.sleep(0.05)  # the busy loop uses up this second's CPU
        any_ws.call("exec", {"command": "kill -9 -1"})
        listing = any_ws.call("process", {"action": "list"}).content
        assert "running" not in listing, listing
        assert any_ws.call("exec", {"command": "echo alive"}).content == "alive\n"


def test_binary_and_non_utf8_output_become_text(any_ws: SandboxWorkspace) -> None:
    raw = any_ws.call(
        "exec", {"command": "printf 'ok \\377\\376\\000 end\\n'; head -c 2048 /dev/urandom"}
    )
    assert raw.ok
    assert raw.content.startswith("ok ") and "\ufffd" in raw.content
    json.dumps(raw.content)  # what goes into an episode file must serialise
    raw.content.encode("utf-8")
    made = any_ws.call("exec", {"command": "head -c 3000 /dev/urandom > blob.bin; echo made"})
    assert made.ok
    read = any_ws.call("read", {"path": "blob.bin"})
    json.dumps(read.content)
    read.content.encode("utf-8")


def test_a_hundred_megabytes_of_output_are_cut(any_ws: SandboxWorkspace) -> None:
    started = time.monotonic()
    flood = any_ws.call(
        "exec", {"command": "head -c 104857600 /dev/zero | tr '\\0' x", "timeout": 60}
    )
    assert time.monotonic() - started < 30
    assert flood.ok and flood.truncated
    assert "of 104857600 bytes omitted" in flood.content
    assert len(flood.content) < any_ws.settings.output_limit + 200
    binary = any_ws.call("exec", {"command": "head -c 104857600 /dev/urandom", "timeout": 60})
    assert binary.truncated and len(binary.content) < 4 * any_ws.settings.output_limit + 200
    json.dumps(binary.content)


@pytest.mark.parametrize(
    "command",
    [
        "cat /etc/shadow",
        "ls /root/.ssh",
        "cat /proc/1/environ | tr '\\0' '\\n' | grep -i key",
        "ls /proc | grep -c '^[0-9]'",
        "cat /sys/fs/cgroup/../../etc/hostname",
        "ln -s /proc/1/root/etc host-etc && ls host-etc/",
    ],
)
def test_host_secrets_stay_out_of_reach(any_ws: SandboxWorkspace, command: str) -> None:
    result = any_ws.call("exec", {"command": command})
    text = result.content
    assert "root:" not in text and "id_rsa" not in text and "API_KEY" not in text.upper()
    if command.startswith("ls /proc"):
        # Only the sandbox's own few processes are visible, not the host's.
        assert int(text.split()[0]) < 20, text


def test_the_supervisor_channel_is_out_of_reach(any_ws: SandboxWorkspace) -> None:
    # PID 1 talks to the host over its stdin and stdout; a forged request or reply written
    # there would be obeyed or believed. It is not dumpable, so its fds are root's.
    probe = any_ws.call(
        "exec",
        {
            "command": "printf '\\000\\000\\000\\010junk' > /proc/1/fd/0; "
            "echo '{\"exit_code\": 0}' > /proc/1/fd/1; cat /proc/1/fd/0; echo done"
        },
    )
    assert probe.content.count("Permission denied") == 3, probe.content
    assert probe.content.endswith("done\n")
    after = any_ws.call("exec", {"command": "echo alive"})
    assert after.ok and after.content == "alive\n"
