"""A finished period as a git commit tagged ise-refresh-<period>, only in a clean tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ise_core.refresh.lineage import commit_and_tag


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    for key, value in (("user.name", "t"), ("user.email", "t@t.invalid")):
        _git(root, "config", key, value)
    _git(root, "config", "commit.gpgsign", "false")
    (root / "params.yaml").write_text("seed: 7\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "project")
    return root


def _versioned(root: Path) -> list[Path]:
    return [root / "dvc.lock", root / "data/refresh/periods.json", root / "data/sft/plots"]


def test_a_clean_tree_is_committed_and_tagged_once(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "dvc.lock").write_text("v1\n")
    (root / "data/refresh").mkdir(parents=True)
    (root / "data/refresh/periods.json").write_text('{"periods": []}\n')
    (root / "data/sft/plots").mkdir(parents=True)
    (root / "data/sft/plots/growth.csv").write_text("period,kept\n")
    lines: list[str] = []
    outcome = commit_and_tag(root, "2026-01-04", _versioned(root), "period 1", log=lines.append)
    assert outcome["tagged"] is True and outcome["tag"] == "ise-refresh-2026-01-04"
    assert _git(root, "status", "--porcelain") == ""
    assert _git(root, "rev-parse", "ise-refresh-2026-01-04^{commit}").strip() == outcome["commit"]
    # Again with nothing new (a re-run): no empty commit, the tag stays where it is.
    again = commit_and_tag(root, "2026-01-04", _versioned(root), "period 1", log=lines.append)
    assert again == outcome
    assert _git(root, "rev-list", "--count", "HEAD").strip() == "2"


def test_other_changes_in_the_tree_are_never_swept_into_a_dataset_commit(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "dvc.lock").write_text("v1\n")
    (root / "params.yaml").write_text("seed: 8\n")  # someone's uncommitted edit
    lines: list[str] = []
    outcome = commit_and_tag(root, "2026-01-04", _versioned(root), "period 1", log=lines.append)
    assert outcome["tagged"] is False
    assert "other changes (params.yaml)" in lines[-1]
    assert _git(root, "tag") == ""
    assert _git(root, "rev-list", "--count", "HEAD").strip() == "1"


def test_outside_a_git_repository_it_says_so(tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = commit_and_tag(tmp_path, "2026-01-04", [], "period 1", log=lines.append)
    assert outcome == {"tagged": False, "reason": "not a git repository"}
    assert "not in a git repository" in lines[0]


def test_a_tag_naming_another_commit_is_left_alone(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    _git(root, "tag", "ise-refresh-2026-01-04")
    (root / "dvc.lock").write_text("v2\n")
    lines: list[str] = []
    outcome = commit_and_tag(root, "2026-01-04", _versioned(root), "period 1", log=lines.append)
    assert outcome["tagged"] is False
    assert "already names another commit" in lines[-1]
