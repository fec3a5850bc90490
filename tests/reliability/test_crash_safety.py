"""SIGKILL the pipeline at seeded points of simulate, collect and export, then re-run.

Each *sequence* starts from a fresh project holding only the reference run's intents and
walks through the stages; at every kill point the stage's `ise` process is started and
killed (SIGKILL, no chance to clean up) when its trigger fires: after a seeded delay, when
the N-th episode file appears, while a sandbox is open, while an atomic write's temp file
exists, or as soon as a given output file is written. After each kill nothing may be
corrupt and nothing may still run; each stage is then re-run to completion, and the final
dataset must be byte-identical to the uninterrupted reference run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.conftest import Reference
from tests.reliability.project import (
    STAGES,
    cli_env,
    copy_intents,
    corrupt_files,
    dataset_files,
    episode_files,
    host_mounts_referring_to,
    ise_argv,
    make_project,
    run_ok,
    sandbox_dirs,
    temp_files,
    wait_for_no_processes,
)

SEED = 20260
POLL_S = 0.002


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: ``trigger`` is ``delay:<fraction of the stage's reference time>``,
    ``episodes:<n>``, ``sandbox``, ``tmp:<folder>`` or ``file:<path>`` (written by this run)."""

    stage: str
    trigger: str
    group: bool = False  # kill the whole process group, not only the `ise` process

    def label(self) -> str:
        return f"{self.stage}@{self.trigger}{' (group)' if self.group else ''}"


SEQUENCES: list[list[KillPoint]] = [
    [
        KillPoint("simulate", "episodes:1"),
        KillPoint("simulate", "episodes:3"),
        KillPoint("simulate", "episodes:5", group=True),
        KillPoint("collect", "delay"),
        KillPoint("export", "tmp:data/sft"),
        KillPoint("export", "file:data/sft/train.jsonl"),
    ],
    [
        KillPoint("simulate", "sandbox"),
        KillPoint("simulate", "delay"),
        KillPoint("simulate", "episodes:4"),
        KillPoint("collect", "tmp:data/trajectories"),
        KillPoint("export", "delay"),
        KillPoint("export", "file:data/sft/plots/user_turns.png"),
    ],
    [
        KillPoint("simulate", "delay", group=True),
        KillPoint("simulate", "episodes:2"),
        KillPoint("simulate", "tmp:data/trajectories/episodes"),
        KillPoint("collect", "file:data/trajectories/trajectories.jsonl"),
        KillPoint("export", "tmp:data/sft/plots"),
        KillPoint("export", "file:data/sft/stats.json"),
    ],
    [
        KillPoint("simulate", "episodes:1"),
        KillPoint("simulate", "sandbox"),
        KillPoint("simulate", "delay"),
        KillPoint("collect", "delay"),
        KillPoint("export", "delay", group=True),
        KillPoint("export", "file:data/sft/README.md"),
    ],
]


class Trigger:
    """Polls one kill condition of a running stage."""

    def __init__(self, point: KillPoint, project: Path, delay_s: float) -> None:
        self.kind, _, self.arg = point.trigger.partition(":")
        self.project = project
        self.delay_s = delay_s
        self.started = time.monotonic()
        self.started_ns = time.time_ns()

    def fired(self) -> bool:
        if self.kind == "delay":
            return time.monotonic() - self.started >= self.delay_s
        if self.kind == "episodes":
            return len(episode_files(self.project)) >= int(self.arg)
        if self.kind == "sandbox":
            return any((d / "owner.json").exists() for d in sandbox_dirs(self.project))
        if self.kind == "tmp":
            folder = self.project / self.arg
            try:
                return any(e.name.endswith(".tmp") for e in os.scandir(folder))
            except FileNotFoundError:
                return False
        if self.kind == "file":
            try:
                return (self.project / self.arg).stat().st_mtime_ns >= self.started_ns
            except FileNotFoundError:
                return False
        raise ValueError(f"unknown trigger {self.kind!r}")


def kill_at(project: Path, point: KillPoint, delay_s: float, timeout_s: float = 120) -> bool:
    """Run the point's stage and SIGKILL it when the trigger fires; True when it was
    killed, False when the stage finished first."""
    log = (project / "logs" / f"{point.stage}.log").open("ab")
    proc = subprocess.Popen(
        ise_argv(point.stage, "--params", str(project / "params.yaml")),
        cwd=project,
        env=cli_env(),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    trigger = Trigger(point, project, delay_s)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None:
            if trigger.fired():
                if point.group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() > deadline:
                raise AssertionError(f"{point.label()}: no trigger within {timeout_s}s")
            time.sleep(POLL_S)
        assert proc.returncode == 0, f"{point.label()}: exit {proc.returncode}"
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def assert_nothing_broken(project: Path, label: str) -> None:
    """After a kill: every output parses and no process or mount refers to the project."""
    assert corrupt_files(project) == [], label
    left = wait_for_no_processes(project)
    assert left == [], f"{label}: processes outlived the kill: {left}"
    assert host_mounts_referring_to(project) == [], label


def test_sigkill_at_seeded_points_loses_nothing(reference: Reference, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    killed: list[str] = []
    finished_first: list[str] = []
    for number, sequence in enumerate(SEQUENCES):
        project = tmp_path / f"sequence-{number}"
        make_project(project)
        (project / "logs").mkdir()
        copy_intents(reference.project, project)
        for stage in STAGES:
            for point in (p for p in sequence if p.stage == stage):
                # Seeded delays fall inside the stage's reference duration (a resumed
                # simulate has less left to do, hence the lower share for it).
                share = rng.uniform(0.15, 0.5 if stage == "simulate" else 0.85)
                was_killed = kill_at(project, point, share * reference.seconds[stage])
                (killed if was_killed else finished_first).append(point.label())
                assert_nothing_broken(project, point.label())
            run_ok(project, stage)  # the re-run after the kills
        # Every intent has exactly one episode, nothing half-written or left behind, and
        # the dataset is the uninterrupted run's, byte for byte.
        assert [p.stem for p in episode_files(project)] == sorted(reference.ids)
        assert temp_files(project) == []
        assert sandbox_dirs(project) == []
        produced = dataset_files(project)
        assert sorted(produced) == sorted(reference.files)
        different = [name for name in produced if produced[name] != reference.files[name]]
        assert different == [], f"sequence {number}: differs from the reference: {different}"
    print(f"\nkilled at {len(killed)} points: {killed}\nfinished first: {finished_first}")
    assert len(killed) >= 20, (killed, finished_first)


@pytest.fixture(autouse=True)
def _no_leftovers_of_this_test(tmp_path: Path) -> Iterator[None]:
    yield
    assert wait_for_no_processes(tmp_path, timeout_s=2.0) == []
