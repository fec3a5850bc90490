"""Holding the published dataset while a period builds its successor."""

from __future__ import annotations

from pathlib import Path

import pytest

from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.refresh import publish


def _files(tmp_path: Path) -> Catalog:
    return Catalog.of(Settings(base_dir=tmp_path))


def _write(path: Path, text: str) -> None:
    """As every output is written: a new file renamed over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".new")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


def _contents(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_failed_step_puts_the_previous_dataset_back(tmp_path: Path) -> None:
    files = _files(tmp_path)
    _write(files.train, "old train\n")
    _write(files.plots_dir / "user_turns.csv", "old plot\n")
    _write(files.sft_gate_result, '{"success": true}\n')
    before = _contents(files.sft_dir)
    lines: list[str] = []
    with (
        pytest.raises(RuntimeError),
        publish.guarded(files, "2026-01-18", lines.append, release_on_success=False),
    ):
        _write(files.train, "new train\n")
        _write(files.plots_dir / "growth.csv", "new plot\n")  # a file the old one lacked
        _write(files.sft_gate_result, '{"success": false}\n')
        raise RuntimeError("gate failed")
    assert _contents(files.sft_dir) == before
    assert not files.held_dir.exists()
    kept = files.refresh_dir / "failed" / "2026-01-18" / "gate_result.json"
    assert kept.read_text(encoding="utf-8") == '{"success": false}\n'
    assert any("previous dataset is published again" in line for line in lines)


def test_a_retried_step_keeps_the_first_hold_and_the_gate_releases_it(tmp_path: Path) -> None:
    files = _files(tmp_path)
    _write(files.train, "old\n")
    with publish.guarded(files, "2026-01-18", print, release_on_success=False):
        _write(files.train, "half\n")
    # A retry of the export must not hold its own half-written files.
    assert publish.hold(files, "2026-01-18", print) is False
    assert (files.held_dir / "files" / "train.jsonl").read_text() == "old\n"
    with publish.guarded(files, "2026-01-18", print, release_on_success=True):
        _write(files.train, "new\n")
    assert not files.held_dir.exists()
    assert files.train.read_text() == "new\n"


def test_a_hold_of_another_period_is_stale(tmp_path: Path) -> None:
    files = _files(tmp_path)
    _write(files.train, "period 2\n")
    publish.hold(files, "2026-01-11", print)  # the process died before releasing it
    _write(files.train, "period 3\n")
    assert publish.hold(files, "2026-01-18", print) is True
    assert publish.held_period(files) == "2026-01-18"
    _write(files.train, "period 4, failed\n")
    assert publish.restore(files, "2026-01-18", print) is True
    assert files.train.read_text() == "period 3\n"


def test_the_first_period_has_nothing_to_put_back(tmp_path: Path) -> None:
    files = _files(tmp_path)
    with (
        pytest.raises(ValueError),
        publish.guarded(files, "2026-01-04", print, release_on_success=True),
    ):
        _write(files.train, "first\n")
        raise ValueError("export failed")
    assert not files.train.exists()  # no unvalidated dataset is left published
