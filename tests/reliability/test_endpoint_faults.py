"""A whole `ise run` over the OpenAI-compatible backend, against a loopback endpoint that
fails ~30% of requests (429 with Retry-After, 500, replies slower than the client's timeout,
dropped connections), keeps the same episodes as a fault-free run, and counts the retries.

All three roles (writer, user simulator, agent) go over HTTP; the endpoint answers with the
scripted programs (tests/reliability/scripted_endpoint.py), so the answers are deterministic
and any difference between the two runs would be the faults' doing.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import load_settings
from tests.fakes.openai_server import FakeOpenAIServer, Faults
from tests.reliability.conftest import Reference
from tests.reliability.project import cli_env, copy_intents, ise_argv, wait_for_no_processes
from tests.reliability.scripted_endpoint import ScriptedEndpoint, write_http_params
from tests.simulate.helpers import local_sandbox_reason

INTENTS = "data/intents/intents.jsonl"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox"),
]

# Drawn in this order per request: 1 - 0.88 * 0.88 * 0.94 * 0.95 = 30.9% of requests fail.
FAULTS = Faults(seed=11, rate_limit=0.12, server_error=0.12, slow=0.06, slow_s=1.5, drop=0.05)
FAULT_KINDS = ("rate_limit", "server_error", "slow", "drop")
CLIENT = {
    "timeout_s": 1.0,  # a "slow" reply takes 1.5 s: the client gives up and retries
    "max_retries": 12,  # 0.31 ** 13: no request fails for good
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    "max_concurrency": 8,
}


def run_over_http(
    project: Path, faults: Faults, commands: list[str], intents_from: Path | None = None
) -> tuple[dict[str, Any], str]:
    """The ``ise`` commands on a fresh project against a new endpoint; (server stats, log)."""
    endpoint: list[ScriptedEndpoint] = []
    log = ""
    with FakeOpenAIServer(lambda request: endpoint[0](request), faults=faults) as server:
        params = write_http_params(project, server.base_url, **CLIENT)
        if intents_from is not None:
            copy_intents(intents_from, project)
        endpoint.append(ScriptedEndpoint(load_settings(params)))
        for command in commands:
            done = subprocess.run(
                ise_argv(command, "--params", str(params)),
                cwd=project,
                env=cli_env(OPENAI_API_KEY=""),
                capture_output=True,
                text=True,
                timeout=600,
            )
            log += done.stderr
            assert done.returncode == 0, done.stderr[-5000:]
        stats = server.stats()
    assert "Traceback" not in log
    return stats, log


def kept_episodes(project: Path) -> dict[str, list[dict[str, Any]]]:
    """intent id → messages of every kept trajectory."""
    path = project / "data" / "trajectories" / "trajectories.jsonl"
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    return {row["intent_id"]: row["messages"] for row in rows}


def intents_without_writer(project: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (project / INTENTS).read_text("utf-8").splitlines()]
    return [{k: v for k, v in row.items() if k != "writer"} for row in rows]


def test_thirty_percent_faults_keep_the_same_episodes(reference: Reference, tmp_path: Path) -> None:
    # The whole pipeline against the faulty endpoint; at the same time, the fault-free
    # baseline simulates the reference run's intents against a clean one.
    with ThreadPoolExecutor(max_workers=2) as pool:
        faulty_run = pool.submit(
            run_over_http,
            tmp_path / "faulty",
            FAULTS,
            ["run"],
        )
        clean_run = pool.submit(
            run_over_http,
            tmp_path / "clean",
            Faults(),
            ["simulate", "collect"],
            reference.project,
        )
        faulty_stats, _ = faulty_run.result()
        clean_stats, _ = clean_run.result()

    # The faults really happened, at about the rate asked for.
    n_faults = sum(faulty_stats["faults"].values())
    assert sum(clean_stats["faults"].values()) == 0
    assert n_faults / faulty_stats["requests"] >= 0.25, faulty_stats
    assert all(faulty_stats["faults"][kind] > 0 for kind in FAULT_KINDS), faulty_stats

    # The writer wrote the same intents as the scripted reference run, and the faulty run
    # kept the same episodes, with the same conversations, as the fault-free one.
    assert intents_without_writer(tmp_path / "faulty") == intents_without_writer(reference.project)
    clean, faulty = kept_episodes(tmp_path / "clean"), kept_episodes(tmp_path / "faulty")
    assert len(clean) >= 3
    assert sorted(faulty) == sorted(clean)
    assert faulty == clean

    # The retries are counted in the trajectory statistics, and nothing failed for good.
    def usage(project: str) -> dict[str, Any]:
        stats = json.loads((tmp_path / project / "data/trajectories/stats.json").read_text())
        assert stats["n_failed"] == 0
        return dict(stats["llm_usage"])

    clean_usage, faulty_usage = usage("clean"), usage("faulty")
    assert clean_usage["retries"] == 0 and clean_usage["failures"] == 0
    assert faulty_usage["failures"] == 0
    assert faulty_usage["retries"] > 0
    assert faulty_usage["requests"] == clean_usage["requests"]  # answered requests
    # Every failed attempt of simulation was retried: the endpoint saw them all.
    assert faulty_usage["requests"] + faulty_usage["retries"] <= faulty_stats["requests"]
    assert wait_for_no_processes(tmp_path) == []
    print(
        f"\nfaulty endpoint: {faulty_stats['requests']} requests, {n_faults} faults "
        f"({n_faults / faulty_stats['requests']:.0%}: {faulty_stats['faults']}); kept "
        f"{len(faulty)} of 6 as without faults; llm_usage {faulty_usage}"
    )
