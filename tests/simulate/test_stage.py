"""simulate_stage / collect_stage: resume, failures, statistics, and a SIGKILL mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ise_core.catalog import EpisodeStore
from ise_core.config import load_settings
from ise_core.errors import InputError, LLMError
from ise_core.llm.base import Chat
from ise_core.records import Intent, Trajectory, read_jsonl
from ise_core.scripted import EpisodeBrief, ScriptedChat
from ise_core.simulate.stage import collect_stage, simulate_stage
from ise_core.stages import stage
from tests.simulate.helpers import REPO, local_sandbox_reason, make_intent, write_intents

pytestmark = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")

STATS_KEYS = {
    "n_episodes",
    "n_kept",
    "completion_rate",
    "user_turns",
    "dialogue_turns",
    "tool_calls",
    "distinct_tools",
    "tool_errors",
    "recovered_errors",
    "role_drift_rate",
    "stop_reasons",
    "llm_usage",
    "params_fingerprint",
}


def _params(tmp_path: Path, **simulate: object) -> Path:
    data = {
        "seed": 7,
        "workspace": {
            "backend": "local",
            "template": str(REPO / "ise_core" / "workspace" / "template"),
            "root": str(tmp_path / "sandboxes"),
        },
        "simulate": {"concurrency": 2, **simulate},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _intents(n: int) -> list[Intent]:
    return [make_intent(f"it-{i:06d}") for i in range(n)]


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}


def test_simulate_then_collect_resumes_and_reruns_on_new_params(tmp_path: Path) -> None:
    settings = load_settings(_params(tmp_path))
    write_intents(settings, _intents(3))
    report = simulate_stage(settings, progress=False)
    assert (report.n_run, report.n_kept, report.n_failed) == (3, 3, 0)
    episodes = tmp_path / "data/trajectories/episodes"
    assert sorted(p.stem for p in episodes.glob("*.json")) == [f"it-{i:06d}" for i in range(3)]
    assert (tmp_path / "data/trajectories/timing/it-000000.json").exists()
    before = _mtimes(episodes)

    again = simulate_stage(settings, progress=False)
    assert (again.n_run, again.n_skipped) == (0, 3) and _mtimes(episodes) == before

    only = simulate_stage(
        load_settings(_params(tmp_path, max_turns=19)), only=["it-000001"], progress=False
    )
    assert (only.n_selected, only.n_run) == (1, 1)
    changed = _mtimes(episodes)
    assert changed["it-000001.json"] != before["it-000001.json"]
    assert changed["it-000000.json"] == before["it-000000.json"]

    stats = collect_stage(settings)  # the old params: it-000001 is now stale for them
    assert set(stats) >= STATS_KEYS
    assert (stats["n_episodes"], stats["n_stale"], stats["n_kept"]) == (2, 1, 2)
    assert stats["params_fingerprint"] == stage("simulate").fingerprint(settings)
    kept = read_jsonl(tmp_path / "data/trajectories/trajectories.jsonl", Trajectory)
    assert [t.intent_id for t in kept] == ["it-000000", "it-000002"]
    written = json.loads((tmp_path / "data/trajectories/stats.json").read_text())
    assert written == stats
    with pytest.raises(InputError, match="unknown intent id"):
        simulate_stage(settings, only=["nope"], progress=False)


def test_a_warm_pool_makes_the_same_episodes(tmp_path: Path) -> None:
    """``workspace.pool_size``: sandboxes reused (wiped) between episodes change nothing."""
    cold_dir, warm_dir = tmp_path / "cold", tmp_path / "warm"
    for folder, pool_size in ((cold_dir, 0), (warm_dir, 1)):
        folder.mkdir()
        settings = load_settings(_params(folder, concurrency=1))
        settings.workspace.pool_size = pool_size
        write_intents(settings, _intents(4))
        report = simulate_stage(settings, progress=False)
        assert (report.n_run, report.n_failed) == (4, 0)
        assert list((folder / "sandboxes").glob("*ise-sbx-*")) == []  # the pool closed too
    cold = sorted((cold_dir / "data/trajectories/episodes").glob("*.json"))
    warm = sorted((warm_dir / "data/trajectories/episodes").glob("*.json"))
    assert [p.name for p in cold] == [p.name for p in warm]
    assert [p.read_bytes() for p in cold] == [p.read_bytes() for p in warm]


def test_one_failing_episode_does_not_stop_the_run_and_is_retried(tmp_path: Path) -> None:
    settings = load_settings(_params(tmp_path))
    write_intents(settings, _intents(3))

    class Down:
        name = "down"

        async def complete(self, messages, tools=None, **options):  # type: ignore[no-untyped-def]
            raise LLMError("connection refused", status="connection", attempts=3)

    def chats(role: str, intent: Intent) -> Chat:
        if role == "agent" and intent.id == "it-000001":
            return Down()  # type: ignore[return-value]
        return ScriptedChat(role, 7, EpisodeBrief.of(intent, settings))

    from ise_core.workspace import open_workspace

    def workspaces(session_id: str):  # type: ignore[no-untyped-def]
        return open_workspace(settings.workspace, base_dir=tmp_path, session_id=session_id)

    report = simulate_stage(
        settings, progress=False, chat_factory=chats, workspace_factory=workspaces
    )
    assert (report.n_run, report.n_kept, report.n_failed) == (3, 2, 1)
    assert report.failed_ids == ["it-000001"]
    failed = json.loads(EpisodeStore.of(settings).path("it-000001").read_text())
    assert failed["status"] == "failed" and failed["stop_reason"] == "llm_error"
    retry = simulate_stage(settings, progress=False)  # the endpoint is back: only it reruns
    assert (retry.n_run, retry.n_skipped, retry.n_kept) == (1, 2, 1)
    assert collect_stage(settings)["stop_reasons"] == {"completed": 3}


def test_collect_names_a_malformed_episode_file(tmp_path: Path) -> None:
    settings = load_settings(_params(tmp_path))
    write_intents(settings, _intents(1))
    bad = tmp_path / "data/trajectories/episodes/it-000000.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"intent_id": "it-000000", "status": "kept"', encoding="utf-8")
    with pytest.raises(InputError, match=r"it-000000\.json"):
        collect_stage(settings)
    bad.write_text('{"intent_id": "it-000000", "status": "maybe"}', encoding="utf-8")
    with pytest.raises(InputError, match=r"it-000000\.json: field"):
        collect_stage(settings)


DRIVER = (
    "import sys; from ise_core.config import load_settings; "
    "from ise_core.simulate.stage import simulate_stage; "
    "simulate_stage(load_settings(sys.argv[1]), progress=False)"
)


def _sandbox_processes(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_sigkill_mid_run_then_rerun_leaves_one_whole_file_per_intent(tmp_path: Path) -> None:
    params = _params(tmp_path, concurrency=2)
    settings = load_settings(params)
    intents = _intents(6)
    write_intents(settings, intents)
    episodes = tmp_path / "data/trajectories/episodes"
    child = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(params)], cwd=REPO, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(episodes.glob("*.json")):
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the driver and everything it started
    child.wait(timeout=10)
    done_before = len(list(episodes.glob("*.json")))
    assert 1 <= done_before < len(intents), "kill the run while it is mid-way"

    report = simulate_stage(settings, progress=False)
    assert report.n_skipped == done_before and report.n_run == len(intents) - done_before
    files = sorted(episodes.glob("*.json"))
    assert [p.stem for p in files] == [intent.id for intent in intents]
    for path in files:
        assert json.loads(path.read_text())["intent_id"] == path.stem  # whole, valid JSON
    root = tmp_path / "sandboxes"
    left = (
        [p.name for p in root.iterdir() if p.name.startswith("ise-sbx-")] if root.exists() else []
    )
    assert left == []
    assert _sandbox_processes(root) == []
