"""Shared fixtures: one uninterrupted reference run per test session."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.project import (
    STAGES,
    dataset_files,
    intent_ids,
    make_project,
    run_ok,
)
from tests.simulate.helpers import local_sandbox_reason


@dataclass
class Reference:
    """An uninterrupted run of the tiny project: what every interrupted run must end up as."""

    project: Path
    ids: list[str]
    files: dict[str, bytes]
    seconds: dict[str, float]  # wall time of each stage's `ise` process


def _skip_without_sandbox() -> None:
    reason = local_sandbox_reason()
    if reason is not None:
        pytest.skip(f"local sandbox unavailable: {reason}")


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    _skip_without_sandbox()
    project = tmp_path_factory.mktemp("reliability") / "reference"
    make_project(project)
    run_ok(project, "intents")
    seconds: dict[str, float] = {}
    for stage in STAGES:
        started = time.monotonic()
        run_ok(project, stage)
        seconds[stage] = time.monotonic() - started
    ids = intent_ids(project)
    assert len(ids) == 6
    files = dataset_files(project)
    assert "data/sft/train.jsonl" in files and "data/trajectories/trajectories.jsonl" in files
    return Reference(project=project, ids=ids, files=files, seconds=seconds)
