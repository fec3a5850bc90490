"""Host-side file access never leaves the workspace, whatever the sandbox planted in it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ise_core.workspace.confined import ConfinedDir, FileAccessError


@pytest.fixture
def layout(tmp_path: Path) -> tuple[ConfinedDir, Path]:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "inner.txt").write_text("inner")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    return ConfinedDir(root, sandbox_root="/workspace"), secret


@pytest.mark.parametrize("path", ["../secret.txt", "sub/../../secret.txt", "a/../b", ".."])
def test_dotdot_is_refused(layout: tuple[ConfinedDir, Path], path: str) -> None:
    files, _ = layout
    with pytest.raises(FileAccessError, match=r"'\.\.' is not allowed"):
        files.read_bytes(path, 1000)
    with pytest.raises(FileAccessError):
        files.write_bytes(path, b"x")


def test_absolute_paths_only_under_the_sandbox_root(layout: tuple[ConfinedDir, Path]) -> None:
    files, secret = layout
    assert files.read_bytes("/workspace/sub/inner.txt", 100) == b"inner"
    for path in (str(secret), "/etc/passwd", "/workspacex/a"):
        with pytest.raises(FileAccessError, match="inside the workspace"):
            files.read_bytes(path, 100)


@pytest.mark.parametrize("target_kind", ["absolute", "relative", "dir-absolute", "dir-relative"])
def test_symlinks_leaving_the_workspace_are_refused(
    layout: tuple[ConfinedDir, Path], target_kind: str
) -> None:
    files, secret = layout
    root = files.root
    if target_kind == "absolute":
        os.symlink(secret, root / "leak")
        path = "leak"
    elif target_kind == "relative":
        os.symlink("../../secret.txt", root / "sub" / "leak")
        path = "sub/leak"
    elif target_kind == "dir-absolute":
        os.symlink(secret.parent, root / "out")
        path = "out/secret.txt"
    else:
        os.symlink("../..", root / "sub" / "up")
        path = f"sub/up/{secret.parent.name}/secret.txt"
    with pytest.raises(FileAccessError, match="outside the workspace"):
        files.read_bytes(path, 1000)
    with pytest.raises(FileAccessError, match="outside the workspace"):
        files.write_bytes(path, b"overwritten")
    assert secret.read_text() == "host secret"


def test_symlinks_inside_the_workspace_are_followed(layout: tuple[ConfinedDir, Path]) -> None:
    files, _ = layout
    root = files.root
    os.symlink("sub/inner.txt", root / "rel")
    os.symlink("/workspace/sub", root / "abs_dir")
    os.symlink("../sub/inner.txt", root / "sub" / "self")
    assert files.read_bytes("rel", 100) == b"inner"
    assert files.read_bytes("abs_dir/inner.txt", 100) == b"inner"
    assert files.read_bytes("sub/self", 100) == b"inner"
    os.symlink("new.txt", root / "dangling")
    files.write_bytes("dangling", b"created through a link")
    assert (root / "new.txt").read_bytes() == b"created through a link"


def test_symlink_loops_end_with_an_error(layout: tuple[ConfinedDir, Path]) -> None:
    files, _ = layout
    os.symlink("b", files.root / "a")
    os.symlink("a", files.root / "b")
    with pytest.raises(FileAccessError, match="too many levels"):
        files.read_bytes("a", 100)


def test_a_fifo_is_refused_without_blocking(layout: tuple[ConfinedDir, Path]) -> None:
    files, _ = layout
    os.mkfifo(files.root / "pipe")
    outcome: list[str] = []

    def attempt() -> None:
        try:
            files.read_bytes("pipe", 100)
        except FileAccessError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert outcome and "not a regular file" in outcome[0]


def test_write_creates_parents_and_sizes_are_capped(layout: tuple[ConfinedDir, Path]) -> None:
    files, _ = layout
    files.write_bytes("deep/er/file.txt", b"12345")
    assert (files.root / "deep" / "er" / "file.txt").read_bytes() == b"12345"
    with pytest.raises(FileAccessError, match="limit"):
        files.read_bytes("deep/er/file.txt", 4)
    with pytest.raises(FileAccessError, match="no such file"):
        files.read_bytes("missing.txt", 10)
    with pytest.raises(FileAccessError, match=r"is a directory|not a regular file"):
        files.read_bytes("deep", 10)


def test_listing_does_not_follow_symlinked_directories(
    layout: tuple[ConfinedDir, Path],
) -> None:
    files, secret = layout
    os.symlink(secret.parent, files.root / "out")
    (files.root / "a.txt").write_text("a")
    assert files.list_files() == ["a.txt", "out", "sub/inner.txt"]
    assert files.list_files(under="sub") == ["sub/inner.txt"]
    assert files.kind("sub") == "directory" and files.kind("a.txt") == "file"
    assert files.kind("out/secret.txt") is None


def test_unlink_and_clear_stay_inside(layout: tuple[ConfinedDir, Path]) -> None:
    files, secret = layout
    os.symlink(secret, files.root / "leak")
    files.unlink("leak")
    assert secret.exists() and not (files.root / "leak").exists()
    files.unlink("never-there")
    os.symlink(secret.parent, files.root / "out")
    (files.root / "locked").mkdir()
    (files.root / "locked" / "f").write_text("x")
    os.chmod(files.root / "locked", 0)
    started = time.monotonic()
    files.clear()
    assert list(files.root.iterdir()) == []
    assert secret.read_text() == "host secret"
    assert time.monotonic() - started < 5
