"""A real run for the viewer to show, made once per session.

Stage 1 writes out 8 intents with the scripted writer (MiniLM embeddings), every episode
runs its tool calls in the local sandbox, then collect, export and the three gates run as
``ise run`` would call them. With at most 6 user turns and the scripted user wanting 3-9,
some episodes stop at max_turns (rejected). The trajectories gate is set to fail (a mean of
at most 1 user turn), so the overview has a failed expectation to show.

Planted afterwards, as a model or a tool could have written them:
- a ``<script>`` and an ``onerror`` image in a tool output of a kept episode (and in its
  assistant text), which must render as text and never run;
- the counters the prompted tool-calling and context-compaction work record in an episode's
  metadata (``text_tool_calls``, ``compactions``), on one rejected episode.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ise_core.config import Settings, load_settings
from ise_core.records import write_json
from tests.fakes.params import PERMISSIVE_GATES

REPO = Path(__file__).resolve().parents[2]
PLANTED = (
    "<script>window.__ise_planted = 1; document.title = 'planted';</script>\n"
    '<img src="x" onerror="window.__ise_planted = 2">\n'
    "</pre></div><b>not bold</b>"
)


@dataclass(frozen=True)
class Project:
    root: Path
    params: Path
    settings: Settings
    planted_id: str  # the kept episode holding the planted markup
    flagged_id: str  # the episode with text-recovered tool calls and compactions


def _params(root: Path) -> Path:
    gates = copy.deepcopy(PERMISSIVE_GATES)
    gates["trajectories"]["max_mean_user_turns"] = 1.0  # fails: a gate failure to show
    params: dict[str, Any] = {
        "seed": 7,
        "intents": {"count": 8, "taxonomy": str(REPO / "ise_core" / "taxonomy")},
        "embedding": {"model": "all-MiniLM-L6-v2", "batch_size": 16},
        "llm": {"provider": "scripted", "max_concurrency": 4},
        "workspace": {"backend": "local", "template": str(REPO / "ise_core/workspace/template")},
        "simulate": {"max_turns": 6, "concurrency": 2, "scripted": {"user_turns": [3, 9]}},
        "export": {"valid_fraction": 0.25},
        "gates": gates,
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def _episodes(settings: Settings) -> list[tuple[Path, dict[str, Any]]]:
    folder = settings.path(settings.simulate.out_dir) / "episodes"
    return [(p, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("*.json"))]


def _plant(settings: Settings) -> tuple[str, str]:
    episodes = _episodes(settings)
    kept = next((p, e) for p, e in episodes if e["status"] == "kept")
    path, episode = kept
    tool = next(m for m in episode["messages"] if m["role"] == "tool")
    tool["content"] = (
        (tool["content"] or "")
        + "\n"
        + PLANTED
        + "\n"
        + "\n".join(f"line {i} after the planted markup" for i in range(1, 9))
    )
    reply = next(m for m in episode["messages"] if m["role"] == "assistant" and m["content"])
    reply["content"] = PLANTED + "\n" + reply["content"]
    write_json(path, episode)
    path, other = next((p, e) for p, e in episodes if e["status"] == "rejected")
    other["metadata"]["text_tool_calls"] = 2
    other["metadata"]["compactions"] = 1
    write_json(path, other)
    return episode["intent_id"], other["intent_id"]


def build_project(root: Path) -> Project:
    from ise_core.export import export_stage
    from ise_core.intents.stage import intents_stage
    from ise_core.quality import gate_intents, gate_sft, gate_trajectories
    from ise_core.simulate.stage import collect_stage, simulate_stage

    settings = load_settings(_params(root))
    intents_stage(settings, log=lambda message: None)
    assert gate_intents(settings).passed
    simulate_stage(settings, progress=False)
    planted, flagged = _plant(settings)
    collect_stage(settings)
    assert not gate_trajectories(settings).passed  # on purpose: see the module docstring
    export_stage(settings)
    assert gate_sft(settings).passed
    return Project(root, root / "params.yaml", settings, planted, flagged)


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    """One headless Chromium for the session's browser tests; missing, it is a failure."""
    from tests.viewer import browser

    reason = browser.missing()
    if reason:
        pytest.fail(f"the browser tests need Chromium: {reason}")
    with browser.chromium() as instance:
        yield instance


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_project(tmp_path_factory.mktemp("viewer-project"))


@pytest.fixture(scope="session")
def older_version(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's data as an earlier dataset version would differ: two
    episodes with another outcome, one missing, and its own statistics."""
    from ise_core.catalog import load_episode
    from ise_core.simulate.episode_index import INDEX_FILE, write_index

    data = tmp_path_factory.mktemp("older-version") / "data"
    shutil.copytree(project.root / "data", data)
    folder = data / "trajectories" / "episodes"
    paths = sorted(folder.glob("*.json"))
    for path in paths[:2]:
        episode = json.loads(path.read_text(encoding="utf-8"))
        kept = episode["status"] != "kept"
        episode.update(status="kept" if kept else "rejected", kept=kept, completed=kept)
        episode["stop_reason"] = "completed" if kept else "max_turns"
        write_json(path, episode)
    paths[-1].unlink()
    write_index(data / "trajectories" / INDEX_FILE, [load_episode(p) for p in paths[:-1]])
    stats = json.loads((data / "trajectories" / "stats.json").read_text(encoding="utf-8"))
    stats["n_episodes"] -= 1
    write_json(data / "trajectories" / "stats.json", stats)
    return data
