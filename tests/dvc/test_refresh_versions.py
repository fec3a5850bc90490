"""Refresh periods as dataset versions: each period a git commit and tag (``refresh.git_tag``),
``dvc metrics diff`` between two period tags shows the growth, and ``dvc repro`` on a fresh
clone of the last tag (same params, same period list) rebuilds the same dataset."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.dvc.project import Project

pytestmark = pytest.mark.slow  # two periods and a rebuild

PERIODS = ("2026-01-04", "2026-01-11")
PER_PERIOD = 2
DATASET = (
    "data/intents/intents.jsonl",
    "data/trajectories/trajectories.jsonl",
    "data/sft/train.jsonl",
)


def test_period_tags_diff_and_a_fresh_clone_rebuilds_the_last_one(tmp_path: Path) -> None:
    project = Project.create(
        tmp_path / "project",
        {
            "airflow": {"schedule": "@weekly", "start_date": PERIODS[0]},
            "refresh": {"mode": "grow", "intents_per_period": PER_PERIOD, "git_tag": True},
        },
    )
    base = project.params()["intents"]["count"]
    for period in PERIODS:
        done = project.ise("refresh", "--period", period)
        assert "lineage: tagged" in done.stdout + done.stderr, done.stderr[-3000:]
    tags = project.git("tag", "--list", "ise-refresh-*").stdout.split()
    assert tags == [f"ise-refresh-{p}" for p in PERIODS]
    assert project.git("status", "--porcelain").stdout == ""  # the period is all committed

    diff = project.dvc_json("metrics", "diff", *tags, "--json")
    unique = diff["data/intents/stats.json"]["n_unique"]
    assert (unique["old"], unique["new"]) == (base + PER_PERIOD, base + 2 * PER_PERIOD)
    kept = diff["data/trajectories/stats.json"]["n_kept"]
    assert kept["new"] > kept["old"]

    # A fresh clone at the last tag has the params and the period list: `dvc repro` rebuilds
    # the same dataset.
    clone_root = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--branch", tags[-1], str(project.root), str(clone_root)],
        check=True,
        capture_output=True,
    )
    clone = Project(clone_root)
    clone.dvc("repro")
    built, rebuilt = project.produced_files(), clone.produced_files()
    for name in DATASET:
        assert rebuilt[name] == built[name], name
