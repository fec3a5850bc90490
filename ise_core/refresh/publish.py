"""Hold the published dataset while a period builds its successor; put it back on failure.

The published dataset is the export folder (``export.out_dir``: the splits, card, plots,
statistics and gate result), what the ``ise_sft`` Asset and ``dvc.lock`` point at. Before a
period's export writes there, ``hold`` hard-links every file of it into
``<refresh.out_dir>/held/``: no copy, and since every output is written to a temp file and
renamed over the old one, the held links keep the old contents. When the export or its gate
fails, ``restore`` puts the held files back (and removes what the failed export added), so
the last good dataset stays published; when the gate passes, ``release`` drops them.

A hold is complete or absent: it is built beside its final place and renamed there, with a
marker naming the period it guards (a hold left by another period is stale and replaced).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ise_core.catalog import Catalog

Log = Callable[[str], None]
MARKER = "held.json"


def _files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (relative paths), sorted; none when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def held_period(files: Catalog) -> str | None:
    """The period the current hold guards, or None when nothing is held."""
    marker = files.held_dir / MARKER
    try:
        return str(json.loads(marker.read_text(encoding="utf-8"))["period"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def hold(files: Catalog, period: str, log: Log) -> bool:
    """Hold the published dataset for ``period`` (once: a hold of the same period is kept, as
    a retried export must not hold its own half-written files). Returns whether it held now."""
    if held_period(files) == period:
        return False
    release(files)  # a hold of another period is stale: that period finished or was abandoned
    building = files.held_dir.with_name(f".{files.held_dir.name}-building")
    shutil.rmtree(building, ignore_errors=True)
    names = _files(files.sft_dir)
    for name in names:
        target = building / "files" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(files.sft_dir / name, target)
    building.mkdir(parents=True, exist_ok=True)
    marker = {"period": period, "files": [name.as_posix() for name in names]}
    (building / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(building, files.held_dir)
    log(f"refresh: holding the published dataset ({len(names)} files of {files.sft_dir})")
    return True


def restore(files: Catalog, period: str, log: Log) -> bool:
    """Put the held dataset back in the export folder; returns whether there was one.

    The failed export's gate result is kept beside the hold's place for a person to read."""
    if held_period(files) is None:
        return False
    held = files.held_dir / "files"
    kept = {name for name in _files(held)}
    failed_result = files.sft_gate_result
    if failed_result.is_file() and not _same_file(failed_result, held / failed_result.name):
        keep = files.refresh_dir / "failed" / period / failed_result.name
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(failed_result, keep)
        log(f"refresh: the failed export's gate result is kept in {keep}")
    for name in _files(files.sft_dir):
        if name not in kept:
            (files.sft_dir / name).unlink()
    for name in sorted(kept):
        target = files.sft_dir / name
        if _same_file(held / name, target):
            continue  # untouched by the failed step (renaming a link onto itself does nothing)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.restoring")
        staging.unlink(missing_ok=True)
        os.link(held / name, staging)
        os.replace(staging, target)
    release(files)
    log(
        f"refresh: period {period} failed; the previous dataset is published again "
        f"({len(kept)} files restored in {files.sft_dir})"
    )
    return True


def _same_file(left: Path, right: Path) -> bool:
    try:
        return os.path.samefile(left, right)
    except OSError:
        return False


def release(files: Catalog) -> None:
    """Drop the hold (the new dataset passed its gate, or the hold was stale)."""
    shutil.rmtree(files.held_dir, ignore_errors=True)


@contextmanager
def guarded(files: Catalog, period: str, log: Log, *, release_on_success: bool) -> Iterator[None]:
    """Run a step that writes the published dataset: hold it first, restore it when the step
    raises, and (``release_on_success``: the step is the dataset's gate) release it after."""
    hold(files, period, log)
    try:
        yield
    except BaseException:
        restore(files, period, log)
        raise
    if release_on_success:
        release(files)


__all__ = ["guarded", "held_period", "hold", "release", "restore"]
