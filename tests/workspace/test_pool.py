"""The warm pool, on every backend that runs here: a reused sandbox carries nothing over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ise_core.records import FixtureFile, Persona
from ise_core.workspace import PooledWorkspace, SandboxWorkspace, WorkspacePool
from ise_core.workspace.local import LocalWorkspace
from tests.workspace.fixtures import PROJECT, make_settings, require_backend

PERSONAS = [
    Persona(
        id=f"p-{n}",
        name=name,
        role="Data Engineer",
        industry="Logistics",
        expertise=["SQL"],
        experience_level="senior",
        communication_style="terse",
        work_context="nightly batch jobs",
    )
    for n, name in enumerate(["Dana Whitfield", "Ravi Menon"])
]
# The state a sandbox shows to the next episode: its scratch folders (names, modes, types),
# System V IPC objects, every process but this probe's own, its environment and its workspace.
PROBE = (
    "for d in /tmp /dev/shm /dev /run /dev/mqueue; do [ -d $d ] && "
    "find $d -xdev -printf '%p %m %y\\n' 2>/dev/null; done | sort; "
    "echo ipc: $(ipcs -a 2>/dev/null | grep -c '^0x'); "
    "ps -eo pid=,ppid=,args= | awk -v me=$$ '$1 != me && $2 != me {$1=$2=\"\"; print}'; "
    "env | sort; ls -A /workspace; cat /workspace/MEMORY.md /workspace/USER.md"
)
# What an episode may leave behind, in every place a sandbox can hold it.
TRACES = [
    "echo leaked > secret.txt && mkdir -p deep/er && echo x > deep/er/f",
    "echo 'ls secret.txt' >> ~/.bash_history; echo 'export LEAK_VAR=1' >> ~/.profile",
    "echo 'print(1)' >> ~/.python_history; echo 'export LEAK_VAR=1' >> ~/.bashrc",
    "echo leaked > /tmp/t && mkdir /tmp/locked && touch /tmp/locked/f && chmod 000 /tmp/locked",
    "echo leaked > /dev/shm/s",
    "chmod 700 /tmp 2>/dev/null; touch /dev/leak 2>/dev/null; true",
    "ipcmk -M 4096 && ipcmk -Q && ipcmk -S 2",
    "nohup sleep 700 > /dev/null 2>&1 &",
    "setsid sh -c 'trap \"\" TERM HUP INT; exec sleep 800' > /dev/null 2>&1 < /dev/null &",
    'python3 -c \'import os\nif os.fork() == 0:\n  os.setsid()\n  os.execvp("sleep", '
    '["sleep", "900"])\' ',
]


@pytest.fixture
def make_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    pools: list[WorkspacePool] = []

    def factory(backend: str, size: int = 1, **overrides: Any) -> WorkspacePool:
        extra = require_backend(backend, monkeypatch)
        settings = make_settings(tmp_path / "sandboxes", **{**extra, **overrides})
        pool = WorkspacePool(settings, base_dir=PROJECT, backend=backend, size=size)
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        pool.close()


def probe(workspace: PooledWorkspace | SandboxWorkspace) -> str:
    result = workspace.call("exec", {"command": PROBE})
    assert result.ok, result.content
    return result.content


def leave_traces(workspace: PooledWorkspace) -> None:
    for command in TRACES:
        result = workspace.call("exec", {"command": command})
        assert result.ok, (command, result.content)
    assert workspace.call("process", {"action": "start", "command": "sleep 600"}).ok
    note = "The launch code is 4242.\n"
    assert workspace.call("write", {"path": "MEMORY.md", "content": note}).ok
    assert workspace.call("write", {"path": "memory/plans.md", "content": note}).ok
    seen = workspace.call("exec", {"command": "ls /tmp; ipcs -a | grep -c '^0x'; ps -e | wc -l"})
    assert "locked" in seen.content and "\n3\n" in seen.content, seen.content


def test_a_reused_sandbox_carries_nothing_over(make_pool: Any, backend: str) -> None:
    pool: WorkspacePool = make_pool(backend)
    # What a sandbox that never ran anything shows.
    fresh = pool.acquire()
    fresh.open(persona=PERSONAS[1])
    expected = probe(fresh)
    fresh.discard()

    pool.fill()
    first = pool.acquire()
    sandbox = first.sandbox
    first.open([FixtureFile(path="data/in.csv", content="a,b\n")], PERSONAS[0])
    leave_traces(first)
    first.close()

    second = pool.acquire()
    assert second.sandbox is sandbox, "the pool did not reuse the sandbox"
    assert pool.stats.reused == 2 and pool.stats.wiped == 1 and pool.stats.destroyed == 1
    second.open(persona=PERSONAS[1])
    assert probe(second) == expected
    assert second.list_files() == ["AGENTS.md", "MEMORY.md", "TOOLS.md", "USER.md"]
    assert "No background processes." in second.call("process", {"action": "list"}).content
    assert "No notes match" in second.call("memory_search", {"query": "launch code"}).content
    env = second.call("exec", {"command": "env; sh -lc env; echo ${LEAK_VAR:-unset}"})
    assert "LEAK_VAR" not in env.content and env.content.endswith("unset\n")
    history = second.call("exec", {"command": "ls -A ~ /tmp /dev/shm"})
    assert "history" not in history.content and "secret" not in history.content
    # The processes it started are numbered from p1 again, and work.
    assert "p1" in second.call("process", {"action": "start", "command": "echo hi"}).content


def test_a_sandbox_the_wipe_cannot_restore_is_restarted(make_pool: Any) -> None:
    pool: WorkspacePool = make_pool("local")
    workspace = pool.acquire()
    sandbox = workspace.sandbox
    assert isinstance(sandbox, LocalWorkspace)
    started_as = sandbox.host_pid
    workspace.open()
    # The sandbox's /dev is its own tmpfs: its symlinks can be swapped for plain files.
    swapped = workspace.call("exec", {"command": "rm /dev/stdout && echo planted > /dev/stdout"})
    assert swapped.ok, swapped.content
    workspace.close()
    again = pool.acquire()
    assert again.sandbox is sandbox and sandbox.host_pid != started_as
    again.open()
    check = again.call("exec", {"command": "test -L /dev/stdout && echo restored"})
    assert check.content == "restored\n"


def test_the_pool_keeps_at_most_size_and_tears_everything_down(
    make_pool: Any, backend: str
) -> None:
    pool: WorkspacePool = make_pool(backend, size=2)
    pool.fill()
    assert pool.idle == 2 and pool.stats.started == 2
    taken = [pool.acquire() for _ in range(3)]  # the third is started cold
    assert pool.stats.cold == 1 and pool.idle == 0
    sandboxes = [t.sandbox for t in taken]
    for workspace in taken:
        workspace.open()
        workspace.close()
    assert pool.idle == 2 and pool.stats.destroyed == 1  # one more than the pool keeps
    kept = pool.acquire()
    kept.discard()  # returned for destruction
    assert pool.idle == 1 and pool.stats.destroyed == 2
    lent = pool.acquire()
    pool.close()
    assert all(s._closed for s in sandboxes)
    assert not any(s.session_dir.exists() for s in sandboxes)
    lent.close()  # coming back after the pool closed: nothing to do, no error
    with pytest.raises(Exception, match="closed"):
        pool.acquire()
