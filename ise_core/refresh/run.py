"""One refresh period, step by step: the CLI (``ise refresh --period``) and the DAG share these.

``period_of_run``  which period a scheduled or backfilled run builds (None: a plain rebuild)
``begin_period``   register the period in the ledger (its batch is fixed from then on)
``guard_export``   the export and its gate, holding the published dataset (publish.py)
``period_step``    around one stage or gate of a period: the two above where they belong
``finish_period``  the history line, then the lineage (``dvc commit``, git commit and tag)
``refresh_period`` all of it in one process, every stage followed by its gate

A period that fails anywhere leaves the published dataset and ``dvc.lock`` as the previous
period left them; running it again resumes it: the same batch, finished episodes skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.errors import ConfigError, InputError
from ise_core.records import read_json
from ise_core.refresh import publish
from ise_core.refresh.history import history_line, read_history, record_history
from ise_core.refresh.lineage import commit_and_tag, record_lineage
from ise_core.refresh.periods import Ledger, PeriodEntry, new_entry, period_id
from ise_core.stages import STAGES, Stage, run_gate

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def period_of_run(settings: Settings, start: datetime | None, log: Log = _stderr) -> str | None:
    """The period a run with data interval start ``start`` builds, or None (and why) when it
    is a plain rebuild: ``refresh.mode: fixed``, no recurring schedule, no data interval, or
    an interval that does not start on the schedule (a manual run at an arbitrary time)."""
    if settings.refresh.mode == "fixed":
        log("refresh: refresh.mode is fixed; this run rebuilds the dataset of params.yaml")
        return None
    if start is None or settings.airflow.schedule in (None, "@once"):
        log("refresh: no scheduled data interval; this run rebuilds the current dataset")
        return None
    period = period_id(start)
    try:
        new_entry(settings, period, Ledger())
    except ConfigError as exc:
        log(f"refresh: {exc}; this run rebuilds the current dataset")
        return None
    return period


def _entry(files: Catalog, period: str) -> PeriodEntry:
    entry = Ledger.load(files.periods).get(period)
    if entry is None:
        raise InputError(f"{files.periods}: period {period} is not registered (begin it first)")
    return entry


def begin_period(settings: Settings, period: str, log: Log = _stderr) -> dict[str, Any]:
    """Register ``period`` in the ledger (kept as it is when already there) and say what it
    adds. Fails, before anything is written, when the period cannot join the dataset."""
    files = Catalog.of(settings)
    ledger = Ledger.load(files.periods)
    entry = new_entry(settings, period, ledger)
    updated = ledger.with_entry(entry)
    updated.sample_indices(settings.intents.count)  # the base must not reach into a batch
    updated.check(str(files.periods))
    if ledger.get(period) is None:
        updated.save(files.periods)
        state = "registered"
    else:
        state = "registered earlier; resumed"
    if entry.mode == "grow":
        what = f"adds sample indices {entry.first}-{(entry.first or 0) + (entry.count or 0) - 1}"
    else:
        bucket = entry.index % entry.cycle()
        what = f"renews about {entry.share:.0%} of the intents (bucket {bucket})"
    log(f"refresh: period {period} (index {entry.index}, {entry.mode}) {state}: {what}")
    finished = {line["period"] for line in read_history(files.history)}
    pending = [e.period for e in ledger.entries if e.period != period and e.period not in finished]
    if pending:
        log(
            f"refresh: period(s) {', '.join(pending)} never finished; their batches are part of "
            "this dataset, and running them again records their history"
        )
    return {"period": period, "index": entry.index, "mode": entry.mode, "state": state}


@contextmanager
def guard_export(
    settings: Settings, period: str, *, gate: bool, log: Log = _stderr
) -> Iterator[None]:
    """Around the export (``gate=False``) and its gate (``gate=True``) of a period: the
    published dataset is held, restored when the step fails, released when the gate passes."""
    files = Catalog.of(settings)
    if gate:
        check_exported(settings, period)
    with publish.guarded(files, period, log, release_on_success=gate):
        yield


def check_exported(settings: Settings, period: str) -> None:
    """Raise unless the export folder holds the dataset exported for ``period``."""
    path = Catalog.of(settings).sft_stats
    stats = read_json(path) if path.is_file() else {}
    if period not in (stats.get("periods") or []):
        raise InputError(
            f"{path}: the dataset was not exported for period {period} (run the export of "
            "this period again before its gate)"
        )


def _gate_results(files: Catalog) -> dict[str, Path]:
    return {s.gate.name: files.path(f"{s.gate.name}_gate_result") for s in STAGES if s.gate}


def finish_period(
    settings: Settings, period: str, *, lineage: bool = True, log: Log = _stderr
) -> dict[str, Any]:
    """Record the finished period in the history, then its lineage: ``dvc commit`` (and
    ``dvc push``), and with ``refresh.git_tag`` a git commit tagged ``ise-refresh-<period>``."""
    files = Catalog.of(settings)
    entry = _entry(files, period)
    check_exported(settings, period)
    publish.release(files)
    stats = {
        name: read_json(path)
        for name, path in (
            ("intents", files.intents_stats),
            ("trajectories", files.trajectories_stats),
            ("sft", files.sft_stats),
        )
    }
    fingerprints = {s.name: s.fingerprint(settings) for s in STAGES if s.name != "collect"}
    line = history_line(settings, entry, stats, _gate_results(files), fingerprints)
    changed = record_history(files.history, line)
    log(
        f"refresh: period {period} {'recorded in' if changed else 'already in'} {files.history}: "
        f"+{line['intents_added']} intents, {line['episodes_kept']} of {line['episodes']} "
        f"episodes kept; dataset {line['dataset']['intents']} intents, "
        f"{line['dataset']['train']} train / {line['dataset']['valid']} valid"
    )
    outcome: dict[str, Any] = {"period": period, "history_changed": changed}
    if not lineage:
        return outcome
    outcome.update(record_lineage(settings.base_dir, log=log))
    outcome.update(_tag(settings, files, line, log))
    return outcome


def _tag(settings: Settings, files: Catalog, line: dict[str, Any], log: Log) -> dict[str, Any]:
    if not settings.refresh.git_tag:
        log("lineage: refresh.git_tag is off; the period is not committed to git")
        return {"tagged": False, "reason": "refresh.git_tag is off"}
    versioned = [
        settings.base_dir / "dvc.lock",
        files.periods,
        files.history,
        files.intents_stats,
        files.trajectories_stats,
        files.sft_stats,
        files.plots_dir,
    ]
    message = (
        f"dataset: refresh period {line['period']} ({line['mode']}: +{line['intents_added']} "
        f"intents, {line['episodes_kept']} kept; {line['dataset']['kept']} kept in all)"
    )
    return commit_and_tag(settings.base_dir, line["period"], versioned, message, log=log)


@contextmanager
def period_step(
    settings: Settings, entry: Stage, period: str | None, *, gate: bool = False, log: Log = _stderr
) -> Iterator[None]:
    """Around one step of a run that builds ``period`` (None: a plain rebuild, nothing to do):
    stage ``entry`` or, with ``gate``, its gate. The first stage registers the period; the
    last stage (it writes the published dataset) and its gate hold the published dataset."""
    if period is not None and entry is STAGES[0] and not gate:
        begin_period(settings, period, log)
    if period is None or entry is not STAGES[-1]:
        yield
        return
    with guard_export(settings, period, gate=gate, log=log):
        yield


def refresh_period(
    settings: Settings, period: str, *, lineage: bool = True, log: Log = _stderr
) -> dict[str, Any]:
    """One whole period in this process: every stage and gate as the DAG runs them, finish."""
    for entry in STAGES:
        with period_step(settings, entry, period, log=log):
            result = entry.execute(settings)
        log(f"{entry.name}: {result.summary}")
        if entry.gate is None:
            continue
        with period_step(settings, entry, period, gate=True, log=log):
            run_gate(entry.gate.name, settings, log)
    return finish_period(settings, period, lineage=lineage, log=log)


__all__ = [
    "begin_period",
    "check_exported",
    "finish_period",
    "guard_export",
    "period_of_run",
    "period_step",
    "refresh_period",
]
