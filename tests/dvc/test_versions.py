"""Dataset versions: git tags plus a DVC remote; compare and restore any of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.dvc.conftest import Versions
from tests.dvc.project import STAGES, interpolate

SFT_STATS = "data/sft/stats.json"

pytestmark = pytest.mark.slow  # they build or change a dataset


def test_params_diff_between_versions_shows_the_changed_param(versions: Versions) -> None:
    diff = versions.project.dvc_json("params", "diff", "v1", "v2", "--json")
    assert set(diff) == {"params.yaml"} and set(diff["params.yaml"]) == {"export.valid_fraction"}
    change = diff["params.yaml"]["export.valid_fraction"]
    assert (change["old"], change["new"]) == (0.05, 0.5)


def test_metrics_diff_between_versions_shows_the_changed_statistics(versions: Versions) -> None:
    diff = versions.project.dvc_json("metrics", "diff", "v1", "v2", "--json")
    # Only the split changed: upstream statistics are equal, so they are not listed.
    assert set(diff) == {SFT_STATS}
    train, valid = diff[SFT_STATS]["n_train"], diff[SFT_STATS]["n_valid"]
    assert valid["new"] > valid["old"] and train["new"] < train["old"]
    assert train["old"] + valid["old"] == train["new"] + valid["new"]


def test_plots_diff_between_versions_has_both_revisions(versions: Versions) -> None:
    plots = versions.project.dvc_json("plots", "diff", "v1", "v2", "--json")
    revisions = {
        point["rev"]
        for point in plots["data"]["data/sft/plots/user_turns.csv"][0]["content"]["data"]["values"]
    }
    assert revisions == {"v1", "v2"}


def _cached_outputs(root: Path) -> list[Path]:
    spec = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    paths = []
    for stage in spec["stages"].values():
        for entry in stage.get("outs", []):
            path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            if (options or {}).get("cache", True):
                paths.append(root / interpolate(path, params))
    return paths


def test_push_wipe_pull_restores_each_version(versions: Versions, tmp_path: Path) -> None:
    project = versions.project.clone_to(tmp_path / "project")
    remote = tmp_path / "remote"
    project.dvc("remote", "add", "--local", "--default", "storage", str(remote))
    project.dvc("push", "--all-tags")
    v2_files = project.produced_files()

    shutil.rmtree(project.root / ".dvc" / "cache")
    outputs = _cached_outputs(project.root)
    for path in outputs:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert set(project.dvc_json("status", "--json")) == set(STAGES)

    project.dvc("pull")
    assert project.dvc_json("status", "--json") == {}
    assert project.produced_files() == v2_files

    # The earlier version comes back the same way: check out its tag, pull its data.
    project.git("checkout", "-q", "v1")
    project.dvc("pull")
    assert project.dvc_json("status", "--json") == {}
    assert project.produced_files() == versions.v1_files
    assert versions.v1_files["data/sft/valid.jsonl"] != v2_files["data/sft/valid.jsonl"]
