"""Hostile tool calls through a whole episode: the agent tries everything on the abuse list
in one turn; every call comes back as an observation, the episode goes on to a clear stop
reason and is written whole, and the host is untouched."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from ise_core.catalog import EpisodeStore
from ise_core.records import Message
from ise_core.simulate.stage import collect_stage, simulate_stage
from tests.reliability.project import wait_for_no_processes
from tests.simulate.helpers import (
    FakeChat,
    call,
    local_sandbox_reason,
    make_intent,
    make_settings,
    turn_json,
    write_intents,
)

pytestmark = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")

SECRET = "sk-planted-abuse-secret"
ABUSE: list[tuple[str, str, dict[str, object]]] = [
    ("fork bomb", "exec", {"command": "bomb() { bomb | bomb & }; bomb; sleep 2", "timeout": 3}),
    (
        "memory hog",
        "exec",
        {"command": "python3 -c 'x = []\nwhile True: x.append(bytearray(2**25))'"},
    ),
    (
        "disk filler",
        "exec",
        {"command": "i=0; while :; do i=$((i+1)); head -c 8000000 /dev/zero > f$i; done"},
    ),
    ("clean up", "exec", {"command": "rm -f f*; echo cleaned"}),
    ("infinite loop", "exec", {"command": "while :; do :; done"}),
    ("rm -rf /", "exec", {"command": "rm -rf --no-preserve-root / 2>/dev/null", "timeout": 3}),
    ("kill -9 -1", "exec", {"command": "kill -9 -1"}),
    (
        "network egress",
        "exec",
        {"command": "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), 2)\""},
    ),
    ("host secrets", "exec", {"command": "env; cat /proc/1/environ; ls -A /root /home"}),
    ("symlink escape", "exec", {"command": "ln -s / hostroot; ln -s /etc/passwd pw"}),
    ("read through symlink", "read", {"path": "hostroot/etc/passwd"}),
    ("dot-dot escape", "read", {"path": "../../../../etc/passwd"}),
    ("write outside", "write", {"path": "../../escape.txt", "content": "x"}),
    ("binary output", "exec", {"command": "head -c 4096 /dev/urandom"}),
    (
        "100 MB of output",
        "exec",
        {"command": "head -c 104857600 /dev/zero | tr '\\0' y", "timeout": 20},
    ),
    ("still alive", "exec", {"command": "echo alive"}),
]


def abusive_agent(messages: Sequence[Message]) -> Message:
    if messages[-1].role == "user":
        return Message(
            role="assistant",
            content=None,
            tool_calls=[call(name, args, f"call_{i}") for i, (_, name, args) in enumerate(ABUSE)],
        )
    return Message(role="assistant", content="I tried a few things; see above.")


def test_hostile_tool_calls_are_contained_episode_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    sentinel = tmp_path / "host-file.txt"
    sentinel.write_text("untouched")
    bystander = subprocess.Popen(["sleep", "120"])
    settings = make_settings(tmp_path, max_turns=3)
    settings.workspace.call_timeout_s = 5
    settings.workspace.cpu_seconds = 2
    settings.workspace.memory_mb = 256
    settings.workspace.max_processes = 64
    settings.workspace.disk_quota_mb = 64
    settings.workspace.max_file_mb = 16
    intent = make_intent()
    write_intents(settings, [intent])
    user = FakeChat([turn_json("please do the thing"), turn_json("thanks", True, True)])
    agent = FakeChat(abusive_agent)
    try:
        started = time.monotonic()
        report = simulate_stage(
            settings,
            progress=False,
            chat_factory=lambda role, _intent: user if role == "user" else agent,
        )
        elapsed = time.monotonic() - started
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()

    assert report.n_run == 1 and report.n_failed == 0
    assert elapsed < 90
    episode = json.loads(EpisodeStore.of(settings).path(intent.id).read_text("utf-8"))
    assert episode["status"] in ("kept", "rejected") and episode["stop_reason"] == "completed"
    results = {m["tool_call_id"]: m for m in episode["messages"] if m["role"] == "tool"}
    assert len(results) == len(ABUSE)
    outcome = {label: results[f"call_{i}"] for i, (label, _, _) in enumerate(ABUSE)}
    fork_bomb = outcome["fork bomb"]
    assert fork_bomb["success"] is False or "Cannot fork" in fork_bomb["content"]
    for label in ("memory hog", "disk filler", "infinite loop", "network egress"):
        assert outcome[label]["success"] is False, (label, outcome[label]["content"][:300])
    assert "workspace quota exceeded" in outcome["disk filler"]["content"]
    for label in ("read through symlink", "dot-dot escape", "write outside"):
        assert outcome[label]["success"] is False and "root:" not in outcome[label]["content"]
    assert SECRET not in json.dumps(episode)
    assert "omitted" in outcome["100 MB of output"]["content"]
    assert len(outcome["100 MB of output"]["content"]) < settings.workspace.output_limit + 300
    assert outcome["still alive"]["content"] == "alive\n"
    assert episode["final_output"] == "I tried a few things; see above."

    assert sentinel.read_text() == "untouched"
    assert not (tmp_path / "escape.txt").exists()
    assert wait_for_no_processes(settings.path(settings.workspace.root)) == []
    stats = collect_stage(settings)
    assert stats["n_episodes"] == 1 and stats["stop_reasons"] == {"completed": 1}
