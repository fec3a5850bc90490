"""The orchestration facade (ise_core.pipeline): mapping arithmetic, run overrides, lineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ise_core import pipeline
from ise_core.catalog import EpisodeStore, intent_hash
from ise_core.config import load_settings
from ise_core.errors import ConfigError, GateFailed
from ise_core.records import Intent, Trajectory
from ise_core.stages import StageResult
from tests.dags.airflow_env import REPO, tiny_params
from tests.simulate.helpers import make_intent, write_intents

# --- mapping arithmetic ---------------------------------------------------------------------


def test_batches_cover_every_id_once_in_order() -> None:
    ids = [f"i{n:05d}" for n in range(10)]
    batches = pipeline.batch_ids(ids, 3)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [i for batch in batches for i in batch] == ids
    assert pipeline.batch_ids(ids, 1) == [[i] for i in ids]
    assert pipeline.batch_ids([], 4) == []


def test_batch_size_below_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="intents_per_task"):
        pipeline.batch_ids(["a"], 0)


def test_fifty_thousand_intents_against_the_default_map_limit() -> None:
    ids = [f"intent-{n:05d}" for n in range(50_000)]
    # One instance per intent would map 50,000 instances: far above 1024.
    with pytest.raises(ConfigError) as info:
        pipeline.plan_batches(ids, 1, 1024)
    message = str(info.value)
    assert "50000 task instances" in message
    assert "max_map_length=1024" in message
    assert "simulate.intents_per_task to at least 49" in message  # ceil(50000 / 1024) = 49
    assert "at least 50000" in message

    assert pipeline.min_intents_per_task(50_000, 1024) == 49
    # 48 per task still needs 1042 instances; 49 fits in 1021.
    with pytest.raises(ConfigError):
        pipeline.plan_batches(ids, 48, 1024)
    batches = pipeline.plan_batches(ids, 49, 1024)
    assert len(batches) == 1021 <= 1024
    assert sum(len(b) for b in batches) == 50_000
    assert len(batches[-1]) == 50_000 - 49 * 1020
    # Exactly at the limit is allowed.
    pipeline.check_map_length(1024, 1024)


def test_batch_label_names_the_intents() -> None:
    assert pipeline.batch_label(["a1"]) == "a1"
    assert pipeline.batch_label(["a1", "b2"]) == "a1, b2"
    assert pipeline.batch_label([f"x{n}" for n in range(49)]) == "x0 … x48 (49 intents)"


# --- run-time overrides ------------------------------------------------------------------------


def test_conf_maps_onto_params_keys() -> None:
    conf = {"intent_count": 5, "seed": 11, "model": "m-all", "models": {"agent": "m-agent"}}
    assert pipeline.overrides_from_conf(conf) == {
        "intents": {"count": 5},
        "seed": 11,
        "llm": {"model": "m-all", "roles": {"agent": {"model": "m-agent"}}},
    }
    assert pipeline.overrides_from_conf({}) == {}
    assert pipeline.overrides_from_conf(None) == {}


def test_unknown_conf_key_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'count'.*allowed: intent_count"):
        pipeline.overrides_from_conf({"count": 3})
    with pytest.raises(ConfigError, match="'models' must map roles"):
        pipeline.overrides_from_conf({"models": "gpt"})


def test_run_settings_apply_and_validate_overrides(tmp_path: Path) -> None:
    params = tiny_params(tmp_path)
    settings = pipeline.load_run_settings(params, {"intent_count": 9, "seed": 3})
    assert settings.intents.count == 9
    assert settings.seed == 3
    assert settings.base_dir == tmp_path.resolve()
    # Connection overrides sit between params.yaml and the run's conf.
    settings = pipeline.load_run_settings(
        params, {"model": "from-conf"}, {"llm": {"model": "from-connection", "max_concurrency": 2}}
    )
    assert settings.llm.model == "from-conf"
    assert settings.llm.max_concurrency == 2

    with pytest.raises(ConfigError) as info:
        pipeline.load_run_settings(params, {"intent_count": 0})
    assert "intents.count" in str(info.value)
    assert "intent_count" in str(info.value)  # the conf is echoed back
    with pytest.raises(ConfigError, match=r"intents\.count"):
        pipeline.load_run_settings(params, {"intent_count": "many"})
    with pytest.raises(ConfigError, match=r"llm\.roles\.critic"):
        pipeline.load_run_settings(params, {"models": {"critic": "x"}})


def test_params_path_resolution(tmp_path: Path) -> None:
    env = {"ISE_PARAMS": "/etc/ise/params.yaml"}
    assert pipeline.resolve_params_path(None, tmp_path, {}) == tmp_path / "params.yaml"
    assert pipeline.resolve_params_path(None, tmp_path, env) == Path("/etc/ise/params.yaml")
    assert pipeline.resolve_params_path("other.yaml", tmp_path, env) == tmp_path / "other.yaml"


def test_airflow_block_defaults_and_validation(tmp_path: Path) -> None:
    settings = load_settings(REPO / "params.yaml")
    assert settings.airflow.schedule == "@weekly"
    assert settings.airflow.tolerate_failed_share == 0.0
    with pytest.raises(ConfigError, match="schedule must be"):
        load_settings(tiny_params(tmp_path, airflow={"schedule": "every tuesday"}))
    with pytest.raises(ConfigError, match=r"airflow\.tolerate_failed_share"):
        load_settings(tiny_params(tmp_path, airflow={"tolerate_failed_share": 1.5}))
    cron = load_settings(tiny_params(tmp_path, airflow={"schedule": "0 3 * * 1"}))
    assert cron.airflow.schedule == "0 3 * * 1"


# --- collect tolerance ---------------------------------------------------------------------------


def _episode(intent: Intent, status: str, fingerprint: str) -> Trajectory:
    return Trajectory(
        intent_id=intent.id,
        session_id=intent.id,
        status=status,  # type: ignore[arg-type]
        stop_reason="completed",
        completed=status != "failed",
        kept=status == "kept",
        messages=[],
        metadata={"intent_hash": intent_hash(intent)},
        params_fingerprint=fingerprint,
    )


def test_unfinished_episodes_and_tolerance(tmp_path: Path) -> None:
    settings = load_settings(tiny_params(tmp_path))
    intents = [make_intent(intent_id) for intent_id in ("a", "b", "c", "d", "e", "f")]
    write_intents(settings, intents)
    store = EpisodeStore.of(settings)
    store.folder.mkdir(parents=True)
    for intent, status in zip(intents, ("kept", "rejected", "failed"), strict=False):
        store.save(_episode(intent, status, store.fingerprint), {})
    store.path("d").write_text("{half a fi", encoding="utf-8")
    store.save(_episode(intents[5], "kept", "other-params"), {})  # stale: made with other params
    ids = ["a", "b", "c", "d", "e"]
    assert pipeline.unfinished_episodes(settings, ids) == ["c", "d", "e"]
    assert pipeline.unfinished_episodes(settings, [*ids, "f"]) == ["c", "d", "e", "f"]

    pipeline.check_failed_share(0, 0, 0.0)
    pipeline.check_failed_share(1, 4, 0.25)
    with pytest.raises(GateFailed, match=r"2 of 4 intents have no finished episode \(50.0%\)"):
        pipeline.check_failed_share(2, 4, 0.25)


def test_a_run_beside_another_running_one_fails_first() -> None:
    pipeline.check_sole_run(1, "ise_refresh")  # only this run
    with pytest.raises(ConfigError, match="2 other runs of ise_refresh running") as caught:
        pipeline.check_sole_run(3, "ise_refresh")
    assert "--max-active-runs 1" in str(caught.value) and "nothing was written" in str(caught.value)


def test_failed_episodes_make_the_simulation_call_fail() -> None:
    pipeline.check_simulation({"n_run": 2, "n_kept": 1, "n_rejected": 1, "n_failed": 0}, ["a", "b"])
    with pytest.raises(pipeline.EpisodesFailed, match="1 of 2 episodes failed"):
        pipeline.check_simulation({"n_failed": 1, "n_not_started": 0}, ["a", "b"])
    with pytest.raises(pipeline.BudgetExceeded, match=r"llm\.budget"):
        pipeline.check_simulation({"n_failed": 1, "budget_exhausted": True}, ["a", "b"])


def test_stage_results_keep_only_scalars() -> None:
    result = StageResult.of(
        "collect",
        {"n_kept": 3, "rate": 0.5, "model": "m", "curve": [1, 2], "nested": {"a": 1}},
        ("n_kept", "rate"),
    )
    assert result.values == {"n_kept": 3, "rate": 0.5, "model": "m"}
    assert pipeline.small_values({"n": 1, "curve": [1]}) == {"n": 1}  # for the DAGs' XComs
    assert result.summary == "n_kept=3, rate=0.5"


def test_facade_import_is_cheap() -> None:
    code = (
        "import sys, ise_core.pipeline; "
        "heavy = [m for m in ('torch', 'great_expectations', 'openai', 'sentence_transformers', "
        "'airflow', 'ise_core.intents.stage') if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- lineage ----------------------------------------------------------------------------------


def test_lineage_is_skipped_outside_a_dvc_project(tmp_path: Path) -> None:
    lines: list[str] = []
    assert pipeline.record_lineage(tmp_path, log=lines.append) == {
        "committed": False,
        "pushed": False,
    }
    assert "not a DVC project" in lines[0]


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=dict(os.environ, DVC_NO_ANALYTICS="1"),
        timeout=120,
    )


def test_lineage_commits_outputs_so_dvc_status_is_clean(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    project.mkdir()
    assert _dvc(project, "init", "--no-scm").returncode == 0
    (project / "params.yaml").write_text("seed: 7\n", encoding="utf-8")
    (project / "dvc.yaml").write_text(
        "stages:\n"
        "  make:\n"
        "    cmd: echo never-run-here\n"
        "    params: [seed]\n"
        "    outs: [data/out.jsonl]\n",
        encoding="utf-8",
    )
    (project / "data").mkdir()
    (project / "data" / "out.jsonl").write_text(json.dumps({"id": 1}) + "\n", encoding="utf-8")
    assert "changed" in _dvc(project, "status").stdout  # nothing recorded yet

    lines: list[str] = []
    result = pipeline.record_lineage(project, log=lines.append)
    assert result == {"committed": True, "pushed": False}
    assert any("no DVC remote" in line for line in lines)
    status = _dvc(project, "status")
    assert status.returncode == 0
    assert "up to date" in status.stdout.lower(), status.stdout
    assert (project / "dvc.lock").is_file()

    # With a (local) remote configured, the outputs are pushed to it.
    remote = tmp_path / "remote"
    assert _dvc(project, "remote", "add", "-d", "store", str(remote)).returncode == 0
    assert pipeline.record_lineage(project, log=lines.append) == {"committed": True, "pushed": True}
    assert any(remote.rglob("*")), "dvc push sent nothing to the remote"


def test_lineage_failure_names_the_command(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")

    def failing(args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], 3, "", "ERROR: lock held")

    expected = r"dvc commit --force failed .* \(exit 3\): ERROR: lock held"
    with pytest.raises(GateFailed, match=expected):
        pipeline.record_lineage(tmp_path, run=failing, log=lambda _: None)
