"""What a writer killed between its temp file and the rename leaves, and who may remove it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ise_core.atomic import atomic_write_text, host_tag, remove_stale_temp_files


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_dead_writers_leftovers_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f".train.jsonl.{host_tag()}.{_dead_pid()}-abc123.tmp"
    live = tmp_path / f".train.jsonl.{host_tag()}.{os.getpid()}-def456.tmp"
    elsewhere = tmp_path / f".train.jsonl.0f0f0f.{_dead_pid()}-ghi789.tmp"  # another host
    unknown = tmp_path / ".stats.json.k2l3m4.tmp"  # no pid in the name
    old = tmp_path / ".README.md.x9y8z7.tmp"
    for path in (dead, live, elsewhere, unknown, old):
        path.write_text("half")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    output = atomic_write_text(tmp_path / "train.jsonl", "whole\n")

    assert remove_stale_temp_files(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, elsewhere.name, unknown.name, output.name]
    )
    assert output.read_text() == "whole\n"
    assert remove_stale_temp_files(tmp_path / "missing") == 0


def test_atomic_writes_name_their_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_text(tmp_path / "stats.json", "{}\n")
    assert seen and seen[0].startswith(f".stats.json.{host_tag()}.{os.getpid()}-")
    assert seen[0].endswith(".tmp")
