"""An eval run's outputs: results.jsonl, metrics.json, the plot data and the run history.

Under ``<eval.out_dir>/<run>/``::

    results.jsonl             one row per (task, try), sorted: figures, violations, episodes
    metrics.json              overall figures and the breakdowns (a DVC metric)
    plots/score_by_domain.csv score, completion, robustness, safety and pass rate per domain
    plots/pass_at_k.csv       pass@k and pass^k for k = 1 … K

and ``<eval.out_dir>/history.jsonl`` gains one line per finished run (what the eval gate
compares with). ``metrics.json`` holds only what the tries produced and the task set they
ran on, so ``dvc metrics diff`` between two runs shows what changed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ise_core.atomic import atomic_write_text
from ise_core.catalog import EvalRunFiles
from ise_core.errors import InputError
from ise_core.evaluation.scoring import TaskOutcome, TryOutcome, breakdown
from ise_core.evaluation.tasks import EvalTask, task_set_hash
from ise_core.records import (
    canonical_json,
    read_json,
    write_json,
    write_jsonl,
)


def load_rows(
    paths: EvalRunFiles, tasks: Sequence[EvalTask], fp: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every try row of ``tasks`` made with fingerprint ``fp``, and the ids without one."""
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for task in tasks:
        path = paths.task_file(task.id)
        data = read_json(path) if path.exists() else None
        if not (
            isinstance(data, dict)
            and data.get("fingerprint") == fp
            and data.get("task_hash") == task.task_hash
        ):
            missing.append(task.id)
            continue
        rows += sorted(data.get("tries") or [], key=lambda row: int(row["try"]))
    rows.sort(key=lambda row: (row["task_id"], row["try"]))
    return rows, missing


def _outcomes(rows: Sequence[dict[str, Any]]) -> list[TaskOutcome]:
    by_task: dict[str, TaskOutcome] = {}
    for row in rows:
        task = by_task.setdefault(
            row["task_id"],
            TaskOutcome(row["task_id"], row["domains"], row["complexity"], row["task_types"]),
        )
        task.tries.append(
            TryOutcome(
                completion=float(row["completion"]),
                robustness=float(row["robustness"]),
                safety=float(row["safety"]),
                tokens=int(row["tokens"]),
                tool_calls=int(row["tool_calls"]),
                seconds=float(row["seconds"]),
            )
        )
    return list(by_task.values())


def _violation_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        for kind in {v["kind"] for v in row["violations"]}:
            counts[kind] = counts.get(kind, 0) + 1  # tries with at least one of this kind
    return dict(sorted(counts.items()))


def _judge_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    graded = [row["judge"] for row in rows if row.get("judge")]
    if not graded:
        return None
    scores = [int(v["score"]) for v in graded]
    return {
        "judge": graded[0]["judge"],
        "n_graded": len(scores),
        "grounding_mean": round(sum(scores) / len(scores), 4),
        "grounding_counts": {str(s): scores.count(s) for s in range(1, 6)},
    }


def build_metrics(
    rows: Sequence[dict[str, Any]], *, k: int, header: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json: ``header`` (run, agent, task set), the overall figures and breakdowns."""
    metrics: dict[str, Any] = {**header, "k": k}
    metrics.update(
        breakdown(_outcomes(rows), list(range(1, k + 1))) if rows else {"overall": {"n_tasks": 0}}
    )
    metrics["violations"] = _violation_counts(rows)
    stops: dict[str, int] = {}
    for row in rows:
        for episode in row["episodes"].values():
            key = f"{episode['status']}:{episode['stop_reason']}"
            stops[key] = stops.get(key, 0) + 1
    metrics["episode_outcomes"] = dict(sorted(stops.items()))
    judge = _judge_figures(rows)
    if judge is not None:
        metrics["judge"] = judge
    return metrics


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


PLOT_COLUMNS = ("score", "completion", "robustness", "safety", "pass_rate", "n_tasks")


def write_plots(paths: EvalRunFiles, metrics: dict[str, Any]) -> None:
    by_domain = metrics.get("by_domain") or {}
    atomic_write_text(
        paths.plots_dir / "score_by_domain.csv",
        _csv(
            ("domain", *PLOT_COLUMNS),
            [
                [domain, *(figures[c] for c in PLOT_COLUMNS)]
                for domain, figures in by_domain.items()
            ],
        ),
    )
    overall = metrics.get("overall") or {}
    at, hat = overall.get("pass_at_k") or {}, overall.get("pass_hat_k") or {}
    atomic_write_text(
        paths.plots_dir / "pass_at_k.csv",
        _csv(("k", "pass_at_k", "pass_hat_k"), [[k, at[k], hat[k]] for k in sorted(at, key=int)]),
    )


def append_history(paths: EvalRunFiles, run: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Add this run's headline figures to history.jsonl; returns the entry."""
    overall = metrics.get("overall") or {}
    entry = {
        "run": run,
        "agent": metrics.get("agent", {}).get("label"),
        "task_set": metrics.get("task_set"),
        "k": metrics.get("k"),
        "n_tasks": overall.get("n_tasks", 0),
        "score": overall.get("score", 0.0),
        "pass_at_1": (overall.get("pass_at_k") or {}).get("1", 0.0),
        "completion": overall.get("completion", 0.0),
        "robustness": overall.get("robustness", 0.0),
        "safety": overall.get("safety", 0.0),
        "fingerprint": metrics.get("fingerprint"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    previous = paths.history.read_text(encoding="utf-8") if paths.history.exists() else ""
    atomic_write_text(paths.history, previous + canonical_json(entry) + "\n")
    return entry


def read_history(paths: EvalRunFiles) -> list[dict[str, Any]]:
    import json

    if not paths.history.exists():
        return []
    entries = []
    for lineno, line in enumerate(paths.history.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{paths.history}:{lineno}: invalid JSON: {exc.msg}") from None
    return entries


def write_outputs(
    paths: EvalRunFiles,
    tasks: Sequence[EvalTask],
    rows: Sequence[dict[str, Any]],
    *,
    run: str,
    k: int,
    header: dict[str, Any],
) -> dict[str, Any]:
    """results.jsonl, metrics.json and the plot data of one run; returns the metrics."""
    write_jsonl(paths.results, list(rows))
    metrics = build_metrics(
        rows, k=k, header={"run": run, "task_set": task_set_hash(tasks), **header}
    )
    write_json(paths.metrics, metrics)
    write_plots(paths, metrics)
    return metrics


__all__ = [
    "append_history",
    "build_metrics",
    "load_rows",
    "read_history",
    "write_outputs",
    "write_plots",
]
