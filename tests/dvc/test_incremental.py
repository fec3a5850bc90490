"""Incremental re-runs: DVC runs a stage again only when its code, data or params changed."""

from __future__ import annotations

import pytest

from tests.dvc.conftest import Built, Versions
from tests.dvc.project import STAGES, Project, ran_stages, skipped_stages

pytestmark = pytest.mark.slow  # they build or change a dataset


def test_a_fresh_copy_builds_every_stage(built: Built) -> None:
    assert ran_stages(built.output) == list(STAGES)
    assert (built.project.root / "dvc.lock").is_file()
    assert (built.project.root / "data/sft/train.jsonl").stat().st_size > 0


def test_a_second_repro_does_nothing(built: Built) -> None:
    output = built.project.timed("dvc repro, nothing changed", "repro")
    assert ran_stages(output) == []
    assert skipped_stages(output) == list(STAGES)
    assert "Data and pipelines are up to date." in built.project.dvc("status").stdout


def test_changing_an_export_param_reruns_only_export(versions: Versions) -> None:
    assert set(versions.status_before_repro) == {"export"}
    # The eval stage follows the SFT data it is measured after (as the ise_eval DAG does).
    assert ran_stages(versions.repro_output) == ["export", "eval"]
    assert skipped_stages(versions.repro_output) == ["intents", "simulate", "collect"]
    assert versions.project.dvc_json("status", "--json") == {}


def test_changing_max_turns_reruns_simulate_collect_and_export_not_intents(
    clone: Project,
) -> None:
    clone.set_params({"simulate": {"max_turns": 18}})
    # Three stages read the key (eval's episodes too); export follows collect's output.
    assert set(clone.dvc_json("status", "--json")) == {"simulate", "collect", "eval"}
    output = clone.timed("dvc repro, simulate.max_turns changed", "repro")
    assert ran_stages(output) == ["simulate", "collect", "export", "eval"]
    assert skipped_stages(output) == ["intents"]
    # A new fingerprint: every episode was simulated again rather than resumed.
    assert "0 skipped (already done)" in output
    assert clone.dvc_json("status", "--json") == {}


def test_keys_that_only_change_speed_or_caching_rerun_nothing(clone: Project) -> None:
    clone.set_params({"llm": {"max_concurrency": 3, "cache": "off"}})
    clone.set_params({"simulate": {"concurrency": 1, "intents_per_task": 2}})
    clone.set_params({"embedding": {"shard_size": 2, "threads": 1, "batch_size": 8}})
    assert clone.dvc_json("status", "--json") == {}
