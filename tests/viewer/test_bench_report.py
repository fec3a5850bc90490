"""The viewer benchmark's section of benchmarks/results/SUMMARY.md."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report


def test_the_summary_shows_the_viewer_figures_against_their_targets(tmp_path: Path) -> None:
    figures = {
        "episodes": 50000,
        "list": {"n": 300, "median_ms": 21.0, "p95_ms": 120.5},
        "list_first_request_per_filter": {"n": 80, "median_ms": 60.0, "p95_ms": 250.0},
        "episode": {"n": 299, "median_ms": 30.0, "p95_ms": 240.0},
        "targets_ms": {"list": 300.0, "episode": 200.0},
        "server_ready_s": 9.5,
        "server_rss_mib": 412.0,
        "load_average": {"before": [3.0, 2.0, 1.0], "after": [2.5, 2.0, 1.0]},
    }
    (tmp_path / "viewer_scale.json").write_text(json.dumps(figures), encoding="utf-8")
    text = report.render(None, tmp_path)
    assert "## The viewer at 50,000 episodes" in text
    assert "| list page p95 (median) | 120.5 ms (21 ms) | <= 300 ms | yes |" in text
    assert "| episode page p95 (median) | 240 ms (30 ms) | <= 200 ms | **no** |" in text
    assert "load 3 / 2 / 1 before" in text
