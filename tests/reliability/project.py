"""Tiny throwaway projects for the reliability tests: params, `ise` runs, invariant checks.

A project is a folder with a params.yaml (6 intents, MiniLM embeddings, the scripted LLM, the
local sandbox) whose data lands in ``<project>/data`` and whose sandboxes in
``<project>/.cache/sandboxes``. Everything that proves "nothing lost, nothing left" lives
here: every output parses, one episode per intent, no temp file, no sandbox directory, no
process or mount that still refers to the project.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ise_core.config import deep_merge
from tests.fakes.params import MANUAL_AIRFLOW, PERMISSIVE_GATES

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGES = ("simulate", "collect", "export")
# Files that say when or how fast something ran, or when a gate library loaded: never
# what was produced.
RUN_RECORDS = {"timing.json", "gate_result.json"}


def tiny_params(**blocks: Any) -> dict[str, Any]:
    """Params for a 6-intent project; ``blocks`` deep-update the defaults."""
    params: dict[str, Any] = {
        "seed": 7,
        "intents": {"count": 6, "taxonomy": str(REPO / "ise_core" / "taxonomy")},
        "embedding": {"model": "all-MiniLM-L6-v2", "batch_size": 16},
        "llm": {"provider": "scripted", "max_concurrency": 8},
        "workspace": {"backend": "local", "template": str(REPO / "ise_core/workspace/template")},
        "simulate": {"concurrency": 4},
        "export": {"valid_fraction": 0.2},
        "gates": copy.deepcopy(PERMISSIVE_GATES),
        "airflow": dict(MANUAL_AIRFLOW),
    }
    return deep_merge(params, blocks)


def make_project(folder: Path, **blocks: Any) -> Path:
    """Create ``folder`` with a params.yaml; returns the params path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(**blocks), sort_keys=False), encoding="utf-8")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DVC_NO_ANALYTICS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
        }
    )
    env.update(extra)
    return env


def ise_argv(*args: str) -> list[str]:
    return [str(BIN / "ise"), *args]


def run_ise(
    project: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``ise ARGS --params <project>/params.yaml`` to completion."""
    return subprocess.run(
        ise_argv(*args, "--params", str(project / "params.yaml")),
        cwd=project,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_ok(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = run_ise(project, *args, timeout=timeout)
    assert done.returncode == 0, f"ise {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
    return done


# --- what a project holds -----------------------------------------------------------------


def intent_ids(project: Path) -> list[str]:
    path = project / "data" / "intents" / "intents.jsonl"
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def episode_files(project: Path) -> list[Path]:
    folder = project / "data" / "trajectories" / "episodes"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def temp_files(project: Path) -> list[Path]:
    """Atomic-write leftovers (``.name.XXXX.tmp``) anywhere under data/."""
    data = project / "data"
    return sorted(p for p in data.rglob("*.tmp")) if data.is_dir() else []


def sandbox_dirs(project: Path) -> list[Path]:
    """Session directories, and the hidden ones of sessions being made or removed."""
    root = project / ".cache" / "sandboxes"
    if not root.is_dir():
        return []
    return sorted([*root.glob("ise-sbx-*"), *root.glob(".ise-sbx-*")])


def dataset_files(
    project: Path, parts: Sequence[str] = ("trajectories", "sft")
) -> dict[str, bytes]:
    """relative path → bytes of every produced file of the given data folders (no run
    records)."""
    files: dict[str, bytes] = {}
    for part in parts:
        folder = project / "data" / part
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(project).as_posix()
            if (
                path.is_file()
                and path.name not in RUN_RECORDS
                and "/timing/" not in relative
                and not path.name.endswith(".tmp")
            ):
                files[relative] = path.read_bytes()
    return files


def corrupt_files(project: Path) -> list[str]:
    """Every JSON / JSONL output under data/ that does not parse (temp files excluded)."""
    bad: list[str] = []
    data = project / "data"
    if not data.is_dir():
        return bad
    for path in sorted(data.rglob("*")):
        if not path.is_file() or path.name.endswith(".tmp"):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".jsonl":
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            bad.append(f"{path.relative_to(project)}: {exc}")
    for path in episode_files(project):
        data_ = json.loads(path.read_text(encoding="utf-8"))
        if data_.get("intent_id") != path.stem or data_.get("status") not in (
            "kept",
            "rejected",
            "failed",
        ):
            bad.append(f"{path.relative_to(project)}: not a whole episode")
    return bad


# --- what must not outlive a run -------------------------------------------------------------


def _own_mount_ns() -> str:
    return os.readlink("/proc/self/ns/mnt")


def processes_referring_to(path: Path) -> list[tuple[int, str]]:
    """Processes whose command line names ``path``, or whose private mounts bind it (a
    process inside a sandbox: its command line says nothing, its mount table does)."""
    needle = str(path).encode()
    own_ns = _own_mount_ns()
    found: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            hit = needle in cmdline
            if not hit and os.readlink(f"/proc/{entry}/ns/mnt") != own_ns:
                hit = needle in Path(f"/proc/{entry}/mountinfo").read_bytes()
        except OSError:
            continue
        if hit:
            found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_for_no_processes(path: Path, timeout_s: float = 5.0) -> list[tuple[int, str]]:
    """Processes still referring to ``path`` after ``timeout_s`` (the kernel takes a moment
    to tear a killed sandbox's namespace down)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = processes_referring_to(path)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def host_mounts_referring_to(path: Path) -> list[str]:
    return [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line
    ]


def copy_intents(source: Path, target: Path) -> None:
    """Give ``target`` the intents stage's outputs of ``source`` (stage 1 is not under test)."""
    shutil.copytree(source / "data" / "intents", target / "data" / "intents")


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
