"""``ise estimate``: a pilot of the run's first intents projects the whole run.

The projection math on its own (ranges, the schedule replay), then the real thing: a seeded
loopback endpoint whose episodes vary in length with their intents, a pilot of 10 of 48
intents, and the full run measured in a second project with an empty cache. Tokens and wall
time must come within 25% of what the full run used.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ise_core.catalog import Catalog, EpisodeStore
from ise_core.config import Settings, load_settings
from ise_core.errors import BudgetExceeded, EpisodesFailed
from ise_core.estimate import check_budget, estimate_stage, report_lines
from ise_core.estimate.projection import (
    EpisodeProfile,
    mean_range,
    replay_schedule,
    t_quantile,
)
from ise_core.llm.limits import reset_limiters
from ise_core.records import Intent, read_jsonl, write_jsonl
from ise_core.simulate.stage import collect_stage, simulate_stage
from tests.fakes.both_roles import BothRoles
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.params import PERMISSIVE_GATES
from tests.simulate.helpers import REPO, local_sandbox_reason

KEY_ENV = "ISE_ESTIMATE_TEST_KEY"


def test_a_range_is_the_confidence_interval_of_the_mean() -> None:
    flat = mean_range([5.0, 5.0, 5.0])
    assert (flat.expected, flat.low, flat.high) == (5.0, 5.0, 5.0)
    spread = mean_range([float(v) for v in range(1, 11)])
    assert spread.expected == 5.5
    assert 3.7 < spread.low < 3.8 and 7.2 < spread.high < 7.3  # t(9) = 1.833
    assert mean_range([4.0]).low == 4.0  # one value: no spread known
    assert mean_range([]).expected == 0.0


def test_the_t_quantile_from_the_table_and_beyond_it() -> None:
    assert t_quantile(1) == 6.314 and t_quantile(9) == 1.833 and t_quantile(30) == 1.697
    assert t_quantile(31) == pytest.approx(1.6955, abs=5e-4)  # published t tables
    assert t_quantile(50) == pytest.approx(1.6759, abs=5e-4)
    assert t_quantile(31, 0.95) == pytest.approx(2.0395, abs=5e-4)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_the_schedule_replay_is_bound_by_the_endpoint_or_by_the_episodes() -> None:
    chain = [EpisodeProfile(requests=41, other_s=0.0)]
    # Endpoint-bound: 64 x 41 requests of 0.3 s through 16 slots.
    assert replay_schedule(chain, 64, at_once=32, slots=16, latency_s=0.3) == pytest.approx(49.2)
    # Episode-bound: 16 at once, each 41 x 0.3 s of requests and 12 s of tools, 4 waves.
    tools = [EpisodeProfile(requests=41, other_s=12.0)]
    assert replay_schedule(tools, 64, at_once=16, slots=16, latency_s=0.3) == pytest.approx(97.2)
    # Twice the episodes keep the endpoint busy while half of them run tools.
    assert replay_schedule(tools, 64, at_once=32, slots=16, latency_s=0.3) < 52
    # Longest first: the long episode does not start last.
    mixed = [EpisodeProfile(1, 0.0)] * 3 + [EpisodeProfile(10, 0.0)]
    assert replay_schedule(mixed, 4, at_once=2, slots=None, latency_s=1.0) == pytest.approx(10)
    assert replay_schedule([], 10, at_once=2, slots=2, latency_s=1.0) == 0.0


# --- against the loopback endpoint ---------------------------------------------------------------

INTENTS = 48
PILOT = 10
SLOTS = 4
LATENCY_S = 0.1
# User turns by the intent's hidden details (the scripted writer gives 3 to 10): 2 to 4.
TURNS = (2, 2, 2, 2, 2, 2, 3, 3, 4, 3, 4)


def _project(folder: Path, base_url: str, budget: int | None = None) -> Settings:
    params: dict[str, Any] = {
        "seed": 7,
        "intents": {"count": INTENTS, "taxonomy": str(REPO / "ise_core" / "taxonomy")},
        "llm": {
            "provider": "openai", "base_url": base_url, "model": "fake-model",
            "api_key_env": KEY_ENV, "max_concurrency": SLOTS, "timeout_s": 30.0,
            "backoff_base_s": 0.02, "backoff_max_s": 0.2,
            "roles": {"writer": {"provider": "scripted"}},
            "prices": {"fake-model": {"prompt": 0.5, "completion": 2.0}},
            "budget": {"tokens": budget},
        },
        "workspace": {"backend": "local", "root": str(folder / "sandboxes"),
                      "template": str(REPO / "ise_core" / "workspace" / "template")},
        "simulate": {"require_checks": False},
        "gates": PERMISSIVE_GATES,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    settings = load_settings(folder / "params.yaml")
    _write_intents(settings)
    return settings


def _write_intents(settings: Settings) -> None:
    """The run's intents straight from the scripted writer (what `ise intents` keeps when
    nothing is a duplicate)."""
    from ise_core.intents.render import render_intents
    from ise_core.intents.sample import sample_intents
    from ise_core.intents.taxonomy import load_taxonomy
    from ise_core.scripted import ScriptedChat

    files = Catalog.of(settings)
    samples = sample_intents(load_taxonomy(files.taxonomy_dir), settings.intents, settings.seed)
    writer = ScriptedChat("writer", settings.seed)
    outcome = asyncio.run(render_intents(samples, writer, max_attempts=3))
    write_jsonl(files.intents, outcome.intents)


def _used_tokens(settings: Settings) -> int:
    store = EpisodeStore.of(settings)
    return sum(
        int(store.load(path).metadata["token_usage"]["total_tokens"]) for path in store.paths()
    )


@pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")
def test_a_pilot_projects_the_full_run_within_a_quarter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    responder = BothRoles(tool_calls_per_turn=2, tag_episodes=True, turns_by_details=TURNS)
    with FakeOpenAIServer(responder, latency_s=LATENCY_S) as server:
        piloted = _project(tmp_path / "piloted", server.base_url)
        estimate = estimate_stage(piloted, pilot=PILOT, progress=False)
        reset_limiters()
        full = _project(tmp_path / "full", server.base_url)  # its own, empty cache
        measured = simulate_stage(full, progress=False)
        reset_limiters()
        # The pilot's work is not lost: the piloted run answers those episodes from the cache.
        intents = read_jsonl(Catalog.of(piloted).intents, Intent)
        pilot_ids = [intent.id for intent in intents][:PILOT]
        served_before = server.requests
        simulate_stage(piloted, only=pilot_ids, progress=False)
        sent_for_pilot_ids = server.requests - served_before
    assert measured.n_run == INTENTS and measured.n_failed == 0
    figures = json.loads(Catalog.of(piloted).estimate.read_text(encoding="utf-8"))
    report = {"estimate": figures, "measured_s": measured.elapsed_s}
    used = _used_tokens(full)
    projected = figures["tokens"]["user"]["total"]["expected"]
    projected += figures["tokens"]["agent"]["total"]["expected"]
    wall = estimate.wall_s.expected
    print(f"tokens: projected {projected:.0f}, used {used}; simulate wall time: projected "
          f"{wall:.1f} s ({estimate.wall_s.low:.1f}-{estimate.wall_s.high:.1f}), measured "
          f"{measured.elapsed_s:.1f} s")  # fmt: skip
    assert abs(projected - used) / used <= 0.25, (projected, used, report)
    assert abs(wall - measured.elapsed_s) / measured.elapsed_s <= 0.25, (wall, report)
    assert estimate.run.episodes == INTENTS and estimate.run.episodes_known
    assert figures["pilot"]["episodes"] == PILOT and figures["pilot"]["cached_requests"] == 0
    # Ranges around the expected values, cost from the prices, a budget above the high end.
    for role in ("writer", "user", "agent"):
        total = figures["tokens"][role]["total"]
        assert total["low"] <= total["expected"] <= total["high"]
    assert figures["cost"]["writer"]["expected"] == 0.0  # the scripted program is free
    assert figures["cost"]["agent"]["expected"] > 0
    assert estimate.budget_tokens >= estimate.to_spend_tokens.high
    assert sent_for_pilot_ids == 0, "the pilot's episodes were asked again"
    assert any(line.startswith("budget to set") for line in report_lines(estimate))
    collect_stage(piloted)


def test_an_estimate_over_the_budget_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ise_core.estimate import project_run
    from ise_core.estimate.pilot import Pilot, PilotEpisode

    monkeypatch.setenv(KEY_ENV, "sk-test")
    settings = _project(tmp_path / "p", "http://127.0.0.1:9/v1", budget=10_000)
    episode = PilotEpisode("x", "kept", {"user": (300, 30), "agent": (900, 70)}, 10, 0, 1.0, 0.5)
    pilot = Pilot(writer=[(100, 200)], written=1, episodes=[episode], latency_s=0.1)
    estimate = project_run(settings, pilot)
    assert estimate.to_spend_tokens.expected == (INTENTS - 1) * 1300
    with pytest.raises(BudgetExceeded, match=r"above llm\.budget\.tokens=10,000"):
        check_budget(estimate)
    roomy = project_run(_project(tmp_path / "q", "http://127.0.0.1:9/v1", budget=10**9), pilot)
    check_budget(roomy)


def test_the_command_checks_its_arguments(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "ise_core.cli", "estimate", "--pilot", "0",
         "--params", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--pilot: expected a number of intents of at least 1, got 0" in done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "ise_core.cli", "estimate", "--params", str(tmp_path / "no.yaml")],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "no.yaml" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("airflow: {estimate_pilot: 0}\n", encoding="utf-8")
    wrong = subprocess.run(
        [sys.executable, "-m", "ise_core.cli", "estimate", "--params", str(bad)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2 and "airflow.estimate_pilot" in wrong.stderr
    assert not (tmp_path / "data").exists()  # nothing half-written


@pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")
def test_a_pilot_that_finishes_no_episode_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with FakeOpenAIServer(BothRoles(), latency_s=0.0) as server:
        base_url = server.base_url
    # The server is gone: every request is refused.
    settings = _project(tmp_path / "p", base_url)
    settings.llm.max_retries = 0
    with pytest.raises(EpisodesFailed, match=r"none of the pilot's 2 episodes finished"):
        estimate_stage(settings, pilot=2, progress=False)
    assert not Catalog.of(settings).estimate.exists()
