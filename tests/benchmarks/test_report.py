"""The benchmark summary: every section from its results JSON, missing ones named."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report


def _write(folder: Path, name: str, data: dict[str, object]) -> None:
    (folder / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")


def test_summary_holds_the_machine_each_figure_its_target_and_load(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "saturation_cli",
        {
            "measured_at": "2026-01-01T00:00:00+00:00",
            "intents": 64,
            "latency_s": 0.3,
            "max_concurrency": 16,
            "load_average_before": [3.5, 4.0, 4.5],
            "runs": [
                {
                    "shape": "short",
                    "config": "default",
                    "episodes_at_once": 32,
                    "requests_per_episode": 15,
                    "saturation": 0.8123,
                    "workload_ceiling": 1.0,
                    "wall_s": 22.4,
                    "pipeline_cpu_ms_per_request": 4.5,
                    "target": 0.9,
                    "target_met": False,
                    "load_average_before": [3.5, 4.0, 4.5],
                },
                {
                    "shape": "short",
                    "config": "--concurrency 4",
                    "episodes_at_once": 4,
                    "saturation": 0.23,
                    "target": None,
                    "target_met": None,
                },
            ],
            "machine_ceiling": {"efficiency": 0.95},
        },
    )
    _write(
        tmp_path,
        "saturation_airflow",
        {
            "intents": 12,
            "episode_shape": {"requests_per_episode": 9},
            "cli": {"wall_s": 4.0, "load_average_before": [1, 2, 3]},
            "runs": [
                {
                    "runner": "dag.test",
                    "parallelism": 1,
                    "intents_per_task": 4,
                    "overhead_per_ti_ms": 341.4,
                    "mapped_instances": 3,
                    "ratio_to_cli": 2.56,
                    "span_s": 10.2,
                    "dag_run_wall_s": 41.0,
                    "load_average_before": [2, 2, 2],
                }
            ],
        },
    )
    session = {
        "started": "2026-01-01T00:00:00+00:00",
        "machine": {
            "nproc": 2,
            "memory_gib": 23.5,
            "cpu_model": "Test CPU",
            "platform": "Linux",
            "python": "3.11",
            "load_average": [5.2, 6.0, 7.1],
        },
        "runs": {"saturation_cli.py": {"exit": 0, "seconds": 200}},
    }
    text = report.render(session, tmp_path)
    assert "| nproc | 2 |" in text and "Test CPU" in text and "5.2 / 6 / 7.1" in text
    assert "| saturation_cli.py | 0 | 200 |" in text
    assert "short, default (32 at once, 15 requests an episode; load 3.5 / 4 / 4.5)" in text
    assert "0.812 (ceiling 1; 22.4 s; 4.5 ms CPU a request) | >= 0.9 | **no** |" in text
    assert "short, --concurrency 4 (4 at once" in text and "| 0.23 (ceiling" in text
    assert "intents_per_task=4: overhead per mapped instance (load 2 / 2 / 2)" in text
    assert "2.56x (10.2 s; whole DAG run 41 s)" in text
    # Not run: said so, never silently dropped.
    assert "Not measured: `benchmarks/results/intents_scale.json` is missing." in text


def test_a_results_file_of_another_shape_is_reported_not_fatal(tmp_path: Path) -> None:
    _write(tmp_path, "llm_throughput", {"efficiency": "fast", "bare_transport": [1, 2]})
    text = report.render(None, tmp_path)
    assert "## LLM client throughput" in text
    assert "fast" in text


def test_record_and_render_through_the_command_line(tmp_path: Path) -> None:
    assert report.main(["--results", str(tmp_path), "--begin"]) == 0
    assert report.main(["--results", str(tmp_path), "--record", "x/a.py", "1", "12"]) == 0
    assert report.main(["--results", str(tmp_path)]) == 0
    summary = (tmp_path / "SUMMARY.md").read_text(encoding="utf-8")
    assert "| a.py | 1 | 12 |" in summary
