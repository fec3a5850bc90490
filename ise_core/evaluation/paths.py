"""Where the eval split and each eval run live (cheap to import: the DAG file reads it).

<eval.out_dir>/tasks.jsonl            the frozen task set (``ise intents``)
<eval.out_dir>/history.jsonl          one line per finished run (the eval gate reads it)
<eval.out_dir>/<run>/tasks/           one file per task: its tries (the unit of resume)
<eval.out_dir>/<run>/episodes/        every episode's trajectory
<eval.out_dir>/<run>/results.jsonl    one row per try
<eval.out_dir>/<run>/metrics.json     overall figures and breakdowns (a DVC metric)
<eval.out_dir>/<run>/plots/           score by domain, the pass@k curve (DVC plots)
<eval.out_dir>/<run>/gate_result.json the eval gate's result
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ise_core.config import Settings


def tasks_path(settings: Settings) -> Path:
    from ise_core.catalog import Catalog

    return Catalog.of(settings).eval_tasks


@dataclass(frozen=True)
class RunPaths:
    """Where one eval run's files live."""

    root: Path
    tasks_dir: Path
    episodes_dir: Path
    results: Path
    metrics: Path
    plots_dir: Path
    report: Path
    gate_result: Path
    history: Path

    @classmethod
    def of(cls, settings: Settings, run: str | None = None) -> RunPaths:
        out = settings.path(settings.eval.out_dir)
        root = out / (run or settings.eval.run)
        return cls(
            root=root,
            tasks_dir=root / "tasks",
            episodes_dir=root / "episodes",
            results=root / "results.jsonl",
            metrics=root / "metrics.json",
            plots_dir=root / "plots",
            report=root / "report.md",
            gate_result=root / "gate_result.json",
            history=out / "history.jsonl",
        )

    def task_file(self, task_id: str) -> Path:
        return self.tasks_dir / f"{task_id}.json"

    def episode_file(self, task_id: str, index: int, mode: str) -> Path:
        return self.episodes_dir / task_id / f"t{index}-{mode}.json"


__all__ = ["RunPaths", "tasks_path"]
