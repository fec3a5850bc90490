"""Shared DVC projects: one traced ``dvc repro`` of a fresh copy that most tests read or clone.

Building the dataset is the expensive part (every stage and gate, ~30-60 s on two cores), so it
happens once per session; a test that changes something clones the built copy first. When the
determinism tests are selected, their reference builds (`ise run`, the DAG) start in the
background first and run beside it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dvc import reference
from tests.dvc.project import TRACE_HOOK, Project, sandbox_missing
from tests.dvc.reference import ReferenceBuilds


@dataclass
class Built:
    """A copy after its first ``dvc repro``: the output and the per-process trace records."""

    project: Project
    output: str
    trace_dir: Path


_TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    """Wall times of the pipeline runs, printed at the end of the session."""
    return _TIMINGS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TIMINGS:
        terminalreporter.section("dvc pipeline wall times (s)")
        for label, seconds in _TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.1f}  {label}")


def traced_env(project: Project, trace_dir: Path, *, calls: bool) -> dict[str, str]:
    """The environment of a traced run: every ``ise`` process writes a record to trace_dir."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    extra = {
        "PYTHONPATH": f"{project.root}{os.pathsep}{TRACE_HOOK}",
        "ISE_DEPS_TRACE": str(trace_dir),
    }
    if calls:
        extra["ISE_DEPS_TRACE_CALLS"] = "1"
    return project.env(**extra)


# The tests that check the background builds, and the builds each needs.
REFERENCE_TESTS = {
    "test_dvc_repro_and_ise_run_build_identical_datasets": "cli",
    "test_the_dag_builds_the_same_dataset": "dag",
    "test_openai_rerun_is_served_from_the_llm_cache": "openai",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The reference builds run in the background meanwhile: wait for them after this folder's
    # other tests (the hook sees the whole session; only this folder's span is reordered).
    here = Path(__file__).parent
    mine = [i for i, item in enumerate(items) if Path(item.path).is_relative_to(here)]
    if mine:
        low, high = mine[0], mine[-1] + 1
        items[low:high] = sorted(items[low:high], key=lambda item: item.name in REFERENCE_TESTS)


@pytest.fixture(scope="session")
def reference_builds(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    timings: dict[str, float],
) -> ReferenceBuilds:
    """The builds the selected determinism tests need, started in background threads."""
    reason = sandbox_missing()
    if reason is not None:
        pytest.skip(f"no local sandbox: {reason}")
    wanted = {REFERENCE_TESTS[i.name] for i in request.session.items if i.name in REFERENCE_TESTS}
    return reference.start(tmp_path_factory.mktemp("reference"), timings, wanted)


@pytest.fixture(scope="session")
def built(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    timings: dict[str, float],
) -> Built:
    """A fresh copy (tiny params, scripted LLM, local sandbox) after one traced ``dvc repro``."""
    reason = sandbox_missing()
    if reason is not None:
        pytest.skip(f"no local sandbox: {reason}")
    if any(item.name in REFERENCE_TESTS for item in request.session.items):
        request.getfixturevalue("reference_builds")  # start them beside this build
    root = tmp_path_factory.mktemp("built") / "project"
    project = Project.create(root, timings=timings)
    trace_dir = root.parent / "trace"
    output = project.timed(
        "dvc repro, fresh copy (traced)",
        "repro",
        env=traced_env(project, trace_dir, calls=True),
    )
    return Built(project, output, trace_dir)


@pytest.fixture
def clone(built: Built, tmp_path: Path) -> Iterator[Project]:
    """A private copy of the built project to change."""
    yield built.project.clone_to(tmp_path / "project")


@dataclass
class Versions:
    """Two dataset versions of one project, tagged v1 and v2 (export.valid_fraction changed)."""

    project: Project
    v1_files: dict[str, bytes]
    status_before_repro: dict[str, object]
    repro_output: str


@pytest.fixture(scope="session")
def versions(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    project = built.project.clone_to(tmp_path_factory.mktemp("versions") / "project")
    project.commit_version("dataset v1", "v1")
    v1_files = project.produced_files()
    project.set_params({"export": {"valid_fraction": 0.5}})
    status = project.dvc_json("status", "--json")
    output = project.timed("dvc repro, export.valid_fraction changed", "repro")
    project.commit_version("dataset v2: half the conversations for validation", "v2")
    return Versions(project, v1_files, status, output)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # The DAG run borrows the DAG tests' private AIRFLOW_HOME; remove it when they did not run.
    airflow_env = sys.modules.get("tests.dags.airflow_env")
    if airflow_env is not None:
        shutil.rmtree(airflow_env.AIRFLOW_HOME, ignore_errors=True)
