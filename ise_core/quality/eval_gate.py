"""Gate after an eval run: every try has an outcome, and the score did not drop too far.

Reads ``<eval.out_dir>/<run>/results.jsonl``, ``metrics.json`` and ``history.jsonl``; writes
``gate_result.json`` in the run folder. The run is compared with the previous run on the
same task set in the history (another run name included: a new model against the last one),
and fails when its score is more than ``eval.gate.max_score_drop`` below it. The first run on
a task set has nothing to compare with and passes that expectation.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ise_core.catalog import Catalog
from ise_core.config import Settings
from ise_core.errors import InputError
from ise_core.evaluation.results import read_history
from ise_core.evaluation.runner import MODES
from ise_core.quality.runner import Expect, GateReport, Table, run_gate
from ise_core.records import read_json, read_raw_jsonl

OUTCOMES = ["kept", "rejected", "failed"]


def previous_entry(
    history: list[dict[str, Any]], run: str, fingerprint: str, task_set: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(this run's latest history entry, the entry before it on the same task set)."""
    current_at = next(
        (
            i
            for i in range(len(history) - 1, -1, -1)
            if history[i].get("run") == run and history[i].get("fingerprint") == fingerprint
        ),
        None,
    )
    if current_at is None:
        return None, None
    earlier = [e for e in history[:current_at] if e.get("task_set") == task_set]
    return history[current_at], (earlier[-1] if earlier else None)


def _tries_table(rows: list[tuple[int, dict[str, Any]]]) -> Table:
    import pandas as pd

    frame = pd.DataFrame(
        [
            {
                "line": f"results.jsonl:{lineno}",
                "score": row.get("score"),
                **{
                    f"{mode}_status": (row.get("episodes") or {}).get(mode, {}).get("status")
                    for mode in MODES
                },
            }
            for lineno, row in rows
        ],
        columns=["line", "score", *(f"{mode}_status" for mode in MODES)],
    )
    expectations = [
        Expect(
            "every try has a score in [0, 1]",
            "ExpectColumnValuesToBeBetween",
            {"column": "score", "min_value": 0.0, "max_value": 1.0},
        ),
        *(
            Expect(
                f"every {mode} episode has a recorded outcome",
                "ExpectColumnValuesToBeInSet",
                {"column": f"{mode}_status", "value_set": OUTCOMES},
            )
            for mode in MODES
        ),
    ]
    return Table("tries", frame, "line", expectations)


def gate_eval(settings: Settings, run: str | None = None) -> GateReport:
    """Validate one eval run (default ``eval.run``) against ``eval.gate``."""
    import pandas as pd

    name = run or settings.eval.run
    paths = Catalog.of(settings).eval_run(name)
    if not paths.metrics.is_file():
        raise InputError(f"{paths.metrics}: no eval run {name!r} to check (run `ise eval` first)")
    metrics = read_json(paths.metrics)
    rows = read_raw_jsonl(paths.results)
    k = int(metrics.get("k", settings.eval.k))
    per_task = Counter(row.get("task_id") for _, row in rows)
    coverage = pd.DataFrame(
        [{"task": task, "n_tries": n} for task, n in sorted(per_task.items())],
        columns=["task", "n_tries"],
    )
    current, previous = previous_entry(
        read_history(paths), name, str(metrics.get("fingerprint")), str(metrics.get("task_set"))
    )
    score = float((metrics.get("overall") or {}).get("score", 0.0))
    margin = settings.eval.gate.max_score_drop
    floor = max(0.0, float(previous["score"]) - margin) if previous else 0.0
    comparison = pd.DataFrame(
        [
            {
                "run": name,
                "score": score,
                "previous_run": previous.get("run") if previous else None,
                "previous_score": previous.get("score") if previous else None,
            }
        ]
    )
    tables = [
        _tries_table(rows),
        Table(
            "tasks",
            coverage,
            "task",
            [
                Expect(
                    f"every task has {k} tries",
                    "ExpectColumnValuesToBeBetween",
                    {"column": "n_tries", "min_value": k, "max_value": k},
                )
            ],
        ),
        Table(
            "score",
            comparison,
            "run",
            [
                Expect(
                    f"score at most {margin} below the previous run's",
                    "ExpectColumnValuesToBeBetween",
                    {"column": "score", "min_value": floor},
                    f">= {floor:.4f}"
                    + (f" ({previous['run']} scored {previous['score']:.4f})" if previous else ""),
                )
            ],
        ),
    ]
    context = {
        "run": name,
        "in_history": current is not None,
        "previous": previous,
        "max_score_drop": margin,
    }
    return run_gate("eval", tables, paths.gate_result, context)


__all__ = ["gate_eval", "previous_entry"]
