"""Throwaway copies of the project for the DVC tests: files, tiny params, git, commands.

A copy holds the project's source files (what a fresh clone has; no data, no dvc.lock), a
params.yaml shrunk to a few intents with the fast embedding model, and its own git repository.
Commands run with the venv first on PATH (DVC runs whatever ``ise`` comes first) and the copy
first on PYTHONPATH, so the stages run the copy's ise_core, the files DVC hashes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ise_core.stages import MEASUREMENTS, STAGE_NAMES

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TRACE_HOOK = Path(__file__).resolve().parent / "deps_trace"

# A few intents with the fast embedding model and the local sandbox: the whole pipeline,
# gates included, with the real default thresholds.
TINY_PARAMS: dict[str, Any] = {
    "intents": {"count": 4},
    "embedding": {"model": "all-MiniLM-L6-v2", "batch_size": 16},
    "workspace": {"backend": "local"},
    "airflow": {"schedule": None, "retries": 0, "retry_delay_s": 1},
    # one extra intent held out as an eval task, tried once: the eval stage runs for real
    "eval": {"count": 1, "k": 1},
}
# Files under data/ that a clone has: the refresh period list (empty until a period runs).
COMMITTED_DATA = ("data/refresh/periods.json",)
# Files that say when or how fast a run went, never what it produced.
RUN_RECORDS = ("timing.json",)
# (matched as path prefixes: a folder, or one file)
RUN_RECORD_DIRS = ("data/trajectories/timing/", "data/eval/history.jsonl")

# The dvc.yaml stages: the dataset pipeline, then the eval measurement (ise_core.stages).
STAGES = (*STAGE_NAMES, *(entry.name for entry in MEASUREMENTS))


def interpolate(text: str, params: Mapping[str, Any]) -> str:
    """A dvc.yaml path with its ``${key}`` templates filled from ``params``, as DVC does."""

    def value(match: re.Match[str]) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, text)


def sandbox_missing() -> str | None:
    """Why the local workspace sandbox cannot run here (the pipeline needs it), or None."""
    from ise_core.workspace.local import local_available

    ok, reason = local_available()
    return None if ok else reason


def deep_update(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def source_files(repo: Path = REPO) -> list[str]:
    """The project's files as a clone would have them: tracked and new, not ignored, no
    generated data (data/, dvc.lock)."""
    listed = subprocess.run(
        [
            "git",
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            ".",
            ":!data",
            ":!dvc.lock",
        ],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    names = {name for name in listed.split("\0") if name and (repo / name).is_file()}
    # The refresh period list lives under data/ but is a committed input (DVC params).
    return sorted(names | {name for name in COMMITTED_DATA if (repo / name).is_file()})


def environment(project: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("ISE_PARAMS", "AIRFLOW_VAR_ISE_PARAMS", "ISE_DEPS_TRACE", "ISE_DEPS_TRACE_CALLS"):
        env.pop(name, None)
    env.update(
        DVC_NO_ANALYTICS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        GIT_TERMINAL_PROMPT="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(project),
    )
    env.update(extra)
    return env


def run(
    args: Sequence[str | Path],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    *,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=dict(env) if env is not None else environment(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {done.returncode} in {cwd}\n"
            f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-6000:]}"
        )
    return done


class Project:
    """One copy of the project with its own git repository."""

    def __init__(self, root: Path, timings: dict[str, float] | None = None) -> None:
        self.root = root
        self.timings = timings if timings is not None else {}

    # --- set-up ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        params: Mapping[str, Any] | None = None,
        timings: dict[str, float] | None = None,
    ) -> Project:
        """Copy the source files to ``root``, write tiny params, commit everything."""
        for name in source_files():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
        project = cls(root, timings)
        project.set_params(deep_update(json.loads(json.dumps(TINY_PARAMS)), params or {}))
        project.git("init", "-q", "-b", "main")
        for key, value in (
            ("user.name", "ISE tests"),
            ("user.email", "tests@ise.invalid"),
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
        ):
            project.git("config", key, value)
        project.git("add", "-A")
        project.git("commit", "-q", "-m", "project")
        return project

    def clone_to(self, root: Path) -> Project:
        """A full copy (git history, DVC cache, data) to try a change on."""
        shutil.copytree(self.root, root, symlinks=True)
        return Project(root, self.timings)

    # --- params ------------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        data = yaml.safe_load((self.root / "params.yaml").read_text(encoding="utf-8"))
        assert isinstance(data, dict)
        return data

    def set_params(self, changes: Mapping[str, Any]) -> None:
        data = deep_update(self.params(), changes)
        (self.root / "params.yaml").write_text(
            yaml.safe_dump(data, sort_keys=False), encoding="utf-8"
        )

    # --- commands ----------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        return environment(self.root, **extra)

    def git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["git", *args], self.root, self.env())

    def dvc(
        self, *args: str, check: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "dvc", *args], self.root, env or self.env(), check=check)

    def ise(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run([BIN / "ise", *args], self.root, env or self.env())

    def timed(self, label: str, *args: str, env: Mapping[str, str] | None = None) -> str:
        """Run ``dvc ARGS`` (or ``ise ARGS`` when args[0] == "ise"), record its wall time
        under ``label`` and return its combined output."""
        started = time.monotonic()
        done = self.ise(*args[1:], env=env) if args[0] == "ise" else self.dvc(*args, env=env)
        self.timings[label] = round(time.monotonic() - started, 1)
        return done.stdout + done.stderr

    def dvc_json(self, *args: str) -> Any:
        return json.loads(self.dvc(*args).stdout)

    def commit_version(self, message: str, tag: str) -> None:
        """Commit a dataset version as the README says (dvc.lock, params, metrics and plot
        data; .gitignore keeps the rest of data/ out) and tag it."""
        self.git("add", "dvc.lock", "params.yaml", "data")
        self.git("commit", "-q", "-m", message)
        self.git("tag", tag)

    # --- outputs -----------------------------------------------------------------------------

    def produced_files(self) -> dict[str, bytes]:
        """Every data file under data/ (not run records, not git's files, not the committed
        inputs), by relative path."""
        files = {}
        for path in sorted((self.root / "data").rglob("*")):
            relative = path.relative_to(self.root).as_posix()
            if not path.is_file() or path.name in RUN_RECORDS or path.name == ".gitignore":
                continue
            if relative in COMMITTED_DATA:
                continue
            if any(relative.startswith(folder) for folder in RUN_RECORD_DIRS):
                continue
            files[relative] = path.read_bytes()
        return files


def ran_stages(output: str) -> list[str]:
    """The stages a ``dvc repro`` ran, in order, from its output."""
    return [
        stage
        for line in output.splitlines()
        for stage in STAGES
        if line.strip() == f"Running stage '{stage}':"
    ]


def skipped_stages(output: str) -> list[str]:
    return [
        stage
        for line in output.splitlines()
        for stage in STAGES
        if line.strip() == f"Stage '{stage}' didn't change, skipping"
    ]
