"""The lineage of a finished run: ``dvc commit`` (and ``dvc push``), and each refresh period as
a git commit and tag (``refresh.git_tag``).

After ``dvc commit`` recorded the period's outputs in ``dvc.lock``, the commit holds what
versions the dataset in git: ``dvc.lock``, the period list, the history, the statistics
(``dvc metrics``) and the plot data (``dvc plots``); the data itself is DVC's. The tag
``ise-refresh-<period>`` names it, so ``dvc metrics diff ise-refresh-A ise-refresh-B`` shows
what the periods between A and B added, and ``git checkout ise-refresh-A && dvc pull``
restores that version.

Only a tree with no other changes is committed (a refresh never sweeps someone's edits into
a dataset commit); otherwise, or outside a git repository, it says why and leaves git alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ise_core.errors import GateFailed

Log = Callable[[str], None]
Runner = Callable[[Sequence[str], Path], "subprocess.CompletedProcess[str]"]
Git = Callable[[Sequence[str], Path], "subprocess.CompletedProcess[str]"]
TAG_PREFIX = "ise-refresh-"


def _run_dvc(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def record_lineage(
    project_dir: Path, *, run: Runner = _run_dvc, log: Log = _stderr
) -> dict[str, Any]:
    """``dvc commit -f`` the stage outputs so ``dvc status`` is clean; ``dvc push`` when a
    remote is configured. Skips (and says so) when ``project_dir`` is not a DVC project."""
    if not (project_dir / ".dvc").is_dir() or not (project_dir / "dvc.yaml").is_file():
        log(f"lineage: {project_dir} is not a DVC project (no .dvc/ or dvc.yaml); not recorded")
        return {"committed": False, "pushed": False}

    def checked(*args: str) -> str:
        done = run(args, project_dir)
        if done.returncode != 0:
            raise GateFailed(
                f"dvc {' '.join(args)} failed in {project_dir} (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done.stdout

    checked("commit", "--force")
    log("lineage: dvc commit recorded the stage outputs in dvc.lock")
    remotes = checked("remote", "list").strip()
    if not remotes:
        log("lineage: no DVC remote configured; not pushed")
        return {"committed": True, "pushed": False}
    checked("push")
    log("lineage: dvc push sent the outputs to the default remote")
    return {"committed": True, "pushed": True}


def _git(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def tag_name(period: str) -> str:
    return f"{TAG_PREFIX}{period}"


def _versioned(root: Path, paths: Sequence[Path]) -> list[str]:
    """``paths`` (files or folders) as git pathspecs relative to the repository root."""
    specs = []
    for path in paths:
        try:
            specs.append(path.resolve().relative_to(root).as_posix())
        except ValueError:
            continue  # outside the repository: nothing git could commit
    return specs


def _other_changes(status: str, allowed: Sequence[str]) -> list[str]:
    """Changed paths of ``git status --porcelain`` outside ``allowed`` (files or folders)."""
    others = []
    for line in status.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        if not any(path == spec or path.startswith(spec.rstrip("/") + "/") for spec in allowed):
            others.append(path)
    return others


def commit_and_tag(
    project_dir: Path,
    period: str,
    paths: Sequence[Path],
    message: str,
    *,
    git: Git = _git,
    log: Log = print,
) -> dict[str, Any]:
    """Commit ``paths`` (what a dataset version holds in git) and tag the commit."""
    top = git(["rev-parse", "--show-toplevel"], project_dir)
    if top.returncode != 0:
        log(f"lineage: {project_dir} is not in a git repository; the period is not tagged")
        return {"tagged": False, "reason": "not a git repository"}
    root = Path(top.stdout.strip()).resolve()
    allowed = _versioned(root, paths)
    status = git(["status", "--porcelain", "--untracked-files=all"], root)
    others = _other_changes(status.stdout, allowed)
    if status.returncode != 0 or others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        log(f"lineage: the git tree has other changes ({shown}); not committed or tagged")
        return {"tagged": False, "reason": f"other changes: {shown}"}

    def checked(*args: str) -> str:
        done = git(list(args), root)
        if done.returncode != 0:
            raise GateFailed(
                f"git {' '.join(args)} failed in {root} (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done.stdout

    existing = [spec for spec in allowed if (root / spec).exists()]
    checked("add", "--", *existing)
    if git(["diff", "--cached", "--quiet"], root).returncode != 0:
        checked("commit", "-q", "-m", message)
        log(f"lineage: committed dvc.lock, the period list, history and statistics: {message}")
    head = checked("rev-parse", "HEAD").strip()
    name = tag_name(period)
    tagged = git(["rev-parse", "-q", "--verify", f"refs/tags/{name}^{{commit}}"], root)
    if tagged.returncode == 0 and tagged.stdout.strip() != head:
        log(f"lineage: tag {name} already names another commit; left as it is")
        return {"tagged": False, "reason": f"tag {name} exists", "commit": head}
    if tagged.returncode != 0:
        checked("tag", name, head)
    log(f"lineage: tagged {head[:12]} as {name}")
    return {"tagged": True, "tag": name, "commit": head}


__all__ = ["TAG_PREFIX", "commit_and_tag", "record_lineage", "tag_name"]
